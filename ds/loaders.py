"""Batches for training and evaluation.

`DeviceLoader`: a small dataset held whole on the device as uint8; random crop, flip and cutout
run on the device, so a fast GPU is not starved by a CPU input pipeline.
`FolderLoader`: a torch DataLoader (with a DistributedSampler under DDP) for ImageFolder data.

Both are deterministic: the order and augmentation of epoch e depend only on (seed, e, rank),
so a run resumed at an epoch boundary sees exactly the batches of an uninterrupted run.
Under DDP each rank takes its shard; `batch_size` is the global batch (split over ranks).
"""
from __future__ import annotations

import copy
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler


def _per_rank_batch(batch_size: int, world_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes; "
                         f"choose a multiple of {world_size}")
    return batch_size // world_size


class DeviceLoader:
    """Whole-dataset-on-device loader with on-device augmentation.

    images: (N, H, W, 3) uint8 (numpy or tensor); labels: (N,) integers.
    train=True: shuffled each epoch, random crop with `pad` zero padding, horizontal flip,
    optional cutout of a `cutout` x `cutout` square; incomplete last batch dropped.
    train=False: in order, no augmentation, every sample seen once across ranks.
    """

    def __init__(self, images, labels, batch_size: int, mean, std, *, train: bool,
                 device: str | torch.device = "cpu", seed: int = 0, pad: int = 4, flip: bool = True,
                 cutout: int = 0, rank: int = 0, world_size: int = 1, channels_last: bool = False):
        self.device = torch.device(device)
        # NCHW uint8 on the device: 50k CIFAR images are 150 MB
        self.images = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).contiguous().to(self.device)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long).to(self.device)
        self.batch_size = _per_rank_batch(batch_size, world_size)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255
        self.train, self.seed, self.pad, self.flip, self.cutout = train, seed, pad, flip, cutout
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self.epoch = 0
        if train and self._shard_size() < self.batch_size:
            raise ValueError(f"{len(self.labels)} training images give each of {world_size} processes "
                             f"fewer than one batch of {self.batch_size}; lower the batch size")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def subset(self, indices, *, train: bool | None = None) -> "DeviceLoader":
        """A loader over the samples `indices` (positions in this loader's data) with the same device,
        batch size, normalization, seed, augmentation settings and rank; `train` as given (default:
        this loader's). This loader is not changed; its epoch is not carried over."""
        picked = copy.copy(self)
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64)).to(self.device)
        picked.images, picked.labels = self.images[index], self.labels[index]
        picked.train = self.train if train is None else bool(train)
        picked.epoch = 0
        if picked.train and picked._shard_size() < picked.batch_size:
            raise ValueError(f"{len(picked.labels)} training images give each of {self.world_size} processes "
                             f"fewer than one batch of {self.batch_size}; lower the batch size or use more images")
        return picked

    def _shard_size(self) -> int:
        n = len(self.labels)
        if self.train:   # padded to a multiple of world_size so every rank runs the same number of steps
            return -(-n // self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples one epoch of this rank yields."""
        return len(self) * self.batch_size if self.train else self._shard_size()

    def _generator(self) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.seed * 1_000_003 + self.epoch) * 64 + self.rank)
        return g

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size, device=self.device)
        g = torch.Generator()   # the order is drawn on the CPU: the same on every device and rank
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(n, generator=g)
        total = -(-n // self.world_size) * self.world_size
        order = torch.cat([order, order[: total - n]])
        return order[self.rank::self.world_size].to(self.device)

    def __iter__(self):
        indices = self._indices()
        g = self._generator() if self.train else None
        for start in range(0, len(self) * self.batch_size if self.train else len(indices), self.batch_size):
            idx = indices[start:start + self.batch_size]
            x = self.images[idx]
            if self.train:
                x = self._augment(x, g)
            x = (x.float() - self.mean) / self.std
            if self.train and self.cutout:
                x = self._cutout(x, g)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]

    def _augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        if self.pad:
            padded = torch.nn.functional.pad(x, (self.pad,) * 4)
            oy = torch.randint(0, 2 * self.pad + 1, (b,), device=x.device, generator=g)
            ox = torch.randint(0, 2 * self.pad + 1, (b,), device=x.device, generator=g)
            rows = oy[:, None] + torch.arange(h, device=x.device)       # (B, H)
            cols = ox[:, None] + torch.arange(w, device=x.device)       # (B, W)
            batch = torch.arange(b, device=x.device)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if self.flip:
            flip = torch.rand(b, device=x.device, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def _cutout(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=g)
        cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=g)
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        half = self.cutout // 2   # the square is clipped at the borders, as in DeVries & Taylor (2017)
        hole = ((ys >= cy - half) & (ys < cy - half + self.cutout) & (xs >= cx - half) & (xs < cx - half + self.cutout))
        return x * (~hole).unsqueeze(1).to(x.dtype)


class FolderLoader:
    """A DataLoader over a map-style dataset (e.g. ImageFolder) that moves batches to the device."""

    def __init__(self, dataset, batch_size: int, *, train: bool, device: str | torch.device = "cpu",
                 seed: int = 0, rank: int = 0, world_size: int = 1, workers: int = 4,
                 channels_last: bool = False):
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.seed = seed
        self.generator = torch.Generator()
        if world_size > 1:
            self.sampler = DistributedSampler(dataset, world_size, rank, shuffle=train, seed=seed, drop_last=train)
        elif train:
            self.sampler = RandomSampler(dataset, generator=self.generator)
        else:
            self.sampler = SequentialSampler(dataset)
        self.loader = DataLoader(dataset, _per_rank_batch(batch_size, world_size), sampler=self.sampler,
                                 num_workers=workers, pin_memory=self.device.type == "cuda",
                                 drop_last=train, persistent_workers=workers > 0,
                                 worker_init_fn=_seed_worker, generator=self.generator)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)   # worker seeds and RandomSampler
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return len(self.loader) * self.loader.batch_size if self.loader.drop_last else len(self.sampler)

    def __iter__(self):
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
