"""Chapter 3, finetuning: the chosen patterns finetuned with and without distillation from the base.

Each step takes the chapter's context (`study.setup`) and its parameters, writes its table to the
run directory (row by row where a row is expensive, so an interrupted chapter resumes) and returns
it for the notebook to show."""
from __future__ import annotations

import json
import re

import pandas as pd

from ds.meta import info as net_info
from ds.train import METRICS, TrainConfig, build_model, evaluate

from .chapter import Chapter, load_model, removed_blocks, train
from .uncertainty import difference


def read_patterns(ch: Chapter) -> dict[str, list[int]]:
    """Chapter 2's candidate patterns (what `search.write_patterns` wrote)."""
    return json.loads(ch.require(ch.layout.patterns_json, "02_search").read_text())


def select_patterns(candidates: dict[str, list[int]], wanted: list[str]) -> dict[str, list[int]]:
    """`wanted` names from the candidates; 'searched' stands for every search without latency
    term (searched-k<budget>), 'searched@<runtime>' for every search with that runtime's."""
    chosen = {}
    for name in wanted:
        if name == "searched" or (name.startswith("searched@") and name != "searched@"):
            suffix = name[len("searched"):]
            found = {k: v for k, v in candidates.items()
                     if re.fullmatch(r"searched-k\d+" + re.escape(suffix), k)}
            if not found:
                raise ValueError(f"pattern {name!r}: chapter 2 made no such search (its patterns: "
                                 f"{', '.join(candidates)})")
            chosen.update(found)
        elif name in candidates:
            chosen[name] = candidates[name]
        else:
            raise ValueError(f"pattern {name!r} is not among chapter 2's patterns: {', '.join(candidates)} "
                             f"(or 'searched' for the searches without latency term, 'searched@RUNTIME' "
                             f"for those with a runtime's)")
    return chosen


def finetune_patterns(ch: Chapter, patterns: dict, epochs: int, lr: float, distill_modes=(False, True),
                      distill_alpha: float = 0.7) -> pd.DataFrame:
    """Finetune every pattern from the base weights, with and without self-distillation from the
    base network; results.csv has one row per (pattern, distill)."""
    base_ckpt = ch.layout.base_checkpoint
    teacher = load_model(ch.backbone, ch.num_classes, ch.input_size, base_ckpt)
    rows = []
    for name, pattern in patterns.items():
        for distill in distill_modes:
            model = build_model(ch.backbone, ch.num_classes, ch.input_size, pattern, init=base_ckpt).to(ch.device)
            before = evaluate(model, ch.test_loader)["acc"]
            cfg = TrainConfig(epochs=epochs, lr=lr, warmup_epochs=0, distill_alpha=distill_alpha, seed=ch.seed)
            metrics = train(model, ch.train_loader, ch.test_loader, cfg, ch.layout.finetune_dir(name, distill),
                            teacher=teacher if distill else None, meta=net_info(model), piece=ch.piece).metrics
            rows.append({"pattern": name, "removed_blocks": removed_blocks(teacher, pattern), "distill": distill,
                         "acc_before": before, "acc": metrics["test_acc"].iloc[-1],
                         "test_images": len(ch.data.test_labels), "pattern_bits": "".join(map(str, pattern))})
    table = pd.DataFrame(rows)
    table.to_csv(ch.layout.finetune_results, index=False)
    return table


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
    standard error of the difference (one seed: training noise is not measured here)."""
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
    return "\n".join(lines)


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
