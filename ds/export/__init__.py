"""A trained network, merged, as files a deployment runtime loads on its own: ONNX and OpenVINO IR.

    ds.export.export(model, "out/", input_size=224)     merge (if needed), write, check every file
    ds.export.quantize.export_int8(model, "out/")       the same, plus INT8 files, calibrated and checked
    ds.load_network("runs/x/checkpoint.pt")             any network file ds wrote (base, shrunk, merged)
    python -m ds.export --checkpoint runs/x/checkpoint.pt --out out/
    python -m ds.export --model mobilenetv2_035 --pattern DS-E --input 32 --out out/   (random weights)

ONNX is written by torch's TorchScript exporter (`dynamo=False`) at the highest opset it
supports, with a dynamic batch axis: it needs no package beyond torch and onnx, and a merged
network holds only convolutions, ReLU6, adds, a pooling and a linear layer, which it exports
exactly. (The dynamo exporter needs onnxscript, one more dependency, for no gain on these graphs.)
The OpenVINO IR (`.xml` + `.bin`) is converted from that ONNX file, weights kept in float32.

Every file is checked in its own runtime against the torch network it came from, on a random
batch: the relative error (max |runtime - torch| / max |torch|) must stay within
`EXPORT_TOLERANCE` for the precision it ran in, else ExportError. The files load with the
runtime alone (onnxruntime.InferenceSession, openvino.Core().read_model); nothing of ds is needed.
"""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ds.cost import image_size
from ds.merging import MERGE_TOLERANCE, merge
from ds.meta import info
from ds.provenance import utc_now, versions

# float32: the runtimes reorder sums like torch's own kernels do, so the merge's float32 bound
# holds. bf16 keeps 8 significant bits and the error grows over ~20 layers: merged
# mobilenetv2_035/140 (base, DS-E, DS-F; random weights; torch bf16 against float32 on CPU)
# stray by 1.1e-2 to 3.0e-2 (benchmarks/bf16_error.txt); 6e-2 is twice the largest.
EXPORT_TOLERANCE = {"fp32": MERGE_TOLERANCE, "bf16": 6e-2}
INPUT_NAME, OUTPUT_NAME = "input", "logits"
FORMATS = ("onnx", "openvino")


def onnx_opset() -> int:
    """The newest opset torch's TorchScript ONNX exporter writes."""
    from torch.onnx import _constants
    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_DEFAULT_OPSET))


class ExportError(ValueError):
    """An export that cannot be made or does not match its torch network; the message says why."""


def _require(module: str, extra: str = "runtimes"):
    try:
        return __import__(module)
    except ImportError:
        raise ExportError(f"{module} is not installed: pip install -e '.[{extra}]' "
                          f"(or pip install {module})") from None


# ---------------------------------------------------------------- the networks

def merged_network(model: nn.Module, input_size=None, merge_depthwise_separable: bool = False) -> nn.Module:
    """`model` itself when ds.merge made it, else its merged (BN-folded, verified) form."""
    if info(model).merged:
        return model.eval()
    return merge(model.eval(), input_size=input_size,
                 merge_depthwise_separable=merge_depthwise_separable)


# ---------------------------------------------------------------- writing

def to_onnx(model: nn.Module, path, input_size, in_chans: int = 3, opset: int | None = None) -> Path:
    """Write `model` (float32, CPU, eval) as ONNX with a dynamic batch axis; returns the path."""
    _require("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model).float().cpu().eval()
    x = torch.randn(1, in_chans, *image_size(input_size))
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is chosen on purpose (module docstring); its deprecation
        # notices would repeat on every export of a benchmark run
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=opset or onnx_opset(),
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return path


def to_openvino(onnx_path, xml_path) -> Path:
    """Convert an ONNX file to OpenVINO IR (`xml_path` and its `.bin`), weights in float32."""
    ov = _require("openvino")
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


# ---------------------------------------------------------------- running

def onnxruntime_session(path, threads: int | None = None):
    """An onnxruntime CPU session of the file at `path`, `threads` intra-op threads (None: its default)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runtime_versions() -> dict:
    """Versions of onnx, onnxruntime and openvino (None for one that is not installed)."""
    found = {}
    for module in ("onnx", "onnxruntime", "openvino"):
        try:
            found[module] = __import__(module).__version__
        except ImportError:
            found[module] = None
    return found


def openvino_bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin lists BF16 among its OPTIMIZATION_CAPABILITIES here."""
    ov = _require("openvino")
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def openvino_compiled(path, threads: int | None = None, dtype: str = "fp32"):
    """The IR (or ONNX) file at `path` compiled for the CPU, one stream, latency mode.

    The inference precision is set explicitly: OpenVINO runs in bf16 by default on CPUs that
    support it, so a float32 measurement must ask for f32. bf16 on a CPU without it is refused.
    """
    ov = _require("openvino")
    if dtype not in ("fp32", "bf16"):
        raise ExportError(f"OpenVINO on CPU runs fp32 or bf16 here, not {dtype!r}")
    if dtype == "bf16" and not openvino_bf16_supported():
        raise ExportError("OpenVINO's CPU plugin does not list BF16 in OPTIMIZATION_CAPABILITIES on "
                          "this CPU (it needs AVX-512 BF16 or AMX); use fp32")
    config = {"INFERENCE_PRECISION_HINT": "f32" if dtype == "fp32" else "bf16",
              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    core = ov.Core()
    return core.compile_model(core.read_model(str(path)), "CPU", config)


def run_file(path, x: np.ndarray, runtime: str, dtype: str = "fp32", threads: int | None = None) -> np.ndarray:
    """The output of the exported file at `path` on `x` in `runtime` ('onnxruntime' or 'openvino')."""
    if runtime == "onnxruntime":
        return onnxruntime_session(path, threads).run(None, {INPUT_NAME: x})[0]
    if runtime == "openvino":
        return np.asarray(openvino_compiled(path, threads, dtype).create_infer_request().infer({0: x})[0])
    raise ExportError(f"unknown runtime {runtime!r}: use onnxruntime or openvino")


def relative_error(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """{"max_abs", "max_rel"} with the relative error against the output's scale (as ds.verify)."""
    max_abs = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max())
    scale = float(np.abs(expected).max())
    return {"max_abs": max_abs, "max_rel": max_abs / scale if scale > 0 else max_abs}


def check_file(model: nn.Module, path, runtime: str, input_size, dtype: str = "fp32",
               batch: int = 3, seed: int = 0, in_chans: int = 3) -> dict[str, float]:
    """Run the exported file and `model` (float32 torch) on one random batch; ExportError when
    the relative error exceeds EXPORT_TOLERANCE[dtype]. Returns the errors and the tolerance.
    The batch differs from the export's example batch of 1, so the dynamic axis is exercised."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_chans, *image_size(input_size), generator=gen)
    with torch.no_grad():
        expected = copy.deepcopy(model).float().cpu().eval()(x).numpy()
    actual = run_file(path, x.numpy(), runtime, dtype)
    if actual.shape != expected.shape:
        raise ExportError(f"{path} in {runtime} gives output shape {actual.shape}, torch gives "
                          f"{expected.shape}")
    errors = relative_error(actual, expected)
    errors["tolerance"] = EXPORT_TOLERANCE[dtype]
    if not errors["max_rel"] <= errors["tolerance"]:
        raise ExportError(f"{path} in {runtime} ({dtype}) differs from torch: max relative error "
                          f"{errors['max_rel']:.3g} (max absolute {errors['max_abs']:.3g}) exceeds "
                          f"{errors['tolerance']:g}. The export is wrong; do not deploy it.")
    return errors


# ---------------------------------------------------------------- all of it

@dataclass
class Exported:
    """What `export` wrote and how each file compared with torch in its runtime."""
    files: dict = field(default_factory=dict)   # format -> Path
    checks: dict = field(default_factory=dict)  # "runtime/dtype" -> {"max_abs", "max_rel", "tolerance"}
    record: Path | None = None                  # the JSON written beside the files


def export(model: nn.Module, out, input_size=None, *, name: str = "model",
           formats=FORMATS, merge_depthwise_separable: bool = False, check: bool = True,
           dtypes=("fp32", "bf16")) -> Exported:
    """Merge `model` (unless merged), write it to `out/name.onnx` and/or `out/name.xml`, check each.

    `input_size` defaults to the size the network was created for. The ONNX file is checked in
    onnxruntime (fp32); the IR in OpenVINO in each of `dtypes` the CPU supports (bf16 is
    skipped, and recorded as skipped, where OpenVINO's CPU plugin does not support it).
    `out/name.json` records the network (ds.meta), the opset and every check.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"formats {list(formats)}: choose from {', '.join(FORMATS)}")
    input_size = input_size or info(model).input_size
    if input_size is None:
        raise ExportError("the network does not say its input size; pass input_size")
    out = Path(out)
    merged = merged_network(model, input_size, merge_depthwise_separable)
    result = Exported()
    onnx_path = to_onnx(merged, out / f"{name}.onnx", input_size)
    if "onnx" in formats:
        result.files["onnx"] = onnx_path
    if "openvino" in formats:
        result.files["openvino"] = to_openvino(onnx_path, out / f"{name}.xml")
    if "onnx" not in formats:
        onnx_path.unlink()
    skipped = {}
    if check:
        if "onnx" in formats:
            result.checks["onnxruntime/fp32"] = check_file(merged, onnx_path, "onnxruntime", input_size)
        if "openvino" in formats:
            for dtype in dtypes:
                if dtype == "bf16" and not openvino_bf16_supported():
                    skipped["openvino/bf16"] = "this CPU has no BF16 in OpenVINO's OPTIMIZATION_CAPABILITIES"
                    continue
                result.checks[f"openvino/{dtype}"] = check_file(merged, result.files["openvino"],
                                                                "openvino", input_size, dtype)
    record = dict(network=info(merged).as_dict(), input_size=input_size, opset=onnx_opset(),
                  input=INPUT_NAME, output=OUTPUT_NAME, dynamic_axes={"batch": 0},
                  files={k: v.name for k, v in result.files.items()}, checks=result.checks,
                  checks_skipped=skipped, date_utc=utc_now(), **versions(), **runtime_versions())
    result.record = out / f"{name}.json"
    result.record.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return result
