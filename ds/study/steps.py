"""The chapters' experiments that are more than one call: each writes its table to the run
directory row by row and skips rows already there, so an interrupted chapter resumes."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

import ds
from ds.train import CHECKPOINT, METRICS, TrainConfig, build_model, evaluate, fit, save_checkpoint

from .chapter import Chapter, check_time, epoch_log, load_model, train


def _append(path: Path, rows: list[dict], row: dict) -> None:
    rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)


def _rows(path: Path) -> list[dict]:
    return pd.read_csv(path).to_dict("records") if path.is_file() else []


def all_ones(model) -> list[int]:
    return [1] * len(ds.switches(model))


def removable_blocks(model) -> list:
    """The switches of blocks whose activations can be removed (stem and head are not blocks)."""
    return [s for s in ds.switches(model) if s.kind == "block" and s.switchable]


def removed_blocks(model, pattern) -> int:
    """Blocks (not stem or head) whose activations `pattern` removes."""
    return sum(1 for s in removable_blocks(model) if pattern[s.index] == 0)


# ---------------------------------------------------------------- chapter 1

def train_base(ch: Chapter, backbone: str, num_classes: int, input_size: int, train_loader, test_loader,
               epochs: int, lr: float, base_checkpoint: str | None = None) -> pd.DataFrame:
    """Train the base network into <run_dir>/base (resuming), or adopt `base_checkpoint`; its metrics."""
    base_dir = ch.base_dir
    if base_checkpoint:
        if (base_dir / CHECKPOINT).is_file():
            return pd.read_csv(base_dir / METRICS)
        model = build_model(backbone, num_classes, input_size, init=base_checkpoint).to(ch.device)
        test = evaluate(model, test_loader)
        base_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint({"model": model.state_dict(), "meta": ds.meta.info(model).as_dict(), "epoch": -1}, base_dir / CHECKPOINT)
        metrics = pd.DataFrame([{"epoch": 0, "test_loss": test["loss"], "test_acc": test["acc"],
                                 "source": str(base_checkpoint)}])
        metrics.to_csv(base_dir / METRICS, index=False)
        return metrics
        return pd.read_csv(base_dir / METRICS)
    model = build_model(backbone, num_classes, input_size)
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=ch.seed)
    return train(model, train_loader, test_loader, cfg, base_dir, meta=ds.meta.info(model)).metrics


def load_base(ch: Chapter, backbone: str, num_classes: int, input_size: int):
    """The trained base network of this run (chapter 1 makes it), on the chapter's device."""
    path = ch.require(ch.base_dir / CHECKPOINT, "01_observation")
    return load_model(backbone, num_classes, input_size, path).to(ch.device)


def block_removal(ch: Chapter, backbone: str, num_classes: int, input_size: int, train_loader, test_loader,
                  lr: float) -> pd.DataFrame:
    """For each removable block alone: test top-1 right after removing its activations and after
    one short finetuning epoch on `train_loader` (written to removal.csv row by row)."""
    path = ch.out / "removal.csv"
    rows = _rows(path)
    finished = {r["switch"] for r in rows}
    base_ckpt = ch.base_dir / CHECKPOINT
    base = load_model(backbone, num_classes, input_size, base_ckpt)
    for sw in removable_blocks(base):
        if sw.index in finished:
            continue
        check_time(60)
        pattern = all_ones(base)
        pattern[sw.index] = 0
        shrunk = build_model(backbone, num_classes, input_size, pattern, init=base_ckpt).to(ch.device)
        removed = evaluate(shrunk, test_loader)["acc"]
        with epoch_log(ch.out / "removal_train.log"):
            fit(shrunk, train_loader, None, TrainConfig(epochs=1, lr=lr, warmup_epochs=0, seed=ch.seed, progress=False))
        finetuned = evaluate(shrunk, test_loader)["acc"]
        _append(path, rows, {"switch": sw.index, "block": sw.path, "stride": sw.stride, "skip": sw.skip,
                             "channels": f"{sw.in_channels}>{sw.out_channels}",
                             "acc_removed": removed, "acc_finetuned": finetuned})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- chapter 2

def candidate_patterns(base, searches: dict[int, "ds.gating.SearchResult"], sensitivity, random_seed: int,
                       backbone: str) -> dict[str, list[int]]:
    """Searched, sensitivity and random patterns at every searched budget, then the paper's (when
    it has patterns for this backbone)."""
    from ds import gating
    patterns = {}
    for budget, result in searches.items():
        patterns[f"searched-k{budget}"] = result.pattern(budget)
    for budget in searches:
        patterns[f"sensitivity-k{budget}"] = sensitivity.pattern(budget)
    for budget in searches:
        patterns[f"random-k{budget}"] = gating.random_patterns(base, budget, 1, seed=random_seed)[0]
    for name, pattern in ds.PATTERNS.get(backbone, {}).items():
        patterns[name] = list(pattern)
    return patterns


def write_patterns(ch: Chapter, patterns: dict[str, list[int]]) -> None:
    """Chapter 2's candidate patterns, for chapter 3: <run_dir>/02_search/patterns.json."""
    (ch.out / "patterns.json").write_text(json.dumps(patterns, indent=1) + "\n")


def read_patterns(ch: Chapter) -> dict[str, list[int]]:
    return json.loads(ch.require(ch.run_dir / "02_search" / "patterns.json", "02_search").read_text())


def select_patterns(candidates: dict[str, list[int]], wanted: list[str]) -> dict[str, list[int]]:
    """`wanted` names from the candidates; 'searched' stands for every searched pattern."""
    chosen = {}
    for name in wanted:
        if name == "searched":
            chosen.update({k: v for k, v in candidates.items() if k.startswith("searched-")})
        elif name in candidates:
            chosen[name] = candidates[name]
        else:
            raise ValueError(f"pattern {name!r} is not among chapter 2's patterns: {', '.join(candidates)} "
                             f"(or 'searched' for all searched ones)")
    return chosen


# ---------------------------------------------------------------- chapter 3

def finetune_dir(ch_run_dir: Path, pattern_name: str, distill: bool) -> Path:
    return Path(ch_run_dir) / "03_finetune" / pattern_name / ("distill" if distill else "plain")


def finetune_patterns(ch: Chapter, backbone: str, num_classes: int, input_size: int, patterns: dict,
                      train_loader, test_loader, epochs: int, lr: float, distill_modes=(False, True),
                      distill_alpha: float = 0.7) -> pd.DataFrame:
    """Finetune every pattern from the base weights, with and without self-distillation from the
    base network; results.csv has one row per (pattern, distill)."""
    base_ckpt = ch.base_dir / CHECKPOINT
    teacher = load_model(backbone, num_classes, input_size, base_ckpt)
    rows = []
    for name, pattern in patterns.items():
        for distill in distill_modes:
            model = build_model(backbone, num_classes, input_size, pattern, init=base_ckpt).to(ch.device)
            before = evaluate(model, test_loader)["acc"]
            cfg = TrainConfig(epochs=epochs, lr=lr, warmup_epochs=0, distill_alpha=distill_alpha, seed=ch.seed)
            metrics = train(model, train_loader, test_loader, cfg, finetune_dir(ch.run_dir, name, distill),
                            teacher=teacher if distill else None, meta=ds.meta.info(model)).metrics
            rows.append({"pattern": name, "removed_blocks": removed_blocks(teacher, pattern), "distill": distill,
                         "acc_before": before, "acc": metrics["test_acc"].iloc[-1],
                         "pattern_bits": "".join(map(str, pattern))})
    table = pd.DataFrame(rows)
    table.to_csv(ch.out / "results.csv", index=False)
    return table


def finetuned_networks(ch: Chapter, backbone: str, num_classes: int, input_size: int):
    """(name, distill, pattern, model) for every network chapter 3 finetuned."""
    results = pd.read_csv(ch.require(ch.run_dir / "03_finetune" / "results.csv", "03_finetune"),
                          dtype={"pattern_bits": str})
    for row in results.itertuples():
        pattern = [int(b) for b in row.pattern_bits]
        path = finetune_dir(ch.run_dir, row.pattern, bool(row.distill)) / CHECKPOINT
        yield row.pattern, bool(row.distill), pattern, load_model(backbone, num_classes, input_size, path, pattern)


# ---------------------------------------------------------------- chapter 4

def merge_all(ch: Chapter, backbone: str, num_classes: int, input_size: int, test_loader) -> pd.DataFrame:
    """Merge every finetuned network: verification error, MACs and parameters before and after,
    top-1 of the unmerged and the merged network (merge.csv)."""
    base = load_base(ch, backbone, num_classes, input_size).cpu()
    rows = [{"pattern": "base", "distill": False, "removed_blocks": 0, "max_abs": 0.0, "max_rel": 0.0,
             "macs_unmerged": ds.macs(base, input_size), "macs_merged": ds.macs(base, input_size),
             "params_unmerged": ds.params(base), "params_merged": ds.params(base),
             "acc_unmerged": evaluate(base.to(ch.device), test_loader)["acc"], "acc_merged": None}]
    rows[0]["acc_merged"] = evaluate(ds.merge(base.cpu(), input_size=input_size).to(ch.device), test_loader)["acc"]
    for name, distill, pattern, shrunk in finetuned_networks(ch, backbone, num_classes, input_size):
        merged = ds.merge(shrunk, input_size=input_size)
        error = ds.verify(shrunk, merged, input_size)
        rows.append({"pattern": name, "distill": distill, "removed_blocks": removed_blocks(base, pattern),
                     "max_abs": error["max_abs"], "max_rel": error["max_rel"],
                     "macs_unmerged": ds.macs(shrunk, input_size), "macs_merged": ds.macs(merged, input_size),
                     "params_unmerged": ds.params(shrunk), "params_merged": ds.params(merged),
                     "acc_unmerged": evaluate(shrunk.to(ch.device), test_loader)["acc"],
                     "acc_merged": evaluate(merged.to(ch.device), test_loader)["acc"]})
    table = pd.DataFrame(rows)
    table.to_csv(ch.out / "merge.csv", index=False)
    return table


# ---------------------------------------------------------------- chapter 5

def merged_networks(ch: Chapter, backbone: str, num_classes: int, input_size: int, distill: bool = True) -> dict:
    """{'base': the BN-folded base, pattern name: merged finetuned network} (distilled ones by default)."""
    base = load_base(ch, backbone, num_classes, input_size).cpu()
    models = {"base": ds.merge(base, input_size=input_size)}
    for name, was_distilled, _, shrunk in finetuned_networks(ch, backbone, num_classes, input_size):
        if was_distilled == distill:
            models[name] = ds.merge(shrunk.cpu(), input_size=input_size)
    return models


def bench_devices(devices: str | list[str]) -> list[str]:
    """'auto': the CPU, and the GPU when there is one."""
    if devices == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return list(devices)
