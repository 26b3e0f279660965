"""Datasets: where they come from, the uint8 cache, and normalization statistics.

Small datasets (CIFAR-10/100, a synthetic one for tests) are returned as uint8 arrays
(`ArrayDataset`) that `ds.loaders.DeviceLoader` keeps whole on the device. ImageNet-style data
is a torchvision ImageFolder with the standard 224 pipeline (`imagefolder_datasets`).

Where data is looked for: the directory `DS_DATA` names, else `data/` in the repository root,
which ships CIFAR-10 as `cifar10-jpeg.tar.xz` (data/README.md). The archive's sha256 is checked
before first use; decoded arrays are cached in `<data dir>/cache`, else the repository's
`data/cache`, else `~/.cache/ds`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pickle
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms as T
from PIL import Image
from torchvision.datasets import ImageFolder

from .provenance import REPO_ROOT, file_sha256

CIFAR10_ARCHIVE = "cifar10-jpeg.tar.xz"
# sha256 of the archive shipped in data/ (data/README.md); an archive of your own: write its sha256
# to `cifar10-jpeg.tar.xz.sha256` beside it (sha256sum's format) and that is checked instead.
CIFAR10_SHA256 = "02c1c449af081d88518339da0b61ad3ca42f9f1c6d00390c1e3c470eb4b4e0c2"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(RuntimeError):
    """A dataset is missing or malformed; the message names DS_DATA, the accepted layouts and what was found."""


class DataNotFound(DataError):
    """No data of any accepted layout is there at all (as opposed to data that is there but broken)."""


@dataclass
class ArrayDataset:
    """A small image dataset held as uint8 arrays, images NHWC."""
    name: str
    train_images: np.ndarray   # (N, H, W, 3) uint8
    train_labels: np.ndarray   # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, float, float]   # per channel, of the training split, in [0, 1]
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        size = "x".join(str(v) for v in self.train_images.shape[1:3])
        return (f"ArrayDataset({self.name!r}: {len(self.train_labels)} train / {len(self.test_labels)} test "
                f"images of {size} px, {self.num_classes} classes)")

    def limit(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "ArrayDataset":
        """A random subset (same subset for the same seed); statistics stay those of the full set."""
        rng = np.random.default_rng(seed)
        tr = np.sort(rng.permutation(len(self.train_labels))[:n_train]) if n_train else slice(None)
        te = np.sort(rng.permutation(len(self.test_labels))[:n_test]) if n_test else slice(None)
        return ArrayDataset(self.name, self.train_images[tr], self.train_labels[tr],
                            self.test_images[te], self.test_labels[te], self.classes, self.mean, self.std)


# ---------------------------------------------------------------- locations

def data_root(root: str | os.PathLike | None = None) -> Path:
    """`root` if given, else $DS_DATA, else `data/` in the repository root."""
    if root is not None:
        return Path(root)
    env = os.environ.get("DS_DATA")
    return Path(env) if env else REPO_ROOT / "data"


def _cache_candidates(root: Path) -> list[Path]:
    """Where caches may live, in order: beside the data, the repository's data/cache, the user cache."""
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ds"
    out = []
    for candidate in (root / "cache", REPO_ROOT / "data" / "cache", user):
        if candidate not in out:
            out.append(candidate)
    return out


def cache_dir(root: Path) -> Path:
    """The first writable of `<root>/cache`, the repository's `data/cache` and `~/.cache/ds`."""
    tried = []
    for candidate in _cache_candidates(root):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            probe = candidate / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink()
            return candidate
        except OSError as err:
            tried.append(f"{candidate} ({err.strerror or err})")
    raise DataError("no writable cache directory for the decoded dataset; tried: " + "; ".join(tried)
                    + ". Fix: make one of them writable, or set XDG_CACHE_HOME to a writable directory.")


def _describe(root: Path) -> str:
    if not root.exists():
        return f"{root} does not exist"
    if not root.is_dir():
        return f"{root} is not a directory"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    shown = ", ".join(entries[:20]) + (f", ... ({len(entries)} entries)" if len(entries) > 20 else "")
    return f"{root} holds: {shown or 'nothing'}"


def _missing(dataset: str, root: Path, layouts: list[str], problem: str = "") -> DataError:
    """The error for `dataset` under `root`: DataNotFound when `problem` is empty (nothing there)."""
    env = os.environ.get("DS_DATA")
    where = f"DS_DATA={env}" if env else f"DS_DATA is unset, so the default {REPO_ROOT / 'data'} was used"
    lines = [f"{dataset}: {problem or 'no data found'} in {root} ({where}).",
             "Accepted layouts:"] + [f"  - {lay}" for lay in layouts] + [
             f"Found: {_describe(root)}.",
             f"Fix: set DS_DATA to the directory holding one of these layouts, or unset it to use the repository's "
             f"data/{CIFAR10_ARCHIVE} (or pass download=True / --download where the network allows)."]
    return (DataError if problem else DataNotFound)("\n".join(lines))


def channel_stats(images: np.ndarray, chunk: int = 5000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (over all pixels) of uint8 NHWC images, in [0, 1]."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].reshape(-1, 3).astype(np.float64)
        total += block.sum(0)
        total_sq += (block ** 2).sum(0)
    n = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 0.0))
    return tuple(float(v) for v in mean / 255), tuple(float(v) for v in std / 255)


def _save_npz_atomic(path: Path, **arrays) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


# ---------------------------------------------------------------- CIFAR-10

_CIFAR10_LAYOUTS = [
    f"{CIFAR10_ARCHIVE}: cifar10/{{train,test}}/<class>/<NNNN>.jpg, 10 class folders (decoded once, cached as uint8)",
    "cifar-10-batches-py/: torchvision's layout (data_batch_1..5, test_batch, batches.meta)",
    "download=True (CLI --download): torchvision downloads cifar-10-batches-py into the cache directory",
]


def _decode_cifar10_archive(archive: Path, root: Path) -> dict[str, np.ndarray]:
    found: dict[str, list[tuple[str, str, np.ndarray]]] = {"train": [], "test": []}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = member.name.strip("./").split("/")
                if not member.isfile() or not parts[-1].lower().endswith(".jpg"):
                    continue
                if len(parts) != 4 or parts[0] != "cifar10" or parts[1] not in found:
                    raise _missing("CIFAR-10", root, _CIFAR10_LAYOUTS,
                                   f"{archive.name} holds an unexpected path {member.name!r}")
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                    pixels = np.asarray(img.convert("RGB"))
                if pixels.shape != (32, 32, 3):
                    raise _missing("CIFAR-10", root, _CIFAR10_LAYOUTS,
                                   f"{member.name} in {archive.name} is {pixels.shape}, not 32x32 RGB")
                found[parts[1]].append((parts[2], parts[3], pixels))
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        raise _missing("CIFAR-10", root, _CIFAR10_LAYOUTS, f"{archive.name} cannot be read ({err})") from err

    arrays = {}
    for split, items in found.items():
        classes = sorted({c for c, _, _ in items})
        if tuple(classes) != CIFAR10_CLASSES:
            raise _missing("CIFAR-10", root, _CIFAR10_LAYOUTS,
                           f"{archive.name}: split {split!r} has classes {classes}, expected {list(CIFAR10_CLASSES)}")
        items.sort(key=lambda item: (item[0], item[1]))
        arrays[f"{split}_images"] = np.stack([p for _, _, p in items])
        arrays[f"{split}_labels"] = np.array([CIFAR10_CLASSES.index(c) for c, _, _ in items], dtype=np.int64)
    return arrays


# What torchvision's CIFAR batch files may name: the functions and classes that rebuild numpy
# arrays (the images) and numpy scalars (labels written from numpy), and nothing else; their
# labels and file names are otherwise lists, ints and bytes.
_CIFAR_PICKLE_GLOBALS = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                         for name in ("_reconstruct", "scalar")} | \
                        {(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")} | \
                        {("numpy", "ndarray"), ("numpy", "dtype")}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler for data files: it rebuilds numpy arrays and plain containers and refuses any
    other object a pickle names, so reading a hostile file runs none of its code."""

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch file never holds "
                                     f"(only numpy arrays, lists and bytes); it was not read")


def read_data_pickle(path: Path):
    """The contents of a pickled data file (torchvision's CIFAR batches), read with `_ArrayUnpickler`;
    arrays of Python objects are refused too (they are not data)."""
    with open(path, "rb") as f:
        content = _ArrayUnpickler(f, encoding="bytes").load()
    values = content.values() if isinstance(content, dict) else [content]
    if any(isinstance(v, np.ndarray) and v.dtype.hasobject for v in values):
        raise pickle.UnpicklingError("it holds an array of Python objects, not numbers")
    return content


def _read_pickled_batches(folder: Path, files: dict[str, list[str]], label_key: bytes) -> dict[str, np.ndarray]:
    arrays = {}
    for split, names in files.items():
        images, labels = [], []
        for name in names:
            batch = read_data_pickle(folder / name)
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        arrays[f"{split}_images"] = np.ascontiguousarray(np.concatenate(images))
        arrays[f"{split}_labels"] = np.concatenate(labels)
    return arrays


def _read_torchvision_cifar(folder: Path, root: Path, dataset: str, layouts: list[str]) -> dict[str, np.ndarray]:
    if dataset == "CIFAR-10":
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        label_key = b"labels"
    else:
        files = {"train": ["train"], "test": ["test"]}
        label_key = b"fine_labels"
    absent = [n for names in files.values() for n in names if not (folder / n).is_file()]
    if absent:
        raise _missing(dataset, root, layouts, f"{folder.name}/ lacks {', '.join(absent)}")
    try:
        return _read_pickled_batches(folder, files, label_key)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, OSError) as err:
        raise _missing(dataset, root, layouts, f"{folder.name}/ cannot be read ({type(err).__name__}: {err})") from err


def _expected_sha256(archive: Path) -> str:
    """The sha256 that `archive` must have: from `<archive>.sha256` beside it, else CIFAR10_SHA256."""
    sidecar = archive.with_name(archive.name + ".sha256")
    if not sidecar.is_file():
        return CIFAR10_SHA256
    words = sidecar.read_text().split()
    if not words or len(words[0]) != 64 or any(c not in "0123456789abcdef" for c in words[0].lower()):
        raise DataError(f"{sidecar} does not start with a sha256 (64 hex digits). Fix: write "
                        f"`sha256sum {archive.name} > {sidecar.name}` in {archive.parent}, or delete it "
                        f"to check against the shipped archive's sha256.")
    return words[0].lower()


def verify_archive(archive: Path) -> str:
    """`archive`'s sha256, checked against the expected one; a mismatch is a DataError.

    Hashing 18.6 MB takes 0.03 to 0.1 s here, so a check is remembered: `cache/<name>.verified.json`
    records path, size, modification time and sha256, and a later call whose archive has the same
    path, size and modification time does not hash it again.
    """
    expected = _expected_sha256(archive)
    stat = archive.stat()
    key = {"path": str(archive.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": expected}
    stamps = [c / f"{archive.name}.verified.json" for c in _cache_candidates(archive.parent)]
    for stamp in stamps:
        try:
            if json.loads(stamp.read_text()) == key:
                return expected
        except (OSError, ValueError):
            continue   # no stamp or an unreadable one: hash the archive
    actual = file_sha256(archive)
    if actual != expected:
        raise DataError(
            f"{archive} is corrupt or not the expected file: its sha256 is {actual}, expected {expected}.\n"
            f"Fix: restore it (in a clone of the repository: `git checkout -- data/{archive.name}`), or set "
            f"DS_DATA to a directory holding a good copy. For an archive of your own, write its sha256 "
            f"to {archive.name}.sha256 beside it. No data was loaded.")
    stamp = cache_dir(archive.parent) / f"{archive.name}.verified.json"
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(key))
    os.replace(tmp, stamp)
    return actual


_CACHE_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "mean", "std")


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None (with a warning) when it cannot be read whole."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in _CACHE_KEYS}
        if arrays["train_images"].shape[0] != arrays["train_labels"].shape[0] or \
                arrays["test_images"].shape[0] != arrays["test_labels"].shape[0]:
            raise ValueError("images and labels differ in length")
        return arrays
    except Exception as err:   # a torn or foreign file fails in many ways (BadZipFile, KeyError, ...)
        warnings.warn(f"the dataset cache {path} cannot be read ({type(err).__name__}: {err}); "
                      f"rebuilding it from the archive", stacklevel=3)
        return None


def _load_cached(name: str, archive: Path, build) -> dict[str, np.ndarray]:
    """Arrays of `name` from the uint8 cache of `archive` (checked by sha256), built and cached when needed.

    The cache is keyed by the archive's sha256 and read from any cache directory that holds it;
    an unreadable one is rebuilt (with a warning) into the first writable cache directory.
    """
    sha = verify_archive(archive)
    filename = f"{name}-uint8-v3-{sha[:16]}.npz"   # v3: keyed by sha256, holds mean/std
    for folder in _cache_candidates(archive.parent):
        if (folder / filename).is_file():
            arrays = _read_cache(folder / filename)
            if arrays is not None:
                return arrays
            with contextlib.suppress(OSError):   # read-only: the rebuilt file goes elsewhere
                (folder / filename).unlink()
    arrays = build()
    arrays["mean"], arrays["std"] = map(np.array, channel_stats(arrays["train_images"]))   # 3 s to recompute
    _save_npz_atomic(cache_dir(archive.parent) / filename, **arrays)
    return arrays


def load_cifar10(root: str | os.PathLike | None = None, download: bool = False) -> ArrayDataset:
    """CIFAR-10 as uint8 arrays, from (in order) the JPEG archive, torchvision's layout, or a download."""
    root = data_root(root)
    archive = root / CIFAR10_ARCHIVE
    batches = root / "cifar-10-batches-py"
    if archive.is_file():
        arrays = _load_cached("cifar10", archive, lambda: _decode_cifar10_archive(archive, root))
    elif batches.is_dir():
        arrays = _read_torchvision_cifar(batches, root, "CIFAR-10", _CIFAR10_LAYOUTS)
    elif download:
        arrays = _download_torchvision("CIFAR10", root, "cifar-10-batches-py", "CIFAR-10", _CIFAR10_LAYOUTS)
    else:
        raise _missing("CIFAR-10", root, _CIFAR10_LAYOUTS)
    return _array_dataset("cifar10", arrays, CIFAR10_CLASSES)


_CIFAR100_LAYOUTS = [
    "cifar-100-python/: torchvision's layout (train, test, meta)",
    "download=True (CLI --download): torchvision downloads cifar-100-python into the cache directory",
]


def load_cifar100(root: str | os.PathLike | None = None, download: bool = False) -> ArrayDataset:
    """CIFAR-100 (fine labels) as uint8 arrays, from torchvision's layout or a download."""
    root = data_root(root)
    folder = root / "cifar-100-python"
    if folder.is_dir():
        arrays = _read_torchvision_cifar(folder, root, "CIFAR-100", _CIFAR100_LAYOUTS)
    elif download:
        arrays = _download_torchvision("CIFAR100", root, "cifar-100-python", "CIFAR-100", _CIFAR100_LAYOUTS)
        folder = cache_dir(root) / "cifar-100-python"
    else:
        raise _missing("CIFAR-100", root, _CIFAR100_LAYOUTS)
    classes = tuple(f"class_{i}" for i in range(100))
    try:
        classes = tuple(n.decode() for n in read_data_pickle(folder / "meta")[b"fine_label_names"])
    except (OSError, KeyError, pickle.UnpicklingError, EOFError) as err:
        warnings.warn(f"CIFAR-100 class names cannot be read from {folder / 'meta'} ({type(err).__name__}: {err}); "
                      f"using class_0..class_99", stacklevel=2)
    return _array_dataset("cifar100", arrays, classes)


def _download_torchvision(cls_name: str, root: Path, folder: str, dataset: str, layouts: list[str]) -> dict:
    target = cache_dir(root)
    try:
        getattr(torchvision.datasets, cls_name)(str(target), train=True, download=True)
    except Exception as err:  # network errors come in many types
        raise _missing(dataset, root, layouts, f"download into {target} failed ({err})") from err
    return _read_torchvision_cifar(target / folder, root, dataset, layouts)


def _array_dataset(name: str, arrays: dict[str, np.ndarray], classes) -> ArrayDataset:
    if "mean" in arrays:
        mean, std = tuple(arrays["mean"].tolist()), tuple(arrays["std"].tolist())
    else:
        mean, std = channel_stats(arrays["train_images"])
    return ArrayDataset(name, arrays["train_images"], arrays["train_labels"],
                        arrays["test_images"], arrays["test_labels"], tuple(classes), mean, std)


# ---------------------------------------------------------------- synthetic

def fake_dataset(n_train: int = 512, n_test: int = 256, num_classes: int = 10, size: int = 32,
                 seed: int = 0) -> ArrayDataset:
    """A learnable synthetic dataset: one smooth random template per class plus noise (for tests)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, size=(num_classes, 4, 4, 3))
    cell = -(-size // 4)   # ceil: any size, cropped below
    templates = coarse.repeat(cell, axis=1).repeat(cell, axis=2)[:, :size, :size]

    def draw(n):
        labels = rng.integers(0, num_classes, size=n)
        noise = rng.normal(0, 40, size=(n, size, size, 3))
        return np.clip(templates[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.int64)

    train_images, train_labels = draw(n_train)
    test_images, test_labels = draw(n_test)
    mean, std = channel_stats(train_images)
    return ArrayDataset("fake", train_images, train_labels, test_images, test_labels,
                        tuple(f"class_{i}" for i in range(num_classes)), mean, std)


# ---------------------------------------------------------------- prepared for a run

def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 NHWC images resized to `size` x `size` with area interpolation (a box filter when shrinking)."""
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="area")
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def prepare(dataset: str, data_dir: str | os.PathLike | None, input_size: int, limit_train: int | None = None,
            limit_test: int | None = None, seed: int = 0) -> ArrayDataset:
    """A dataset ready for a run: loaded, subset (`ArrayDataset.limit`) and resized to `input_size`.

    dataset: cifar10, cifar100, fake, or auto: CIFAR-10 when `data_dir` (else $DS_DATA, else the
    repository's data/) holds it, else the synthetic set with a warning. Only "no CIFAR-10 there at
    all" falls back; CIFAR-10 data that is there but broken raises its DataError. The synthetic set
    has `limit_train or 512` / `limit_test or 256` images drawn at `input_size`; real images are
    resized with area interpolation when `input_size` differs from their stored size.
    """
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size <= 0:
        raise DataError(f"input_size must be a positive int (pixels of the square image), got {input_size!r}")
    for name, value in (("limit_train", limit_train), ("limit_test", limit_test)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0):
            raise DataError(f"{name} must be a positive int or None (all images), got {value!r}")
    input_size = int(input_size)

    def synthetic():
        return fake_dataset(limit_train or 512, limit_test or 256, size=input_size, seed=seed)

    if dataset == "fake":
        return synthetic()
    if dataset not in ("auto", "cifar10", "cifar100"):
        raise DataError(f"unknown dataset {dataset!r}: choose cifar10, cifar100, fake or auto")
    try:
        loaded = load_dataset("cifar10" if dataset == "auto" else dataset, data_dir)
    except DataNotFound as err:
        if dataset != "auto":
            raise
        warnings.warn(f"dataset 'auto': no CIFAR-10 found, so the synthetic dataset is used instead "
                      f"(its name is 'fake').\n{err}", stacklevel=2)
        return synthetic()
    loaded = loaded.limit(limit_train, limit_test, seed=seed)
    if loaded.train_images.shape[1:3] != (input_size, input_size):
        loaded = dataclasses.replace(loaded, train_images=resize_images(loaded.train_images, input_size),
                                     test_images=resize_images(loaded.test_images, input_size))
    return loaded


# ---------------------------------------------------------------- ImageFolder

_IMAGEFOLDER_LAYOUTS = ["<dir>/train/<class>/*.jpg and <dir>/val/<class>/*.jpg (ImageNet style; 'test' accepted for 'val')"]


def imagefolder_datasets(path: str | os.PathLike, input_size: int = 224):
    """(train, val) torchvision ImageFolders with the standard ImageNet pipeline at `input_size`."""
    root = Path(path)
    val_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or val_dir is None:
        raise _missing("ImageFolder", root, _IMAGEFOLDER_LAYOUTS, "no train/ and val/ folders")
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose([T.RandomResizedCrop(input_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    resize = int(round(input_size / 0.875))
    val_tf = T.Compose([T.Resize(resize), T.CenterCrop(input_size), T.ToTensor(), normalize])
    try:
        return ImageFolder(str(root / "train"), train_tf), ImageFolder(str(val_dir), val_tf)
    except (FileNotFoundError, RuntimeError) as err:
        raise _missing("ImageFolder", root, _IMAGEFOLDER_LAYOUTS, str(err)) from err


def load_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False, **fake_kwargs):
    """`ArrayDataset` for cifar10/cifar100/fake; for imagefolder use `imagefolder_datasets`."""
    if name == "cifar10":
        return load_cifar10(root, download)
    if name == "cifar100":
        return load_cifar100(root, download)
    if name == "fake":
        return fake_dataset(**fake_kwargs)
    raise DataError(f"unknown dataset {name!r}: choose cifar10, cifar100, fake, or imagefolder (with a data dir)")
