"""Latency tables for the gate search, measured in the runtime a pattern will run on.

The search weighs each block by the time merging it saves. That saving depends on where the
network runs (a 1x1 conv is slow in torch NCHW eager and fast in ONNX Runtime), so the table is
measured in the target runtime: the base (BN folded) and, per searchable block, the network
with only that block's activations removed and merged, all timed together (interleaved).

    latency_table(model, 224, batch=16, runtime="onnxruntime", threads=1)  -> {"3": 0.0021, ...}
    python -m ds.bench --model mobilenetv2_140 --runtimes onnxruntime --threads 1 --batch 16 \\
        --latency-table latency_ort.json
"""
from __future__ import annotations

import pandas as pd

from torch import nn

import ds
from ds.gating import searchable_switches

from .compare import BASE, Setting, measure_settings
from .runtimes import MODES as RUNTIME_MODES
from .settings import BenchError
from .variants import build_variants


def single_block_patterns(model: nn.Module) -> dict[str, list[int]]:
    """{str(switch index): pattern with only that searchable block removed}."""
    n = len(ds.switches(model))
    patterns = {}
    for switch in searchable_switches(model):
        pattern = [1] * n
        pattern[switch.index] = 0
        patterns[str(switch.index)] = pattern
    if not patterns:
        raise BenchError("the model has no searchable (switchable) blocks: no latency table to measure")
    return patterns


def table_from(frame, base: str = BASE) -> dict[str, float]:
    """{block: seconds per batch saved} from the rows of one setting (base minus variant)."""
    seconds = dict(zip(frame["pattern"], frame["batch"] / frame["img_s_median"]))
    return {name: seconds[base] - s for name, s in seconds.items() if name != base}


def latency_table(model: nn.Module, input_size, batch: int = 16, runtime: str = "torch",
                  threads: int = 1, device="cpu", dtype: str = "fp32", layout: str = "nchw",
                  mode: str = "eager", merge_depthwise_separable: bool = False,
                  **protocol) -> dict[str, float]:
    """Seconds per batch saved by merging each searchable block alone, timed in `runtime`.

    Keys are switch indices as strings (what ds.gating.load_latency_table reads); a negative
    value means merging that block alone makes the network slower there. `protocol`: repeats,
    warmup, min_time, iters, seed (ds.bench.compare.measure_settings).
    """
    models, _ = build_variants(model, single_block_patterns(model), input_size,
                               merge_depthwise_separable)
    setting = Setting(runtime, dtype, layout, mode if runtime == "torch" else RUNTIME_MODES[runtime],
                      threads, batch)
    frame, _ = measure_settings(models, input_size, [setting], device, **protocol)
    return table_from(frame)


def compare_tables(tables: dict[str, dict[str, float]], remove: int) -> tuple[pd.DataFrame, dict]:
    """Blocks ranked by time saved, per runtime, and the `remove` blocks each runtime would
    remove first on latency alone.

    `tables` is {runtime label: latency table}. Returns (frame, chosen): frame has one row per
    block with its saving (ms per batch) and rank in every runtime; chosen is {label: sorted
    switch indices of its top `remove` blocks}. Equal sets mean the runtimes agree on where the
    time is; the gate search weighs these savings against accuracy.
    """
    if not tables:
        raise BenchError("no latency tables to compare")
    blocks = sorted(set.intersection(*(set(t) for t in tables.values())), key=int)
    if not 0 < remove <= len(blocks):
        raise BenchError(f"remove must be between 1 and {len(blocks)} (the blocks all tables share)")
    frame = pd.DataFrame({"block": [int(b) for b in blocks]})
    chosen = {}
    for label, table in tables.items():
        saved = pd.Series([table[b] * 1e3 for b in blocks])
        frame[f"{label}_ms"] = saved
        frame[f"{label}_rank"] = saved.rank(ascending=False, method="min").astype(int)
        chosen[label] = sorted(int(blocks[i]) for i in saved.nlargest(remove).index)
    return frame, chosen
