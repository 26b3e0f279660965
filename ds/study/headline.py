"""The results page's first answer: how much accuracy the shrunk networks keep, and at what speed.

Read from a run's study.csv (chapter 5: one row per network) and chapter 3's results: every network
chapter 3 finetuned, its top-1 after merging with the test set's standard error, its drop from the
base with the standard error of that difference, the accuracy target at its number of removed
blocks, its INT8 top-1, and its speed-up over the fastest way to run the base (INT8 included) at
each timed input size; beside it, what the paper reports for the pattern that removes as many
blocks (ImageNet top-1 change after 180 epochs, V100 speed-up). The figure puts every network of
the run on accuracy against speed, the base as a line, the paper's points beside.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ds.paper import PAPER_BASE_TOP1, PAPER_TOP1, PAPER_V100_REPORTED_SPEEDUP

from .chapter import at_count
from .uncertainty import gap, test_se

TARGETS = {"DS-A": 1.0, "DS-E": 2.0}   # allowed top-1 drop (points) at each paper pattern's count
FINAL = ("distill", "plain")           # chapter 3's finetunes: the networks the answer is about


def paper_result(pattern: str) -> str:
    """What the paper reports for a pattern: '-0.65 to +0.35 points, 1.80x' (top-1 change range, V100 speed-up)."""
    top1 = PAPER_TOP1[pattern]
    return (f"{min(top1) - PAPER_BASE_TOP1:+.2f} to {max(top1) - PAPER_BASE_TOP1:+.2f} points, "
            f"{PAPER_V100_REPORTED_SPEEDUP[pattern]:.2f}x")


def _int8_top1(row: pd.Series) -> str:
    values = [f"{row[c]:.2f}% ({c[len('top1_int8_'):]})" for c in row.index
              if c.startswith("top1_int8_") and not pd.isna(row[c])]
    return ", ".join(values) or "not quantized"


def _speed(row: pd.Series, suffix: str) -> str:
    speedup, setting = row.get(f"speedup{suffix}"), row.get(f"setting{suffix}")
    return "not timed" if speedup is None or pd.isna(speedup) else f"{speedup:.2f}x ({setting})"


def _below(drop: float) -> str:
    return f"{drop:.2f} points below it" if drop >= 0 else f"{-drop:.2f} points above it"


def kept_table(study: pd.DataFrame, base_top1: float, test_images: int,
               paper_removed: dict[str, int]) -> pd.DataFrame:
    """One row per network chapter 3 finetuned: accuracy kept (with its uncertainty), the target,
    INT8, speed over the fastest base, and the paper's pattern at the same count."""
    by_count = {removed: name for name, removed in paper_removed.items() if name not in TARGETS}
    by_count.update({removed: name for name, removed in paper_removed.items() if name in TARGETS})
    sizes = sorted({c[len("speedup"):] for c in study.columns if c.startswith("speedup")})
    rows = []
    for _, row in study[study["finetune"].isin(FINAL)].sort_values(["removed_blocks", "top1_merged"]).iterrows():
        drop, se = gap(base_top1, row["top1_merged"], test_images)
        paper = by_count.get(int(row["removed_blocks"]))
        target = TARGETS.get(paper)
        entry = {"network": row["pattern"], "finetune": row["finetune"], "removed blocks": int(row["removed_blocks"]),
                 "top-1 (%)": f"{row['top1_merged']:.2f} +- {test_se(row['top1_merged'], test_images):.2f}",
                 "against the base (points)": f"{-drop:+.2f} +- {se:.2f}",
                 "target": "" if target is None else (f"within {target:g}: " + ("met" if drop <= target else
                                                                               f"missed by {drop - target:.2f}")),
                 "INT8 top-1": _int8_top1(row)}
        for suffix in sizes:
            entry[f"speed-up{' ' + suffix.strip('_') if suffix else ''}"] = _speed(row, suffix)
        entry["paper (same count)"] = f"{paper}: {paper_result(paper)}" if paper in PAPER_TOP1 else ""
        rows.append(entry)
    return pd.DataFrame(rows)


def kept_reading(study: pd.DataFrame, base_top1: float, test_images: int, paper_removed: dict[str, int]) -> str:
    """The answer in sentences: per target count, the best network chapter 3 finetuned there."""
    lines = []
    final = study[study["finetune"].isin(FINAL)]
    for name, allowed in TARGETS.items():
        removed, here = paper_removed.get(name), at_count(final, paper_removed, name)
        if here.empty:
            lines.append(f"- **At {name}'s count**: no network of this run; no answer.")
            continue
        best = here.sort_values("top1_merged").iloc[-1]
        drop, se = gap(base_top1, best["top1_merged"], test_images)
        verdict = ("within the target" if drop <= allowed else
                   f"**the target is missed by {drop - allowed:.2f} points** (two standard errors: {2 * se:.2f})")
        lines.append(f"- **At {name}'s count ({removed} blocks removed)**: the best network, `{best['pattern']}` "
                     f"({best['finetune']}), keeps {best['top1_merged']:.2f}% of the base's {base_top1:.2f}%: "
                     f"{_below(drop)} +- {se:.2f}, {verdict} of {allowed:g} point(s); "
                     f"{_speed(best, '')} at the training input size"
                     + "".join(f", {_speed(best, s)} at {s.strip('_')}" for s in sorted(
                         {c[len('speedup'):] for c in study.columns if c.startswith('speedup_')}))
                     + f". The paper, for {name} on ImageNet: {paper_result(name)} on a V100.")
    return "\n".join(lines)


def paper_counts(study: pd.DataFrame) -> dict[str, int]:
    """Removed blocks of each paper pattern the run finetuned (its rows in study.csv)."""
    return {name: int(study.loc[study["pattern"] == name, "removed_blocks"].iloc[0])
            for name in PAPER_TOP1 if (study["pattern"] == name).any()}


def write_figure(study: pd.DataFrame, base_top1: float, path: Path) -> Path | None:
    """Accuracy against speed-up over the fastest base for every network of the run (chapter 2's
    candidates, chapter 3's finetunes), one panel per timed input size, the base as a line, the
    paper's patterns beside (their ImageNet top-1 change added to this base, their V100 speed-up);
    None without timings."""
    columns = [c for c in sorted(study.columns) if c.startswith("speedup") and study[c].notna().any()]
    if not columns:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(columns), 1, figsize=(7.0, 4.4 * len(columns)), squeeze=False)
    for ax, column in zip(axes[:, 0], columns):
        _panel(ax, study[study["source"] != "base"].dropna(subset=[column]), column, base_top1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def _panel(ax, networks: pd.DataFrame, column: str, base_top1: float) -> None:
    styles = {"candidate": ("o", "#9aa7b8", "chapter 2 candidates (1 epoch)"),
              "plain": ("s", "#4c72b0", "chapter 3, plain"), "distill": ("D", "#2a7f62", "chapter 3, distilled")}
    for finetune, (marker, colour, label) in styles.items():
        rows = networks[networks["finetune"] == finetune]
        if len(rows):
            ax.scatter(rows[column], rows["top1_merged"], marker=marker, color=colour, s=22, zorder=3, label=label)
    for _, row in networks[networks["finetune"].isin(FINAL)].iterrows():   # plain labels below, distilled above
        ax.annotate(row["pattern"], (row[column], row["top1_merged"]), fontsize=7,
                    xytext=(4, -9 if row["finetune"] == "plain" else 3), textcoords="offset points")
    ax.axhline(base_top1, color="k", lw=1, ls="--", label=f"base network ({base_top1:.2f}%)")
    for i, (name, top1) in enumerate(PAPER_TOP1.items()):
        x = PAPER_V100_REPORTED_SPEEDUP[name]
        ax.plot([x, x], [base_top1 + min(top1) - PAPER_BASE_TOP1, base_top1 + max(top1) - PAPER_BASE_TOP1],
                color="#c44e52", lw=2, label="paper: ImageNet top-1 change, V100 speed-up" if i == 0 else None)
        below = name in ("DS-C", "DS-E")   # their neighbours' labels sit above: these go under their bars
        ax.annotate(name, (x, base_top1 + (min(top1) if below else max(top1)) - PAPER_BASE_TOP1), fontsize=7,
                    color="#c44e52", xytext=(3, -9 if below else 2), textcoords="offset points")
    left, right = ax.get_xlim()   # room on the right for the label of the rightmost bar or point
    ax.set_xlim(left, right + 0.08 * (right - left))
    low = min(networks["top1_merged"].min(), base_top1 - 7) if len(networks) else base_top1 - 7
    ax.set_ylim(max(0.0, low - 1), min(100.0, base_top1 + 2))
    size = column[len("speedup"):].strip("_") or "the training input size"
    ax.set_title(f"each network in its fastest CPU setting, at {size}", fontsize=9)
    ax.set_xlabel("speed-up over the fastest base (the paper's: over its base on a V100)")
    ax.set_ylabel("test top-1 after merging (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
