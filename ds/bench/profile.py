"""Where a forward pass spends its time: depthwise convs, 1x1 convs, dense k x k convs, the rest.

    time_shares(merged, 224, batch=16, runtime="openvino", threads=1)
        -> {"depthwise": s, "pointwise": s, "dense_kxk": s, "other": s, "total": s, "wall": s,
            "int8": s, "convs": n, "int8_convs": n}

Each runtime is asked through its own profiler: OpenVINO's per-layer counters (PERF_COUNT;
GroupConvolution is a depthwise conv in these networks), ONNX Runtime's node profile (a Conv
whose weight has one input channel per group is depthwise), and in torch forward hooks timing
every Conv2d. In the int8 settings (the network quantized by ds.export.quantize) the profiler
also says which layers really ran in 8 bits: in OpenVINO those whose exec type names an 8-bit
kernel (brgconv_avx512_1x1_I8, jit_avx512_U8, ...), in ONNX Runtime its quantized kernels
(QLinearConv, QGemm, QLinearAdd, ...), not a Conv left in float between DequantizeLinear and
QuantizeLinear. "int8" is the time in such layers; "convs" counts the convolutions the runtime
ran and "int8_convs" those among them in 8 bits (0 in float settings).

Times are seconds per batch, the mean (ORT) or median (OpenVINO, torch) over `runs` profiled
passes after one warm-up pass. "total" is the sum of the runtime's own node
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
from ds.export import quantize

from .compare import short_name
from .runtimes import unsupported
from .settings import INT8, BenchError, fixed_threads
from .timing import random_batch

KINDS = ("depthwise", "pointwise", "dense_kxk", "other")
COUNTS = ("convs", "int8_convs")   # not seconds: how many convolutions ran, and how many in 8 bits
# The CPU settings a time-share table may profile: short name -> (runtime, dtype, channels_last)
SETTINGS = {short_name(r, "channels_last" if cl else "nchw", d): (r, d, cl) for r, d, cl in (
    ("torch", "fp32", False), ("torch", "fp32", True), ("onnxruntime", "fp32", False),
    ("openvino", "fp32", False), ("openvino", "bf16", False), ("onnxruntime", INT8, False),
    ("openvino", INT8, False))}
# ONNX Runtime's kernels that compute in 8 bits (after its QDQ fusion; com.microsoft and onnx ops)
ORT_INT8_OPS = ("QLinearConv", "NhwcQLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger",
                "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat",
                "QLinearSigmoid", "QLinearLeakyRelu")
ORT_CONV_OPS = ("Conv", "FusedConv", "NchwcConv", "QLinearConv", "NhwcQLinearConv", "ConvInteger")


def _kind(weight_shape, groups_equal_channels: bool) -> str:
    if groups_equal_channels:
        return "depthwise"
    return "pointwise" if tuple(weight_shape[-2:]) == (1, 1) else "dense_kxk"


def openvino_ran_in_8_bits(exec_type: str) -> bool:
    """Whether an OpenVINO CPU exec type (brgconv_avx512_1x1_I8, jit_avx512_f32, ...) is an 8-bit kernel."""
    return any(part.upper() in ("I8", "U8") for part in exec_type.split("_"))


def _empty() -> dict:
    return {**{k: 0.0 for k in KINDS}, "int8": 0.0, **{c: 0 for c in COUNTS}}


def _onnx_conv_kinds(path) -> dict[str, str]:
    """{Conv node name: kind} of an ONNX file, weights read through a DequantizeLinear in QDQ files
    (ORT's profile of a fused QLinearConv omits the weight, so its kind comes from here)."""
    import onnx
    graph = onnx.load(str(path)).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    made_by = {out: node for node in graph.node for out in node.output}
    kinds = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight = node.input[1]
        if weight not in shapes and weight in made_by and made_by[weight].op_type == "DequantizeLinear":
            weight = made_by[weight].input[0]
        if weight in shapes:
            groups = next((a.i for a in node.attribute if a.name == "group"), 1)
            kinds[node.name] = _kind(shapes[weight], groups > 1 and groups == shapes[weight][0])
    return kinds


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
    convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    return dict(spent, total=total, wall=total, int8=0.0, convs=convs, int8_convs=0)


def _onnxruntime_shares(path, array, threads, runs):
    import re

    import onnxruntime as ort
    conv_kinds = _onnx_conv_kinds(path)
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
    spent = _empty()
    for e in events:
        op, seconds = e["args"].get("op_name"), e["dur"] * 1e-6 / runs
        in_8_bits = op in ORT_INT8_OPS
        spent["int8"] += seconds if in_8_bits else 0.0
        if op not in ORT_CONV_OPS:
            spent["other"] += seconds
            continue
        node = re.sub(r"(_token_\d+)?_kernel_time$", "", e["name"])
        shapes = [next(iter(s.values())) for s in e["args"]["input_type_shape"]]
        w_shape = shapes[1] if len(shapes) > 1 else []
        if node in conv_kinds:
            kind = conv_kinds[node]
        elif len(w_shape) == 4:
            kind = _kind(w_shape, w_shape[1] == 1 and w_shape[0] > 1)
        else:
            raise BenchError(f"ONNX Runtime's profile names a {op} {node!r} that is not in {path} and gives no "
                             "weight shape; its kind is unknown")
        spent[kind] += seconds
        spent["convs"] += 1 / runs
        spent["int8_convs"] += (1 if in_8_bits else 0) / runs
    return dict(spent, total=sum(spent[k] for k in KINDS), wall=statistics.median(totals))


def _openvino_shares(path, array, threads, dtype, runs):
    import openvino as ov
    bf16 = dtype == "bf16" or (dtype == INT8 and quantize.openvino_float_layers() == "bf16")   # as it was timed
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": "1",
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32"})
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(array))
    request.infer()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        request.infer()
        total = time.perf_counter() - start
        spent = _empty()
        for layer in request.profiling_info:
            seconds = layer.real_time.total_seconds()
            in_8_bits = openvino_ran_in_8_bits(layer.exec_type)
            spent["int8"] += seconds if in_8_bits else 0.0
            if layer.node_type in ("GroupConvolution", "Convolution"):
                if layer.node_type == "GroupConvolution":
                    spent["depthwise"] += seconds
                else:
                    spent["pointwise" if "1x1" in layer.exec_type else "dense_kxk"] += seconds
                spent["convs"] += 1
                spent["int8_convs"] += int(in_8_bits)
            else:
                spent["other"] += seconds
        samples.append(dict(spent, total=sum(spent[k] for k in KINDS), wall=total))
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def time_shares(model: nn.Module, input_size, batch: int = 16, runtime: str = "torch",
                threads: int = 1, dtype: str = "fp32", channels_last: bool = False,
                runs: int = 5, seed: int = 0, images: quantize.Int8Images | None = None) -> dict[str, float]:
    """Seconds per batch in depthwise, pointwise (1x1) and dense k x k convs and the rest, on CPU,
    the seconds in layers that ran in 8 bits and the counts of convolutions (all, in 8 bits).
    dtype 'int8' (onnxruntime, openvino): the network quantized by ds.export.quantize, calibrated on
    `images.calibration` (default: ds.export.quantize.calibration_images at `input_size`), unchecked."""
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
            if dtype == INT8:
                calibration = (images or quantize.calibration_images(input_size, seed=seed)).calibration
                path = quantize.quantize(model, runtime, Path(tmp) / f"model.int8{quantize.EXTENSION[runtime]}",
                                         quantize.Int8Images(calibration, None), float_path=path).path
            if runtime == "onnxruntime":
                if dtype not in ("fp32", INT8):
                    raise BenchError(f"onnxruntime runs fp32 or int8 here, not {dtype}")
                return _onnxruntime_shares(path, array, threads, runs)
            return _openvino_shares(path, array, threads, dtype, runs)


def time_share_table(models, input_size, batch: int, settings, threads: int = 1, runs: int = 5,
                     seed: int = 0, images: quantize.Int8Images | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(table, not_measured): `time_shares` of every network ({name: merged network}) in every
    setting (names from SETTINGS), one row each: setting, pattern, <kind>_ms, total_ms, wall_ms and
    <kind>_share (of the four kinds' sum), int8_ms and int8_share (the time in layers that ran in
    8 bits, and its share of total_ms), convs and int8_convs; a setting this CPU cannot run is left
    out, with the reason.
    The int8 settings share `images` (default: calibration_images at `input_size`, seeded with `seed`)."""
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise BenchError(f"unknown profiling setting(s) {unknown}: choose among {', '.join(SETTINGS)}")
    if images is None and any(SETTINGS[s][1] == INT8 for s in settings):
        images = quantize.calibration_images(input_size, seed=seed)
    rows, not_measured = [], []
    for label in settings:
        runtime, dtype, channels_last = SETTINGS[label]
        reason = unsupported(runtime, dtype, torch.device("cpu"))
        if reason:
            not_measured.append(f"{label}: {reason}")
            continue
        for name, model in models.items():
            spent = time_shares(model.cpu(), input_size, batch, runtime, threads=threads, dtype=dtype,
                                channels_last=channels_last, runs=runs, seed=seed, images=images)
            rows.append({"setting": label, "pattern": name,
                         **{f"{k}_ms": 1e3 * v for k, v in spent.items() if k not in COUNTS},
                         **{k: int(round(spent[k])) for k in COUNTS}})
    table = pd.DataFrame(rows)
    if len(table):
        kinds = table[[f"{kind}_ms" for kind in KINDS]].sum(axis=1)   # medians per kind: ~ total_ms
        for kind in KINDS:
            table[f"{kind}_share"] = table[f"{kind}_ms"] / kinds
        # of total_ms, the median of the per-pass sums: each pass's 8-bit time is part of its sum, so
        # the share is at most 1 (a median of per-kind medians need not bound it)
        table["int8_share"] = table["int8_ms"] / table["total_ms"]
    return table, not_measured
