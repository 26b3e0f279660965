"""Many settings of one set of networks in one run: which runtime, dtype, layout, mode, threads
and batch; one tidy table with the speed-up over the base in the same setting and over the
fastest base of the whole run.

    ds.bench.runtime_table({"base": merged_base, "DS-A": merged_a}, 224, batch=16, threads=1)
    ds.bench.best_base(frame)          the fastest way the run found to run the base network

`Setting` names one way of running; `expand_settings` turns the CLI's lists into settings,
with every combination that cannot run here reported (never silently dropped).
"""
from __future__ import annotations

import itertools
import os
import sys
import warnings
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import pandas as pd
from torch import nn

import ds

from ds.provenance import resolve_device

from .report import setting_rows, to_frame
from .roofline import measure_peaks, roofline
from .runtimes import MODES as RUNTIME_MODES
from .runtimes import RUNTIMES, check_runtime, unsupported
from .settings import INT8, BenchError, check_mode, layout_name, precision_name, resolve_layout
from .timing import measure, resolve_mode

BASE = "base"


def short_name(runtime: str, layout: str, dtype: str) -> str:
    """A runtime setting's short name: 'torch NCHW', 'torch channels_last', 'onnxruntime',
    'openvino', with the dtype when it is not fp32."""
    name = f"torch {'NCHW' if layout == 'nchw' else layout}" if runtime == "torch" else runtime
    return name if dtype == "fp32" else f"{name} {dtype}"


def setting_labels(table: pd.DataFrame) -> pd.Series:
    """short_name of every row of a ds.bench table."""
    return table.apply(lambda row: short_name(row["runtime"], row["layout"], row["dtype"]), axis=1)


@dataclass(frozen=True)
class Setting:
    """One way of running the networks: runtime, dtype, layout, mode, CPU threads, batch."""
    runtime: str
    dtype: str     # fp32, fp16, bf16; int8 (onnxruntime, openvino: the network quantized)
    layout: str    # nchw or channels_last (torch); nchw input for the other runtimes
    mode: str      # torch: eager, compile, cudagraph; others: their own (ds.bench.runtimes.MODES)
    threads: int
    batch: int

    @property
    def label(self) -> str:
        return (f"{self.runtime} {self.dtype} {self.layout} {self.mode}, {self.threads} threads, "
                f"batch {self.batch}")

    @property
    def short(self) -> str:
        """'torch NCHW', 'torch channels_last', 'onnxruntime', 'openvino bf16': what tables and figures show."""
        return short_name(self.runtime, self.layout, self.dtype)

    @property
    def way(self) -> str:
        """The setting without threads and batch: how the network runs."""
        return f"{self.runtime} {self.dtype} {self.layout} {self.mode}"


def parse_runtimes(text: str) -> list[tuple[str, str | None]]:
    """'torch,onnxruntime,openvino:bf16,openvino:int8' -> [(runtime, dtype or None)]; a ':dtype'
    suffix pins that runtime's dtype instead of --dtypes (int8: the network quantized for it)."""
    entries = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, dtype = item.partition(":")
        check_runtime(name)
        entries.append((name, precision_name(dtype) if dtype else None))
    if not entries:
        raise BenchError(f"--runtimes {text!r}: name at least one of {', '.join(RUNTIMES)}")
    return entries


def expand_settings(runtimes, dtypes, layouts, modes, threads, batches,
                    device) -> tuple[list[Setting], list[str]]:
    """Every combination asked for that can run on `device`, and a note for each that cannot.

    torch runs the product of dtypes x layouts x modes (modes resolved for the device: a
    fall-back to one already listed runs once); onnxruntime and openvino run each of the dtypes
    they support, with their own layout and mode.
    """
    device = resolve_device(device)
    runtimes = parse_runtimes(runtimes) if isinstance(runtimes, str) else [
        (r, None) if isinstance(r, str) else tuple(r) for r in runtimes]
    dtypes = [precision_name(d) for d in dtypes]
    layouts = [layout_name(resolve_layout(l)) for l in layouts]
    modes = [check_mode(m) for m in modes]
    if not (dtypes and layouts and modes):
        raise BenchError("--dtypes, --layouts and --modes each need at least one entry")
    settings, notes = [], []
    for runtime, pinned in runtimes:
        wanted = [pinned] if pinned else dtypes
        if runtime == "torch":
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                resolved = [resolve_mode(m, device) for m in modes]
            if INT8 in wanted:
                notes.append(f"torch int8 not measured: {unsupported('torch', INT8, device)}")
            ways = itertools.product([d for d in wanted if d != INT8], layouts, resolved)
        else:
            ways = []
            for dtype in wanted:
                reason = unsupported(runtime, dtype, device)
                if reason:
                    notes.append(f"{runtime} {dtype} not measured: {reason}")
                else:
                    ways.append((dtype, "nchw", RUNTIME_MODES[runtime]))
            if layouts != ["nchw"] or modes != ["eager"]:
                notes.append(f"{runtime}: --layouts and --modes apply to torch only; {runtime} "
                             f"takes NCHW input and runs in its own mode ({RUNTIME_MODES[runtime]})")
        for (dtype, layout, mode), n, b in itertools.product(list(ways), threads, batches):
            settings.append(Setting(runtime, dtype, layout, mode, int(n), int(b)))
    return list(dict.fromkeys(settings)), list(dict.fromkeys(notes))


def add_best_base(frame: pd.DataFrame, base: str = BASE) -> pd.DataFrame:
    """Fill `speedup_over_best_base` and `best_base`: each row's img/s over the fastest base row
    with the same device, threads, batch and input (any runtime, dtype, layout or mode)."""
    frame = frame.copy()
    keys = ["device", "threads", "batch", "input"]
    bases = frame[frame["pattern"] == base]
    if bases.empty:
        raise BenchError(f"no {base!r} rows: the best base needs the base network measured")
    best = bases.loc[bases.groupby(keys)["img_s_median"].idxmax()]
    best = best.assign(best_base=best["runtime"] + " " + best["dtype"] + " " + best["layout"] + " "
                       + best["mode"], best_img_s=best["img_s_median"])[keys + ["best_base", "best_img_s"]]
    merged = frame.drop(columns=["best_base", "speedup_over_best_base"]).merge(best, on=keys, how="left")
    merged["speedup_over_best_base"] = merged["img_s_median"] / merged["best_img_s"]
    return merged.drop(columns=["best_img_s"])[list(frame.columns)]


def best_base(frame: pd.DataFrame, base: str = BASE) -> pd.DataFrame:
    """The fastest base row per (device, threads, batch, input): the baseline to beat."""
    bases = frame[frame["pattern"] == base]
    if bases.empty:
        raise BenchError(f"no {base!r} rows in the table")
    keys = ["device", "threads", "batch", "input"]
    return bases.loc[bases.groupby(keys)["img_s_median"].idxmax()].reset_index(drop=True)


def measure_settings(models: Mapping[str, nn.Module], input_size, settings: list[Setting], device,
                     model_name: str = "", *, repeats: int = 5, warmup: int = 3,
                     min_time: float = 0.5, iters: int | None = None, seed: int = 0,
                     compile_mode: str = "default", macs: Mapping[str, int] | None = None,
                     params: Mapping[str, int] | None = None, base: str = BASE, images=None,
                     on_repeat: Callable[[str], None] | None = None,
                     log: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, dict]:
    """Time `models` in every setting (interleaved within each), bound each row by the roofline.

    Returns (frame, record): one row per network and setting with both speed-ups, and a record
    of the load average per setting, the peaks of each runtime and precision, and for int8
    settings how each network was quantized and how its file compares with the float network
    (for a provenance sidecar). int8 settings share `images` (an Int8Images; default:
    ds.export.quantize.calibration_images at `input_size`, seeded with `seed`).
    Peaks are a best case that a busy machine can only lower: measured (ds.bench.roofline) before
    and after every setting of a (runtime, dtype, threads) triple, the best kept, bounds computed
    last; every achieved fraction lies in (0, 1].
    """
    if base not in models:
        raise BenchError(f"the networks must include the base network as {base!r}")
    dev = resolve_device(device)
    log = log or (lambda text: print(text, file=sys.stderr))
    macs = dict(macs) if macs else {n: int(ds.macs(m, input_size)) for n, m in models.items()}
    params = dict(params) if params else {n: int(ds.params(m)) for n, m in models.items()}
    if images is None and any(s.dtype == INT8 for s in settings):
        from ds.export.quantize import calibration_images
        images = calibration_images(input_size, seed=seed)
    peak_time = min(min_time, 0.1)   # per repeat of a peak kernel: they are large and steady
    peaks, measured, loads, quantization = {}, [], [], {}
    for setting in settings:
        log(f"measuring {len(models)} models, {setting.label}, input {input_size}, "
            f"{repeats} interleaved repeats")
        load_start = os.getloadavg()
        key = (setting.runtime, setting.dtype, setting.threads)
        if key not in peaks:
            peaks[key] = measure_peaks(dev, setting.dtype, threads=setting.threads, runtime=setting.runtime,
                                       min_time=peak_time)
        torch_way = setting.runtime == "torch"
        results = measure(models, input_size, setting.batch, dev, setting.dtype,
                          setting.layout if torch_way else False,
                          setting.mode if torch_way else "eager",
                          repeats=repeats, warmup=warmup, min_time=min_time, iters=iters,
                          threads=setting.threads, compile_mode=compile_mode, seed=seed,
                          runtime=setting.runtime, images=images, on_repeat=on_repeat)
        if base not in results:   # its INT8 file failed the check (measure warned): no speed-up to give
            warnings.warn(f"{setting.label} not measured: the base network's INT8 file failed the check", stacklevel=2)
            continue
        peaks[key] = peaks[key].best(measure_peaks(dev, setting.dtype, threads=setting.threads,
                                                   runtime=setting.runtime, min_time=peak_time))
        load_end = os.getloadavg()
        measured.append((key, results, load_start))
        loads.append(dict(setting=setting.label, load_average_start=load_start,
                          load_average_end=load_end))
        if setting.dtype == INT8:
            quantization[setting.label] = {name: dict(settings=r.quantization, check=r.quantization_check)
                                           for name, r in results.items()}
    for key, results, _ in measured:   # first raise each peak to what any of its settings reached ...
        batch = next(iter(results.values())).batch
        peaks[key], _ = roofline(models, input_size, batch, dev, key[1],
                                 {n: r.seconds_per_batch for n, r in results.items()}, peaks=peaks[key], macs=macs)
    rows = []
    for key, results, load_start in measured:   # ... then bound every row by the same peaks
        batch = next(iter(results.values())).batch
        _, bounds = roofline(models, input_size, batch, dev, key[1],
                             {n: r.seconds_per_batch for n, r in results.items()},
                             peaks=peaks[key], macs=macs)
        rows += setting_rows(model_name, results, bounds, macs, params, base=base,
                             load_average=load_start[0])
    frame = add_best_base(to_frame(rows), base)
    record = dict(load_average_per_setting=loads, peaks=[asdict(p) for p in peaks.values()])
    if quantization:
        record.update(int8_images=images.record(), quantization=quantization)
    return frame, record


def runtime_table(models: Mapping[str, nn.Module], input_size, batch: int = 16,
                  runtimes=RUNTIMES, threads=(1,), dtypes=("fp32",),
                  layouts=("nchw", "channels_last"), modes=("eager",), device="cpu",
                  model_name: str = "", **protocol) -> pd.DataFrame:
    """{name: merged network} (must hold "base") timed in every runtime; a tidy DataFrame.

    Columns: runtime, runtime_version, dtype, layout, mode, threads, batch, pattern,
    img_s_median/min/max, speedup_same_runtime, speedup_over_best_base, best_base,
    achieved_fraction (of the roofline bound), load_average, and the rest of ds.bench's CSV.
    Combinations that cannot run here are left out with a warning that says why.
    `protocol`: repeats, warmup, min_time, iters, seed, compile_mode (see measure_settings).
    """
    threads = [threads] if isinstance(threads, int) else list(threads)
    batches = [batch] if isinstance(batch, int) else list(batch)
    settings, notes = expand_settings(runtimes if isinstance(runtimes, str) else list(runtimes),
                                      list(dtypes), list(layouts), list(modes), threads, batches,
                                      device)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    frame, _ = measure_settings(models, input_size, settings, device, model_name, **protocol)
    return frame

