"""Chapter 5, throughput: the merged networks timed in every runtime, the study's table, where the time goes.

Each step takes the chapter's context (`study.setup`) and its parameters, writes its table to the
run directory (row by row where a row is expensive, so an interrupted chapter resumes) and returns
it for the notebook to show."""
from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ds import bench
from ds.bench.compare import setting_labels
from ds.bench.profile import time_share_table
from ds.bench.settings import all_cores
from ds.export.quantize import CALIBRATION_DATASET, calibration_images
from ds.networks import load_network
from ds.provenance import resolve_device

from .chapter import Chapter
from .int8 import RUNTIMES as INT8_RUNTIMES
from .merge import standing
from .search import pattern_source


def merged_networks(ch: Chapter) -> dict:
    """{'base': the BN-folded base, pattern name: the merged network that stands for it} as
    chapter 4 saved them (`standing`: speed depends on the pattern, not on how it was finetuned)."""
    table = standing(pd.read_csv(ch.require(ch.layout.merge_csv, "04_merge")))
    return {row.pattern: load_network(ch.require(ch.layout.merged_network(row.pattern, row.finetune), "04_merge"))
            for row in table.itertuples()}


NETWORK_CHOICES = ("all", "finetuned")   # what an input of chapter 5 times: every merged network, or chapter 3's


def networks_to_time(models: dict, merge: pd.DataFrame, which: str) -> dict:
    """The networks of `models` ({pattern: network}) to time at one input: 'all' of them, or
    'finetuned': the base and the patterns chapter 3 finetuned (those whose standing network is not
    chapter 2's one-epoch candidate). A ValueError names a choice that is neither, or 'finetuned'
    where chapter 3 finetuned nothing."""
    if which not in NETWORK_CHOICES:
        raise ValueError(f"networks to time must be one of {', '.join(NETWORK_CHOICES)}, got {which!r}")
    if which == "all":
        return models
    stands = standing(merge)
    finetuned = set(stands.loc[stands["finetune"] != "candidate", "pattern"]) - {"base"}
    if not finetuned:
        raise ValueError("'finetuned' asks for chapter 3's networks, and chapter 4 merged none of them; "
                         "time 'all' networks instead")
    return {name: model for name, model in models.items() if name == "base" or name in finetuned}


def bench_devices(devices: str | list[str]) -> list[str]:
    """'auto': the CPU, and the GPU when there is one; else the listed devices (each checked)."""
    names = ["cpu", "auto"] if devices == "auto" else ([devices] if isinstance(devices, str) else list(devices))
    resolved = []
    for name in names:
        device = str(resolve_device(name))
        if device not in resolved:
            resolved.append(device)
    return resolved


@dataclass
class ThroughputResult:
    table: pd.DataFrame        # one row per device, runtime setting and network (throughput.csv)
    not_measured: list[str]    # settings asked for that cannot run here, each with the reason


def int8_table(ch: Chapter) -> pd.DataFrame | None:
    """Chapter 4's INT8 accuracy (int8.csv), or None where it measured none."""
    path = ch.layout.int8_csv
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    return table if len(table) else None


def bench_int8_images(int8: pd.DataFrame | None, size: int):
    """The images ds.bench calibrates and checks its INT8 settings on at `size`: as many training
    images as chapter 4 calibrated on, from the same dataset with the same seed (the first of the
    full training split's permutation: for a run on all of it at its stored size, chapter 4's very
    images), and as many more for the check; ds.bench's default without chapter 4's table."""
    if int8 is None:
        return None
    first = int8.iloc[0]
    dataset = first.get("calibration_dataset")
    return calibration_images(size, int(first["calibration_images"]), int(first["calibration_seed"]),
                              dataset if dataset in ("cifar10", "cifar100") else CALIBRATION_DATASET)


def row_top1(table: pd.DataFrame, merge: pd.DataFrame, int8: pd.DataFrame | None) -> pd.Series:
    """The top-1 of each throughput row, as chapter 4 measured it for the network that stands for the
    row's pattern: its merged float top-1, and in an INT8 setting its INT8 top-1 in that runtime
    (NaN where chapter 4 did not quantize for that runtime)."""
    stands = standing(merge)
    top1 = table["pattern"].map(stands.set_index("pattern")["acc_merged"])
    quantized = table["dtype"] == "int8"
    if not quantized.any():
        return top1
    measured = pd.Series(dtype=float)
    if int8 is not None:
        ours = int8.merge(stands[["pattern", "finetune"]], on=["pattern", "finetune"])
        measured = ours.set_index(["pattern", "runtime"])["top1_int8"]
    keys = list(zip(table.loc[quantized, "pattern"], table.loc[quantized, "runtime"]))
    top1[quantized] = [measured.get(key, float("nan")) for key in keys]
    return top1


def throughput(ch: Chapter, devices, inputs: list[tuple[int | None, int, str]], repeats: int = 5,
               min_time: float = 0.2, threads: int | None = None,
               runtimes=("torch", "onnxruntime", "openvino")) -> ThroughputResult:
    """Images/s of the BN-folded base and the merged networks (the one that stands for each
    pattern, as chapter 4 saved it) in every runtime (torch NCHW and channels_last, ONNX Runtime,
    OpenVINO, and INT8 in onnxruntime:int8 and openvino:int8; on a GPU torch only), at every
    (input size, batch, networks) of `inputs` (size None: the training size; networks 'all' or
    'finetuned', see `networks_to_time`), networks interleaved within each setting. Each row has
    the speed-up over the base in the same setting and over the fastest base of the device at that
    input (any setting, INT8 included), the setting's label, its
    `quantization` (how an INT8 network was made; empty in float), and the top-1 chapter 4
    measured (`row_top1`: the INT8 top-1 in an INT8 setting) with its change against the float
    base (throughput.csv). The INT8 settings quantize each network as ds.bench does, calibrated as
    chapter 4 did (`bench_int8_images`)."""
    models = merged_networks(ch)
    merge = pd.read_csv(ch.layout.merge_csv)
    base_top1 = standing(merge).set_index("pattern")["acc_merged"]["base"]
    int8 = int8_table(ch)
    timed = {which: networks_to_time(models, merge, which) for _, _, which in inputs}   # bad choices fail first
    frames, not_measured = [], []
    for device in bench_devices(devices):
        here = ",".join(runtimes) if device == "cpu" else "torch"
        for size, batch, which in inputs:
            images = bench_int8_images(int8, size or ch.input_size) if ":int8" in here else None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                frame = bench.runtime_table(timed[which], size or ch.input_size, batch, runtimes=here,
                                            threads=threads or all_cores(), device=device, model_name=ch.backbone,
                                            repeats=repeats, min_time=min_time, images=images,
                                            log=lambda text: None)
            not_measured += [f"{device}: {w.message}" for w in caught
                             if "not measured" in str(w.message) and f"{device}: {w.message}" not in not_measured]
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table.insert(table.columns.get_loc("runtime") + 1, "setting", setting_labels(table))
    table["top1"] = row_top1(table, merge, int8)
    table["delta_acc"] = table["top1"] - base_top1
    path = ch.layout.throughput_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return ThroughputResult(table, not_measured)


def best_setting_per_pattern(table: pd.DataFrame) -> pd.DataFrame:
    """For each device, input size and network, the row of the setting where it runs fastest (what a user
    who deploys it well gets), with its speed-up over the device's fastest base."""
    best = table.loc[table.groupby(["device", "input", "pattern"])["img_s_median"].idxmax()]
    return best.reset_index(drop=True)


def study_table(ch: Chapter, throughput: pd.DataFrame, device: str = "cpu") -> pd.DataFrame:
    """One row per network of the run (study.csv): pattern, source, finetune, removed_blocks,
    distilled, seed, top1 (unmerged) and top1_merged, macs (merged, at the training input), chapter
    4's INT8 top-1 and agreement per runtime (top1_int8_<runtime>, agreement_int8_<runtime>, where
    it quantized), and on `device` at the training input the img/s in the setting where the network
    runs fastest (INT8 settings included) and the speed-up over the fastest base (img_s, speedup,
    setting), with the network's top-1 in that setting (top1_at_setting: its INT8 top-1 when the
    setting is INT8); other input sizes add img_s, speedup and setting suffixed _<size>px. Speed is
    the pattern's: every finetune of a pattern shares it."""
    merge = pd.read_csv(ch.require(ch.layout.merge_csv, "04_merge"))
    table = pd.DataFrame({
        "pattern": merge["pattern"], "source": merge["pattern"].map(pattern_source), "finetune": merge["finetune"],
        "removed_blocks": merge["removed_blocks"], "distilled": merge["distill"], "seed": ch.seed,
        "top1": merge["acc_unmerged"], "top1_merged": merge["acc_merged"], "macs": merge["macs_merged"]})
    table = with_int8_columns(table, int8_table(ch))
    best = best_setting_per_pattern(throughput[throughput["device"] == device])
    for size, group in best.groupby("input"):
        suffix = "" if size == ch.input_size else f"_{size}px"
        speed = group.set_index("pattern")
        table[f"img_s{suffix}"] = table["pattern"].map(speed["img_s_median"])
        table[f"speedup{suffix}"] = table["pattern"].map(speed["speedup_over_best_base"])
        table[f"setting{suffix}"] = table["pattern"].map(speed["setting"])
        if not suffix:
            table["top1_at_setting"] = top1_at_setting(table, speed)
    path = ch.layout.study_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table


def with_int8_columns(table: pd.DataFrame, int8: pd.DataFrame | None) -> pd.DataFrame:
    """`table` (one row per pattern and finetune) with top1_int8_<runtime> and agreement_int8_<runtime>
    for every runtime chapter 4 quantized for (none without int8.csv)."""
    if int8 is None:
        return table
    table = table.copy()
    keys = list(zip(table["pattern"], table["finetune"]))
    for runtime in [r for r in INT8_RUNTIMES if r in set(int8["runtime"])]:
        rows = int8[int8["runtime"] == runtime].set_index(["pattern", "finetune"])
        table[f"top1_int8_{runtime}"] = [rows["top1_int8"].get(key, float("nan")) for key in keys]
        table[f"agreement_int8_{runtime}"] = [rows["agreement"].get(key, float("nan")) for key in keys]
    return table


def top1_at_setting(table: pd.DataFrame, speed: pd.DataFrame) -> pd.Series:
    """Each network's top-1 in the setting where its pattern runs fastest (`speed`: one row per
    pattern): its merged float top-1, or in an INT8 setting its own INT8 top-1 in that runtime."""
    def one(row):
        best = speed.loc[row["pattern"]] if row["pattern"] in speed.index else None
        if best is None or best["dtype"] != "int8":
            return row["top1_merged"]
        return row.get(f"top1_int8_{best['runtime']}", float("nan"))
    return table.apply(one, axis=1)


def _top1_note(row) -> str:
    """' (top-1 84.10%)' where the row carries a top-1, else ''."""
    top1 = row.get("top1")
    return "" if top1 is None or pd.isna(top1) else f" (top-1 {top1:.2f}%)"


def _float_line(group: pd.DataFrame) -> str:
    """Where INT8 rows are in the table: the same comparison in float settings alone."""
    floats = group[group["dtype"] != "int8"]
    bases, merged = floats[floats["pattern"] == "base"], floats[floats["pattern"] != "base"]
    if bases.empty or merged.empty:
        return ""
    base = bases.sort_values("img_s_median").iloc[-1]
    best = merged.sort_values("img_s_median").iloc[-1]
    return (f" In float settings alone, the fastest base is {base['setting']} at {base['img_s_median']:.1f} img/s "
            f"and the fastest merged network, {best['pattern']} in {best['setting']}, runs "
            f"{best['img_s_median'] / base['img_s_median']:.2f}x that.")


def throughput_reading(table: pd.DataFrame) -> str:
    """Two sentences per device and input size with the numbers a reader needs: the fastest base,
    and what the fastest merged network gains over it and over the base in its own runtime, each
    with its top-1 where the table has it (an INT8 row's is its INT8 top-1); where INT8 settings
    were timed, a third with the same comparison in float settings alone."""
    lines = []
    for (device, size), group in table.groupby(["device", "input"]):
        base = group[group["pattern"] == "base"].sort_values("img_s_median").iloc[-1]
        best = group[group["pattern"] != "base"].sort_values("speedup_over_best_base").iloc[-1]
        losers = group[(group["pattern"] != "base") & (group["speedup_over_best_base"] < 1)]
        quantized = "dtype" in group and (group["dtype"] == "int8").any()
        lines.append(
            f"On **{device}** ({base['device_name']}) at {size} px, batch {base['batch']}, the fastest way to run the base network is "
            f"**{base['setting']}** at {base['img_s_median']:.1f} img/s{_top1_note(base)}. The fastest merged network, "
            f"**{best['pattern']}** in {best['setting']}, runs at {best['img_s_median']:.1f} img/s{_top1_note(best)}: "
            f"**{best['speedup_over_best_base']:.2f}x** over that best base "
            f"({best['speedup_same_runtime']:.2f}x over the base in its own setting). "
            + (f"{len(losers)} of {int((group['pattern'] != 'base').sum())} (setting, network) rows are slower "
               f"than the best base: a merged network run in a slow runtime does not beat the base run in "
               f"a fast one." if len(losers) else "Every merged network beats the best base in every setting.")
            + (_float_line(group) if quantized else ""))
    return "\n\n".join(lines)


@dataclass
class TimeShares:
    table: pd.DataFrame        # one row per setting and network: ms per batch by kind of layer
    not_measured: list[str]    # settings that cannot run here, each with the reason


def time_shares(ch: Chapter, settings: list[str], batch: int, input_size: int | None = None,
                threads: int = 1, runs: int = 5) -> TimeShares:
    """Where each network's CPU time goes (ds.bench.profile.time_share_table): ms per batch in
    depthwise, 1x1 and dense k x k convolutions and the rest, per runtime setting, for the base and
    every merged (distilled) network as chapter 4 saved them, each through its runtime's own profiler
    (time_shares.csv). Shares are what to read: profiling adds overhead to the times."""
    table, not_measured = time_share_table(merged_networks(ch), input_size or ch.input_size, batch, settings,
                                           threads=threads, runs=runs, seed=ch.seed)
    path = ch.layout.time_shares_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return TimeShares(table, not_measured)


def time_share_reading(table: pd.DataFrame) -> str:
    """Per setting: where the base's time goes, the most a merge could save if depthwise convs
    cost nothing, and where the time of the fastest merged network (by the profile) goes."""
    lines = []
    for setting, group in table.groupby("setting", sort=False):
        base = group[group["pattern"] == "base"].iloc[0]
        merged = group[group["pattern"] != "base"]
        if merged.empty:
            continue
        best = merged.sort_values("total_ms").iloc[0]
        lines.append(
            f"- **{setting}.** The base spends {100 * base['depthwise_share']:.0f}% of its profiled time in "
            f"depthwise convolutions, {100 * base['pointwise_share']:.0f}% in 1x1 convolutions and "
            f"{100 * base['other_share']:.0f}% outside convolutions; were its depthwise convolutions free, it "
            f"would run {1 / (1 - base['depthwise_share']):.2f}x faster. **{best['pattern']}** spends "
            f"{100 * best['dense_kxk_share']:.0f}% in dense k x k convolutions, "
            f"{100 * best['pointwise_share']:.0f}% in 1x1 ones and {100 * best['depthwise_share']:.0f}% in the "
            f"depthwise ones it keeps; its profiled pass takes {best['total_ms'] / base['total_ms']:.2f} of the "
            f"base's time.")
    return "\n".join(lines)


def published_tables(results_dir: str | Path, kind: str = "throughput") -> dict[str, pd.DataFrame]:
    """The tables published under `results_dir` ({path: table}): ds.bench throughput CSVs (kind
    'throughput', for the paper's table) or time-share CSVs (kind 'time_shares', ds.bench --time-shares)."""
    column = {"throughput": "img_s_median", "time_shares": "depthwise_share"}[kind]
    tables = {path: pd.read_csv(path) for path in sorted(glob.glob(os.path.join(str(results_dir), "*.csv")))}
    return {path: table for path, table in tables.items() if column in table.columns}
