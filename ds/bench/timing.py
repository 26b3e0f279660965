"""Images per second of one or several networks, measured the same way in one process.

Protocol (docs/design.md, "Measuring speed"): eval mode, no autograd, one fresh random input batch
(torch.randn, seeded) shared by every model of the call, per-model warm-up, then `repeats`
timed repeats that each run a loop of `iters` forward passes. Models are interleaved: repeat r
times every model once, starting from a rotating position, so machine drift hits all of them
alike. GPU loops are timed with CUDA events after a synchronize, with cudnn.benchmark on; CPU
loops with perf_counter under a fixed thread count that the result reports.
"""
from __future__ import annotations

import contextlib
import copy
import math
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ds.cost import image_size

from ds.export import ExportError
from ds.provenance import device_name, resolve_device

from .runtimes import MODES as RUNTIME_MODES
from .runtimes import check_runtime, runtime_version, unsupported
from .runtimes import prepare as prepare_runtime
from .settings import (INT8, BenchError, available_mode, check_mode, dtype_name, fixed_threads, layout_name,
                       resolve_dtype, resolve_layout)

MIN_REPEATS = 5


@dataclass
class Throughput:
    """One model's result in one setting; img/s are per timed repeat (median, min, max, all)."""
    img_s_median: float
    img_s_min: float
    img_s_max: float
    img_s: list = field(repr=False)
    seconds_per_batch: float  # median over repeats
    batch: int
    input_size: tuple
    iters: int  # forward passes per timed repeat
    repeats: int
    warmup: int
    threads: int  # intra-op CPU threads fixed for the run
    device: str
    device_name: str
    dtype: str
    layout: str
    mode: str  # the mode that ran
    mode_requested: str
    runtime: str = "torch"  # torch, onnxruntime or openvino (ds.bench.runtimes)
    runtime_version: str = torch.__version__
    quantization: str = ""  # int8: the tool, its settings and the calibration images; "" in float
    quantization_check: dict | None = None  # int8: the file against the float network (ds.export.quantize.compare)

    def as_dict(self) -> dict:
        return asdict(self)


def random_batch(batch: int, input_size, device, dtype, channels_last=False, in_chans=3,
                 seed=0) -> torch.Tensor:
    """Fresh N(0, 1) images, reproducible through `seed`, laid out as asked."""
    if batch < 1:
        raise BenchError(f"batch must be >= 1, got {batch}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_chans, *image_size(input_size), generator=gen)
    x = x.to(device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def compile_available(device: torch.device) -> str | None:
    """None when torch.compile can run on `device`, else the reason it cannot."""
    try:
        import torch._dynamo
        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile is not supported on this platform/Python"
    except Exception as e:  # pragma: no cover - broken installs
        return f"torch._dynamo cannot be imported ({e})"
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler
            get_cpp_compiler()
        except Exception as e:
            return f"inductor finds no C++ compiler for CPU code ({e}); install g++ or set CXX"
    if device.type == "cuda":
        from torch.utils._triton import has_triton
        if not has_triton():
            return "inductor needs Triton for CUDA code and it is not installed (pip install triton)"
    return None


def resolve_mode(mode: str, device: torch.device) -> str:
    """The mode that will run on `device`, warning when the platform forces a fall-back."""
    mode = available_mode(mode, device)
    if mode == "compile":
        reason = compile_available(device)
        if reason:
            warnings.warn(f"mode 'compile' is unavailable: {reason}; falling back to 'eager'",
                          stacklevel=2)
            return "eager"
    return mode


def compile_settings() -> contextlib.AbstractContextManager:
    """Dynamo settings for timing several compiled models: the variants share timm's forward
    code, so each is a recompile of it; allow plenty, and fail (rather than silently run eager)
    if the limit is ever hit."""
    import torch._dynamo
    config, options = torch._dynamo.config, {}
    for name in ("recompile_limit", "cache_size_limit"):  # renamed across torch versions
        if hasattr(config, name):
            options[name] = max(getattr(config, name), 64)
            break
    if hasattr(config, "fail_on_recompile_limit_hit"):
        options["fail_on_recompile_limit_hit"] = True
    return config.patch(**options)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_step(model: nn.Module, x: torch.Tensor, mode: str, compile_mode: str = "default",
                 graph_pool=None) -> Callable[[], object]:
    """A no-argument callable that runs one forward pass of `model` on `x` in `mode`.

    'cudagraph' captures the forward once and replays it; `x` is the graph's static input, so
    it must stay alive and unchanged while the step is used (it does: one input per setting).
    The capture follows the CUDA-graph recipe: warm-up on a side stream, then capture.
    Graphs of one setting may share `graph_pool` (torch.cuda.graph_pool_handle()): they run
    one after another on one stream and nobody reads their outputs, so one pool serves all.
    'compile' wraps the model in torch.compile(mode=compile_mode).
    """
    check_mode(mode)
    if mode == "eager":
        return lambda: model(x)
    if mode == "compile":
        compiled = torch.compile(model, mode=compile_mode)
        return lambda: compiled(x)
    # cudagraph
    if x.device.type != "cuda":
        raise BenchError("mode 'cudagraph' needs a CUDA tensor; resolve the mode with resolve_mode()")
    side = torch.cuda.Stream(device=x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=graph_pool):
        static_out = model(x)

    def replay(model=model, x=x):
        # the graph reads `model`'s weights and `x` by address: the defaults keep both alive
        # (and their memory unreused) for as long as the step exists
        graph.replay()
        return static_out
    return replay


def time_loop(step: Callable[[], object], iters: int, device: torch.device) -> float:
    """Seconds for `iters` back-to-back calls of `step` (CUDA events on GPU, perf_counter on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return time.perf_counter() - start


def calibrate_iters(step: Callable[[], object], min_time: float, device: torch.device) -> int:
    """Iterations that make one timed loop last about `min_time` seconds: loops of doubling
    length until one takes a quarter of that (a single call is too noisy to go by)."""
    n = 1
    while True:
        seconds = time_loop(step, n, device)
        if seconds >= min_time / 4 or n >= 1 << 16:
            return max(1, math.ceil(min_time * n / seconds))
        n *= 2


def measure(models: Mapping[str, nn.Module], input_size, batch: int, device,
            dtype=torch.float32, channels_last=False, mode: str = "eager", *,
            repeats: int = MIN_REPEATS, warmup: int = 3, min_time: float = 0.5,
            iters: int | None = None, threads: int | None = None,
            compile_mode: str = "default", in_chans: int = 3, seed: int = 0,
            runtime: str = "torch", images=None,
            on_repeat: Callable[[str], None] | None = None) -> dict[str, Throughput]:
    """Throughput of every model in `models` ({name: module}) in one setting, interleaved.

    Each model is copied, put in eval mode and moved to the device, dtype and layout; the
    caller's modules are left untouched. `iters` forward passes per timed repeat; by default
    as many as make one repeat last about `min_time` seconds, calibrated per model after
    warm-up. `on_repeat(name)` is called after every timed repeat (for progress bars).

    `runtime` 'onnxruntime' or 'openvino' (CPU only) exports each model to ONNX and times it in
    that runtime with `threads` intra-op threads (ds.bench.runtimes); layout and mode are then
    the runtime's own (NCHW input) and must be left at their defaults. `dtype` 'int8' (those two
    runtimes only) times each model quantized by ds.export.quantize, calibrated and checked on
    `images` (an Int8Images; default: ds.export.quantize.calibration_images at `input_size`). A
    network whose INT8 file fails that check (ds.export would refuse to deploy it) is not timed: a
    warning names it and the check's error, and the result has no entry for it; the others are timed.
    """
    if not models:
        raise BenchError("no models to measure")
    dev = resolve_device(device)
    int8 = isinstance(dtype, str) and dtype.lower() == INT8
    if int8 and runtime == "torch":
        raise BenchError(unsupported("torch", INT8, dev))
    if int8 and images is None:
        from ds.export.quantize import calibration_images
        images = calibration_images(input_size, seed=seed)
    dt = torch.float32 if int8 else resolve_dtype(dtype)
    precision = INT8 if int8 else dtype_name(dt)
    channels_last = resolve_layout(channels_last)
    check_runtime(runtime)
    if runtime == "torch":
        ran_mode = resolve_mode(mode, dev)
    else:
        if channels_last or mode != "eager":
            raise BenchError(f"layout and mode choose how torch runs; {runtime} takes NCHW input and "
                             "runs its own way: leave channels_last=False and mode='eager'")
        reason = unsupported(runtime, precision, dev)
        if reason:
            raise BenchError(reason)
        ran_mode = RUNTIME_MODES[runtime]
    if repeats < MIN_REPEATS:
        raise BenchError(f"repeats must be >= {MIN_REPEATS} for a median and a spread, got {repeats}")
    if iters is not None and iters < 1:
        raise BenchError(f"iters must be >= 1, got {iters}")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    with contextlib.ExitStack() as stack:
        n_threads = stack.enter_context(fixed_threads(threads))
        stack.enter_context(torch.inference_mode())
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ds-bench-")))
        if ran_mode == "compile":
            stack.enter_context(compile_settings())
        if dev.type == "cuda":
            stack.enter_context(torch.cuda.device(dev))  # events and streams on this GPU
            stack.callback(setattr, torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
            torch.backends.cudnn.benchmark = True

        x = random_batch(batch, input_size, dev, dt if runtime == "torch" else torch.float32,
                         channels_last, in_chans, seed)
        graph_pool = torch.cuda.graph_pool_handle() if ran_mode == "cudagraph" else None
        steps, loop_iters, quantized = {}, {}, {}
        for index, (name, model) in enumerate(models.items()):
            if runtime == "torch":
                net = copy.deepcopy(model).eval().to(device=dev, dtype=dt, memory_format=memory_format)
                step = prepare_step(net, x, ran_mode, compile_mode, graph_pool)
            else:
                try:
                    step, quantized[name] = prepare_runtime(runtime, model, x, n_threads, precision, workdir,
                                                            f"model{index}", images)
                except ExportError as e:
                    if not int8:
                        raise
                    warnings.warn(f"{runtime} int8 not measured for {name} at input {input_size}: {e}", stacklevel=2)
                    continue
            steps[name] = step
            for _ in range(max(1, warmup)):
                step()
            synchronize(dev)
            loop_iters[name] = iters or calibrate_iters(step, min_time, dev)

        if not steps:
            raise BenchError(f"{runtime} int8: no network's INT8 file passed the check (see the warnings)")
        img_s = {name: [] for name in steps}
        names = list(steps)
        for r in range(repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                seconds = time_loop(steps[name], loop_iters[name], dev)
                img_s[name].append(batch * loop_iters[name] / seconds)
                if on_repeat is not None:
                    on_repeat(name)

    common = dict(batch=batch, input_size=image_size(input_size), repeats=repeats, warmup=warmup,
                  threads=n_threads, device=str(dev), device_name=device_name(dev),
                  dtype=precision, layout=layout_name(channels_last), mode=ran_mode,
                  mode_requested=mode, runtime=runtime, runtime_version=runtime_version(runtime))
    results = {}
    for name, values in img_s.items():
        median = statistics.median(values)
        q = quantized.get(name)
        results[name] = Throughput(img_s_median=median, img_s_min=min(values),
                                   img_s_max=max(values), img_s=values,
                                   seconds_per_batch=batch / median, iters=loop_iters[name],
                                   quantization=q.label if q else "", quantization_check=q.check if q else None,
                                   **common)
    return results


def throughput(model: nn.Module, input_size, batch: int, device, dtype=torch.float32,
               channels_last=False, mode: str = "eager", **options) -> Throughput:
    """Median images/s of one model and its spread over >= 5 timed repeats after warm-up.

    Same protocol as `measure` (see there for `options`: repeats, warmup, min_time, iters,
    threads, compile_mode, seed). To compare models, measure them together with `measure`.
    """
    return measure({"model": model}, input_size, batch, device, dtype, channels_last, mode,
                   **options)["model"]
