"""Where a forward pass spends its time: depthwise convs, 1x1 convs, dense k x k convs, the rest.

    time_shares(merged, 224, batch=16, runtime="openvino", threads=1)
        -> {"depthwise": s, "pointwise": s, "dense_kxk": s, "other": s, "total": s, "wall": s}

Each runtime is asked through its own profiler: OpenVINO's per-layer counters (PERF_COUNT;
GroupConvolution is a depthwise conv in these networks), ONNX Runtime's node profile (a Conv
whose weight has one input channel per group is depthwise), and in torch forward hooks timing
every Conv2d. Times are seconds per batch, the mean (ORT) or median (OpenVINO, torch) over
`runs` profiled passes after one warm-up pass. "total" is the sum of the runtime's own node
times (in torch: the pass, timed around it), "other" is total minus the convolutions
(activations, adds, pooling, the classifier, layout reorders), "wall" is the pass timed from
outside (the median). Profiling adds overhead; compare shares (kind / total), and take speeds
from ds.bench.measure.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ds import export

from .compare import short_name
from .runtimes import unsupported
from .settings import BenchError, fixed_threads
from .timing import random_batch

KINDS = ("depthwise", "pointwise", "dense_kxk", "other")
# The CPU settings a time-share table may profile: short name -> (runtime, dtype, channels_last)
SETTINGS = {short_name(r, "channels_last" if cl else "nchw", d): (r, d, cl) for r, d, cl in (
    ("torch", "fp32", False), ("torch", "fp32", True), ("onnxruntime", "fp32", False),
    ("openvino", "fp32", False), ("openvino", "bf16", False))}


def _kind(weight_shape, groups_equal_channels: bool) -> str:
    if groups_equal_channels:
        return "depthwise"
    return "pointwise" if tuple(weight_shape[-2:]) == (1, 1) else "dense_kxk"


def _torch_shares(model, x, channels_last):
    net = model.eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    spent, starts = {k: 0.0 for k in KINDS}, {}

    def before(module, inputs):
        starts[module] = time.perf_counter()

    def after(module, inputs, output):
        kind = _kind(module.weight.shape, module.groups == module.in_channels and module.groups > 1)
        spent[kind] += time.perf_counter() - starts[module]

    hooks = [h for m in net.modules() if isinstance(m, nn.Conv2d)
             for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            net(x)
        total = time.perf_counter() - start
    finally:
        for h in hooks:
            h.remove()
    spent["other"] = total - sum(spent[k] for k in KINDS[:3])
    return dict(spent, total=total, wall=total)


def _onnxruntime_shares(path, array, threads, runs):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(path).with_suffix("")) + "_profile"
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, {export.INPUT_NAME: array})  # warm-up, dropped below
    totals = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {export.INPUT_NAME: array})
        totals.append(time.perf_counter() - start)
    events = [e for e in json.loads(Path(session.end_profiling()).read_text())
              if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(events) // (runs + 1)
    events = events[per_run:]  # the warm-up pass
    spent = {k: 0.0 for k in KINDS}
    for e in events:
        if e["args"].get("op_name") not in ("Conv", "FusedConv", "NchwcConv"):
            spent["other"] += e["dur"] * 1e-6 / runs
            continue
        shapes = [next(iter(s.values())) for s in e["args"]["input_type_shape"]]
        w_shape = shapes[1]
        groups_equal = w_shape[1] == 1 and w_shape[0] > 1 and len(w_shape) == 4
        spent[_kind(w_shape, groups_equal)] += e["dur"] * 1e-6 / runs
    return dict(spent, total=sum(spent.values()), wall=statistics.median(totals))


def _openvino_shares(path, array, threads, dtype, runs):
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": "1",
        "INFERENCE_PRECISION_HINT": "f32" if dtype == "fp32" else "bf16"})
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(array))
    request.infer()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer()
        total = time.perf_counter() - start
        spent = {k: 0.0 for k in KINDS}
        for layer in request.profiling_info:
            seconds = layer.real_time.total_seconds()
            if layer.node_type == "GroupConvolution":
                spent["depthwise"] += seconds
            elif layer.node_type == "Convolution":
                spent["pointwise" if "1x1" in layer.exec_type else "dense_kxk"] += seconds
            else:
                spent["other"] += seconds
        samples.append(dict(spent, total=sum(spent.values()), wall=total))
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def time_shares(model: nn.Module, input_size, batch: int = 16, runtime: str = "torch",
                threads: int = 1, dtype: str = "fp32", channels_last: bool = False,
                runs: int = 5, seed: int = 0) -> dict[str, float]:
    """Seconds per batch in depthwise, pointwise (1x1) and dense k x k convs and the rest, on CPU."""
    if runs < 1:
        raise BenchError(f"runs must be >= 1, got {runs}")
    x = random_batch(batch, input_size, "cpu", torch.float32, seed=seed)
    with fixed_threads(threads):
        if runtime == "torch":
            if dtype != "fp32":
                raise BenchError("time_shares in torch profiles fp32 only")
            samples = [_torch_shares(model, x, channels_last) for _ in range(runs + 1)][1:]
            return {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        if runtime not in ("onnxruntime", "openvino"):
            raise BenchError(f"unknown runtime {runtime!r}: use torch, onnxruntime or openvino")
        with tempfile.TemporaryDirectory(prefix="ds-profile-") as tmp:
            path = export.to_onnx(model, Path(tmp) / "model.onnx", input_size)
            array = x.numpy()
            if runtime == "onnxruntime":
                if dtype != "fp32":
                    raise BenchError("onnxruntime runs fp32 here")
                return _onnxruntime_shares(path, array, threads, runs)
            return _openvino_shares(path, array, threads, dtype, runs)


def time_share_table(models, input_size, batch: int, settings, threads: int = 1, runs: int = 5,
                     seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """(table, not_measured): `time_shares` of every network ({name: merged network}) in every
    setting (names from SETTINGS), one row each: setting, pattern, <kind>_ms, total_ms, wall_ms and
    <kind>_share (of the four kinds' sum); a setting this CPU cannot run is left out, with the reason."""
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise BenchError(f"unknown profiling setting(s) {unknown}: choose among {', '.join(SETTINGS)}")
    rows, not_measured = [], []
    for label in settings:
        runtime, dtype, channels_last = SETTINGS[label]
        reason = unsupported(runtime, dtype, torch.device("cpu"))
        if reason:
            not_measured.append(f"{label}: {reason}")
            continue
        for name, model in models.items():
            spent = time_shares(model.cpu(), input_size, batch, runtime, threads=threads, dtype=dtype,
                                channels_last=channels_last, runs=runs, seed=seed)
            rows.append({"setting": label, "pattern": name, **{f"{k}_ms": 1e3 * v for k, v in spent.items()}})
    table = pd.DataFrame(rows)
    if len(table):
        kinds = table[[f"{kind}_ms" for kind in KINDS]].sum(axis=1)   # medians per kind: ~ total_ms
        for kind in KINDS:
            table[f"{kind}_share"] = table[f"{kind}_ms"] / kinds
    return table, not_measured
