"""Training and evaluation: `fit`, `evaluate`, checkpoints, and the `python -m ds.train` CLI.

SGD with Nesterov momentum, per-step cosine schedule with linear warm-up, label smoothing,
no weight decay on BN and biases, AMP (bf16/fp16) and channels_last on GPU, optional EMA,
optional self-distillation from a teacher, optional gate scores (`ds.gating`) with their own
optimizer. One checkpoint per epoch holds everything needed to resume exactly.
The same code runs single-process and under `torchrun` (DDP).

The three stages from the command line (CIFAR-10 from $DS_DATA, 32 px, CIFAR strides):
  base:      python -m ds.train --backbone mobilenetv2_140 --dataset cifar10 --epochs 200 --out runs/base
  search:    python -m ds.train --backbone mobilenetv2_140 --dataset cifar10 --epochs 20 --lr 0.01
               --init runs/base/checkpoint.pt --search-budget 8 --out runs/search
               (writes gates.csv and patterns.json)
  finetune:  python -m ds.train --backbone mobilenetv2_140 --dataset cifar10 --epochs 100 --lr 0.01
               --pattern runs/search/patterns.json:searched-k8 --init runs/base/checkpoint.pt
               --teacher runs/base/checkpoint.pt --out runs/ds-k8   (self-distillation)
  DDP:       torchrun --nproc_per_node 8 -m ds.train ...   (same arguments)
--batch-size is the global batch (split over processes); --lr applies to it.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ds import ddp
from ds.distill import distillation_loss

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 0.1                  # for the global batch
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4       # not applied to BN weights and biases
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    amp: str = "auto"                # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
    channels_last: bool | None = None   # None: on GPU only
    ema_decay: float | None = None
    distill_alpha: float = 0.7       # weight of the soft CE to the teacher
    distill_temperature: float = 1.0
    gate_lr: float = 0.01            # Adam on the gate scores, no weight decay
    grad_clip: float | None = None
    seed: int = 0
    progress: bool = True
    stop_after_epoch: int | None = None   # leave after this epoch (time-sliced jobs; resume tests)
    compile: bool = False            # torch.compile the training forward/backward (minutes to compile)


@dataclass
class FitResult:
    metrics: pd.DataFrame
    model: nn.Module                  # the trained model (unwrapped)
    ema: nn.Module | None = None
    gate_trajectory: pd.DataFrame | None = None


class CheckpointMismatch(RuntimeError):
    """A checkpoint was made for a different network than the one being built."""


# ---------------------------------------------------------------- small pieces

def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "off":
        return None
    if amp in ("bf16", "fp16"):
        return torch.bfloat16 if amp == "bf16" else torch.float16
    raise ValueError(f"amp must be auto, bf16, fp16 or off, not {amp!r}")


def _autocast(device: torch.device, dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only; none on BN parameters, biases, or gate scores."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or name.startswith("ds_gates."):
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(total_steps: int, warmup_steps: int):
    """Multiplier of the base lr at each step: linear warm-up, then cosine to zero."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


class ModelEma:
    """Exponential moving average of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
        floats = [(e, v) for e, v in pairs if e.dtype.is_floating_point]
        if floats:   # one fused kernel per list instead of one per tensor
            torch._foreach_lerp_([e for e, _ in floats], [v.detach() for _, v in floats], 1 - self.decay)
        for e, v in pairs:
            if not e.dtype.is_floating_point:
                e.copy_(v)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, rank: int = 0) -> None:
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write atomically: a reader never sees a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=False)


def _strip_prefixes(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def model_state(checkpoint_or_path) -> tuple[dict, dict]:
    """(state_dict, meta) from a ds checkpoint (path or dict) or a plain state_dict."""
    ckpt = load_checkpoint(checkpoint_or_path) if isinstance(checkpoint_or_path, (str, Path)) else checkpoint_or_path
    if "model" in ckpt and isinstance(ckpt["model"], dict):
        return _strip_prefixes(ckpt["model"]), ckpt.get("meta", {})
    return _strip_prefixes(ckpt), {}


def load_weights(model: nn.Module, state: dict, source: str = "checkpoint", meta: dict | None = None) -> nn.Module:
    """Load a state_dict strictly, ignoring gate scores; a mismatch names both networks."""
    state = {k: v for k, v in state.items() if not k.startswith("ds_gates.")}
    current = model.state_dict()
    own = {k for k in current if not k.startswith("ds_gates.")}
    missing, unexpected = sorted(own - state.keys()), sorted(state.keys() - own)
    wrong = [k for k in own & state.keys() if current[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        theirs = _describe_meta(meta or {})
        ours = _describe_meta(getattr(model, "ds_meta", {}))
        raise CheckpointMismatch(
            f"{source} does not match the model: checkpoint is {theirs}, model is {ours}. "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}. Use the checkpoint's backbone/pattern, or a checkpoint of this network.")
    model.load_state_dict(state, strict=False)
    return model


def _describe_meta(meta: dict) -> str:
    if not meta:
        return "an unknown network"
    return f"backbone={meta.get('backbone')} pattern={meta.get('pattern')} input_size={meta.get('input_size')}"


def _check_meta(saved: dict, wanted: dict, path) -> None:
    for key in ("backbone", "pattern", "num_classes", "input_size", "search_budget"):
        if key in saved and key in wanted and saved[key] != wanted[key]:
            raise CheckpointMismatch(f"{path} was made for {_describe_meta(saved)} (search_budget="
                                     f"{saved.get('search_budget')}), not for {_describe_meta(wanted)} "
                                     f"(search_budget={wanted.get('search_budget')}): {key} differs. "
                                     f"Use another --out directory or the checkpoint's settings.")


# ---------------------------------------------------------------- evaluate

@torch.no_grad()
def evaluate(model: nn.Module, loader, *, device=None, amp: str = "off") -> dict:
    """Mean cross-entropy and top-1 accuracy (%) over the whole loader, summed over the processes
    of the process group when there is one (each process holding its shard of the loader)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = amp_dtype(amp, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with _autocast(device, dtype):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(-1) == y).sum()
        count += len(y)
    model.train(was_training)
    loss_sum, correct, count = ddp.all_reduce_sum([loss_sum.item(), correct.item(), float(count)], device)
    return {"loss": loss_sum / max(count, 1), "acc": 100.0 * correct / max(count, 1), "n": int(count)}


# ---------------------------------------------------------------- fit

def fit(model: nn.Module, train_loader, test_loader=None, cfg: TrainConfig | None = None, *,
        out_dir: str | Path | None = None, teacher: nn.Module | None = None, resume: bool = False,
        dist: ddp.DistInfo | None = None, meta: dict | None = None) -> FitResult:
    """Train `model` in place; with `out_dir`, write checkpoint.pt and metrics.csv every epoch.

    teacher: enables self-distillation (cfg.distill_alpha * soft CE + rest * CE).
    model.ds_gates (set by ds.gating.add_gates): gate scores trained by their own Adam; their
    values after every step form `FitResult.gate_trajectory`.
    resume: continue from out_dir/checkpoint.pt (must have been made for the same network).
    meta: what the network is (backbone, pattern, ...); stored in and checked against checkpoints.
    """
    cfg = cfg or TrainConfig()
    dist = dist or ddp.DistInfo(device=next(model.parameters()).device)
    device = dist.device
    meta = dict(meta or getattr(model, "ds_meta", {}) or {})
    dtype = amp_dtype(cfg.amp, device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    out = Path(out_dir) if out_dir is not None else None

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    gates = getattr(model, "ds_gates", None)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError("the training loader yields no batch: lower the batch size or use more data")
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)))
    gate_optimizer = torch.optim.Adam(gates.parameters(), lr=cfg.gate_lr, weight_decay=0.0) if gates else None
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay else None
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if channels_last:
            teacher.to(memory_format=torch.channels_last)

    rows: list[dict] = []
    trajectory: list[list[float]] = [[0] + gates.scores.detach().cpu().tolist()] if gates else []
    start_epoch = 0
    ckpt_path = out / CHECKPOINT if out else None
    if resume and ckpt_path and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        _check_meta(ckpt.get("meta", {}), meta, ckpt_path)
        load_weights(model, ckpt["model"], str(ckpt_path), ckpt.get("meta"))
        if gates:
            gates.load_state_dict({k[len("ds_gates."):]: v for k, v in ckpt["model"].items() if k.startswith("ds_gates.")})
            gate_optimizer.load_state_dict(ckpt["gate_optimizer"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
        rng = ckpt["rng"]
        set_rng_state(rng[dist.rank] if len(rng) == dist.world_size else rng[0])
        rows, trajectory = list(ckpt["metrics"]), list(ckpt.get("gate_trajectory", []))
        start_epoch = ckpt["epoch"] + 1
    else:
        seed_everything(cfg.seed, dist.rank)

    net = model
    if dist.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:   # evaluation stays eager: eval-mode BN would only add a second compiled graph
        net = torch.compile(net)

    for epoch in range(start_epoch, cfg.epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        epoch_scores: list[torch.Tensor] = []
        start = time.perf_counter()
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and dist.is_main))
        for x, y in bar:
            with _autocast(device, dtype):
                logits = net(x)
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(x)
                    loss = distillation_loss(logits, teacher_logits, y, cfg.distill_alpha,
                                             cfg.distill_temperature, cfg.label_smoothing)
                else:
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                if gates is not None:
                    loss = loss + gates.latency_penalty()
            optimizer.zero_grad(set_to_none=True)
            if gate_optimizer:
                gate_optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            if gate_optimizer:
                scaler.step(gate_optimizer)
            scaler.update()
            last_lr = optimizer.param_groups[0]["lr"]   # the lr this step used, for the metrics row
            scheduler.step()
            if ema is not None:
                ema.update(model)
            if gates is not None:   # kept on the device: no synchronization per step
                epoch_scores.append(gates.scores.detach().clone())
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(-1) == y).sum()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        for scores in torch.stack(epoch_scores).cpu().tolist() if epoch_scores else []:
            trajectory.append([len(trajectory)] + scores)
        loss_total, correct_total, seen_total = ddp.all_reduce_sum(
            [loss_sum.item(), correct.item(), float(seen)], device)
        if dist.distributed:   # every rank evaluates (and rank 0 saves) the same BN statistics
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, 0)
        row = {"epoch": epoch + 1, "train_loss": loss_total / seen_total,
               "train_acc": 100.0 * correct_total / seen_total,
               "lr": last_lr, "seconds": seconds, "images_per_s": seen_total / seconds}
        if test_loader is not None:
            test = evaluate(model, test_loader, device=device, amp=cfg.amp)
            row.update(test_loss=test["loss"], test_acc=test["acc"])
            if ema is not None:
                test = evaluate(ema.module, test_loader, device=device, amp=cfg.amp)
                row.update(ema_test_loss=test["loss"], ema_test_acc=test["acc"])
        rows.append(row)
        rngs = _gather_rng(dist)
        if out is not None and dist.is_main:
            pd.DataFrame(rows).to_csv(out / METRICS, index=False)
            save_checkpoint({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "ema": ema.module.state_dict() if ema else None,
                "gate_optimizer": gate_optimizer.state_dict() if gate_optimizer else None,
                "gate_trajectory": trajectory, "metrics": rows, "rng": rngs, "epoch": epoch,
                "config": asdict(cfg), "meta": meta}, ckpt_path)
        if dist.is_main:   # one log line per epoch, progress bars or not
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        ddp.barrier()
        if cfg.stop_after_epoch is not None and epoch + 1 >= cfg.stop_after_epoch:
            break

    traj = None
    if gates is not None:
        traj = pd.DataFrame(trajectory, columns=["step"] + [f"block_{i}" for i in getattr(model, "ds_searched", range(gates.scores.numel()))])
        traj["step"] = traj["step"].astype(int)
    return FitResult(pd.DataFrame(rows), model, ema.module if ema else None, traj)


def _gather_rng(dist: ddp.DistInfo) -> list[dict]:
    """RNG states of every process (index = rank), for an exact resume."""
    state = rng_state()
    if not dist.distributed:
        return [state]
    states = [None] * dist.world_size
    torch.distributed.all_gather_object(states, state)
    return states


# ---------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ds.train", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", required=True, help="timm model name or tv_mobilenet_v2")
    p.add_argument("--dataset", required=True, choices=["cifar10", "cifar100", "imagefolder", "fake"])
    p.add_argument("--data-dir", help="dataset directory (default: $DS_DATA, else data/); required for imagefolder")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR when absent")
    p.add_argument("--input-size", type=int, default=None, help="default: 32 for CIFAR/fake, 224 for imagefolder")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128, help="global batch, split over processes")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--ema-decay", type=float, default=None)
    p.add_argument("--cutout", type=int, default=0, help="cutout square size in pixels (0: off)")
    p.add_argument("--pattern", help="pattern name (ds.PATTERNS), JSON file (a list, or a dict with one entry / "
                                     "FILE:KEY), or a 0/1 list such as 0,1,1,...")
    p.add_argument("--init", help="checkpoint of the base network to start from (loaded before the pattern)")
    p.add_argument("--teacher", help="checkpoint of the teacher (the original network): enables self-distillation")
    p.add_argument("--distill-alpha", type=float, default=0.7)
    p.add_argument("--distill-temperature", type=float, default=1.0)
    p.add_argument("--search-budget", type=int, help="run the gate search: K blocks keep their activations")
    p.add_argument("--gate-lr", type=float, default=0.01)
    p.add_argument("--latency-table", help="JSON of time saved per block (see ds.gating.load_latency_table)")
    p.add_argument("--latency-weight", type=float, default=0.0)
    p.add_argument("--limit-train", type=int, help="use a random subset of N training images")
    p.add_argument("--limit-test", type=int, help="use a random subset of N test images")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers (imagefolder)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--stop-after-epoch", type=int, help="leave after this epoch (resume later with --resume)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step (GPU speed)")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_pattern(spec: str | None, model: nn.Module) -> list[int] | None:
    """`--pattern` as a 0/1 list: a name in ds.PATTERNS, a JSON file (a list, or a dict of
    patterns such as a search's patterns.json with FILE:KEY choosing one), or an inline 0/1 list
    ("0,1,1,..." or "011...")."""
    if spec is None:
        return None
    from ds.patterns import resolve_pattern

    num_switches = len(_switches(model))
    digits = spec.strip("[] ").replace(",", " ").split()   # an inline list; else a name or a file
    if len(digits) == 1 and set(digits[0]) <= {"0", "1"}:
        digits = list(digits[0])
    if digits and all(d in ("0", "1") for d in digits):
        return resolve_pattern(model, [int(d) for d in digits], num_switches)
    return resolve_pattern(model, spec, num_switches)   # a name or a JSON file (FILE:NAME)


def _switches(model):
    import ds
    return ds.switches(model)


def _data(args, dist: ddp.DistInfo, input_size: int, channels_last: bool):
    """(train loader, test loader, num_classes)."""
    from ds import data, loaders

    if args.dataset == "imagefolder":
        if not args.data_dir:
            raise ValueError("--dataset imagefolder needs --data-dir DIR holding train/ and val/")
        train_set, val_set = data.imagefolder_datasets(args.data_dir, input_size)
        num_classes = len(train_set.classes)
        if args.limit_train or args.limit_test:
            g = torch.Generator().manual_seed(args.seed)
            if args.limit_train:
                train_set = torch.utils.data.Subset(train_set, torch.randperm(len(train_set), generator=g)[:args.limit_train].tolist())
            if args.limit_test:
                val_set = torch.utils.data.Subset(val_set, torch.randperm(len(val_set), generator=g)[:args.limit_test].tolist())
        common = dict(device=dist.device, seed=args.seed, rank=dist.rank, world_size=dist.world_size,
                      workers=args.workers, channels_last=channels_last)
        return (loaders.FolderLoader(train_set, args.batch_size, train=True, **common),
                loaders.FolderLoader(val_set, args.batch_size, train=False, **common), num_classes)

    def load():
        if args.dataset == "fake":
            return data.fake_dataset(n_train=args.limit_train or 512, n_test=args.limit_test or 256,
                                     size=input_size, seed=args.seed)
        return data.load_dataset(args.dataset, args.data_dir, download=args.download)

    if dist.is_main:         # rank 0 decodes and caches first; the others then read the cache
        dataset = load()
    ddp.barrier()
    if not dist.is_main:
        dataset = load()
    if args.dataset != "fake":
        dataset = dataset.limit(args.limit_train, args.limit_test, seed=args.seed)
    if dataset.train_images.shape[1] != input_size:
        raise ValueError(f"{args.dataset} images are {dataset.train_images.shape[1]} px; use --input-size "
                         f"{dataset.train_images.shape[1]} (resizing small datasets is not supported)")
    common = dict(device=dist.device, seed=args.seed, rank=dist.rank, world_size=dist.world_size,
                  channels_last=channels_last)
    return (loaders.DeviceLoader(dataset.train_images, dataset.train_labels, args.batch_size, dataset.mean,
                                 dataset.std, train=True, cutout=args.cutout, **common),
            loaders.DeviceLoader(dataset.test_images, dataset.test_labels, args.batch_size, dataset.mean,
                                 dataset.std, train=False, **common), dataset.num_classes)


def build_model(backbone: str, num_classes: int, input_size: int, pattern=None, init=None) -> nn.Module:
    """The base network (weights from `init`, a checkpoint path or state_dict of the base network),
    then shrunk by `pattern` when given. Base weights are loaded before shrinking because
    ds.apply_pattern renames the removed blocks' parameters (blocks.i.j.* -> blocks.i.j.stages.*)."""
    import ds

    model = ds.create_model(backbone, num_classes=num_classes, input_size=input_size)
    model.ds_meta = {"backbone": backbone, "pattern": None, "num_classes": num_classes, "input_size": input_size}
    if init is not None:
        state, meta = model_state(init) if isinstance(init, (str, Path)) else (_strip_prefixes(init), {})
        if meta.get("pattern") not in (None, [1] * len(ds.switches(model))):
            raise CheckpointMismatch(f"--init {init} holds a shrunk network ({_describe_meta(meta)}); "
                                     f"--init wants the base {backbone} network")
        load_weights(model, state, f"--init {init}", meta)
    if pattern is not None:
        model = ds.apply_pattern(model, pattern)
        model.ds_meta = {"backbone": backbone, "pattern": list(pattern), "num_classes": num_classes,
                         "input_size": input_size}
    return model


def load_base_weights(shrunk: nn.Module, base_checkpoint) -> nn.Module:
    """Load the weights of a base (unshrunk) checkpoint into a model made by ds.apply_pattern.

    The shrunk model's parameters have other names; this rebuilds base + pattern from the
    checkpoint and copies the result in. `shrunk.ds_meta` must say backbone/pattern/sizes
    (models from `build_model` have it).
    """
    meta = getattr(shrunk, "ds_meta", None)
    if not meta:
        raise ValueError("the model has no ds_meta (backbone, pattern, num_classes, input_size); build it with build_model")
    rebuilt = build_model(meta["backbone"], meta["num_classes"], meta["input_size"], meta["pattern"], base_checkpoint)
    return load_weights(shrunk, rebuilt.state_dict(), "the rebuilt base network", rebuilt.ds_meta)


def build_teacher(path, backbone: str, num_classes: int, input_size: int) -> nn.Module:
    """The teacher from a checkpoint: the network its meta names (default: the base `backbone`)."""
    state, meta = model_state(path)
    teacher = build_model(meta.get("backbone", backbone), num_classes, input_size, meta.get("pattern"))
    return load_weights(teacher, state, f"--teacher {path}", meta).eval()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import ds

    if args.threads:
        torch.set_num_threads(args.threads)
    dist = ddp.init(args.device)
    seed_everything(args.seed)   # the same initial weights on every rank and every run
    try:
        input_size = args.input_size or (224 if args.dataset == "imagefolder" else 32)
        channels_last = dist.device.type == "cuda"
        torch.backends.cudnn.benchmark = dist.device.type == "cuda"   # fixed input sizes: autotune once
        if args.search_budget is not None and args.pattern:
            raise ValueError("--search-budget and --pattern exclude each other: search on the base network")
        train_loader, test_loader, num_classes = _data(args, dist, input_size, channels_last)
        probe = ds.create_model(args.backbone, num_classes=num_classes, input_size=input_size)
        pattern = parse_pattern(args.pattern, probe)
        model = build_model(args.backbone, num_classes, input_size, pattern, args.init)
        teacher = build_teacher(args.teacher, args.backbone, num_classes, input_size) if args.teacher else None
        cfg = TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                          warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, amp=args.amp,
                          channels_last=channels_last, ema_decay=args.ema_decay, distill_alpha=args.distill_alpha,
                          distill_temperature=args.distill_temperature, gate_lr=args.gate_lr, seed=args.seed,
                          progress=not args.no_progress, stop_after_epoch=args.stop_after_epoch,
                          compile=args.compile)
        meta = dict(model.ds_meta, search_budget=args.search_budget, args=vars(args))
        out = Path(args.out)
        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if not args.resume and (out / CHECKPOINT).exists():
                raise FileExistsError(f"{out / CHECKPOINT} exists: pass --resume to continue it, or another --out")
        ddp.barrier()
        if args.search_budget is not None:
            from ds import gating
            latency = gating.load_latency_table(args.latency_table) if args.latency_table else None
            result = gating.search(model, train_loader, test_loader, args.search_budget, cfg, out_dir=out,
                                   latency=latency, latency_weight=args.latency_weight, teacher=teacher,
                                   resume=args.resume, dist=dist, meta=meta)
            if dist.is_main:
                print(f"ranking (switch indices, keep first): {result.ranking}")
                print(f"pattern for budget {args.search_budget}: {result.pattern(args.search_budget)}")
        else:
            fit(model, train_loader, test_loader, cfg, out_dir=out, teacher=teacher, resume=args.resume,
                dist=dist, meta=meta)
    finally:
        ddp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
