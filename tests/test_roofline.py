"""The roofline's bounds are bounds: every achieved fraction in (0, 1], peaks per runtime and
precision (issue 22, item 2)."""
import pytest

from ds.bench import BenchError, measure, measure_peaks, roofline, time_bound
from ds.bench.roofline import Peaks

SIZE = 16




def low_peaks(**changes) -> Peaks:
    values = dict(flop_s=1.0, bytes_s=1.0, device="cpu", dtype="fp32", threads=1, matmul_size=None, copy_bytes=1,
                  tf32=False, runtime="torch", flop_s_from="a kernel", bytes_s_from="a copy")
    return Peaks(**{**values, **changes})


def test_fractions_lie_in_0_1_even_below_peaks_that_are_too_low(tiny_merged):
    results = measure(tiny_merged, SIZE, 2, "cpu", repeats=5, warmup=1, iters=1, threads=1)
    seconds = {name: r.seconds_per_batch for name, r in results.items()}
    with pytest.warns(UserWarning, match="above the measured (peak|copy bandwidth)"):
        peaks, bounds = roofline(tiny_merged, SIZE, 2, "cpu", measured_s=seconds, peaks=low_peaks())
    fractions = [b.achieved_fraction for b in bounds.values()]
    assert all(0 < f <= 1 for f in fractions) and max(fractions) == pytest.approx(1.0)
    assert peaks.flop_s_from.startswith("network ") and peaks.flop_s > 1.0 and peaks.bytes_s > 1.0


def test_fractions_lie_in_0_1_with_measured_peaks(tiny_merged):
    results = measure(tiny_merged, SIZE, 2, "cpu", repeats=5, warmup=1, iters=1, threads=1)
    peaks, bounds = roofline(tiny_merged, SIZE, 2, "cpu", measured_s={n: r.seconds_per_batch for n, r in results.items()},
                             peaks=measure_peaks("cpu", threads=1, trials=2, copy_bytes=1 << 22, min_time=0.01))
    assert all(0 < b.achieved_fraction <= 1 for b in bounds.values())
    assert peaks.runtime == "torch" and "kernel" in peaks.flop_s_from and "copy" in peaks.bytes_s_from


def test_a_time_below_its_bound_is_refused():
    with pytest.raises(BenchError, match="below the roofline bound"):
        time_bound(macs=10**9, traffic_bytes=1, batch=1, peaks=low_peaks(flop_s=1e9), measured_s=1.0)
    assert time_bound(10**9, 1, 1, low_peaks(flop_s=2e9), measured_s=1.0).achieved_fraction == pytest.approx(1.0)


@pytest.mark.parametrize("runtime, dtype", [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8")])
def test_peaks_are_measured_in_each_runtime_and_precision(runtime, dtype):
    pytest.importorskip(runtime)
    if runtime == "openvino":
        pytest.importorskip("nncf")
    peaks = measure_peaks("cpu", dtype, threads=1, trials=2, copy_bytes=1 << 22, runtime=runtime, min_time=0.01)
    assert (peaks.runtime, peaks.dtype) == (runtime, dtype) and peaks.flop_s > 1e8
    assert f"in {runtime} {dtype}" in peaks.flop_s_from and peaks.matmul_size is None
