"""Chapter 4, the merge: every finetuned network merged, checked against the network it replaces.

Each step takes the chapter's context (`study.setup`) and its parameters, writes its table to the
run directory (row by row where a row is expensive, so an interrupted chapter resumes) and returns
it for the notebook to show."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

import ds
from ds.meta import info as net_info
from ds.networks import save_network
from ds.train import evaluate

from .chapter import Chapter, all_ones, load_base, removed_blocks
from .finetune import FINETUNES, finetuned_networks


@dataclass
class Merged:
    """Chapter 4's merge: the table, and every merged network keyed by (pattern, finetune)."""
    table: pd.DataFrame
    networks: dict

    def network(self, pattern: str):
        """The merged network that stands for `pattern` (its distilled finetune when there is one)."""
        return next(self.networks[(pattern, f)] for f in FINETUNES if (pattern, f) in self.networks)


def _merge_row(ch: Chapter, name: str, finetune: str, removed: int, unmerged, merged) -> dict:
    record = net_info(merged)
    size = ch.input_size
    return {"pattern": name, "finetune": finetune, "distill": finetune == "distill", "removed_blocks": removed,
            "max_abs": record.merge_max_abs, "max_rel": record.merge_max_rel,
            "macs_unmerged": ds.macs(unmerged, size), "macs_merged": ds.macs(merged, size),
            "params_unmerged": ds.params(unmerged), "params_merged": ds.params(merged),
            "acc_unmerged": evaluate(unmerged.to(ch.device), ch.test_loader)["acc"],
            "acc_merged": evaluate(merged.to(ch.device), ch.test_loader)["acc"]}


def merge_all(ch: Chapter) -> Merged:
    """Merge the base network (BN folded) and every network chapters 2 and 3 finetuned, once each:
    merge errors (as `ds.merge` recorded them), MACs and parameters before and after, top-1 of the
    unmerged and the merged network (merge.csv). Each merged network is saved for chapter 5."""
    base = load_base(ch).cpu()
    networks, rows = {}, []
    entries = [("base", "base", all_ones(base), base)] + list(finetuned_networks(ch))
    for name, finetune, pattern, unmerged in entries:
        merged = ds.merge(unmerged.cpu(), input_size=ch.input_size)
        save_network(merged, ch.layout.merged_network(name, finetune))
        rows.append(_merge_row(ch, name, finetune, removed_blocks(base, pattern), unmerged, merged))
        networks[(name, finetune)] = merged.cpu()
    table = pd.DataFrame(rows)
    table.to_csv(ch.layout.merge_csv, index=False)
    return Merged(table, networks)


def standing(merge: pd.DataFrame) -> pd.DataFrame:
    """One row of merge.csv per pattern: the finetune that stands for it (distilled, else chapter 3's
    plain, else chapter 2's comparison finetune), and the base."""
    rank = merge["finetune"].map({f: i for i, f in enumerate(FINETUNES)}).fillna(-1)
    return merge.assign(_rank=rank).sort_values("_rank", kind="stable").groupby("pattern", sort=False).head(1) \
        .drop(columns="_rank").sort_index()


def most_removed(merged: Merged, wanted: str | None = None) -> str:
    """The pattern to draw: `wanted`, else the standing network with the most removed blocks."""
    table = standing(merged.table)
    table = table[table["pattern"] != "base"]
    if wanted is not None:
        if wanted not in set(table["pattern"]):
            raise ValueError(f"diagram_pattern {wanted!r} is not among the merged networks: "
                             f"{', '.join(table['pattern'].unique())}")
        return wanted
    return table.sort_values("removed_blocks", ascending=False, kind="stable")["pattern"].iloc[0]
