"""What publishing a run leaves outside the book: its tables in data/results/ and, when small
enough, its base network and its best merged searched network (gate or DP search) in
data/checkpoints/, each with the run's provenance beside it (profile, commit, dates, device, and
the file's sha256, which every reader checks) so a number can always be traced to its run.

    data/results/study_<profile>.csv          one row per network (chapter 5's study.csv)
    data/results/observation_<profile>.csv    one row per arm and seed (chapter 1's observation.csv)
    data/results/base_metrics_<profile>.csv   the base network's training curve (chapter 1)
    data/checkpoints/<profile>/base.pt        the trained base: ds.load_network(this file), or build_model(..., init=it)
    data/checkpoints/<profile>/<pattern>-merged.pt   the best merged searched network: ds.load_network(this file)

The networks are network files (ds.networks): weights and the NetInfo that rebuilds the module,
data only.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from ds.provenance import file_sha256
from ds.train import load_checkpoint, save_checkpoint
from ds.train.checkpoint import provenance_path

from .book import run_label, run_provenance
from .layout import CHECKPOINTS_DIR, RESULTS_DIR, RunLayout
from .merge import standing

MAX_CHECKPOINT_BYTES = 5 * 1024 * 1024


def publish_file(source: Path, target: Path, layout: RunLayout, what: str, limit: int | None = None) -> Path | None:
    """Copy `source` to `target` with a provenance record beside it; None (and a message) when it
    is larger than `limit` bytes."""
    size = source.stat().st_size
    if limit is not None and size > limit:
        print(f"not published: {target} would be {size / 2**20:.1f} MB (limit {limit / 2**20:.0f} MB)")
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    record = {"what": what, "run_dir": run_label(layout), "chapters": run_provenance(layout),
              "sha256": file_sha256(target)}
    provenance_path(target).write_text(json.dumps(record, indent=1) + "\n")
    return target


SEARCHES = ("searched", "dp")   # the sources of searched patterns: the gate search and the DP search


def best_searched(study: pd.DataFrame) -> pd.Series | None:
    """The searched network to publish: of the standing networks of either search's patterns, the
    most accurate merged one."""
    searched = standing(study[study["source"].isin(SEARCHES)])
    return None if searched.empty else searched.sort_values("top1_merged").iloc[-1]


def publish_results(layout: RunLayout, profile: str, results_dir: Path = RESULTS_DIR,
                    checkpoints_dir: Path = CHECKPOINTS_DIR) -> list[Path]:
    """Copy the run's tables into `results_dir` and its base and best merged searched network into
    `checkpoints_dir`/<profile>/ (each only under 5 MB; a larger one is left out and said so); the
    paths written."""
    written = []
    for source, name, what in ((layout.study_csv, f"study_{profile}.csv", "one row per network (chapter 5)"),
                               (layout.observation_csv, f"observation_{profile}.csv",
                                "one row per arm and seed of the observation (chapter 1)"),
                               (layout.base_metrics, f"base_metrics_{profile}.csv",
                                "the base network's training curve, one row per epoch (chapter 1)")):
        if source.is_file():
            written.append(publish_file(source, Path(results_dir) / name, layout, what))
    target = Path(checkpoints_dir) / profile
    if layout.base_checkpoint.is_file():
        state = load_checkpoint(layout.base_checkpoint, ("model",))
        with tempfile.TemporaryDirectory() as tmp:   # the weights only, not the optimizer's state
            slim = Path(tmp) / "base.pt"
            save_checkpoint({"model": state["model"], "meta": state.get("meta"), "epoch": state.get("epoch")}, slim)
            written.append(publish_file(slim, target / "base.pt", layout, "the trained base network (weights)",
                                         MAX_CHECKPOINT_BYTES))
    if layout.study_csv.is_file():
        row = best_searched(pd.read_csv(layout.study_csv))
        if row is not None:
            written.append(publish_file(layout.merged_network(row["pattern"], row["finetune"]),
                                         target / f"{row['pattern']}-merged.pt", layout,
                                         f"the merged network of {row['pattern']} ({row['finetune']} finetune), "
                                         f"test top-1 {row['top1_merged']:.2f}%", MAX_CHECKPOINT_BYTES))
    return [p for p in written if p is not None]
