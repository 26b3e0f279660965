"""What a measurement runs on: device, dtype, memory layout, execution mode, CPU threads.

Every name a user can type is checked here, once, with a message that names the fix.
"""
from __future__ import annotations

import contextlib
import os
import warnings

import torch

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# Not a torch dtype: the network quantized for a deployment runtime (ds.bench.runtimes, ds.export.quantize).
INT8 = "int8"
LAYOUTS = {"nchw": False, "channels_last": True, "nhwc": True}
MODES = ("eager", "cudagraph", "compile")


class BenchError(ValueError):
    """A benchmark asked for something that cannot be done here; the message names the fix."""


def resolve_dtype(dtype) -> torch.dtype:
    """torch.float32/float16/bfloat16 from a dtype or one of the names in DTYPES."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPE_NAMES:
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise BenchError(f"unknown dtype {dtype!r}: use one of fp32, fp16, bf16 (or int8 in onnxruntime and openvino)")


def dtype_name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES[resolve_dtype(dtype)]


def precision_name(dtype) -> str:
    """dtype_name, and 'int8' for a quantized network."""
    if isinstance(dtype, str) and dtype.lower() == INT8:
        return INT8
    return dtype_name(dtype)


def resolve_layout(layout) -> bool:
    """True for channels_last ('channels_last' or 'nhwc'), False for 'nchw'."""
    if isinstance(layout, bool):
        return layout
    if isinstance(layout, str) and layout.lower() in LAYOUTS:
        return LAYOUTS[layout.lower()]
    raise BenchError(f"unknown layout {layout!r}: use nchw or channels_last")


def layout_name(channels_last: bool) -> str:
    return "channels_last" if channels_last else "nchw"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise BenchError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


def available_mode(mode: str, device: torch.device) -> str:
    """The mode that will actually run: CUDA graphs exist only on CUDA, so 'cudagraph' on
    another device falls back to 'eager' with a warning that says so."""
    check_mode(mode)
    if mode == "cudagraph" and device.type != "cuda":
        warnings.warn(f"mode 'cudagraph' needs a CUDA device; on {device.type} it falls back to "
                      "'eager' (use --modes compile for a compiled CPU run)", stacklevel=2)
        return "eager"
    return mode


def all_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def fixed_threads(threads: int | None):
    """Run with exactly `threads` intra-op CPU threads (default: all cores); restore afterwards."""
    threads = all_cores() if threads is None else int(threads)
    if threads < 1:
        raise BenchError(f"threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
