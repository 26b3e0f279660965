"""Latency tables for the gate search, measured in the runtime a pattern will run on.

The search weighs each block by the time merging it saves. That saving depends on where the
network runs (a 1x1 conv is slow in torch NCHW eager and fast in ONNX Runtime), so the table is
measured in the target runtime, block by block: for every searchable block, the block as the
base network runs it (BN folded, activations on) and the same block with its activations removed
and merged (one dense conv), each fed a batch of the shape it receives inside the network, the
two interleaved within every repeat. The saving is the difference of their median times.

Timing a block alone, rather than the whole network with only that block merged, measures a
difference of a few milliseconds directly instead of as the small gap between two long passes
(which drift on a shared machine swamps). With `final_act` kept (the default of `ds.merge`) every
removed block merges on its own, so a pattern's saving is the sum of its blocks' savings;
`predicted_saving` gives that sum, to compare with a measured pattern.

    latency_table(model, 224, batch=16, runtime="onnxruntime", threads=1)  -> {"3": 0.0021, ...}
    block_latencies(...)                                   -> the per-block timings behind it
    python -m ds.bench --model mobilenetv2_140 --runtimes onnxruntime --threads 1 --batch 16 \\
        --latency-table latency_ort.json
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

import ds
from ds.gating import searchable_switches

from .runtimes import MODES as RUNTIME_MODES
from .settings import BenchError, resolve_dtype
from .timing import measure
from .variants import build_variants

BLOCK, MERGED = "block", "merged"


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


def block_inputs(model: nn.Module, paths, input_size) -> dict[str, tuple[int, ...]]:
    """{module path: shape (C, H, W) of the input it receives} in one forward pass of `model`."""
    shapes, handles = {}, []
    for path in paths:
        def record(_module, args, path=path):
            shapes[path] = tuple(args[0].shape[1:])
        handles.append(model.get_submodule(path).register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(ds.cost.input_shape(model, input_size)))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def block_latencies(model: nn.Module, input_size, batch: int = 16, runtime: str = "torch",
                    threads: int = 1, device="cpu", dtype: str = "fp32", layout: str = "nchw",
                    mode: str = "eager", merge_depthwise_separable: bool = False,
                    **protocol) -> pd.DataFrame:
    """One row per searchable block: its input shape, the block's and its merged form's time per
    batch (median, min, max, ms) timed interleaved in `runtime`, and saved_ms (median difference).

    `protocol`: repeats, warmup, min_time, iters, seed (ds.bench.timing.measure).
    """
    patterns = single_block_patterns(model)
    merged, _ = build_variants(model, patterns, input_size, merge_depthwise_separable)
    base = merged.pop("base")
    switches = {str(s.index): s for s in searchable_switches(model)}
    shapes = block_inputs(base, [switches[b].path for b in patterns], input_size)
    torch_way = runtime == "torch"
    rows = []
    for block, network in merged.items():
        path = switches[block].path
        channels, *size = shapes[path]
        pair = {BLOCK: base.get_submodule(path), MERGED: network.get_submodule(path)}
        timed = measure(pair, tuple(size), batch, device, resolve_dtype(dtype),
                        layout == "channels_last" if torch_way else False,
                        mode if torch_way else "eager", threads=threads, in_chans=channels,
                        runtime=runtime, **protocol)
        row = {"block": int(block), "path": path, "input": "x".join(map(str, shapes[path]))}
        for name, result in timed.items():
            row[f"{name}_ms_median"] = 1e3 * batch / result.img_s_median
            row[f"{name}_ms_min"] = 1e3 * batch / result.img_s_max
            row[f"{name}_ms_max"] = 1e3 * batch / result.img_s_min
        row["saved_ms"] = row[f"{BLOCK}_ms_median"] - row[f"{MERGED}_ms_median"]
        first = next(iter(timed.values()))
        row.update(runtime=runtime, runtime_version=first.runtime_version, dtype=first.dtype,
                   layout=first.layout, mode=first.mode if torch_way else RUNTIME_MODES[runtime],
                   threads=first.threads, batch=batch)
        rows.append(row)
    return pd.DataFrame(rows)


def table_from(frame: pd.DataFrame) -> dict[str, float]:
    """{block: seconds per batch saved} (what ds.gating.load_latency_table reads) from block_latencies."""
    return {str(int(b)): float(ms) / 1e3 for b, ms in zip(frame["block"], frame["saved_ms"])}


def latency_table(model: nn.Module, input_size, batch: int = 16, runtime: str = "torch",
                  threads: int = 1, device="cpu", dtype: str = "fp32", layout: str = "nchw",
                  mode: str = "eager", merge_depthwise_separable: bool = False,
                  **protocol) -> dict[str, float]:
    """Seconds per batch saved by merging each searchable block, timed in `runtime` (see the
    module's docstring). Keys are switch indices as strings; a negative value means the merged
    block is slower there than the block it replaces."""
    return table_from(block_latencies(model, input_size, batch, runtime, threads, device, dtype,
                                      layout, mode, merge_depthwise_separable, **protocol))


def predicted_saving(table: dict[str, float], pattern) -> float:
    """Seconds per batch a pattern saves by the table: the sum over its removed searchable blocks.

    A removed block the table lacks (stem, head, an unsearched block) is an error: the table
    cannot predict it."""
    removed = [str(i) for i, keep in enumerate(pattern) if not keep]
    missing = [b for b in removed if b not in table]
    if missing:
        raise BenchError(f"the latency table has no entry for removed switch(es) {', '.join(missing)}")
    return sum(table[b] for b in removed)


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
