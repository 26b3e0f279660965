"""INT8 post-training quantization of a merged network, as CPU deployers run it, each file checked.

    images = calibration_images(32)                 # 300 seeded CIFAR-10 training images + a disjoint check set
    images = Int8Images.from_arrays(calib, check)   # or your own (float32 NCHW, normalized like the training input)
    q = quantize(merged, "openvino", "out/model.int8.xml", images)    # write, run, compare with the float network
    q.path, q.check["top1_agreement"], q.check["rel_rms_error"], q.settings
    export_int8(model, "out/", images=images)       # ds.export.export, then the INT8 files beside the float ones

Two tools, one per runtime:
- OpenVINO: NNCF's `nncf.quantize` on the OpenVINO model (preset `performance`: symmetric int8
  weights per output channel and activations, fast bias correction), saved as IR. What the CPU
  plugin does not run in 8 bits (in these networks: the depthwise convs, though NNCF quantized their
  inputs; ds.bench --time-shares shows it) runs in its default precision, as a deployer who sets
  nothing gets: bf16 where the plugin has BF16, else f32 (`openvino_float_layers`; the label says).
- ONNX Runtime: `onnxruntime.quantization.quantize_static`, QDQ format, per-channel int8 weights,
  uint8 activations, MinMax calibration, after ORT's `quant_pre_process`. That step matters: the
  TorchScript exporter shares identical initializers (e.g. zero biases) through Identity nodes,
  and a Conv fed through one is left in float by ORT's QDQ fusion; after the pre-processing every
  Conv of a merged mobilenetv2_035 runs as QLinearConv (ds.bench --time-shares shows which ran in
  8 bits, from ORT's own profile).

On an x86 CPU without VNNI (AVX2, or AVX-512 without VNNI), both runtimes multiply u8 activations by
s8 weights with an instruction (VPMADDUBSW) whose 16-bit sums saturate. On such a CPU
(`saturation_prone()`) ds quantizes as each runtime's documentation advises there: ONNX Runtime with
7-bit weights (`reduce_range`), NNCF with its overflow fix on every layer instead of the first only.
`saturation_fix` (True/False) overrides the choice, e.g. to make files on one machine for a CPU of
the other kind; the records and labels say which ran. What it changes is measured by
benchmarks/int8_saturation.py (benchmarks/results/int8_saturation.csv): on a 2-core AVX2-only AMD
EPYC VM, the published cpu base without the fix lost 2.52 points in ONNX Runtime (agreement with
float 91.1%) and 1.04 in OpenVINO (94.7%), with it 0.07 in both (97.8%, 98.2%).

Calibration images are training images, never test images: a seeded permutation of the training
split (`calibration_images`: the first `count` for calibration, the next ones for the check), resized
to the input size with ds.data's area interpolation and normalized with the training split's mean
and std, as ds.train feeds them. Their identity (dataset, split, count, seed, first index, sha256 of
the indices) goes into every record; `training_images` takes them from a dataset already loaded (a
study run's training subset). `Int8Images.from_arrays` takes the caller's images instead
(tests, other data); their record holds their shape and sha256.

Every INT8 file is run in its runtime on the check images and compared with the float torch network:
top-1 agreement and the output error (relative RMS error of the logits, each image's logits centred
on their mean, so a shift common to all classes, which changes no prediction, counts for nothing;
and the max relative error of ds.export.relative_error). Beyond `INT8_MAX_ERROR` the quantization is
broken: ExportError, and no file is left behind.
"""
from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import io
import json
import logging
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ds.cost import image_size
from ds.data import DataError, load_dataset, resize_images
from ds.meta import info
from ds.provenance import cpu_flags

from . import (FORMATS, INPUT_NAME, ExportError, Exported, _require, export, merged_network, onnxruntime_session,
               openvino_bf16_supported, openvino_compiled, relative_error, to_onnx)

CALIBRATION_IMAGES = 300
CALIBRATION_SEED = 0
CALIBRATION_DATASET = "cifar10"
RUNTIMES = ("onnxruntime", "openvino")
SUFFIX = {"onnxruntime": ".int8.onnx", "openvino": ".int8.xml"}   # what export_int8 writes
EXTENSION = {"onnxruntime": ".onnx", "openvino": ".xml"}
# The largest relative RMS error of the (centred) logits an INT8 file may have against its float
# network. Measured by benchmarks/int8_error.py (its output: benchmarks/int8_error.txt; the project's
# 2-core AMD EPYC VM with AVX-512 VNNI and BF16, 2026-12-01 14:41-14:48 UTC, machine shared, load
# average 5.1 to 5.8; both runtimes, OpenVINO's float layers in bf16): correctly calibrated files stay
# at or below 0.097 for the trained networks (the cpu base and merged searched-k11 published then, 32 px,
# 300 + 300 CIFAR-10 training images), 0.12 for random-weight ones at 32 and 224 px, and 0.17 for the
# tests' random-weight mobilenetv2_035 at 16 px on synthetic images. Calibrated on images whose ranges
# are wrong (scaled by 50 or by 1/50), the trained networks reach 0.36 to 1.23, the tests' base 0.27
# to 0.78. 0.25 sits between: 1.4x above the worst good file, 1.4x below the best broken trained one.
# (A random-weight DS-F barely notices a wrong calibration, 0.19 to 0.21: no threshold on its outputs
# could tell.)
INT8_MAX_ERROR = 0.25
CALIBRATION_BATCH = 32   # images per ORT calibration run (MinMax statistics do not depend on it)
CHECK_BATCH = 50         # images per comparison run (bounds memory at 224 px)


# ---------------------------------------------------------------- the images

@dataclass(frozen=True)
class ImageSet:
    """Float32 NCHW images, normalized as the network takes them, and where they come from."""
    images: np.ndarray = field(repr=False)
    identity: dict

    @property
    def label(self) -> str:
        """'300 cifar10 train images (seed 0)' or '8 array images': what a table column says."""
        who = self.identity
        if who.get("source") == "array":
            return f"{who['count']} {who['name']} images"
        return f"{who['count']} {who['dataset']} {who['split']} images (seed {who['seed']})"


@dataclass(frozen=True)
class Int8Images:
    """What a quantization needs: calibration images, and the images it is checked on (None: not
    checked, as for ds.bench's peak kernels whose outputs mean nothing)."""
    calibration: ImageSet
    check: ImageSet | None

    @classmethod
    def from_arrays(cls, calibration, check=None, name: str = "array") -> "Int8Images":
        """The caller's images (float NCHW, normalized); `check` defaults to the calibration images."""
        calib = image_set(calibration, name)
        return cls(calib, calib if check is None else image_set(check, f"{name} check"))

    def record(self) -> dict:
        """The identity of both sets, for a JSON record."""
        return {"calibration": self.calibration.identity,
                "check": None if self.check is None else self.check.identity}


def image_set(array, name: str = "array") -> ImageSet:
    """An ImageSet of the caller's images: a float array (N, C, H, W), N >= 1, all finite."""
    images = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    if images.ndim != 4 or images.shape[0] < 1:
        raise ExportError(f"calibration images {name}: expected a float array (N, C, H, W) with N >= 1, "
                          f"got shape {images.shape}")
    if not np.isfinite(images).all():
        raise ExportError(f"calibration images {name}: not all values are finite; pass normalized images")
    return ImageSet(images, dict(source="array", name=name, count=int(images.shape[0]),
                                 shape=list(images.shape), sha256=hashlib.sha256(images.tobytes()).hexdigest()))


def calibration_images(input_size, count: int = CALIBRATION_IMAGES, seed: int = CALIBRATION_SEED,
                       dataset: str = CALIBRATION_DATASET, data_dir=None,
                       check_count: int | None = None) -> Int8Images:
    """`count` training images of `dataset` for calibration and the next `check_count` (default:
    `count`) of the same seeded permutation for the check, at `input_size`, normalized.

    `dataset`: cifar10 (ships in the repository), cifar100, or fake (ds.data's synthetic set)."""
    check_count = count if check_count is None else check_count
    for option, value in (("count", count), ("check_count", check_count)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ExportError(f"calibration {option} must be a whole number >= 1, got {value!r}")
    height, width = image_size(input_size)
    if height != width:
        raise ExportError(f"calibration images from {dataset} are square; input size {height}x{width} is not: "
                          "pass your own images with Int8Images.from_arrays")
    try:
        data = load_dataset(dataset, data_dir)
    except DataError as e:
        raise ExportError(f"calibration images: {str(e).splitlines()[0]} (fix: set DS_DATA, or pass your own "
                          "images with Int8Images.from_arrays)") from None
    total = len(data.train_labels)
    if count + check_count > total:
        raise ExportError(f"calibration needs {count} + {check_count} training images, {data.name} has {total}: "
                          "ask for fewer")
    return Int8Images(training_images(data, 0, count, seed, height),
                      training_images(data, count, check_count, seed, height))


def training_images(data, first: int, count: int, seed: int = CALIBRATION_SEED, size: int | None = None) -> ImageSet:
    """Images `first` to `first + count` of a seeded permutation of the training split of `data` (a
    ds.data.ArrayDataset, e.g. a study run's subset), resized to `size` (default: as stored) and
    normalized with its training split's mean and std, as ds.train feeds them."""
    total = len(data.train_labels)
    if first < 0 or count < 1 or first + count > total:
        raise ExportError(f"training images {first} to {first + count} asked for, {data.name} has {total}: "
                          "ask for fewer")
    indices = np.random.default_rng(seed).permutation(total)[first:first + count]
    pixels = data.train_images[indices]
    height = pixels.shape[1] if size is None else int(size)
    if pixels.shape[1:3] != (height, height):
        pixels = resize_images(pixels, height)
    x = (pixels.astype(np.float32) / 255 - np.asarray(data.mean, np.float32)) / np.asarray(data.std, np.float32)
    return ImageSet(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), dict(
        dataset=data.name, split="train", count=int(count), seed=int(seed), first=int(first),
        indices_sha256=hashlib.sha256(indices.astype("<i8").tobytes()).hexdigest(),
        input_size=[height, height], normalization="training split mean and std"))


# ---------------------------------------------------------------- writing

def openvino_float_layers() -> str:
    """The precision OpenVINO's CPU plugin runs an INT8 model's float layers in: its default, bf16
    where it lists BF16 in OPTIMIZATION_CAPABILITIES, else fp32."""
    return "bf16" if openvino_bf16_supported() else "fp32"


VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")   # /proc/cpuinfo flags of an int8 dot product without saturation


def saturation_prone(flags: set[str] | None = None, machine: str | None = None) -> bool:
    """Whether this CPU's u8 x s8 int8 kernels saturate: an x86-64 CPU whose `flags` (default
    /proc/cpuinfo's, ds.provenance.cpu_flags) hold none of VNNI_FLAGS. An x86 CPU whose flags cannot be
    read counts as prone (the fix costs little accuracy); other architectures do not."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return False
    flags = cpu_flags() if flags is None else flags
    return flags is None or not flags & set(VNNI_FLAGS)


def _fix(saturation_fix: bool | None) -> bool:
    return saturation_prone() if saturation_fix is None else bool(saturation_fix)


def settings(runtime: str, saturation_fix: bool | None = None) -> dict:
    """How `runtime`'s INT8 file is made and run, for the records (`saturation_fix` None: this CPU's
    need, saturation_prone())."""
    _check_runtime(runtime)
    fix = _fix(saturation_fix)
    if runtime == "onnxruntime":
        return dict(tool="onnxruntime.quantization.quantize_static", format="QDQ",
                    weights="int8 per channel" + (", 7-bit range (reduce_range)" if fix else ""),
                    activations="uint8", calibration="MinMax",
                    preprocessing="onnxruntime.quantization.shape_inference.quant_pre_process")
    return dict(tool="nncf.quantize", preset="performance", weights="int8 per channel",
                activations="8-bit, symmetric", fast_bias_correction=True,
                overflow_fix="enable" if fix else "first_layer_only", float_layers=openvino_float_layers())


def settings_label(runtime: str, calibration: ImageSet, saturation_fix: bool | None = None) -> str:
    """One line naming the quantization: tool, its settings, the calibration images."""
    fix = _fix(saturation_fix)
    if runtime == "onnxruntime":
        return (f"ORT QDQ static, per-channel s8 weights{' (7-bit: reduce_range)' if fix else ''}, u8 activations, "
                f"MinMax; {calibration.label}")
    return (f"NNCF PTQ, preset performance, {'overflow fix on every layer, ' if fix else ''}float layers "
            f"{openvino_float_layers()}; {calibration.label}")


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ExportError(f"INT8 runs in {' or '.join(RUNTIMES)}, not {runtime!r}")


@contextlib.contextmanager
def _quiet():
    """Silence the tools' chatter: ORT's graph-cleaning warnings, NNCF's INFO log and progress bars,
    and torch's note that CUDA_HOME holds no CUDA runtime (NNCF loads torch's C++ extension helper
    lazily, which says so on a CPU-only machine)."""
    try:
        import onnxruntime
    except ImportError:
        onnxruntime = None
    loggers = [logging.getLogger(name) for name in ("nncf", "torch.utils.cpp_extension")]
    levels = [log.level for log in loggers]
    if onnxruntime is not None:
        onnxruntime.set_default_logger_severity(3)
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        if onnxruntime is not None:
            onnxruntime.set_default_logger_severity(2)   # ORT's default (it has no getter to restore from)
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def quantize_onnx(onnx_path, out_path, calibration: ImageSet, saturation_fix: bool | None = None,
                  uint8_weights: bool = False) -> Path:
    """ONNX Runtime static QDQ quantization (settings('onnxruntime')) of the float ONNX file; with the
    saturation fix, 7-bit weights (reduce_range). `uint8_weights`: uint8 weights at their full range
    instead (ONNX Runtime's u8 x u8 kernels, its other remedy for saturation; ds does not choose it,
    benchmarks/int8_saturation.py measures it)."""
    _require("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, images):
            self.batches = iter([{INPUT_NAME: images[i:i + CALIBRATION_BATCH]}
                                 for i in range(0, len(images), CALIBRATION_BATCH)])

        def get_next(self):
            return next(self.batches, None)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ds-int8-") as tmp, _quiet():
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared))
        quantize_static(str(prepared), str(out_path), Reader(calibration.images), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QUInt8 if uint8_weights else QuantType.QInt8,
                        reduce_range=not uint8_weights and _fix(saturation_fix))
    return out_path


def _nncf():
    with _quiet():
        return _require("nncf")


def quantize_openvino(model_path, out_xml, calibration: ImageSet, saturation_fix: bool | None = None) -> Path:
    """NNCF post-training quantization (settings('openvino')) of an ONNX or IR file, saved as IR; with
    the saturation fix, NNCF's overflow fix on every layer (its default: the first only)."""
    ov = _require("openvino")
    nncf = _nncf()
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    model = ov.Core().read_model(str(model_path))
    items = [calibration.images[i:i + 1] for i in range(len(calibration.images))]
    with _quiet():
        overflow = nncf.OverflowFix.ENABLE if _fix(saturation_fix) else nncf.OverflowFix.FIRST_LAYER
        quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                                  preset=nncf.QuantizationPreset.PERFORMANCE, fast_bias_correction=True,
                                  advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=overflow))
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return out_xml


_MADE: dict[tuple, Path] = {}   # (runtime, sha256 of the float file(s) and the images) -> an INT8 file made earlier
_STORE: list[Path] = []         # the directory holding them, made on first use


def _digest(*paths_or_arrays) -> str:
    h = hashlib.sha256()
    for item in paths_or_arrays:
        h.update(item.tobytes() if isinstance(item, np.ndarray) else Path(item).read_bytes())
    return h.hexdigest()


def _store() -> Path:
    """This process's directory of INT8 files already made (removed at exit)."""
    if not _STORE:
        _STORE.append(Path(tempfile.mkdtemp(prefix="ds-int8-made-")))
        atexit.register(shutil.rmtree, _STORE[0], True)
    return _STORE[0]


def quantize_file(float_path, runtime: str, out_path, calibration: ImageSet,
                  saturation_fix: bool | None = None) -> Path:
    """The INT8 file of a float ONNX (or, for openvino, IR) file, for `runtime`, unchecked.

    Quantizing the same file with the same images again in one process copies the first result
    (ds.bench quantizes each network for its throughput and again for its time shares)."""
    _check_runtime(runtime)
    float_path, out_path = Path(float_path), Path(out_path)
    sources = [float_path] + ([float_path.with_suffix(".bin")] if float_path.suffix == ".xml" else [])
    fix = _fix(saturation_fix)
    key = (runtime, fix, _digest(*sources, calibration.images))
    companions = (lambda p: [p, p.with_suffix(".bin")]) if runtime == "openvino" else (lambda p: [p])
    if key not in _MADE:
        made = _store() / f"{len(_MADE)}{EXTENSION[runtime]}"
        if runtime == "onnxruntime":
            quantize_onnx(float_path, made, calibration, fix)
        else:
            quantize_openvino(float_path, made, calibration, fix)
        _MADE[key] = made
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for source, target in zip(companions(_MADE[key]), companions(out_path)):
        shutil.copyfile(source, target)
    return out_path


# ---------------------------------------------------------------- checking

def int8_runner(path, runtime: str, threads: int | None = None):
    """A function running the INT8 file at `path` in `runtime` on a float32 NCHW batch (any batch
    size), returning its logits: loaded once, called per batch."""
    _check_runtime(runtime)
    if runtime == "onnxruntime":
        session = onnxruntime_session(path, threads)
        return lambda x: session.run(None, {INPUT_NAME: x})[0]
    request = openvino_compiled(path, threads, openvino_float_layers()).create_infer_request()
    return lambda x: np.asarray(request.infer({0: x})[0]).copy()


def output_error(actual: np.ndarray, expected: np.ndarray) -> dict:
    """Top-1 agreement and the errors of INT8 logits `actual` against the float ones, (N, classes)."""
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    a_c, e_c = a - a.mean(1, keepdims=True), e - e.mean(1, keepdims=True)
    scale = float(np.linalg.norm(e_c))
    rms = float(np.linalg.norm(a_c - e_c)) / scale if scale > 0 else float(np.linalg.norm(a_c - e_c))
    return dict(images=int(len(a)), top1_agreement=float((a.argmax(1) == e.argmax(1)).mean()),
                rel_rms_error=rms, **relative_error(actual, expected))


def compare(model: nn.Module, path, runtime: str, images: ImageSet, max_error: float = INT8_MAX_ERROR,
            threads: int | None = None) -> dict:
    """Run the INT8 file at `path` in `runtime` and the float torch `model` on `images`; the
    output_error with the threshold, or ExportError (one line) when the error exceeds `max_error`."""
    _check_runtime(runtime)
    net = copy.deepcopy(model).float().cpu().eval()
    run = int8_runner(path, runtime, threads)
    actual, expected = [], []
    with torch.no_grad():
        for i in range(0, len(images.images), CHECK_BATCH):
            x = images.images[i:i + CHECK_BATCH]
            expected.append(net(torch.from_numpy(x)).numpy())
            actual.append(run(x))
    actual, expected = np.concatenate(actual), np.concatenate(expected)
    if actual.shape != expected.shape:
        raise ExportError(f"{path} in {runtime} (int8) gives output shape {actual.shape}, the float network "
                          f"{expected.shape}")
    check = dict(output_error(actual, expected), max_error=max_error, check_images=images.label)
    if not check["rel_rms_error"] <= max_error:
        raise ExportError(f"{path} in {runtime} (int8) differs from the float network: relative RMS error "
                          f"{check['rel_rms_error']:.3g} exceeds {max_error:g} (top-1 agreement "
                          f"{check['top1_agreement']:.1%} on {images.label}); the quantization is broken "
                          "(calibration images not normalized like the training input?); do not deploy it")
    return check


# ---------------------------------------------------------------- one call

@dataclass
class Quantized:
    """An INT8 file, how it was made and how it compares with its float network."""
    path: Path
    runtime: str
    settings: dict       # settings(runtime) and the images' identity
    label: str           # settings_label: what ds.bench's quantization column says
    check: dict | None   # compare's result; None when no check images were given


def quantize(model: nn.Module, runtime: str, out_path, images: Int8Images, *, input_size=None,
             max_error: float = INT8_MAX_ERROR, threads: int | None = None, float_path=None,
             saturation_fix: bool | None = None) -> Quantized:
    """Quantize `model` (a float network, merged or not: it is exported as it is) for `runtime` into
    `out_path` (.onnx for onnxruntime, .xml for openvino), calibrated on `images.calibration`, then
    run it and compare it with `model` on `images.check` (skipped when None). A file that fails the
    check is removed and ExportError raised. `float_path`: an ONNX/IR file of `model` already
    written (skips the export). `input_size`: default the network's own. `saturation_fix`: None
    quantizes for this CPU (saturation_prone()), True/False forces it (see the module's docstring)."""
    _check_runtime(runtime)
    fix = _fix(saturation_fix)   # this CPU's need, read once
    out_path = Path(out_path)
    if out_path.suffix != EXTENSION[runtime]:
        raise ExportError(f"{out_path}: an INT8 file for {runtime} is a {EXTENSION[runtime]} file; rename it")
    with tempfile.TemporaryDirectory(prefix="ds-int8-") as tmp:
        if float_path is None:
            size = input_size or info(model).input_size
            if size is None:
                raise ExportError("the network does not say its input size; pass input_size")
            float_path = to_onnx(model, Path(tmp) / "float.onnx", size, in_chans=images.calibration.images.shape[1])
        quantize_file(float_path, runtime, out_path, images.calibration, fix)
    check = None
    if images.check is not None:
        try:
            check = compare(model, out_path, runtime, images.check, max_error, threads)
        except ExportError:
            for written in (out_path, out_path.with_suffix(".bin")):
                written.unlink(missing_ok=True)
            raise
    return Quantized(out_path, runtime, dict(settings(runtime, fix), images=images.record()),
                     settings_label(runtime, images.calibration, fix), check)


def export_int8(model: nn.Module, out, input_size=None, *, images: Int8Images | None = None,
                name: str = "model", formats=FORMATS, max_error: float = INT8_MAX_ERROR,
                calibration_count: int = CALIBRATION_IMAGES, calibration_seed: int = CALIBRATION_SEED,
                calibration_dataset: str = CALIBRATION_DATASET, data_dir=None,
                saturation_fix: bool | None = None, **export_options) -> Exported:
    """ds.export.export (float files, each checked), then an INT8 file per format beside them:
    `name.int8.onnx` (ONNX Runtime QDQ) and/or `name.int8.xml`/`.bin` (OpenVINO, NNCF), each checked
    against the merged float network. `images` default: calibration_images(input size,
    calibration_count, calibration_seed, calibration_dataset). `saturation_fix`: as quantize's. The
    JSON record gains "int8": the images' identity, whether this CPU saturates, each file's settings
    and check."""
    input_size = input_size or info(model).input_size
    if images is None:
        if input_size is None:
            raise ExportError("the network does not say its input size; pass input_size")
        images = calibration_images(input_size, calibration_count, calibration_seed, calibration_dataset, data_dir)
    result = export(model, out, input_size, name=name, formats=formats, **export_options)
    merged = merged_network(model, input_size, export_options.get("merge_depthwise_separable", False))
    sources = {"onnxruntime": result.files.get("onnx"), "openvino": result.files.get("openvino")}
    section = {"images": images.record(), "cpu_saturation_prone": saturation_prone(), "files": {}}
    for runtime, source in sources.items():
        if source is None:
            continue
        q = quantize(merged, runtime, Path(out) / f"{name}{SUFFIX[runtime]}", images, input_size=input_size,
                     max_error=max_error, float_path=source, saturation_fix=saturation_fix)
        result.files[("onnx" if runtime == "onnxruntime" else "openvino") + "_int8"] = q.path
        result.checks[f"{runtime}/int8"] = q.check
        section["files"][runtime] = dict(file=q.path.name, settings=q.settings, label=q.label, check=q.check)
    record = json.loads(result.record.read_text())
    record["files"] = {k: v.name for k, v in result.files.items()}
    record["checks"] = result.checks
    record["int8"] = section
    result.record.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return result
