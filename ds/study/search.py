"""Chapter 2, the search: which blocks lose their activations (gate search, per-runtime latency terms,
the DP search, sensitivity, paper and random patterns), each candidate finetuned alike and timed merged.

Every choice the searches make is measured on training images: the sensitivity ranking and the DP
search's importance table on the same held-out part of the training set (`held_out`, never used
by their finetunes), the gate search on its training batches. The test set gives the candidates'
final numbers only.

Each step takes the chapter's context (`study.setup`) and its parameters, writes its table to the
run directory (row by row where a row is expensive, so an interrupted chapter resumes) and returns
it for the notebook to show."""
from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from fractions import Fraction

import pandas as pd
import torch

import ds
from ds import bench, dpsearch, gating
from ds.bench.latency import table_from
from ds.bench.compare import short_name
from ds.bench.profile import SETTINGS
from ds.bench.runtimes import unsupported
from ds.bench.settings import all_cores
from ds.bench.variants import build_variants
from ds.meta import info as net_info
from ds.patterns import resolve_pattern
from ds.train import TrainConfig, build_model

from . import recovery as recipes
from .chapter import Chapter, FromBase, Finetune, finetune_from_base, loaders, read_rows, removed_blocks, train
from .uncertainty import test_se
from .workers import side_by_side


def search(ch: Chapter, base, budgets: list[int], epochs: int, lr: float, gate_lr: float,
           latency: dict | None = None, latency_weight: float = 0.0, runtime: str | None = None,
           seed: int | None = None) -> dict:
    """The gate search from the base network at every budget ({budget: SearchResult}); each
    resumes from its checkpoint in <run_dir>/02_search/k<budget>/. With `latency` (a latency table,
    {switch index: seconds saved}) and `latency_weight` > 0, the search weighs the time each block
    saves in `runtime` (directory k<budget>@<runtime>). `seed` other than the run's (directory
    k<budget>-seed<seed>) repeats a search to see how much its pattern varies by chance."""
    if (latency is None) != (runtime is None):
        raise ValueError("give a latency table and the runtime it was measured in together")
    seed = ch.seed if seed is None else seed
    train_loader, test_loader = (ch.train_loader, ch.test_loader) if seed == ch.seed else \
        loaders(ch.data, ch.train_loader.batch_size, ch.device, seed)   # another order and augmentation
    searches = {}
    for budget in budgets:
        cfg = TrainConfig(epochs=epochs, lr=lr, warmup_epochs=0, gate_lr=gate_lr, seed=seed)
        out = ch.layout.search_dir(budget, runtime, None if seed == ch.seed else seed)
        searches[budget] = train(
            None, train_loader, test_loader, cfg, out, piece=ch.piece,
            run=lambda c, out=out, budget=budget: gating.search(base, train_loader, test_loader, budget, c,
                                                                out_dir=out, resume=True, latency=latency,
                                                                latency_weight=latency_weight if latency else 0.0,
                                                                meta=net_info(base)))
        searches[budget].extra["metrics"].to_csv(out / "search_metrics.csv", index=False)
    return searches


# How chapter 2 may run a pattern when it measures latency tables: ds.bench runtime and torch layout.
LATENCY_RUNTIMES = {"torch": ("torch", "nchw"), "torch_channels_last": ("torch", "channels_last"),
                    "onnxruntime": ("onnxruntime", "nchw"), "openvino": ("openvino", "nchw")}


@dataclass
class LatencyTables:
    blocks: dict[str, pd.DataFrame]   # runtime -> ds.bench.block_latencies rows
    skipped: dict[str, str]           # runtime -> why it cannot run here

    def table(self, runtime: str) -> dict[str, float]:
        """{switch index: seconds per batch saved}, what the search's latency term reads."""
        return table_from(self.blocks[runtime])

    def saved_ms(self) -> pd.DataFrame:
        """Milliseconds per batch each block saves, one column per runtime."""
        return pd.DataFrame({r: f.set_index("block")["saved_ms"] for r, f in self.blocks.items()})


def latency_tables(ch: Chapter, base, runtimes: list[str], batch: int, input_size=None,
                   min_time: float = 0.1, repeats: int = 7) -> LatencyTables:
    """Per runtime, every searchable block of the base timed alone and merged (one thread, batch
    `batch`, `input_size` default the study's), saved to 02_search/latency_<runtime>.csv and reused
    from there. A runtime that cannot run here is skipped with the reason."""
    unknown = [r for r in runtimes if r not in LATENCY_RUNTIMES]
    if unknown:
        raise ValueError(f"latency_runtimes {unknown}: choose among {', '.join(LATENCY_RUNTIMES)}")
    blocks, skipped = {}, {}
    cpu_base = copy.deepcopy(base).cpu()
    for runtime in runtimes:
        path = ch.layout.latency_csv(runtime)
        if path.is_file():
            blocks[runtime] = pd.read_csv(path)
            continue
        engine, layout = LATENCY_RUNTIMES[runtime]
        device = ch.device if engine == "torch" else torch.device("cpu")
        reason = unsupported(engine, "fp32", device) if engine != "torch" else None
        if reason:
            skipped[runtime] = reason
            continue
        frame = bench.block_latencies(base if engine == "torch" else cpu_base, input_size or ch.input_size,
                                      batch, engine, threads=1, device=device, layout=layout,
                                      repeats=repeats, warmup=2, min_time=min_time, seed=ch.seed)
        frame["load_average"] = os.getloadavg()[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        blocks[runtime] = frame
    return LatencyTables(blocks, skipped)


CONTROL = "none, another seed"   # the label of the repeated search without latency term


def runtime_patterns(plain: dict, by_runtime: dict[str, dict], tables: LatencyTables,
                     control: dict | None = None) -> pd.DataFrame:
    """One row per budget and search (without latency term; the `control`, the same search with
    another seed; then one per runtime): the blocks it removes, how many differ from the search
    without latency term, and the milliseconds per batch its pattern saves by every runtime's table."""
    rows = []
    for budget, result in plain.items():
        reference = set(_removed(result.pattern(budget)))
        searches = [("none", result)] + ([(CONTROL, control[budget])] if control else []) \
            + [(r, s[budget]) for r, s in by_runtime.items()]
        for label, searched in searches:
            pattern = searched.pattern(budget)
            removed = _removed(pattern)
            row = {"budget": budget, "latency term": label, "removed blocks": " ".join(map(str, removed)),
                   "differs from no latency term": len(reference.symmetric_difference(removed)) // 2}
            for runtime in tables.blocks:
                row[f"saves in {runtime} (ms)"] = 1e3 * bench.predicted_saving(tables.table(runtime), pattern)
            rows.append(row)
    return pd.DataFrame(rows)


def runtime_pattern_reading(table: pd.DataFrame, skipped: dict[str, str]) -> str:
    """What the table of `runtime_patterns` says, in sentences: per budget, which runtimes' latency
    terms changed the searched pattern, and whether the runtimes chose alike."""
    lines = []
    for budget, group in table.groupby("budget"):
        runs = group[~group["latency term"].isin(["none", CONTROL])]
        chance = group.loc[group["latency term"] == CONTROL, "differs from no latency term"]
        changed = [f"{r['latency term']} ({r['differs from no latency term']} of the "
                   f"{len(r['removed blocks'].split())} removed blocks)"
                   for _, r in runs.iterrows() if r["differs from no latency term"]]
        distinct = runs["removed blocks"].nunique()
        lines.append(f"- **k={budget}.** " + (
            f"The latency term changed the searched pattern for {', '.join(changed)}." if changed else
            "No runtime's latency term changed the searched pattern.")
            + ("" if len(runs) < 2 else " The runtimes chose the same pattern." if distinct == 1 else
               f" The {len(runs)} runtimes chose {distinct} different patterns.")
            + ("" if not len(chance) else _chance_sentence(int(chance.iloc[0]))))
    for runtime, reason in skipped.items():
        lines.append(f"- {runtime} was not measured: {reason}.")
    return "\n".join(lines)


def _chance_sentence(differs: int) -> str:
    if differs == 0:
        return (" Repeated without latency term with another seed (data order and augmentation), the "
                "search chose the same pattern, so the changes above come from the latency term.")
    return (f" Repeated without latency term with another seed (data order and augmentation), the search "
            f"changed {differs} block{'' if differs == 1 else 's'} by chance alone: changes of that size are "
            f"within the search's own noise.")


def _removed(pattern) -> list[int]:
    return [i for i, keep in enumerate(pattern) if not keep]


def held_out(ch: Chapter, images: int):
    """A loader over `images` training images held out of every finetune the searches make
    (`ds.dpsearch.holdout_split` with the run's seed): where chapter 2 measures its choices."""
    _, indices = dpsearch.holdout_split(len(ch.train_loader.labels), images, ch.seed)
    return ch.train_loader.subset(indices, train=False)


def sensitivity(ch: Chapter, base, holdout_images: int):
    """The one-shot baseline: blocks ranked by the top-1 drop, on the held-out training images,
    when linearized alone."""
    return gating.sensitivity_ranking(base, held_out(ch, holdout_images))


def dp_search(ch: Chapter, base, steps: int, holdout_images: int, lr: float):
    """The DP search (`ds.dpsearch`): each block's importance (top-1 drop on the held-out training
    images after `steps` finetuning batches at `lr` with only that block linearized; resumes from
    <run_dir>/02_search/dp/), then the exact DP over it."""
    table = dpsearch.importance_table(base, ch.train_loader, dpsearch.entry_config(lr, ch.seed), steps=steps,
                                      holdout=holdout_images, seed=ch.seed, out_dir=ch.layout.chapter_dir("02_search") / "dp",
                                      resume=True, progress=False)
    return dpsearch.plan(base, table)


def dp_with_latency(base, dp, latency):
    """The DP search `dp` again over its own importance table, with a runtime's latency table (the
    savings `equal_speed_patterns` needs); nothing is measured again."""
    return dpsearch.plan(base, dp.importance, latency)


def importance_frame(sensitivity_result, dp) -> pd.DataFrame:
    """Per searched block, the two measured importances side by side: the one-shot drop
    (sensitivity) and the drop after the DP search's short finetune, in top-1 points."""
    return pd.DataFrame({"switch": sensitivity_result.searched, "one-shot drop": sensitivity_result.scores,
                         "drop after finetune (DP)": [dp.costs[i] for i in sensitivity_result.searched]}) \
        .set_index("switch").T


def resolve_budgets(base, budgets: list) -> list[int]:
    """Search budgets (blocks that keep their activations), each a number or the name of one of the
    paper's patterns: as many removed blocks as it removes (mobilenetv2's DS-A removes 6 of 17: k=11)."""
    removable = len(gating.searchable_switches(base))
    resolved = []
    for budget in budgets:
        if isinstance(budget, str):
            budget = removable - removed_blocks(base, resolve_pattern(base, budget, len(ds.switches(base))))
        if not isinstance(budget, int) or not 0 <= budget <= removable:
            raise ValueError(f"search budget {budget!r}: give a number of blocks to keep (0..{removable}) or the "
                             f"name of a paper pattern (DS-A ... DS-F) for as many removed blocks as it removes")
        resolved.append(budget)
    return resolved


def candidate_patterns(base, searches: dict, sensitivity_result, random_seed: int, backbone: str,
                       runtime_searches: dict[str, dict] | None = None, random_count: int = 1,
                       dp=None) -> dict[str, list[int]]:
    """Searched, DP (dp-k<budget>, with `dp`), sensitivity and `random_count` random patterns
    (random-k<budget>-<i>) at every searched budget, the searches with a runtime's latency term
    (searched-k<budget>@<runtime>), then the paper's (when it has patterns for this backbone)."""
    patterns = {}
    for budget, result in searches.items():
        patterns[f"searched-k{budget}"] = result.pattern(budget)
    for budget in searches if dp is not None else ():
        patterns[f"dp-k{budget}"] = dp.pattern(budget)
    for budget in searches:
        patterns[f"sensitivity-k{budget}"] = sensitivity_result.pattern(budget)
    for budget in searches:
        for i, pattern in enumerate(gating.random_patterns(base, budget, random_count, seed=random_seed), 1):
            patterns[f"random-k{budget}-{i}"] = pattern
    for runtime, results in (runtime_searches or {}).items():
        for budget, result in results.items():
            patterns[f"searched-k{budget}@{runtime}"] = result.pattern(budget)
    for name, pattern in ds.PATTERNS.get(backbone, {}).items():
        patterns[name] = list(pattern)
    return patterns


def equal_speed_patterns(dp, patterns: dict[str, list[int]], budgets: list[int], runtime: str) -> dict[str, list[int]]:
    """Per budget, the DP's pattern at the same number of removed blocks that saves, by `dp`'s
    latency table (`runtime`'s), at least as much time as the fastest other candidate there:
    dp-k<budget>@<runtime>, the searched pattern at equal speed. `dp` needs a latency table."""
    if dp.savings is None:
        raise ValueError("equal_speed_patterns needs the DP search with a latency table (dp_with_latency)")
    found = {}
    for budget in budgets:
        removed = len(dp.searched) - budget
        rivals = [p for name, p in patterns.items() if pattern_source(name) != "dp"
                  and sum(1 for i in dp.searched if p[i] == 0) == removed]
        # the savings added exactly, as the DP adds them, and rounded down: the fastest rival stays feasible
        fastest = max((sum(Fraction(dp.savings[i]) for i in dp.searched if p[i] == 0) for p in rivals),
                      default=Fraction(0))
        need = math.nextafter(float(fastest), -math.inf) if fastest > 0 else 0.0
        choice = dp.removal(removed=removed, latency_budget=-need, base_latency=0.0)   # saves at least `need`
        found[f"dp-k{budget}@{runtime}"] = list(choice.pattern)
    return found


def pattern_source(name: str) -> str:
    """Where a pattern comes from: base, searched, dp, sensitivity, random, paper, or given (a 0/1 list)."""
    if name == "base":
        return "base"
    for source in ("searched", "dp", "sensitivity", "random"):
        if name.startswith(source + "-"):
            return source
    return "paper" if any(name in patterns for patterns in ds.PATTERNS.values()) else "given"


def finetune_candidates(ch: Chapter, base, candidates: dict[str, list[int]], budgets: list[int], epochs: int,
                        recovery: dict | None, holdout_images: int) -> pd.DataFrame:
    """Every candidate pattern that removes as many blocks as a searched budget, finetuned from the
    base alike (`epochs` with the `recovery` recipe, `ds.study.recovery`, the run's seed) on the
    training images outside the held-out ones: top-1 right after removal, and once finetuned its
    top-1 on the held-out training images (where chapter 3 chooses among them) and on the test set
    (the final numbers) (candidates.csv, row by row; networks in 02_search/finetune/<pattern>/).
    `ch.workers` > 1 finetunes that many side by side (ds.study.workers); the table keeps the
    candidates' order. A candidate with the same pattern as another (e.g. a search whose latency
    term changed nothing) gets a copy of that one's network: same pattern, seed and data give the
    same training. A row of an earlier attempt counts as done only while its name still stands for
    the same pattern (read_rows keeps pattern_bits a string)."""
    removable = len(gating.searchable_switches(base))
    recovery = recipes.check(recovery)
    train_indices, _ = dpsearch.holdout_split(len(ch.train_loader.labels), holdout_images, ch.seed)
    shared = FromBase.of(ch, ch.train_loader.subset(train_indices), held_out(ch, holdout_images))
    path = ch.layout.candidates_csv
    budget_of = {name: budget for budget in budgets for name, pattern in candidates.items()
                 if removed_blocks(base, pattern) == removable - budget}
    order = list(budget_of)   # budget by budget, as `candidates` lists them
    bits = {name: "".join(map(str, candidates[name])) for name in order}
    rows = []
    for row in read_rows(path):   # a name whose pattern changed (a rerun search chose another) is trained again
        if bits.get(row["pattern"], str(row["pattern_bits"])) == str(row["pattern_bits"]):
            rows.append(row)
        else:
            shutil.rmtree(ch.layout.candidate_dir(row["pattern"]), ignore_errors=True)
    done, trained = {r["pattern"] for r in rows}, {str(r["pattern_bits"]) for r in rows}
    jobs, twins = [], []
    for name in order:
        if name in done:
            continue
        if bits[name] in trained:
            twins.append(name)
        else:
            trained.add(bits[name])
            jobs.append(Finetune(name, tuple(candidates[name]), recovery, epochs, ch.seed,
                                 ch.layout.candidate_dir(name)))

    def write(row: dict) -> None:   # row by row, in the candidates' order whichever worker ended first
        rows.append(row)
        rows.sort(key=lambda r: order.index(r["pattern"]) if r["pattern"] in order else len(order))
        pd.DataFrame(rows).to_csv(path, index=False)

    for job, result in side_by_side(finetune_from_base, shared, jobs, ch.workers, ch.threads):
        write({"pattern": job.name, "source": pattern_source(job.name), "budget": budget_of[job.name],
               "removed_blocks": removable - budget_of[job.name], "epochs": epochs,
               "top1_removed": result["top1_removed"], "holdout_top1": result["holdout_top1"],
               "holdout_images": holdout_images, "top1": result["top1"],
               "test_images": len(ch.data.test_labels), "recipe": recipes.describe(recovery),
               "pattern_bits": bits[job.name]})
    for name in twins:   # the same pattern under another name trains the same network: copy it
        twin = next(r for r in rows if str(r["pattern_bits"]) == bits[name])
        shutil.copytree(ch.layout.candidate_dir(twin["pattern"]), ch.layout.candidate_dir(name), dirs_exist_ok=True)
        write({**twin, "pattern": name, "source": pattern_source(name)})
    return pd.DataFrame(rows)


def pattern_speed(ch: Chapter, patterns: dict[str, list[int]], setting: str, batch: int,
                  threads: int | None = None, repeats: int = 5, min_time: float = 0.2) -> pd.DataFrame:
    """Measured speed of every pattern: its merged network, built from a freshly initialized network
    as ds.bench does (the speed of a network does not depend on its weights; a briefly trained one
    can be too badly conditioned for the merge's float32 check), timed in one CPU setting (a name of
    ds.bench.profile.SETTINGS, e.g. 'openvino bf16'), the networks interleaved. One row per pattern
    with img/s, ms per batch and the speed-up over the base; a setting that cannot run here falls
    back to torch NCHW (the `setting` column says which ran). Saved to candidate_speed.csv and
    reused from there."""
    path = ch.layout.candidate_speed_csv
    if path.is_file():
        return pd.read_csv(path)
    if setting not in SETTINGS:
        raise ValueError(f"candidate_setting {setting!r}: choose among {', '.join(SETTINGS)}")
    runtime, dtype, channels_last = SETTINGS[setting]
    reason = unsupported(runtime, dtype, torch.device("cpu")) if runtime != "torch" else None
    if reason:
        warnings.warn(f"{setting} cannot run here ({reason}): patterns timed in torch NCHW instead", stacklevel=2)
        runtime, dtype, channels_last = SETTINGS["torch NCHW"]
    torch.manual_seed(ch.seed)
    fresh = build_model(ch.backbone, ch.num_classes, ch.input_size).eval()
    merged, _ = build_variants(fresh, patterns, ch.input_size)
    load = os.getloadavg()[0]
    results = bench.measure(merged, ch.input_size, batch, "cpu", dtype, channels_last, runtime=runtime,
                            repeats=repeats, min_time=min_time, threads=threads or all_cores(), seed=ch.seed)
    base_s = results["base"].seconds_per_batch
    frame = pd.DataFrame([{"setting": short_name(r.runtime, r.layout, r.dtype), "pattern": name, "batch": r.batch,
                           "threads": r.threads, "img_s_median": r.img_s_median, "img_s_min": r.img_s_min,
                           "img_s_max": r.img_s_max, "ms_per_batch": 1e3 * r.seconds_per_batch,
                           "speedup_same_runtime": base_s / r.seconds_per_batch, "load_average": load}
                          for name, r in results.items()])
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def candidate_table(finetuned: pd.DataFrame, speed: pd.DataFrame, base_top1: float) -> pd.DataFrame:
    """The comparison at equal removed blocks: per candidate its source, top-1 (and the change
    against the base), measured speed and speed-up over the base in the same setting; by budget,
    best first."""
    table = finetuned.merge(speed[["pattern", "img_s_median", "ms_per_batch", "speedup_same_runtime"]],
                            on="pattern", how="left")
    table["delta_top1"] = table["top1"] - base_top1
    table = table.rename(columns={"speedup_same_runtime": "speedup"})
    return table.sort_values(["removed_blocks", "top1"], ascending=[True, False]).reset_index(drop=True)


def candidate_reading(table: pd.DataFrame) -> str:
    """Per number of removed blocks: where the best pattern of each search (the gate search, the DP
    search) ranks, against the paper's, the sensitivity-ranked and the random patterns, with the
    test set's standard error."""
    lines = []
    for removed, group in table.groupby("removed_blocks"):
        by_source = {source: g for source, g in group.groupby("source")}
        parts = []
        for source in ("paper", "sensitivity", "random"):
            if source in by_source:
                others = by_source[source]["top1"]
                parts.append(f"{source} {others.mean():.2f}%" + (f" (mean of {len(others)}, {others.min():.2f} to "
                                                                 f"{others.max():.2f})" if len(others) > 1 else ""))

        def rank(top1: float) -> int:
            return int((group["top1"] > top1).sum()) + 1

        sentences = []
        for source, label in (("searched", "searched pattern"), ("dp", "DP pattern")):
            if source not in by_source:
                continue
            ranked = by_source[source].sort_values("top1", ascending=False)
            best = ranked.iloc[0]
            se = test_se(best["top1"], int(best["test_images"]))
            rest = "".join(f"; `{row['pattern']}` {row['top1']:.2f}%, rank {rank(row['top1'])}"
                           for _, row in ranked.iloc[1:].iterrows())
            sentences.append(f"The best {label}, `{best['pattern']}`, reaches {best['top1']:.2f}% (+- {se:.2f}, the "
                             f"test set's standard error) and ranks {rank(best['top1'])} of {len(group)}{rest}.")
        if not sentences:
            continue
        se = test_se(group["top1"].max(), int(group["test_images"].iloc[0]))
        lines.append(f"- **{removed} blocks removed.** " + " ".join(sentences) + " Beside them: " + ", ".join(parts)
                     + f". Differences under about {2 * 2 ** 0.5 * se:.1f} points (two standard errors of a "
                     f"difference) are within the test set's noise." + _latency_term_sentence(group)
                     + _target_sentences(group))
    return "\n".join(lines)


def _target_sentences(group: pd.DataFrame) -> str:
    """The search's targets at one budget, each said met or missed with its margin: every search
    method's pattern at least as accurate as the sensitivity-ranked one, above the random patterns'
    mean by more than two standard errors of the difference (the random patterns' spread over their
    number, and the searched pattern's test-set error), and at equal speed the DP on or above every
    baseline (`_equal_speed_sentence`)."""
    rows = group.set_index("pattern")
    sensitivity = [p for p in rows.index if pattern_source(p) == "sensitivity"]
    random_top1 = group.loc[group["source"] == "random", "top1"]
    parts = []
    for name in rows.index:
        if pattern_source(name) not in ("searched", "dp") or "@" in name:
            continue
        top1, n = rows.loc[name, "top1"], int(rows.loc[name, "test_images"])
        checks = []
        if sensitivity:
            d = top1 - rows.loc[sensitivity[0], "top1"]
            checks.append(f"{d:+.2f} points against sensitivity ({'met' if d >= 0 else 'missed'}: at least as "
                          f"accurate, +- {math.sqrt(2) * test_se(top1, n):.2f})")
        if len(random_top1) > 1:
            d = top1 - random_top1.mean()
            se = math.sqrt(random_top1.var(ddof=1) / len(random_top1) + test_se(top1, n) ** 2)
            checks.append(f"{d:+.2f} against the random mean ({'met' if d > 2 * se else 'missed'}: more than two "
                          f"standard errors, 2 x {se:.2f})")
        if checks:
            parts.append(f"`{name}`: " + ", ".join(checks))
    equal_speed = _equal_speed_sentence(group)
    if equal_speed:
        parts.append(equal_speed)
    return (" **Targets:** " + "; ".join(parts) + ".") if parts else ""


def _equal_speed_sentence(group: pd.DataFrame) -> str:
    """The equal-speed target at one budget: each baseline (sensitivity, random, paper) against the
    most accurate DP pattern (at the count or at a latency budget, `@runtime`) that runs at least as
    fast, met when that pattern is at least as accurate; a baseline faster than every DP pattern has
    no pattern at its speed and is named apart. '' without an equal-speed DP pattern or speeds."""
    if "speedup" not in group or not any(pattern_source(p) == "dp" and "@" in p for p in group["pattern"]):
        return ""
    dp = group[group["source"] == "dp"]
    baselines = group[group["source"].isin(["sensitivity", "random", "paper"])].sort_values("speedup")
    rows = group.set_index("pattern")
    below, faster = [], []
    for _, rival in baselines.iterrows():
        fast_enough = dp[dp["speedup"] >= rival["speedup"]]
        if fast_enough.empty:
            fastest = dp.loc[dp["speedup"].idxmax()]
            slower = 100 * (1 - fastest["speedup"] / rival["speedup"])
            faster.append(f"`{rival['pattern']}` ({rival['top1']:.2f}% at {rival['speedup']:.2f}x; the fastest DP "
                          f"pattern, `{fastest['pattern']}`, runs {slower:.1f}% slower, at {fastest['top1']:.2f}%)")
            continue
        best = fast_enough.loc[fast_enough["top1"].idxmax()]
        if best["top1"] >= rival["top1"]:
            continue
        n = int(best["test_images"])
        gap, se = rival["top1"] - best["top1"], math.sqrt(test_se(best["top1"], n) ** 2 + test_se(rival["top1"], n) ** 2)
        below.append(f"`{rival['pattern']}` ({rival['top1']:.2f}% at {rival['speedup']:.2f}x) is above `{best['pattern']}` "
                     f"({best['top1']:.2f}% at {best['speedup']:.2f}x) by {gap:.2f} +- {se:.2f} points, "
                     f"{'beyond' if gap > 2 * se else 'within'} two standard errors of a difference"
                     + (_equal_speed_cost(rows, best["pattern"]) if "@" in best["pattern"] else ""))
    answered = len(baselines) - len(faster)
    text = ("at equal speed (each baseline against the most accurate DP pattern that runs at least as fast), "
            + (f"the DP is on or above all {answered} baselines with a DP pattern as fast (met)" if not below else
               f"the DP is on or above {answered - len(below)} of {answered} baselines with a DP pattern as fast; below it: "
               + "; ".join(below) + " (missed)"))
    if faster:
        text += "; faster than every DP pattern, so not compared: " + "; ".join(faster)
    return text


def _equal_speed_cost(rows: pd.DataFrame, name: str) -> str:
    """Why an equal-speed DP pattern can fall below a slower baseline: what matching the fastest rival's
    speed cost against the DP's own pattern at the same count, on the test set and on the held-out
    training images the DP chose on."""
    plain = name.split("@")[0]
    if plain not in rows.index:
        return ""
    own, fast = rows.loc[plain], rows.loc[name]
    held_out = ""
    if "holdout_top1" in rows and pd.notna(own["holdout_top1"]) and pd.notna(fast["holdout_top1"]):
        held_out = f" ({fast['holdout_top1'] - own['holdout_top1']:+.2f} on the held-out training images)"
    return (f": it is built to save as much time as the fastest rival, and that speed ({fast['speedup'] / own['speedup']:.2f}x "
            f"`{plain}`'s) costs {fast['top1'] - own['top1']:+.2f} points against `{plain}` on the test set{held_out}")


def _latency_term_sentence(group: pd.DataFrame) -> str:
    """How the searches with a latency term compare with the search without, at one budget."""
    rows = group.set_index("pattern")
    plain = [p for p in rows.index if re.fullmatch(r"searched-k\d+", p)]
    if not plain:
        return ""
    ref = rows.loc[plain[0]]
    parts = []
    for name in rows.index:
        if name.startswith(plain[0] + "@"):
            row = rows.loc[name]
            same = row["pattern_bits"] == ref["pattern_bits"]
            parts.append(f"`{name}` is the same pattern" if same else
                         f"`{name}` runs at {row['speedup'] / ref['speedup']:.2f}x the speed of `{plain[0]}` "
                         f"with {row['top1'] - ref['top1']:+.2f} points of top-1")
    return (" With a latency term: " + "; ".join(parts) + ".") if parts else ""


def write_patterns(ch: Chapter, patterns: dict[str, list[int]]) -> None:
    """Chapter 2's candidate patterns, for chapter 3."""
    path = ch.layout.patterns_json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(patterns, indent=1) + "\n")
