import pytest
import torch

from ds.loaders import DeviceLoader
from train_fixtures import fake_data  # noqa: F401 (fixture)


def _loader(d, **kw):
    args = dict(train=True, seed=0)
    args.update(kw)
    return DeviceLoader(d.train_images, d.train_labels, 32, d.mean, d.std, **args)


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_same_seed_and_epoch_give_the_same_batches(fake_data):
    a, b = _loader(fake_data), _loader(fake_data)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(_batches(a), _batches(b)))
    b.set_epoch(1)
    assert not torch.equal(_batches(a)[0][0], _batches(b)[0][0])


def test_crop_and_flip_take_pixels_from_the_padded_image(fake_data):
    loader = _loader(fake_data, pad=4)
    mean = torch.tensor(fake_data.mean).view(3, 1, 1) * 255
    std = torch.tensor(fake_data.std).view(3, 1, 1) * 255
    order = loader._indices()
    x, _ = next(iter(loader))
    for k in range(4):
        pixels = (x[k] * std + mean).round()
        padded = torch.nn.functional.pad(torch.as_tensor(fake_data.train_images[order[k].item()]).permute(2, 0, 1).float(), (4,) * 4)
        h = w = pixels.shape[-1]
        candidates = [padded[:, i:i + h, j:j + w] for i in range(9) for j in range(9)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(pixels, c) for c in candidates)


def test_eval_loader_is_in_order_and_unaugmented(fake_data):
    loader = DeviceLoader(fake_data.test_images, fake_data.test_labels, 32, fake_data.mean, fake_data.std, train=False)
    x = torch.cat([b for b, _ in loader])
    expected = (torch.as_tensor(fake_data.test_images).permute(0, 3, 1, 2).float()
                - torch.tensor(fake_data.mean).view(1, 3, 1, 1) * 255) / (torch.tensor(fake_data.std).view(1, 3, 1, 1) * 255)
    assert torch.allclose(x, expected, atol=1e-5)


def test_ranks_split_the_data(fake_data):
    ranks = [_loader(fake_data, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])      # equal steps, or DDP would hang
    seen = [i.item() for r in ranks for i in r._indices()]
    assert sorted(seen) == list(range(len(fake_data.train_labels)))
    tests = [DeviceLoader(fake_data.test_images, fake_data.test_labels, 32, fake_data.mean, fake_data.std,
                          train=False, rank=r, world_size=2) for r in range(2)]
    assert sum(t.num_samples for t in tests) == len(fake_data.test_labels)


def test_cutout_zeroes_a_square(fake_data):
    x, _ = next(iter(_loader(fake_data, cutout=8, pad=0, flip=False)))
    zeros = (x == 0).all(1).sum(dim=(1, 2))
    assert (zeros > 0).all() and (zeros <= 64).all()


def test_bad_batch_size_is_explained(fake_data):
    with pytest.raises(ValueError, match="divisible"):
        _loader(fake_data, world_size=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        DeviceLoader(fake_data.train_images[:8], fake_data.train_labels[:8], 32, fake_data.mean, fake_data.std, train=True)
    for bad in (0, -4, 2.5):
        with pytest.raises(ValueError, match=f"batch size must be a positive integer, got {bad}"):
            DeviceLoader(fake_data.train_images, fake_data.train_labels, bad, fake_data.mean, fake_data.std, train=True)
