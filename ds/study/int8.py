"""Chapter 4's INT8 step: the base and every merged network quantized as CPU deployers run them,
measured on the whole test set against the float network.

Each network is quantized by ds.export.quantize (ONNX Runtime static QDQ, and OpenVINO NNCF when
OpenVINO and NNCF import), calibrated on a fixed seeded set of the run's *training* images (the
first `count` of a permutation seeded with the run's seed; never test images), then run batched on
every test image of the chapter beside the float network: float top-1, INT8 top-1, their change,
and the agreement (share of test images where INT8 and float predict the same class). One row per
network and runtime goes into int8.csv as it is measured, so an interrupted chapter resumes.

The targets (issue 22): INT8 top-1 within `TARGET_TOP1_CHANGE` points of float, agreement at least
`TARGET_AGREEMENT`.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ds.bench.runtimes import unsupported
from ds.bench.settings import INT8, BenchError
from ds.export import INPUT_NAME, ExportError, onnxruntime_session, to_onnx
from ds.export.quantize import (EXTENSION, INT8_MAX_ERROR, ImageSet, Int8Images, int8_runner, output_error,
                                quantize, training_images)

from .chapter import Chapter, append_row, read_rows
from .uncertainty import test_se

RUNTIMES = ("onnxruntime", "openvino")
CALIBRATION_IMAGES = 300          # the default of the chapter's int8_calibration_images
TARGET_TOP1_CHANGE = 0.5          # points: INT8 top-1 at most this far from float
TARGET_AGREEMENT = 0.97           # share of test images where INT8 and float predict the same class
# A merged network "quantizes much worse than the base" when INT8 costs it more than this many
# points beyond what it costs the base in the same runtime (a base that gains counts as losing
# nothing), and its loss is beyond two of its own standard errors (not the test set's noise). Twice
# the target: a network that misses the target is flagged only for a loss the target would not tolerate.
MUCH_WORSE_POINTS = 2 * TARGET_TOP1_CHANGE
KEY = ("pattern", "finetune", "runtime")
STRONG_CORRELATION = 0.7   # Pearson r from which the reading says disagreement follows the float error


class Int8Error(ValueError):
    """A chapter parameter of the INT8 step that cannot work."""


# ---------------------------------------------------------------- what runs here

def int8_runtimes() -> tuple[list[str], list[str]]:
    """(runtimes INT8 runs in here, a note per runtime that cannot, with the reason)."""
    runs, notes = [], []
    for runtime in RUNTIMES:
        try:
            reason = unsupported(runtime, INT8, torch.device("cpu"))
        except BenchError as e:
            reason = str(e)
        if reason:
            notes.append(f"{runtime} int8 not measured: {reason}")
        else:
            runs.append(runtime)
    return runs, notes


def check_count(count) -> int:
    """`count` as the number of calibration images: a whole number >= 0 (0: no INT8 step)."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise Int8Error(f"int8_calibration_images must be a whole number >= 0 (0 skips INT8), got {count!r}")
    return int(count)


def calibration_set(data, count: int, seed: int) -> ImageSet:
    """The first `count` images of a permutation (seeded with `seed`) of the training split of
    `data` (the run's training images, at the run's input size), normalized as ds.train feeds
    them; all of them when the run has fewer."""
    count = check_count(count)
    if count == 0:
        raise Int8Error("int8_calibration_images is 0: INT8 is off, there is nothing to calibrate")
    return training_images(data, 0, min(count, len(data.train_labels)), seed)


# ---------------------------------------------------------------- the test set

def test_arrays(loader) -> tuple[list[np.ndarray], np.ndarray]:
    """The chapter's test images as float32 NCHW batches on the CPU (normalized by the loader, in
    its order and batch size), and their labels."""
    batches, labels = [], []
    for x, y in loader:
        batches.append(np.ascontiguousarray(x.float().cpu().numpy()))
        labels.append(y.cpu().numpy())
    return batches, np.concatenate(labels)


def float_logits(model, float_path, batches: list[np.ndarray], threads: int | None = None) -> np.ndarray:
    """The float network's logits on every batch: its ONNX file `float_path` in ONNX Runtime (fp32;
    the same function as the torch network within float32 rounding, and several times faster on a
    CPU than torch's NCHW depthwise convolutions), or the torch network where ONNX Runtime is missing."""
    try:
        session = onnxruntime_session(float_path, threads)
    except ExportError:   # onnxruntime not installed
        net = model.float().cpu().eval()
        with torch.no_grad():
            return np.concatenate([net(torch.from_numpy(x)).numpy() for x in batches])
    return np.concatenate([session.run(None, {INPUT_NAME: x})[0] for x in batches])


def int8_logits(path, runtime: str, batches: list[np.ndarray], threads: int | None = None) -> np.ndarray:
    """The INT8 file's logits on every batch, in its runtime (ds.export.quantize.int8_runner)."""
    run = int8_runner(path, runtime, threads)
    return np.concatenate([run(x) for x in batches])


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (%) of `logits` (N, classes) against `labels`."""
    return 100.0 * float((logits.argmax(1) == labels).mean())


# ---------------------------------------------------------------- one row

def int8_row(model, float_path, pattern: str, finetune: str, runtime: str, calibration: ImageSet, test,
             expected: np.ndarray, threads: int | None, saturation_fix: bool | None = None) -> dict:
    """Quantize `model` (its float ONNX file `float_path`) for `runtime` on `calibration` and
    measure it on the test set `test` (batches, labels) against the float logits `expected`.
    `saturation_fix`: ds.export.quantize's (None: what this CPU needs)."""
    start = time.perf_counter()
    batches, labels = test
    with tempfile.TemporaryDirectory(prefix="ds-study-int8-") as tmp:
        q = quantize(model, runtime, Path(tmp) / f"model.int8{EXTENSION[runtime]}", Int8Images(calibration, None),
                     threads=threads, float_path=float_path, saturation_fix=saturation_fix)
        quantized = time.perf_counter()
        actual = int8_logits(q.path, runtime, batches, threads)
    errors = output_error(actual, expected)
    float_top1, int8_top1 = top1(expected, labels), top1(actual, labels)
    who = calibration.identity
    return {"pattern": pattern, "finetune": finetune, "runtime": runtime, "quantization": q.label,
            "calibration_dataset": who["dataset"], "calibration_images": who["count"], "calibration_seed": who["seed"],
            "calibration_sha256": who["indices_sha256"], "test_images": int(len(labels)),
            "top1_float": float_top1, "top1_int8": int8_top1, "top1_change": int8_top1 - float_top1,
            "agreement": errors["top1_agreement"], "rel_rms_error": errors["rel_rms_error"],
            "quantize_s": quantized - start, "evaluate_s": time.perf_counter() - quantized}


# ---------------------------------------------------------------- the step

def int8_accuracy(ch: Chapter, networks: dict, calibration_images: int = CALIBRATION_IMAGES,
                  threads: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(int8.csv, notes): every network of `networks` ({(pattern, finetune): merged network}, as
    merge_all returns them) quantized in every INT8 runtime that runs here, calibrated on the first
    `calibration_images` of the run's seeded training images, measured on the chapter's whole test
    set. Rows already in int8.csv (same network, runtime and calibration: an interrupted chapter's)
    are kept; the rest are added one by one (the runner clears the chapter's outputs when its
    inputs change). `calibration_images` 0: no INT8 (an empty table). `threads`: the runtimes'
    threads (default torch's)."""
    count = check_count(calibration_images)
    path = ch.layout.int8_csv
    if count == 0:
        return pd.DataFrame(columns=list(KEY)), ["INT8 not measured: int8_calibration_images is 0"]
    if ch.data is None or ch.test_loader is None:
        raise Int8Error(f"chapter {ch.name} was set up without data: INT8 needs the run's training and test images")
    runtimes, notes = int8_runtimes()
    calibration = calibration_set(ch.data, count, ch.seed)
    threads = threads or torch.get_num_threads()
    rows = [r for r in read_rows(path) if r.get("calibration_sha256") == calibration.identity["indices_sha256"]
            and (r["pattern"], r["finetune"]) in networks and r["runtime"] in runtimes]
    done = {tuple(r[k] for k in KEY) for r in rows}
    test = None
    for (pattern, finetune), model in networks.items():
        todo = [r for r in runtimes if (pattern, finetune, r) not in done]
        if not todo:
            continue
        if test is None:
            test = test_arrays(ch.test_loader)
        with tempfile.TemporaryDirectory(prefix="ds-study-float-") as tmp:
            float_path = to_onnx(model, Path(tmp) / "float.onnx", ch.input_size)
            expected = float_logits(model, float_path, test[0], threads)
            for runtime in todo:
                last = rows[-1]["quantize_s"] + rows[-1]["evaluate_s"] if rows else 0.0
                ch.piece.check(1.3 * last + 10, f"INT8 {runtime} of {pattern} ({finetune})")
                path.parent.mkdir(parents=True, exist_ok=True)
                append_row(path, rows, int8_row(model, float_path, pattern, finetune, runtime, calibration, test,
                                                expected, threads))
                ch.piece.record_progress()
    table = in_network_order(pd.DataFrame(rows), list(networks), runtimes)
    if len(table):
        table.to_csv(path, index=False)
    return table, notes


def in_network_order(table: pd.DataFrame, networks: list[tuple[str, str]], runtimes: list[str]) -> pd.DataFrame:
    """The rows in the order of `networks` ((pattern, finetune) pairs), then of `runtimes` (a
    resumed table has its earlier rows first)."""
    if not len(table):
        return table
    rank = {key: i for i, key in enumerate(networks)}
    order = [(rank[(r.pattern, r.finetune)], runtimes.index(r.runtime)) for r in table.itertuples()]
    return table.iloc[sorted(range(len(table)), key=order.__getitem__)].reset_index(drop=True)


# ---------------------------------------------------------------- the reading

def change_se(agreement: float, test_images: int) -> float:
    """An upper bound (points) on the standard error of INT8 top-1 minus float top-1 on the same
    images: only the images where they disagree can change the difference, so its variance is at
    most (1 - agreement) / n."""
    return 100.0 * math.sqrt(max(1.0 - agreement, 0.0) / test_images)


def meets_targets(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with two booleans per row: `top1_ok` (INT8 within TARGET_TOP1_CHANGE points of float)
    and `agreement_ok` (agreement >= TARGET_AGREEMENT)."""
    return table.assign(top1_ok=table["top1_change"].abs() <= TARGET_TOP1_CHANGE,
                        agreement_ok=table["agreement"] >= TARGET_AGREEMENT)


def much_worse_than_base(table: pd.DataFrame) -> pd.DataFrame:
    """The merged rows that INT8 costs more than MUCH_WORSE_POINTS beyond the base's loss in the same
    runtime (a gain counts as no loss), by more than two of the row's own change_se (none for a
    runtime without a base row)."""
    base = table[table["pattern"] == "base"].set_index("runtime")["top1_change"].clip(upper=0.0)
    merged = table[(table["pattern"] != "base") & table["runtime"].isin(base.index)]
    beyond = merged["top1_change"] < merged["runtime"].map(base) - MUCH_WORSE_POINTS
    se = [change_se(r.agreement, r.test_images) for r in merged.itertuples()]
    return merged[beyond & (merged["top1_change"] < -2 * pd.Series(se, index=merged.index))]


def _name(row) -> str:
    return "base" if row["pattern"] == "base" else f"{row['pattern']} ({row['finetune']})"


def _runtime_lines(runtime: str, group: pd.DataFrame) -> list[str]:
    """Per runtime: how many networks meet each target, and which do not."""
    n = len(group)
    top1_fail = group[~group["top1_ok"]]
    agree_fail = group[~group["agreement_ok"]]
    worst = group.loc[group["top1_change"].abs().idxmax()]
    lowest = group.loc[group["agreement"].idxmin()]
    line = (f"- **{runtime}**: INT8 top-1 within {TARGET_TOP1_CHANGE:g} points of float for **{n - len(top1_fail)} "
            f"of {n}** networks (largest change {worst['top1_change']:+.2f} points, {_name(worst)}); agreement at "
            f"least {TARGET_AGREEMENT:.0%} for **{n - len(agree_fail)} of {n}** (lowest {lowest['agreement']:.1%}, "
            f"{_name(lowest)}).")
    lines = [line]
    if len(top1_fail) or len(agree_fail):
        missed = pd.concat([top1_fail, agree_fail]).drop_duplicates(subset=list(KEY))
        lines.append("  Missing a target: " + "; ".join(
            f"{_name(r)} {r['top1_float']:.2f}% -> {r['top1_int8']:.2f}% ({r['top1_change']:+.2f} "
            f"± {change_se(r['agreement'], r['test_images']):.2f}), agreement {r['agreement']:.1%}"
            for _, r in missed.iterrows()) + ".")
    return lines


def agreement_reading(table: pd.DataFrame) -> str | None:
    """Where networks miss the agreement target: whether disagreement follows the float network's
    error (Pearson r per runtime, over its networks), and the float top-1 above which every network
    meets it. None when every network meets the target."""
    table = meets_targets(table)
    missed = table[~table["agreement_ok"]]
    if missed.empty:
        return None
    correlations = {}
    for runtime, group in table.groupby("runtime", sort=False):
        error, disagreement = 100.0 - group["top1_float"], 1.0 - group["agreement"]
        if len(group) >= 3 and error.std() > 0 and disagreement.std() > 0:
            correlations[f"{runtime} ({len(group)} networks)"] = float(np.corrcoef(error, disagreement)[0, 1])
    highest = missed["top1_float"].max()
    above = table.loc[table["top1_float"] > highest, ["pattern", "finetune"]].drop_duplicates()
    text = (f"**Where agreement is missed.** Every network below {TARGET_AGREEMENT:.0%} has float top-1 of at most "
            f"{highest:.2f}%" + (f"; all {len(above)} networks more accurate than that meet it in every runtime"
                                 if len(above) else "") + ".")
    if correlations:
        listed = ", ".join(f"r = {r:.2f} in {where}" for where, r in correlations.items())
        if min(correlations.values()) >= STRONG_CORRELATION:
            text += (" Across networks, the share of test images where INT8 and float disagree rises with the float "
                     f"network's error (Pearson {listed}): a less accurate network has more images near a decision "
                     "boundary, where INT8's small output changes flip the class.")
        else:
            text += (" Across networks, the share of test images where INT8 and float disagree does not clearly "
                     f"follow the float network's error (Pearson {listed}).")
    return text


def int8_reading(table: pd.DataFrame) -> str:
    """Markdown: per runtime, how many networks meet the issue's two targets (INT8 top-1 within
    TARGET_TOP1_CHANGE points of float, agreement >= TARGET_AGREEMENT), with the test set's standard
    error; the merged networks that quantize much worse than the base; files beyond ds.export's
    error threshold. An empty table says INT8 was not measured."""
    if table is None or not len(table):
        return "INT8 was not measured in this run (`int8_calibration_images` is 0, or no INT8 runtime is installed)."
    table = meets_targets(table)
    n = int(table["test_images"].iloc[0])
    note = saturation_note(table)
    base = table[table["pattern"] == "base"]
    reference = float(base["top1_float"].iloc[0] if len(base) else table["top1_float"].mean())
    lines = [f"Every network quantized to INT8 and measured on all {n:,} test images, calibrated on "
             f"{int(table['calibration_images'].iloc[0])} training images (seed {int(table['calibration_seed'].iloc[0])}). "
             f"A top-1 near {reference:.1f}% on {n:,} images has a standard error of "
             f"{test_se(reference, n):.2f} points; the INT8 change is measured on the same images, so its own "
             f"standard error is at most 100 sqrt(disagreement / n) points (the ± below), usually far less."
             + (f" {note}" if note else ""), ""]
    for runtime, group in table.groupby("runtime", sort=False):
        lines += _runtime_lines(runtime, group)
    why = agreement_reading(table)
    if why:
        lines += ["", why]
    worse = much_worse_than_base(table)
    if len(worse):
        lines += ["", f"**Quantizes much worse than the base** (INT8 costs it more than {MUCH_WORSE_POINTS:g} point "
                  "beyond the base's loss in the same runtime, by more than two standard errors): " + "; ".join(
                      f"{_name(r)} in {r['runtime']}, {r['top1_change']:+.2f} "
                      f"± {change_se(r['agreement'], r['test_images']):.2f} points" for _, r in worse.iterrows()) + "."]
    else:
        lines += ["", f"No merged network quantizes much worse than the base (none loses more than "
                  f"{MUCH_WORSE_POINTS:g} point beyond the base's INT8 loss in the same runtime by more than two "
                  "standard errors)."]
    broken = table[table["rel_rms_error"] > INT8_MAX_ERROR]
    if len(broken):
        lines += ["", f"Beyond ds.export's threshold (relative RMS error of the logits above {INT8_MAX_ERROR:g} on "
                  "the test set; ds.export would refuse these files): " + "; ".join(
                      f"{_name(r)} in {r['runtime']} ({r['rel_rms_error']:.2f})" for _, r in broken.iterrows()) + "."]
    return "\n".join(lines)


# What ds.export.quantize's settings_label writes when a file was made with the saturation fix.
SATURATION_FIX_MARKS = ("reduce_range", "overflow fix on every layer")


def saturation_note(table: pd.DataFrame) -> str:
    """'' unless some of the table's files were quantized with ds.export.quantize's saturation fix
    (as on a CPU without VNNI); then one sentence naming the runtimes and what the fix costs."""
    if "quantization" not in table:
        return ""
    fixed = table["quantization"].astype(str).apply(lambda label: any(m in label for m in SATURATION_FIX_MARKS))
    runtimes = list(dict.fromkeys(table.loc[fixed, "runtime"]))
    if not runtimes:
        return ""
    return (f"Quantized with the saturation fix in {' and '.join(runtimes)}: the CPU that ran this chapter has no "
            "VNNI, so its u8 x s8 int8 kernels add pairs of products in 16 bits, which saturate; ds then gives "
            "ONNX Runtime 7-bit weights and NNCF its overflow fix on every layer, and that costs precision a CPU "
            "with VNNI keeps (`benchmarks/int8_saturation.py` measures the ways on the published networks).")


def int8_summary(table: pd.DataFrame) -> str | None:
    """One sentence for the results page: per runtime, how many networks meet both targets."""
    if table is None or not len(table):
        return None
    table = meets_targets(table)
    parts = [f"{runtime}: {int((g['top1_ok'] & g['agreement_ok']).sum())} of {len(g)}"
             for runtime, g in table.groupby("runtime", sort=False)]
    note = saturation_note(table)
    return (f"In INT8 (chapter 4, all {int(table['test_images'].iloc[0]):,} test images), networks within "
            f"{TARGET_TOP1_CHANGE:g} points of their float top-1 with agreement at least {TARGET_AGREEMENT:.0%}: "
            + ", ".join(parts) + "." + (f" {note}" if note else ""))


def int8_view(table: pd.DataFrame) -> pd.DataFrame:
    """The table as the chapter shows it: one row per network and runtime, the accuracy columns."""
    if table is None or not len(table):
        return pd.DataFrame()
    shown = table.set_index(list(KEY))[["top1_float", "top1_int8", "top1_change", "agreement", "rel_rms_error"]]
    return shown.rename(columns={"top1_float": "top-1 float", "top1_int8": "top-1 INT8", "top1_change": "change",
                                 "rel_rms_error": "rel. RMS error"}).round(3)
