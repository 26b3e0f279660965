"""ds.bench timing and roofline on tiny networks, CPU only (no foundation needed)."""
import warnings

import pytest
import torch
from torch import nn

import ds

from ds.bench import BenchError, measure, measure_peaks, memory_traffic, throughput, time_bound
from ds.bench.roofline import Peaks
from ds.bench.timing import random_batch

FAST = dict(warmup=1, min_time=0.002, threads=1)


def tiny(width=8):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 5))


def test_throughput_reports_median_spread_threads_and_setting():
    r = throughput(tiny(), 16, 2, "cpu", **FAST)
    assert r.repeats >= 5 and len(r.img_s) == r.repeats
    assert r.img_s_min <= r.img_s_median <= r.img_s_max
    assert r.seconds_per_batch == pytest.approx(2 / r.img_s_median)
    assert r.threads == 1 and r.device == "cpu" and r.device_name
    assert (r.dtype, r.layout, r.mode, r.batch, r.input_size) == ("fp32", "nchw", "eager", 2, (16, 16))


def test_threads_are_restored_and_model_untouched():
    model = tiny().train()
    before = torch.get_num_threads()
    throughput(model, 16, 2, "cpu", channels_last=True, dtype="bf16", **FAST)
    assert torch.get_num_threads() == before
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_measure_interleaves_models_round_robin():
    order = []
    models = {"a": tiny(4), "b": tiny(8), "c": tiny(12)}
    out = measure(models, 16, 2, "cpu", repeats=5, on_repeat=order.append, **FAST)
    assert set(out) == set(models)
    rounds = [order[i:i + 3] for i in range(0, 15, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)  # every repeat times every model
    assert rounds[0] != rounds[1]  # start rotates, so no model is always first


def test_inputs_are_random_not_zeros():
    x = random_batch(4, 16, "cpu", torch.float32)
    assert x.abs().sum() > 0 and 0.8 < x.std() < 1.2
    assert random_batch(4, 16, "cpu", torch.float32, channels_last=True).is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.parametrize("kwargs, match", [
    (dict(device="cpu", dtype="fp8"), "unknown dtype"),
    (dict(device="cpu", mode="jit"), "unknown mode"),
    (dict(device="cpu", channels_last="nhcw"), "unknown layout"),
    (dict(device="cpu", repeats=3), "repeats must be >= 5"),
])
def test_clear_errors(kwargs, match):
    with pytest.raises(BenchError, match=match):
        throughput(tiny(), 16, 2, **kwargs)


def test_unknown_device():
    with pytest.raises(ds.errors.DeviceError, match="unknown device"):
        throughput(tiny(), 16, 2, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_without_cuda_names_the_problem():
    with pytest.raises(ds.errors.DeviceError, match="CUDA is not available.*--device cpu"):
        throughput(tiny(), 16, 2, "cuda")


def test_cudagraph_on_cpu_falls_back_to_eager_with_a_message():
    with pytest.warns(UserWarning, match="cudagraph.*falls back to 'eager'"):
        r = throughput(tiny(), 16, 2, "cpu", mode="cudagraph", **FAST)
    assert (r.mode, r.mode_requested) == ("eager", "cudagraph")


def test_compile_without_platform_support_falls_back(monkeypatch):
    import ds.bench.timing as tp
    monkeypatch.setattr(tp, "compile_available", lambda device: "no C++ compiler (test)")
    with pytest.warns(UserWarning, match="'compile' is unavailable: no C\\+\\+ compiler"):
        r = throughput(tiny(), 16, 2, "cpu", mode="compile", **FAST)
    assert r.mode == "eager"


def test_memory_traffic_counts_activations_once_and_weights_once():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    weights = 4 * 3 * 9 + 4
    per_image = 3 * 8 * 8 + 4 * 8 * 8
    assert memory_traffic(conv, 8, batch=5) == 4 * (5 * per_image + weights)
    assert memory_traffic(conv, 8, batch=5, dtype="fp16") == 2 * (5 * per_image + weights)
    same = nn.Conv2d(3, 3, 1, bias=False)
    twice = nn.Sequential(same, same)  # weights used twice are read once
    assert memory_traffic(twice, 8) == 4 * (4 * 3 * 8 * 8 + 9)


def test_time_bound_is_max_of_compute_and_memory():
    peaks = Peaks(flop_s=1e9, bytes_s=1e8, device="cpu", dtype="fp32", threads=1,
                  matmul_size=1, copy_bytes=1, tf32=False)
    b = time_bound(macs=1_000_000, traffic_bytes=5_000_000, batch=10, peaks=peaks, measured_s=0.1)
    assert b.compute_s == pytest.approx(0.02) and b.memory_s == pytest.approx(0.05)
    assert b.bound_s == pytest.approx(0.05) and b.achieved_fraction == pytest.approx(0.5)


def test_measure_peaks_on_cpu():
    p = measure_peaks("cpu", threads=1, trials=2, matmul_size=256, copy_bytes=1 << 22)
    assert p.flop_s > 1e8 and p.bytes_s > 1e8 and p.threads == 1 and not p.tf32


def test_compile_settings_refuse_silent_eager_fallback():
    import torch._dynamo
    from ds.bench.timing import compile_settings
    config = torch._dynamo.config
    with compile_settings():
        limit = getattr(config, "recompile_limit", getattr(config, "cache_size_limit", None))
        assert limit >= 64
        assert getattr(config, "fail_on_recompile_limit_hit", True) is True


def test_peaks_keep_the_best_of_two_measurements():
    a = Peaks(flop_s=2.0, bytes_s=1.0, device="cpu", dtype="fp32", threads=1,
              matmul_size=1, copy_bytes=1, tf32=False)
    b = Peaks(flop_s=1.0, bytes_s=3.0, device="cpu", dtype="fp32", threads=1,
              matmul_size=1, copy_bytes=1, tf32=False)
    assert (a.best(b).flop_s, a.best(b).bytes_s) == (2.0, 3.0)


# ---------------------------------------------------------------- runtimes (issue 12)

def test_measure_in_onnxruntime_names_runtime_and_version():
    onnxruntime = pytest.importorskip("onnxruntime")
    r = throughput(tiny(), 16, 2, "cpu", runtime="onnxruntime", **FAST)
    assert (r.runtime, r.runtime_version, r.threads) == ("onnxruntime", onnxruntime.__version__, 1)
    assert r.mode == "ort_enable_all" and r.layout == "nchw" and r.img_s_median > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(runtime="tvm"), "unknown runtime 'tvm'"),
    (dict(runtime="onnxruntime", channels_last=True), "leave channels_last=False"),
    (dict(runtime="onnxruntime", mode="compile"), "mode='eager'"),
    (dict(runtime="onnxruntime", dtype="fp16"), "onnxruntime runs fp32, int8 here, not fp16"),
    (dict(runtime="openvino", dtype="fp16"), "openvino runs fp32, bf16, int8 here, not fp16"),
])
def test_runtime_errors(kwargs, match):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    with pytest.raises(BenchError, match=match):
        throughput(tiny(), 16, 2, "cpu", **kwargs)


def separable(depthwise=True):
    layers = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
    if depthwise:
        layers += [nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU()]
    layers += [nn.Conv2d(16, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5)]
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_time_shares_sort_convolutions_by_kind(runtime):
    if runtime != "torch":
        pytest.importorskip(runtime)
    from ds.bench.profile import time_shares
    with_dw = time_shares(separable(True), 16, 2, runtime, runs=2)
    without = time_shares(separable(False), 16, 2, runtime, runs=2)
    assert with_dw["depthwise"] > 0 and without["depthwise"] == 0
    for shares in (with_dw, without):
        assert shares["pointwise"] > 0 and shares["dense_kxk"] > 0 and shares["other"] >= 0
        kinds = ("depthwise", "pointwise", "dense_kxk", "other")
        assert shares["total"] == pytest.approx(sum(shares[k] for k in kinds)) and shares["wall"] > 0


def test_runtime_table_is_tidy_and_names_the_best_base():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from ds.bench import best_base, runtime_table
    models = {"base": tiny(8), "narrow": tiny(4)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = runtime_table(models, 16, batch=2, runtimes=("torch", "onnxruntime", ("openvino", "fp16")),
                              threads=1, repeats=5, warmup=1, min_time=0.002)
    assert any("openvino fp16 not measured" in str(w.message) for w in caught)  # said, not dropped
    for column in ("runtime", "runtime_version", "dtype", "layout", "threads", "batch", "pattern",
                   "img_s_median", "img_s_min", "img_s_max", "speedup_same_runtime",
                   "speedup_over_best_base", "achieved_fraction", "load_average"):
        assert column in frame.columns
    assert set(frame["runtime"]) == {"torch", "onnxruntime"} and len(frame) == 2 * 3
    best = best_base(frame)
    assert len(best) == 1 and best["img_s_median"].iloc[0] == frame[frame["pattern"] == "base"]["img_s_median"].max()
    assert frame["speedup_over_best_base"].max() == pytest.approx(
        frame["img_s_median"].max() / best["img_s_median"].iloc[0])


def _refusing(*refused: nn.Module):
    """A stand-in for ds.bench.runtimes.prepare whose INT8 file fails the check for the `refused`
    networks (as ds.export.quantize.quantize raises) and times a no-op for any other."""
    from ds.export import ExportError

    def prepare(runtime, model, x, threads, dtype, workdir, name, images=None):
        if any(model is r for r in refused):
            raise ExportError(f"{name}.int8.onnx in {runtime} (int8) differs from the float network: relative RMS "
                              "error 0.263 exceeds 0.25")
        return (lambda: None), None
    return prepare


def test_a_network_whose_int8_file_fails_the_check_is_left_out_with_a_warning(monkeypatch):
    pytest.importorskip("onnxruntime")
    from ds.bench import timing
    models = {"base": tiny(), "DS-E": tiny(), "DS-A": tiny()}
    monkeypatch.setattr(timing, "prepare_runtime", _refusing(models["DS-E"]))
    with pytest.warns(UserWarning, match=r"onnxruntime int8 not measured for DS-E at input 16: .*exceeds 0.25"):
        results = measure(models, 16, 2, "cpu", "int8", runtime="onnxruntime", images=object(), **FAST)
    assert set(results) == {"base", "DS-A"}
    monkeypatch.setattr(timing, "prepare_runtime", _refusing(*models.values()))
    with pytest.warns(UserWarning), pytest.raises(BenchError, match="no network's INT8 file passed the check"):
        measure(models, 16, 2, "cpu", "int8", runtime="onnxruntime", images=object(), **FAST)


def test_an_int8_setting_whose_base_is_refused_is_left_out_and_the_others_measured(monkeypatch):
    pytest.importorskip("onnxruntime")
    from ds.bench import compare, timing
    models = {"base": tiny(), "DS-E": tiny()}
    monkeypatch.setattr(timing, "prepare_runtime", _refusing(models["base"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = compare.runtime_table(models, 16, 2, runtimes="torch,onnxruntime:int8",
                                      threads=(1,), layouts=("nchw",), images=object(), repeats=5, warmup=1,
                                      min_time=0.002)
    assert set(frame["runtime"]) == {"torch"} and set(frame["pattern"]) == {"base", "DS-E"}
    messages = [str(w.message) for w in caught]
    assert any("onnxruntime int8 nchw" in m and "not measured: the base network's INT8 file failed the check" in m
               for m in messages), messages
