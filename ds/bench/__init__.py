"""Honest throughput measurement of merged versus original networks (docs/design.md, "Measuring speed").

    ds.bench.throughput(model, input_size, batch, device)   one model, median img/s + spread
    ds.bench.measure({name: model}, ...)                     several models, interleaved
    ds.bench.roofline({name: model}, input_size, batch, device, measured_s=...)
    ds.bench.runtime_table({name: merged}, input_size, batch, runtimes=(...), threads=1)
                                                             every runtime, both speed-ups, tidy
    ds.bench.best_base(frame)                                the fastest base of a table
    ds.bench.latency_table(model, input_size, batch, runtime="onnxruntime")
                                                             time saved per block, for the search
    ds.bench.block_latencies(...)                            the per-block timings behind it
    ds.bench.profile.time_share_table({name: merged}, ...)  where the time goes, per runtime
    python -m ds.bench --help                                the paper's table and more
"""
from .compare import Setting, best_base, expand_settings, measure_settings, runtime_table
from .latency import block_latencies, latency_table, predicted_saving
from .runtimes import RUNTIMES
from .settings import BenchError
from .roofline import Bound, Peaks, measure_peaks, roofline, time_bound
from .timing import Throughput, measure, throughput
from .traffic import memory_traffic

__all__ = ["throughput", "measure", "Throughput", "roofline", "measure_peaks", "time_bound",
           "memory_traffic", "Peaks", "Bound", "BenchError", "runtime_table", "best_base",
           "latency_table", "block_latencies", "predicted_saving", "measure_settings", "expand_settings", "Setting", "RUNTIMES"]
