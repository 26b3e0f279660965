"""Chapter 3, finetuning: the chosen patterns finetuned to convergence with the study's recovery
recipe, with and without distillation from the base, against the accuracy targets.

Each step takes the chapter's context (`study.setup`) and its parameters, writes its table to the
run directory (row by row where a row is expensive, so an interrupted chapter resumes) and returns
it for the notebook to show."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pandas as pd

import ds
from ds.patterns import resolve_pattern
from ds.train import METRICS, build_model

from . import convergence
from . import recovery as recipes
from .chapter import (Chapter, FromBase, Finetune, at_count, finetune_from_base, load_model, read_published,
                      removed_blocks)
from .layout import adopted_from
from .uncertainty import difference, gap, test_se
from .workers import side_by_side


def read_patterns(ch: Chapter) -> dict[str, list[int]]:
    """Chapter 2's candidate patterns (what `search.write_patterns` wrote)."""
    return json.loads(ch.require(ch.layout.patterns_json, "02_search").read_text())


def read_candidates(ch: Chapter) -> pd.DataFrame | None:
    """Chapter 2's finetuned candidates (candidates.csv), None when it finetuned none."""
    path = ch.layout.candidates_csv
    return pd.read_csv(path, dtype={"pattern_bits": str}) if path.is_file() else None


def choice_reading(why: dict[str, str]) -> str:
    """Why each pattern of the chapter was chosen, one line each."""
    return "\n".join(f"- `{name}`: {reason}" for name, reason in why.items())


def target_counts(ch: Chapter, targets: dict) -> dict[str, int]:
    """Removed blocks of each target pattern (a name of ds.PATTERNS for the chapter's backbone);
    a name the backbone has no pattern for is left out (its target has no answer)."""
    model = build_model(ch.backbone, ch.num_classes, ch.input_size)
    known = ds.PATTERNS.get(ch.backbone, {})
    return {name: removed_blocks(model, resolve_pattern(model, name, len(ds.switches(model))))
            for name in targets if name in known}


def select_patterns(candidates: dict[str, list[int]], wanted: list[str],
                    finetuned: pd.DataFrame | None = None) -> tuple[dict[str, list[int]], dict[str, str]]:
    """`wanted` names from the candidates, and for each chosen one why it was chosen. 'searched'
    stands for every search without latency term (searched-k<budget>), 'searched@<runtime>' for
    every search with that runtime's; 'best@<X>' for the search method's pattern (gate search or DP,
    with or without a latency term) with the highest top-1 on the held-out training images among
    chapter 2's finetuned candidates (`finetuned`, its candidates.csv) at X's number of removed
    blocks, X a paper pattern's name (best@DS-A) or a budget (best@k11)."""
    chosen, why = {}, {}
    for name in wanted:
        if name.startswith("best@"):
            best, reason = _best_searched(finetuned, name[len("best@"):])
            chosen[best] = candidates[best]
            why.setdefault(best, reason)
        elif name == "searched" or (name.startswith("searched@") and name != "searched@"):
            suffix = name[len("searched"):]
            found = {k: v for k, v in candidates.items()
                     if re.fullmatch(r"searched-k\d+" + re.escape(suffix), k)}
            if not found:
                raise ValueError(f"pattern {name!r}: chapter 2 made no such search (its patterns: "
                                 f"{', '.join(candidates)})")
            chosen.update(found)
            for k in found:
                why.setdefault(k, f"named by the profile ({name})")
        elif name in candidates:
            chosen[name] = candidates[name]
            why.setdefault(name, "named by the profile")
        else:
            raise ValueError(f"pattern {name!r} is not among chapter 2's patterns: {', '.join(candidates)} "
                             f"(or 'searched' for the searches without latency term, 'searched@RUNTIME' "
                             f"for those with a runtime's, 'best@DS-A' or 'best@k11' for the best searched one)")
    return chosen, why


def _best_searched(finetuned: pd.DataFrame | None, at: str) -> tuple[str, str]:
    """The search methods' candidate with the best held-out top-1 at `at`'s number of removed blocks."""
    if finetuned is None or "holdout_top1" not in finetuned:
        raise ValueError(f"best@{at} chooses on chapter 2's held-out accuracies: its candidates.csv has none "
                         f"(rerun chapter 2 with candidate_epochs > 0)")
    if re.fullmatch(r"k\d+", at):
        budget = int(at[1:])
    elif at in set(finetuned["pattern"]):
        budget = int(finetuned.loc[finetuned["pattern"] == at, "budget"].iloc[0])
    else:
        raise ValueError(f"best@{at}: give a budget such as best@k11 or a pattern chapter 2 finetuned "
                         f"({', '.join(finetuned['pattern'])})")
    pool = finetuned[(finetuned["budget"] == budget) & finetuned["source"].isin(["searched", "dp"])]
    if pool.empty:
        raise ValueError(f"best@{at}: chapter 2 finetuned no searched or DP pattern at budget k={budget}")
    best = pool.sort_values("holdout_top1", ascending=False, kind="stable").iloc[0]
    return best["pattern"], (f"the best search method's pattern at {at}'s {int(best['removed_blocks'])} removed blocks "
                             f"by held-out top-1 ({best['holdout_top1']:.2f}% on {int(best['holdout_images'])} "
                             f"training images, of {len(pool)} searched and DP patterns)")


def finetune_patterns(ch: Chapter, patterns: dict, epochs: int, recovery: dict | None,
                      distill_modes=(False, True), why: dict[str, str] | None = None) -> pd.DataFrame:
    """Finetune every pattern from the base weights for `epochs` with the `recovery` recipe
    (`ds.study.recovery`), once per entry of `distill_modes` (with or without self-distillation from
    the base, whatever the recipe says); results.csv has one row per (pattern, distill), in that
    order. `ch.workers` > 1 finetunes that many side by side (ds.study.workers)."""
    recovery = recipes.check(recovery)
    structure = build_model(ch.backbone, ch.num_classes, ch.input_size)   # which blocks a pattern removes
    jobs = [Finetune(name, tuple(pattern), {**recovery, "distill": bool(distill)}, epochs, ch.seed,
                     ch.layout.finetune_dir(name, distill))
            for name, pattern in patterns.items() for distill in distill_modes]
    done = {job.out_dir: result for job, result in side_by_side(finetune_from_base, FromBase.of(ch), jobs,
                                                                  ch.workers, ch.threads)}
    rows = [{"pattern": job.name, "removed_blocks": removed_blocks(structure, list(job.pattern)),
             "distill": job.recipe["distill"], "acc_before": done[job.out_dir]["top1_removed"],
             "acc": done[job.out_dir]["top1"], "epochs": epochs, "test_images": len(ch.data.test_labels),
             "recipe": recipes.describe(job.recipe),
             "chosen_as": (why or {}).get(job.name, ""), "pattern_bits": "".join(map(str, job.pattern))}
            for job in jobs]
    table = pd.DataFrame(rows)
    table.to_csv(ch.layout.finetune_results, index=False)
    return table


def recipe_line(results: pd.DataFrame) -> str:
    """The recipes chapter 3 finetuned with, and for how long, in one line."""
    epochs = int(results["epochs"].iloc[0])
    return f"{' or '.join(dict.fromkeys(results['recipe']))}; {epochs} epoch{'' if epochs == 1 else 's'} each."


def plateau(metrics: pd.DataFrame, test_images: int) -> dict:
    """Where a finetuning curve stops improving: the first epoch whose test top-1 is within one
    standard error of the best, and what the last quarter of the epochs (at least one) added."""
    acc = metrics["test_acc"].tolist()
    best = max(acc)
    se = test_se(best, test_images)
    reached = next(i for i, a in enumerate(acc, 1) if a >= best - se)
    tail = max(1, len(acc) // 4)
    gain = acc[-1] - acc[-1 - tail] if len(acc) > tail else float("nan")
    return {"epochs": len(acc), "final": acc[-1], "best": best, "best_epoch": acc.index(best) + 1,
            "within_se_epoch": reached, "last_gain": gain, "last_epochs": tail, "se": se}


def convergence_reading(curves: dict[str, pd.DataFrame], test_images: int) -> str:
    """Per finetuned network: its final top-1, the epoch from which it stayed within one standard
    error of its best, and what its last epochs added (still rising, or converged)."""
    lines = []
    for label, metrics in curves.items():
        p = plateau(metrics, test_images)
        if p["epochs"] < 2:
            lines.append(f"- **{label}**: {p['final']:.2f}% after a single epoch: no curve to read.")
            continue
        still = p["last_gain"] > p["se"]
        lines.append(f"- **{label}**: {p['final']:.2f}% after {p['epochs']} epochs (best {p['best']:.2f}% at epoch "
                     f"{p['best_epoch']}); within one standard error ({p['se']:.2f}) of its best from epoch "
                     f"{p['within_se_epoch']}; the last {p['last_epochs']} epoch(s) added {p['last_gain']:+.2f} points: "
                     + ("**still rising**, longer finetuning should pay." if still else "converged at this length."))
    return "\n".join(lines)


def target_reading(results: pd.DataFrame, base_acc: float, targets: dict, paper_removed: dict[str, int]) -> str:
    """The accuracy targets: per network at a target pattern's number of removed blocks (`targets`:
    {pattern name: allowed drop in points}, `paper_removed`: that pattern's removed blocks), the
    drop from the base, with the test set's standard error of the difference, met or missed."""
    lines = []
    for name, allowed in targets.items():
        removed, rows = paper_removed.get(name), at_count(results, paper_removed, name)
        if rows.empty:
            lines.append(f"- **{name}'s count**: no network of this run removes as many blocks; no answer.")
            continue
        for row in rows.sort_values("acc", ascending=False).itertuples():
            drop, se = gap(base_acc, row.acc, int(row.test_images))
            kind = "distilled" if row.distill else "plain"
            lines.append(f"- **{row.pattern}** ({kind}, {removed} blocks removed, target: within {allowed:g} points "
                         f"of the base, as {name}): {row.acc:.2f}%, {abs(drop):.2f} points "
                         f"{'below' if drop >= 0 else 'above'} the base +- {se:.2f} "
                         + ("(**met**)." if drop <= allowed else f"(**missed** by {drop - allowed:.2f} points)."))
    return "\n".join(lines)


def finetune_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per pattern: top-1 right after removal, finetuned, and finetuned with distillation."""
    table = results.pivot_table(index=["pattern", "removed_blocks"], columns="distill", values=["acc_before", "acc"])
    table.columns = [f"{'top-1 right after removal' if v == 'acc_before' else 'top-1 finetuned'}"
                     f"{' (distilled)' if d else ''}" for v, d in table.columns]
    return table.loc[:, ~table.columns.duplicated()].drop(columns=["top-1 right after removal (distilled)"],
                                                          errors="ignore")


def finetune_curves(ch: Chapter, results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{'<pattern>, distilled' or '<pattern>, plain': its per-epoch metrics} for every finetune."""
    return {f"{row.pattern}, {'distilled' if row.distill else 'plain'}":
            pd.read_csv(ch.layout.finetune_dir(row.pattern, bool(row.distill)) / METRICS)
            for row in results.itertuples()}


def distill_reading(results: pd.DataFrame) -> str:
    """Per pattern finetuned both ways: what self-distillation changed, against the test set's
    standard error of the difference (one seed: training noise is not measured here); a run that
    finetunes one way only says so."""
    lines = []
    for pattern, group in results.groupby("pattern", sort=False):
        acc = {bool(d): a for d, a in zip(group["distill"], group["acc"])}
        if len(acc) < 2:
            continue
        d = difference(pd.Series([acc[True]]), pd.Series([acc[False]]), int(group["test_images"].iloc[0]),
                       "distilled", "plain")
        lines.append(f"- **{pattern}**: plain {d.mean_b:.2f}%, distilled {d.mean_a:.2f}%: "
                     f"{d.value:+.2f} points (+- {d.test_se:.2f}, the test set's standard error of the difference; "
                     f"one seed each). " + {"distilled better": "Self-distillation helped.",
                                            "plain better": "Self-distillation hurt.",
                                            "not separated": "Within the test set's noise."}[d.verdict])
    if not lines and len(results):
        ways = " and ".join(sorted({"distilled" if d else "plain" for d in results["distill"]}))
        return (f"This run finetunes each network one way only ({ways}: the profile's `finetune_distill`), so it "
                f"does not compare the two; the *Recovering accuracy* page compares them at equal budget.")
    return "\n".join(lines)


@dataclass
class Longer:
    """The convergence sweep as chapter 3 shows it: its table (None: not shown, `text` says why),
    chapter 3's top-1 of the sweep's networks it finetuned too ({sweep network: top-1}), the reading."""
    table: pd.DataFrame | None
    shorter: dict[str, float]
    text: str


def longer_finetune(ch: Chapter, sweep: str | None, results: pd.DataFrame, base_acc: float,
                    epochs: int) -> Longer:
    """The published convergence sweep (`sweep`: its table, e.g. benchmarks/results/convergence_sweep.csv;
    None: not shown), the same recipe run longer outside the profile's budget, beside this chapter's
    `epochs`-epoch finetunes (`results`). Shown only when it started from this run's base (the
    checkpoint the run adopted); a sweep network is matched to this chapter's distilled finetune of
    the same pattern (by its bits, not its name: another run's search may give a name another
    pattern). The table is copied into the run directory, the run's record of what it showed."""
    if not sweep:
        return Longer(None, {}, "No longer finetune is shown beside this chapter's (`convergence_sweep` is not set).")
    table = read_published("convergence_sweep", sweep, {"config", "pattern_name", "arg_pattern", "arg_init", "epoch",
                                                        "test_acc"}, "a convergence sweep's table",
                           "run benchmarks/convergence_sweep.py, which writes it,")
    source = adopted_from(pd.read_csv(ch.layout.base_metrics))
    inits = sorted(set(table["arg_init"]))
    if inits != [source]:
        return Longer(None, {}, f"The convergence sweep (`{sweep}`) started from {', '.join(f'`{i}`' for i in inits)}, "
                                f"this run from {f'`{source}`' if source else 'a base it trained itself'}: its curves "
                                f"do not answer for this run's networks, so they are not shown.")
    copy = ch.layout.chapter_dir("03_finetune") / "convergence_sweep.csv"
    copy.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(copy, index=False)
    model = build_model(ch.backbone, ch.num_classes, ch.input_size)
    length = len(ds.switches(model))
    own = {str(r.pattern_bits): float(r.acc) for r in results.itertuples() if r.distill}
    shorter, others = {}, []
    for name, pattern in table.groupby("pattern_name", sort=False)["arg_pattern"].first().items():
        bits = "".join(map(str, resolve_pattern(model, str(pattern), length)))
        if bits in own:
            shorter[name] = own[bits]
        else:
            others.append(name)
    text = [convergence.description(table, base_acc, epochs), "", *convergence.reading(table, base_acc, shorter, epochs)]
    if others:
        text += ["", f"Not finetuned by this chapter (distilled): {', '.join(f'`{n}`' for n in others)}; "
                     f"the sweep's curve answers for that pattern, not for a network of this chapter."]
    return Longer(table, shorter, "\n".join(text))


FINETUNES = ("distill", "plain", "candidate")   # which finetune of a pattern stands for it, best first


def finetuned_networks(ch: Chapter):
    """(name, finetune, pattern, model) for every network chapters 2 and 3 finetuned: 'candidate'
    for chapter 2's comparison, 'plain' and 'distill' for chapter 3's."""
    tables = [("candidate", ch.layout.candidates_csv)] if ch.layout.candidates_csv.is_file() else []
    tables.append((None, ch.require(ch.layout.finetune_results, "03_finetune")))
    for finetune, path in tables:
        for row in pd.read_csv(path, dtype={"pattern_bits": str}).itertuples():
            kind = finetune or ("distill" if row.distill else "plain")
            pattern = [int(b) for b in row.pattern_bits]
            yield row.pattern, kind, pattern, load_model(ch.backbone, ch.num_classes, ch.input_size,
                                                         ch.layout.finetuned_checkpoint(row.pattern, kind), pattern)
