import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ds import data
from ds.data import CIFAR10_CLASSES, DataError


def _write_archive(path: Path, per_class: int = 2, classes=CIFAR10_CLASSES, name_fn=None, size=(32, 32),
                   sidecar: bool = True):
    """A small archive in the shipped layout, with its sha256 beside it (as for an archive of your own)."""
    with tarfile.open(path, "w:xz") as tar:
        for split in ("train", "test"):
            for c, cls in enumerate(classes):
                for i in range(per_class):
                    name = name_fn(split, cls, i) if name_fn else f"cifar10/{split}/{cls}/{i:04d}.jpg"
                    buf = io.BytesIO()
                    Image.new("RGB", size, (20 * c, 100, 200)).save(buf, format="JPEG", quality=95)
                    payload = buf.getvalue()
                    info = tarfile.TarInfo(name)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    if sidecar:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")


def _write_batches(folder: Path, n: int = 10, files=None):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in files or [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": list(rng.integers(0, 10, n))}, f)


def test_archive_is_decoded_cached_and_reused(tmp_path):
    _write_archive(tmp_path / "cifar10-jpeg.tar.xz")
    d = data.load_cifar10(tmp_path)
    assert d.train_images.shape == (20, 32, 32, 3) and d.train_images.dtype == np.uint8
    assert d.test_images.shape == (20, 32, 32, 3)
    assert list(d.train_labels) == [c for c in range(10) for _ in range(2)]
    assert d.classes == CIFAR10_CLASSES and d.num_classes == 10
    caches = list((tmp_path / "cache").glob("cifar10-uint8-*.npz"))
    assert len(caches) == 1
    # the cache is read instead of the archive: a second load equals the first even when the
    # cache's content is the only source (the archive's images are overwritten, size/mtime kept)
    archive = tmp_path / "cifar10-jpeg.tar.xz"
    stat = archive.stat()
    archive.write_bytes(b"x" * stat.st_size)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = data.load_cifar10(tmp_path)
    assert np.array_equal(again.train_images, d.train_images)


def test_archive_changed_after_caching_is_caught(tmp_path):
    archive = tmp_path / "cifar10-jpeg.tar.xz"
    _write_archive(archive)
    data.load_cifar10(tmp_path)
    archive.write_bytes(b"x" * archive.stat().st_size)   # same size, new content and mtime
    msg = _error(data.load_cifar10, tmp_path)
    assert "corrupt" in msg and str(archive) in msg and "git checkout" in msg


def test_archive_without_the_shipped_sha256_is_refused(tmp_path):
    _write_archive(tmp_path / "cifar10-jpeg.tar.xz", per_class=1, sidecar=False)
    msg = _error(data.load_cifar10, tmp_path)
    assert data.CIFAR10_SHA256 in msg and "cifar10-jpeg.tar.xz.sha256" in msg
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npz"))


def test_bad_sha256_sidecar_is_named(tmp_path):
    _write_archive(tmp_path / "cifar10-jpeg.tar.xz", per_class=1)
    (tmp_path / "cifar10-jpeg.tar.xz.sha256").write_text("not-a-hash\n")
    assert "does not start with a sha256" in _error(data.load_cifar10, tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing-key"])
def test_unreadable_cache_is_rebuilt_with_a_warning(tmp_path, damage):
    _write_archive(tmp_path / "cifar10-jpeg.tar.xz", per_class=1)
    first = data.load_cifar10(tmp_path)
    (cache,) = (tmp_path / "cache").glob("cifar10-uint8-*.npz")
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[:1000])
    elif damage == "garbage":
        cache.write_bytes(b"\0" * 5000)
    else:
        np.savez(cache, train_images=first.train_images)
    with pytest.warns(UserWarning, match="cannot be read.*rebuilding"):
        again = data.load_cifar10(tmp_path)
    assert np.array_equal(again.train_images, first.train_images) and again.mean == first.mean
    with np.load(cache) as z:   # the rebuilt cache is whole again
        assert np.array_equal(z["test_labels"], first.test_labels)


def test_unwritable_cache_beside_the_data_falls_back(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache folder would go")
    assert data.cache_dir(tmp_path) == data.REPO_ROOT / "data" / "cache"


def test_no_writable_cache_anywhere_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "repo")   # the repository's data/ stands in a temp dir
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "data").write_text("file")
    (tmp_path / "cache").write_text("file")
    (tmp_path / "xdg").write_text("file")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    msg = _error(data.cache_dir, tmp_path)
    assert "no writable cache directory" in msg and "XDG_CACHE_HOME" in msg and str(tmp_path / "xdg") in msg


def test_torchvision_layout_is_read(tmp_path):
    _write_batches(tmp_path / "cifar-10-batches-py")
    d = data.load_cifar10(tmp_path)
    assert d.train_images.shape == (50, 32, 32, 3) and d.test_images.shape == (10, 32, 32, 3)
    # CHW rows of the pickle become HWC pixels
    first = data.read_data_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1")[b"data"][0]
    assert np.array_equal(d.train_images[0], first.reshape(3, 32, 32).transpose(1, 2, 0))


def test_ds_data_environment_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("DS_DATA", str(tmp_path))
    assert data.data_root() == tmp_path
    monkeypatch.delenv("DS_DATA")
    assert data.data_root() == data.REPO_ROOT / "data"


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        fn(*args, **kwargs)
    return str(err.value)


def test_missing_directory_names_ds_data_layouts_and_what_was_found(monkeypatch, tmp_path):
    monkeypatch.setenv("DS_DATA", str(tmp_path / "nowhere"))
    msg = _error(data.load_cifar10)
    assert "DS_DATA=" in msg and "nowhere" in msg and "does not exist" in msg
    assert "cifar10-jpeg.tar.xz" in msg and "cifar-10-batches-py" in msg


def test_directory_without_data_lists_its_contents(monkeypatch, tmp_path):
    (tmp_path / "something-else.txt").write_text("hi")
    monkeypatch.setenv("DS_DATA", str(tmp_path))
    msg = _error(data.load_cifar10)
    assert "something-else.txt" in msg and "DS_DATA" in msg


def test_unset_ds_data_is_named(monkeypatch, tmp_path):
    monkeypatch.delenv("DS_DATA", raising=False)
    msg = _error(data.load_cifar100, tmp_path)
    assert "DS_DATA is unset" in msg and "cifar-100-python" in msg


def test_archive_that_is_not_an_archive(tmp_path):
    archive = tmp_path / "cifar10-jpeg.tar.xz"
    archive.write_bytes(b"not an archive at all")
    msg = _error(data.load_cifar10, tmp_path)
    assert "corrupt" in msg and str(archive) in msg
    # with a matching sha256 beside it, the archive is opened and found unreadable
    (tmp_path / "cifar10-jpeg.tar.xz.sha256").write_text(hashlib.sha256(archive.read_bytes()).hexdigest())
    msg = _error(data.load_cifar10, tmp_path)
    assert "cannot be read" in msg and "cifar10-jpeg.tar.xz" in msg


def test_archive_with_wrong_layout(tmp_path):
    _write_archive(tmp_path / "cifar10-jpeg.tar.xz", per_class=1,
                   name_fn=lambda split, cls, i: f"images/{split}/{cls}/{i}.jpg")
    assert "unexpected path" in _error(data.load_cifar10, tmp_path)


def test_archive_with_missing_classes(tmp_path):
    _write_archive(tmp_path / "cifar10-jpeg.tar.xz", per_class=1, classes=CIFAR10_CLASSES[:9])
    assert "expected" in _error(data.load_cifar10, tmp_path)


def test_archive_with_wrong_image_size(tmp_path):
    _write_archive(tmp_path / "cifar10-jpeg.tar.xz", per_class=1, size=(24, 24))
    assert "not 32x32" in _error(data.load_cifar10, tmp_path)


def test_torchvision_layout_with_missing_batches(tmp_path):
    _write_batches(tmp_path / "cifar-10-batches-py", files=["data_batch_1"])
    assert "lacks" in _error(data.load_cifar10, tmp_path)


def test_torchvision_layout_with_corrupt_batch(tmp_path):
    _write_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    assert "cannot be read" in _error(data.load_cifar10, tmp_path)


def test_imagefolder_without_train_and_val(tmp_path):
    (tmp_path / "train").mkdir()
    assert "train/" in _error(data.imagefolder_datasets, tmp_path)


def test_unknown_dataset():
    assert "unknown dataset" in _error(data.load_dataset, "mnist")


def test_fake_dataset_is_deterministic_and_limit_keeps_statistics():
    a, b = data.fake_dataset(64, 32, seed=3), data.fake_dataset(64, 32, seed=3)
    assert np.array_equal(a.train_images, b.train_images)
    small = a.limit(16, 8, seed=1)
    assert len(small.train_labels) == 16 and len(small.test_labels) == 8 and small.mean == a.mean


@pytest.mark.skipif(not (data.data_root() / data.CIFAR10_ARCHIVE).is_file(),
                    reason="neither DS_DATA nor the repository's data/ holds cifar10-jpeg.tar.xz")
def test_real_cifar10():
    d = data.load_cifar10()
    assert d.train_images.shape == (50000, 32, 32, 3) and d.test_images.shape == (10000, 32, 32, 3)
    assert np.bincount(d.train_labels).tolist() == [5000] * 10
    # the statistics of the JPEG copy, as data/README.md states them
    assert np.allclose(d.mean, (0.4913, 0.4821, 0.4465), atol=2e-3)
    assert np.allclose(d.std, (0.2452, 0.2428, 0.2606), atol=2e-3)


# ---------------------------------------------------------------- prepare

def test_prepare_subsets_and_downsamples_by_area(tmp_path):
    _write_archive(tmp_path / "cifar10-jpeg.tar.xz", per_class=3)
    full = data.load_cifar10(tmp_path)
    d = data.prepare("cifar10", tmp_path, 16, limit_train=12, limit_test=5, seed=1)
    assert d.train_images.shape == (12, 16, 16, 3) and d.test_images.shape == (5, 16, 16, 3)
    assert d.train_images.dtype == np.uint8 and d.mean == full.mean
    # same subset as ArrayDataset.limit; area interpolation by 2 is the mean of each 2x2 block
    sub = full.limit(12, 5, seed=1)
    blocks = sub.train_images.astype(np.float64).reshape(12, 16, 2, 16, 2, 3).mean(axis=(2, 4))
    assert np.abs(d.train_images.astype(np.float64) - blocks).max() <= 0.5 + 1e-9
    assert np.array_equal(d.train_labels, sub.train_labels)
    # the same call gives the same images
    again = data.prepare("cifar10", tmp_path, 16, limit_train=12, limit_test=5, seed=1)
    assert np.array_equal(again.train_images, d.train_images)


def test_prepare_keeps_stored_size_without_resizing(tmp_path):
    _write_archive(tmp_path / "cifar10-jpeg.tar.xz", per_class=1)
    d = data.prepare("cifar10", tmp_path, 32)
    assert np.array_equal(d.train_images, data.load_cifar10(tmp_path).train_images)


def test_prepare_auto_falls_back_to_synthetic_only_when_nothing_is_there(tmp_path):
    with pytest.warns(UserWarning, match="no CIFAR-10 found"):
        d = data.prepare("auto", tmp_path, 16, limit_train=40, limit_test=20)
    assert d.name == "fake" and d.train_images.shape == (40, 16, 16, 3) and len(d.test_labels) == 20


def test_prepare_auto_does_not_hide_a_broken_archive(tmp_path):
    (tmp_path / "cifar10-jpeg.tar.xz").write_bytes(b"not an archive at all")
    msg = _error(data.prepare, "auto", tmp_path, 16)
    assert "corrupt" in msg and "cifar10-jpeg.tar.xz" in msg


def test_prepare_cifar10_without_data_raises(tmp_path):
    with pytest.raises(data.DataNotFound):
        data.prepare("cifar10", tmp_path, 16)


@pytest.mark.parametrize("size", [0, -4, 16.0, "16", True])
def test_prepare_rejects_bad_sizes(tmp_path, size):
    assert "input_size must be a positive int" in _error(data.prepare, "fake", tmp_path, size)


def test_prepare_rejects_unknown_dataset_and_bad_limits(tmp_path):
    assert "unknown dataset" in _error(data.prepare, "mnist", tmp_path, 16)
    assert "limit_train" in _error(data.prepare, "fake", tmp_path, 16, limit_train=0)


def test_fake_dataset_any_size():
    assert data.fake_dataset(4, 2, size=30).train_images.shape == (4, 30, 30, 3)


def test_study_load_data_is_prepare(tmp_path):
    from ds.study.chapter import load_data
    _write_archive(tmp_path / "cifar10-jpeg.tar.xz", per_class=2)
    a = load_data("cifar10", str(tmp_path), 16, 8, 4, seed=2)
    b = data.prepare("cifar10", tmp_path, 16, 8, 4, seed=2)
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_labels, b.test_labels)


def test_repr_is_a_summary():
    assert repr(data.fake_dataset(8, 4, size=16)) == "ArrayDataset('fake': 8 train / 4 test images of 16x16 px, 10 classes)"


def test_cifar100_without_class_names_says_so(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         b"fine_labels": [0, 1, 2, 99]}, f)
    with pytest.warns(UserWarning, match="class names cannot be read"):
        d = data.load_cifar100(tmp_path)
    assert d.classes[99] == "class_99" and d.train_images.shape == (4, 32, 32, 3)
