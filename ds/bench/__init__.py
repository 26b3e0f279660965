"""Honest throughput measurement of merged versus original networks (docs/design.md, "Measuring speed").

    ds.bench.throughput(model, input_size, batch, device)   one model, median img/s + spread
    ds.bench.measure({name: model}, ...)                     several models, interleaved
    ds.bench.roofline({name: model}, input_size, batch, device, measured_s=...)
    python -m ds.bench --help                                the paper's table and more
"""
from .settings import BenchError
from .roofline import Bound, Peaks, measure_peaks, roofline, time_bound
from .timing import Throughput, measure, throughput
from .traffic import memory_traffic

__all__ = ["throughput", "measure", "Throughput", "roofline", "measure_peaks", "time_bound",
           "memory_traffic", "Peaks", "Bound", "BenchError"]
