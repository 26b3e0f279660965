"""The runtimes a network can be timed in, behind one interface: `prepare` -> a no-argument step.

    torch        eager / channels_last / torch.compile / CUDA graphs (ds.bench.timing.prepare_step)
    onnxruntime  the merged network exported to ONNX (ds.export), CPU execution provider, fp32,
                 or int8 (static QDQ quantization, ds.export.quantize)
    openvino     the same ONNX file compiled by OpenVINO's CPU plugin, precision fp32 or bf16,
                 or int8 (NNCF post-training quantization, ds.export.quantize)

Each step runs one forward pass on a fixed input batch; `measure` times and interleaves the
steps of all networks of a setting alike, whatever their runtime. The export code lives in
ds.export; this file only prepares sessions for timing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ds import export
from ds.export import quantize

from .settings import INT8, BenchError

RUNTIMES = ("torch", "onnxruntime", "openvino")
DTYPES = {"torch": ("fp32", "fp16", "bf16"), "onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8")}
# What the mode column says for a runtime that has one way of running here.
MODES = {"onnxruntime": "ort_enable_all", "openvino": "latency"}


def check_runtime(name: str) -> str:
    if name not in RUNTIMES:
        raise BenchError(f"unknown runtime {name!r}: use one of {', '.join(RUNTIMES)}")
    if name != "torch":
        try:
            __import__(name)
        except ImportError:
            raise BenchError(f"runtime {name!r} is not installed: pip install -e '.[runtimes]'") from None
    return name


def runtime_version(name: str) -> str:
    check_runtime(name)
    if name == "torch":
        return torch.__version__
    return __import__(name).__version__.split("-")[0]  # openvino appends its build and branch


def unsupported(runtime: str, dtype: str, device: torch.device) -> str | None:
    """Why `runtime` cannot run `dtype` on `device` here, or None when it can."""
    check_runtime(runtime)
    if runtime == "torch":
        if dtype == INT8:
            return "torch is timed in fp32, fp16 or bf16 here; int8 runs in onnxruntime:int8 or openvino:int8"
        return None
    if device.type != "cpu":
        return f"{runtime} is timed on the CPU only here (use --device cpu)"
    if dtype not in DTYPES[runtime]:
        return f"{runtime} runs {', '.join(DTYPES[runtime])} here, not {dtype}"
    if runtime == "openvino" and dtype == "bf16":
        if not export.openvino_bf16_supported():
            return ("OpenVINO bf16 is not supported on this CPU: its CPU plugin does not list BF16 "
                    "in OPTIMIZATION_CAPABILITIES (needs AVX-512 BF16 or AMX)")
    if runtime == "openvino" and dtype == INT8:
        try:
            __import__("nncf")
        except ImportError:
            return "OpenVINO int8 needs NNCF, which is not installed: pip install -e '.[runtimes]'"
    return None


def prepare(runtime: str, model: nn.Module, x: torch.Tensor, threads: int, dtype: str,
            workdir: Path, name: str = "model",
            images: quantize.Int8Images | None = None) -> tuple[Callable[[], object], quantize.Quantized | None]:
    """(step, quantized): a step running `model` (a merged float32 network) on `x` in onnxruntime
    or openvino, and for int8 how the file was quantized and checked (else None).

    The model is exported to `workdir/name.onnx` by ds.export (dynamic batch) and loaded with
    `threads` intra-op threads; the input is bound once, so a step times inference only. int8:
    the file is quantized for the runtime by ds.export.quantize, calibrated on `images` and
    checked against `model` on their check images (an ExportError when broken); OpenVINO runs the
    layers left in float in its default precision (ds.export.quantize.openvino_float_layers).
    """
    reason = unsupported(runtime, dtype, x.device)
    if reason:
        raise BenchError(reason)
    if runtime == "torch":
        raise BenchError("torch steps are made by ds.bench.timing.prepare_step")
    path = export.to_onnx(model, Path(workdir) / f"{name}.onnx", tuple(x.shape[2:]), in_chans=x.shape[1])
    quantized = None
    if dtype == INT8:
        if images is None:
            raise BenchError("int8 needs calibration images: pass images (ds.export.quantize.calibration_images)")
        quantized = quantize.quantize(model, runtime, Path(workdir) / f"{name}.int8{quantize.EXTENSION[runtime]}",
                                      images, float_path=path)
        path = quantized.path
        dtype = quantize.openvino_float_layers() if runtime == "openvino" else "fp32"
    array = x.detach().float().cpu().contiguous().numpy()
    if runtime == "onnxruntime":
        session = export.onnxruntime_session(path, threads)
        feed = {export.INPUT_NAME: array}
        return (lambda: session.run(None, feed)), quantized
    import openvino as ov
    request = export.openvino_compiled(path, threads, dtype).create_infer_request()
    request.set_input_tensor(ov.Tensor(array))
    return request.infer, quantized
