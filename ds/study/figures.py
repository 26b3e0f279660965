"""The study's figures: each function takes tables (or a model) and returns a matplotlib Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Rectangle
from torch import nn

from ds.paths import get_module

KEEP, REMOVE = "#3b6ea8", "#f2c14e"


def removal_bars(table: pd.DataFrame, base_acc: float):
    """Accuracy per block with only that block's activations removed: right after, and finetuned."""
    fig, ax = plt.subplots(figsize=(9, 3.4))
    x = range(len(table))
    ax.bar([i - 0.2 for i in x], table["acc_removed"], width=0.4, label="right after removal", color="#c44e52")
    ax.bar([i + 0.2 for i in x], table["acc_finetuned"], width=0.4, label="after a short finetune", color=KEEP)
    ax.axhline(base_acc, color="k", lw=1, ls="--", label=f"base network ({base_acc:.1f}%)")
    ax.set_xticks(list(x), [str(i) for i in table["switch"]])
    ax.set_xlabel("block (switch index) whose activations are removed")
    ax.set_ylabel("test top-1 (%)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def recipe_curves(sweep: pd.DataFrame):
    """The training-recipe sweep: test top-1 per epoch of every configuration (dashed: the
    4-epoch proxies), and the 85% target."""
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    for name, curve in sweep.groupby("config", sort=False):
        short = curve["epoch"].max() <= 4
        ax.plot(curve["epoch"], curve["test_acc"], marker="o", ms=2.5, lw=1 if short else 1.8,
                ls="--" if short else "-", label=f"{name} ({curve['test_acc'].iloc[-1]:.1f}%)")
    ax.axhline(85, color="k", lw=0.8, ls=":", label="target 85%")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%), all 10,000 test images")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def observation_points(table: pd.DataFrame):
    """Chapter 1's comparison: top-1 of every seed per arm (dots) and each arm's mean (bar), one
    panel per setting."""
    settings = list(table["setting"].unique())
    fig, axes = plt.subplots(1, len(settings), figsize=(4.6 * len(settings), 3.4), squeeze=False)
    labels = {"with_activations": "trained with\nactivations", "after_training": "removed after\ntraining + finetune",
              "recovered": "removed after\ntraining + best\nrecovery", "from_scratch": "linear from\nscratch"}
    colors = {"with_activations": "#888888", "after_training": KEEP, "recovered": "#2a7f62", "from_scratch": "#c44e52"}
    for ax, setting in zip(axes[0], settings):
        rows = table[table["setting"] == setting]
        arms = [a for a in labels if a in set(rows["arm"])]
        for x, arm in enumerate(arms):
            top1 = rows.loc[rows["arm"] == arm, "top1"]
            ax.bar(x, top1.mean(), width=0.6, color=colors[arm], alpha=0.35)
            ax.scatter([x] * len(top1), top1, color=colors[arm], zorder=3, s=18)
        ax.set_xticks(range(len(arms)), [labels[a] for a in arms], fontsize=8)
        low = rows["top1"].min()
        ax.set_ylim(max(0.0, low - 5), min(100.0, rows["top1"].max() + 2))
        ax.set_title(f"{setting} (dots: seeds, bars: means)", fontsize=9)
    axes[0][0].set_ylabel("test top-1 (%)")
    fig.tight_layout()
    return fig


def score_trajectories(trajectories: dict[str, pd.DataFrame]):
    """Gate scores of every searched block during the search, one panel per budget."""
    fig, axes = plt.subplots(1, len(trajectories), figsize=(4.5 * len(trajectories), 3.2), squeeze=False,
                             sharey=True)
    for ax, (name, frame) in zip(axes[0], trajectories.items()):
        blocks = [c for c in frame.columns if c.startswith("block_")]
        cmap = plt.get_cmap("viridis", len(blocks))
        for i, column in enumerate(blocks):
            ax.plot(frame["step"], frame[column], color=cmap(i), lw=1, label=column.split("_")[1])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("gate score")
    axes[0][-1].legend(title="switch", fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def pattern_grid(patterns: dict[str, list[int]]):
    """Patterns as rows of cells: blue keeps the activations of that switch, yellow removes them."""
    names = list(patterns)
    n = max(len(p) for p in patterns.values())
    fig, ax = plt.subplots(figsize=(0.38 * n + 2.2, 0.32 * len(names) + 1.0))
    for row, name in enumerate(names):
        for col, bit in enumerate(patterns[name]):
            ax.add_patch(Rectangle((col, row), 0.92, 0.85, color=KEEP if bit else REMOVE))
    ax.set_xlim(0, n)
    ax.set_ylim(len(names), 0)
    ax.set_xticks([i + 0.46 for i in range(n)], [str(i) for i in range(n)], fontsize=7)
    ax.set_yticks([i + 0.42 for i in range(len(names))], names, fontsize=8)
    ax.set_xlabel("switch (0 stem, last head); blue keeps the activations, yellow removes them")
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(length=0)
    fig.tight_layout()
    return fig


def latency_bars(saved_ms: pd.DataFrame, title: str):
    """Time per batch each block saves when merged (rows: switch index), one bar per runtime."""
    fig, ax = plt.subplots(figsize=(9, 3.4))
    width = 0.8 / max(1, saved_ms.shape[1])
    for i, runtime in enumerate(saved_ms.columns):
        ax.bar([x + (i - (saved_ms.shape[1] - 1) / 2) * width for x in range(len(saved_ms))],
               saved_ms[runtime], width=width, label=runtime)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(list(range(len(saved_ms))), [str(b) for b in saved_ms.index])
    ax.set_xlabel("block (switch index) merged")
    ax.set_ylabel("time saved (ms per batch)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


SOURCE_COLORS = {"searched": KEEP, "dp": "#dd8452", "paper": "#c44e52", "sensitivity": "#55a868",
                 "random": "#999999", "given": "#8172b2", "base": "k"}


def accuracy_vs_speed(table: pd.DataFrame, base_top1: float, base_ms: float, setting: str):
    """Chapter 2's comparison: finetuned top-1 against measured time per batch, one colour per
    source of the pattern, one marker per number of removed blocks; the base as a star."""
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    markers = dict(zip(sorted(table["removed_blocks"].unique()), "osD^v<>"))
    for (source, removed), group in table.groupby(["source", "removed_blocks"]):
        ax.scatter(group["ms_per_batch"], group["top1"], color=SOURCE_COLORS.get(source, "#8172b2"),
                   marker=markers[removed], s=36, zorder=3, label=f"{source}, {removed} removed")
        for _, row in group.iterrows():
            if source != "random":
                ax.annotate(row["pattern"], (row["ms_per_batch"], row["top1"]), fontsize=6, xytext=(3, 2),
                            textcoords="offset points")
    ax.scatter([base_ms], [base_top1], marker="*", s=140, color="k", zorder=4, label="base")
    ax.set_xlabel(f"measured time per batch, merged network ({setting}, ms; lower is faster)")
    ax.set_ylabel("test top-1 after finetuning (%)")
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    return fig


def finetune_curves(curves: dict[str, pd.DataFrame], base_acc: float):
    """Test top-1 per finetuning epoch, one line per (pattern, plain or distilled); the axis starts
    a little below the lowest final top-1, so the last epochs, where the networks differ, are legible."""
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    for label, metrics in curves.items():
        ax.plot(metrics["epoch"], metrics["test_acc"], marker="o", ms=3,
                ls="-" if label.endswith("distilled") else "--", label=label)
    ax.axhline(base_acc, color="k", lw=1, ls=":", label=f"base network ({base_acc:.1f}%)")
    finals = [m["test_acc"].iloc[-1] for m in curves.values()]
    if finals:
        ax.set_ylim(max(0.0, min(finals) - 10), min(100.0, max(max(finals), base_acc) + 2))
    ax.set_xlabel("finetuning epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.legend(fontsize=7, loc="lower right", ncol=2 if len(curves) > 4 else 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def accuracy_vs_removed(table: pd.DataFrame, base_acc: float):
    """Finetuned accuracy against the number of blocks whose activations were removed."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for distill, group in table.groupby("distill"):
        label = "with self-distillation" if distill else "without distillation"
        ax.scatter(group["removed_blocks"], group["acc"], label=label, marker="o" if distill else "s",
                   color=KEEP if distill else "#c44e52", zorder=3)
        for _, row in group.iterrows():
            ax.annotate(row["pattern"], (row["removed_blocks"], row["acc"]), fontsize=7,
                        xytext=(4, 2), textcoords="offset points")
    ax.axhline(base_acc, color="k", lw=1, ls="--", label=f"base network ({base_acc:.1f}%)")
    ax.set_xlabel("blocks whose activations are removed")
    ax.set_ylabel("test top-1 after finetuning (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _conv_label(convs: list[nn.Conv2d]) -> str:
    parts = []
    for conv in convs:
        k = conv.kernel_size[0]
        depthwise = conv.groups > 1 and conv.groups == conv.in_channels
        parts.append(f"{'dw' if depthwise else ''}{k}x{k}")
    return "-".join(parts)


def unit_boxes(model: nn.Module, switches) -> list[dict]:
    """Per switch: the convs of that unit in `model` (kernel sizes, channels in -> out, stride)."""
    boxes = []
    for sw in switches:
        module = get_module(model, sw.path)
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        stride = 1
        for conv in convs:
            stride *= conv.stride[0]
        boxes.append({"switch": sw.index, "kind": sw.kind, "label": _conv_label(convs),
                      "in": convs[0].in_channels, "out": convs[-1].out_channels, "stride": stride,
                      "single_conv": len(convs) == 1 and sw.kind == "block"})
    return boxes


def architecture(before: list[dict], after: list[dict], title_before: str, title_after: str):
    """The network before and after merging, side by side: one box per unit, input at the top."""
    n = len(before)
    fig, ax = plt.subplots(figsize=(7.5, 0.36 * n + 1.1))
    for column, (boxes, title) in enumerate([(before, title_before), (after, title_after)]):
        x = column * 3.6
        ax.text(x + 1.5, -0.9, title, fontsize=10, weight="bold", ha="center")
        for row, box in enumerate(boxes):
            color = "#dddddd" if box["kind"] != "block" else (REMOVE if box["single_conv"] else "#cfe0f3")
            ax.add_patch(Rectangle((x, row), 3.0, 0.8, facecolor=color, edgecolor="#444444", lw=0.7))
            stride = f"  /{box['stride']}" if box["stride"] > 1 else ""
            ax.text(x + 0.1, row + 0.42, f"{box['switch']:>2}  {box['kind'] + ' ' if box['kind'] != 'block' else ''}"
                    f"{box['label']}   {box['in']}>{box['out']}{stride}", va="center", fontsize=7.5, family="monospace")
    ax.set_xlim(-0.1, 6.7)
    ax.set_ylim(n + 0.6, -1.4)
    ax.axis("off")
    ax.text(0, n + 0.5, "switch, convolutions (kxk dense, dwkxk depthwise), channels in>out, /stride; "
                        "yellow: a block merged into one dense conv", fontsize=7, va="top")
    fig.tight_layout()
    return fig


def speedup_by_setting(table: pd.DataFrame, title: str):
    """Grouped bars: for each merged network, its speed-up over the fastest base of the run in
    every runtime setting; the line at 1 is that fastest base."""
    merged = table[table["pattern"] != "base"]
    patterns = list(dict.fromkeys(merged["pattern"]))
    settings = list(dict.fromkeys(table["setting"]))
    width = 0.8 / max(len(settings), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(patterns) + 2), 3.8))
    for i, setting in enumerate(settings):
        rows = merged[merged["setting"] == setting].set_index("pattern").reindex(patterns)
        xs = [j + (i - (len(settings) - 1) / 2) * width for j in range(len(patterns))]
        ax.bar(xs, rows["speedup_over_best_base"], width, label=setting)
    best = table[table["pattern"] == "base"].sort_values("img_s_median").iloc[-1]
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.annotate(f"fastest base: {best['setting']}", (len(patterns) - 0.5, 1.0), fontsize=7, ha="right",
                va="bottom", xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(patterns)), patterns, fontsize=8)
    ax.set_ylabel("speed-up over the fastest base (x)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncols=min(len(settings), 4), loc="upper left")
    fig.tight_layout()
    return fig


def time_share_bars(table: pd.DataFrame, title: str):
    """One horizontal bar per runtime setting and network, its length the profiled time relative to
    the base in the same setting, split into depthwise, 1x1, dense k x k and other time."""
    colors = {"depthwise": "#c44e52", "pointwise": "#3b6ea8", "dense_kxk": "#55a868", "other": "#bbbbbb"}
    labels = {"depthwise": "depthwise conv", "pointwise": "1x1 conv", "dense_kxk": "dense k x k conv",
              "other": "everything else"}
    rows = []
    for setting, group in table.groupby("setting", sort=False):
        base_total = group.loc[group["pattern"] == "base", "total_ms"].iloc[0]
        rows += [(f"{setting}: {r['pattern']}", {k: r[f"{k}_ms"] / base_total for k in colors})
                 for _, r in group.iterrows()]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.4))
    for y, (_, parts) in enumerate(rows):
        left = 0.0
        for kind, value in parts.items():
            ax.barh(y, value, left=left, color=colors[kind], label=labels[kind] if y == 0 else None)
            left += value
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("profiled time per batch, relative to the base in the same setting")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncols=4, loc="lower right")
    fig.tight_layout()
    return fig


def pareto(ours: pd.DataFrame, paper: list[dict] | None, device_label: str):
    """Accuracy change against speed-up (column `speedup`): our networks, their Pareto front, the
    paper's reported points."""
    fig, ax = plt.subplots(figsize=(6.8, 4.0))
    ax.scatter(ours["speedup"], ours["delta_acc"], color=KEEP, zorder=3, label=f"this study ({device_label})")
    for _, row in ours.iterrows():
        ax.annotate(row["pattern"], (row["speedup"], row["delta_acc"]), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")
    front = pareto_front(ours)
    ax.plot(front["speedup"], front["delta_acc"], color=KEEP, lw=1, ls="-", label="Pareto front (ours)")
    if paper:
        for i, row in enumerate(paper):
            ax.plot([row["speedup"]] * 2, [row["delta_min"], row["delta_max"]], color="#c44e52", lw=2,
                    label="paper, ImageNet, V100 (reported; range of its 3 settings)" if i == 0 else None)
            ax.annotate(row["pattern"], (row["speedup"], row["delta_max"]), fontsize=7, color="#c44e52",
                        xytext=(3, 2), textcoords="offset points")
    ax.axhline(0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("throughput speed-up (x): ours over the fastest base, the paper's over its base")
    ax.set_ylabel("top-1 change against the base (pp)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """Rows not beaten on both speed-up and accuracy change, by speed-up."""
    rows = table.sort_values(["speedup", "delta_acc"], ascending=[False, False])
    best, keep = float("-inf"), []
    for index, row in rows.iterrows():
        if row["delta_acc"] > best:
            keep.append(index)
            best = row["delta_acc"]
    return table.loc[keep].sort_values("speedup")


def recovery_curves(curves: pd.DataFrame, base_holdout: float | None = None):
    """The recovery sweep: held-out top-1 per epoch of every configuration (epoch 0: the network it
    starts from; dashed: still running), one panel per pattern, the same colour for the same
    method on every panel, and the base network (grey, dashed)."""
    patterns = list(dict.fromkeys(curves["pattern"]))
    methods = list(dict.fromkeys(name.split("-", 1)[-1] for name in curves["config"]))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(patterns), figsize=(7.2, 3.9), sharey=True, squeeze=False)
    for ax, pattern in zip(axes[0], patterns):
        for name, curve in curves[curves["pattern"] == pattern].groupby("config", sort=False):
            running = not bool(curve["finished"].iloc[-1])
            ax.plot(curve["epoch"], curve["holdout_acc"], marker="o", ms=2.5, lw=1.3, ls="--" if running else "-",
                    color=colours[name.split("-", 1)[-1]],
                    label=f"{name} ({curve['holdout_acc'].iloc[-1]:.1f}%{', running' if running else ''})")
        if base_holdout is not None:
            ax.axhline(base_holdout, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{pattern}'s pattern", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_xticks(sorted(curves["epoch"].unique()))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="lower right")
    axes[0][0].set_ylabel("held-out top-1 (%)", fontsize=8)
    fig.tight_layout()
    return fig
