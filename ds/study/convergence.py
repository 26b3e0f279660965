"""The section "Finetuning to convergence" of the page "Recovering accuracy", from the convergence
sweep's table (benchmarks/convergence_sweep.py, benchmarks/results/convergence_sweep.csv).

The cpu profile's chapter 3 finetunes its final networks for the epochs its budget allows. The
convergence sweep finetunes the same networks with the same recipe for longer, outside that budget;
this section shows its curves, where each one stops improving on held-out training images, and how
far the last epoch's test top-1 lies below the base, against the target at that number of removed
blocks and beside chapter 3's shorter finetune of the same pattern (`shorter`: {network: top-1},
from the published study table on the page, from the run's own table in chapter 3, which shows the
same section without the rerun commands).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ds.paper import PAPER_TOP1

from .headline import paper_result
from .layout import REPO_ROOT, RESULTS_DIR, published_base_curve
from .uncertainty import gap

SWEEP = REPO_ROOT / "benchmarks" / "results" / "convergence_sweep.csv"
FIGURE = "images/convergence_curves.png"
STUDY = RESULTS_DIR / "study_cpu.csv"          # chapter 3's finetunes of the same patterns
TARGETS = {6: 1.0, 11: 2.0}                     # allowed top-1 drop (points) at DS-A's and DS-E's count


def read(path: Path = SWEEP) -> pd.DataFrame | None:
    """The sweep's table, None when it has not been published."""
    return pd.read_csv(path) if Path(path).is_file() else None


def base_top1(init: str, results_dir: Path = RESULTS_DIR) -> float:
    """Test top-1 of the published base network `init` (data/checkpoints/<profile>/base.pt), from
    the curve its profile published (data/results/base_metrics_<profile>.csv, the last epoch)."""
    return float(pd.read_csv(published_base_curve(init, results_dir)[1])["test_acc"].iloc[-1])


def plateau(holdout: pd.Series, se: pd.Series) -> int:
    """Where a curve stops improving: the first epoch (1-based position) that no later epoch beats
    by more than two standard errors of the difference on the held-out images."""
    values, errors = list(holdout), list(se)
    for i, (value, error) in enumerate(zip(values, errors)):
        if all(later - value <= 2 * (error ** 2 + e ** 2) ** 0.5 for later, e in zip(values[i + 1:], errors[i + 1:])):
            return i + 1
    return len(values)


def published_chapter3(study: pd.DataFrame | None) -> dict[str, float]:
    """{pattern: test top-1} of chapter 3's distilled finetunes in a published study table
    (data/results/study_<profile>.csv; its names are those of the run the sweep took its patterns from)."""
    if study is None:
        return {}
    rows = study[study["finetune"] == "distill"]
    return dict(zip(rows["pattern"], rows["top1"].astype(float)))


def summary(table: pd.DataFrame, base: float, shorter: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per configuration: its last epoch against the base and the target, where it stops
    improving, and chapter 3's shorter finetune of the same pattern (`shorter`: {network: top-1})."""
    rows = []
    for name, curve in table.groupby("config", sort=False):
        curve = curve.sort_values("epoch")
        last = curve.iloc[-1]
        removed = int(last["removed_blocks"])
        drop, se = gap(base, last["test_acc"], int(last["test_n"]))
        running = last["epoch"] < last["arg_epochs"]
        row = {"network": last["pattern_name"], "removed": removed, "epochs": f"{int(last['epoch'])}"
               + (f" of {int(last['arg_epochs'])} (running)" if running else ""),
               "train acc (%)": last["train_acc"], "held-out (%)": last["holdout_acc"],
               "stops improving (epoch)": "" if running else plateau(curve["holdout_acc"], curve["holdout_se"]),
               "test top-1 (%)": f"{last['test_acc']:.2f} ± {last['test_se']:.2f}",
               "against the base (points)": f"{-drop:+.2f} ± {se:.2f}",
               "_change": -drop, "_se": se, "_running": running}   # "_": for the text, not shown in the table
        target = TARGETS.get(removed)
        verdict = ("not reached yet" if running else "met" if drop <= target else f"missed by {drop - target:.2f}")
        row["target (points)"] = "" if target is None else f"{target:.1f}: {verdict}"
        short = (shorter or {}).get(last["pattern_name"])
        row["chapter 3 (%)"] = "" if short is None else f"{short:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def against_base(row: pd.Series) -> str:
    """'0.90 ± 0.50 points below the base' (or above it) from a summary row."""
    side = "above" if round(row["_change"], 2) > 0 else "below"
    return f"{abs(row['_change']):.2f} ± {row['_se']:.2f} points {side} the base"


def description(table: pd.DataFrame, base: float, chapter3_epochs: int | None = None) -> str:
    """What the sweep ran, in one paragraph. `chapter3_epochs`: how long the cpu profile's chapter 3
    finetunes (its `finetune_epochs`)."""
    first = table.iloc[0]
    train = 50_000 - int(first["arg_holdout"])
    return (f"The `cpu` profile's chapter 3 finetunes its final networks for "
            f"{chapter3_epochs or 'the'} epochs{'' if chapter3_epochs else ' its budget allows'} (its budget). "
            f"The convergence sweep, a run of its own outside that budget, runs the same recipe for "
            f"{int(first['arg_epochs'])} epochs "
            f"from the same base (`{first['arg_init']}`, {base:.2f}% test top-1): lr {first['arg_lr']}, "
            f"{first['arg_warmup_epochs']} epochs of warm-up, cosine to zero, distilled from the base, batch "
            f"{int(first['arg_batch_size'])}, on {train:,} training images with {int(first['arg_holdout']):,} held out; "
            f"every epoch is evaluated on the held-out images and on all {int(first['test_n']):,} test images "
            f"(`benchmarks/results/convergence_sweep.csv`, written by `python benchmarks/convergence_sweep.py`). "
            f"The test numbers are the last epoch's, never the best one's. One seed per network.")


def reading(table: pd.DataFrame, base: float, shorter: dict[str, float] | None = None,
            chapter3_epochs: int | None = None) -> list[str]:
    """The sweep's table, how to read it, the paper's results beside, and one line per network."""
    rows = summary(table, base, shorter)
    out = [_markdown(rows), "",
           "*Stops improving*: the first epoch that no later epoch beats by more than two standard errors of "
           "the difference on the held-out images. *Against the base*: the last epoch's test top-1 less the "
           "base's (negative: below it), with the standard error of the difference (both measured once on the "
           "same test set).", ""]
    paper = [f"{name} {paper_result(name)}" for name in dict.fromkeys(rows["network"]) if name in PAPER_TOP1]
    if paper:
        out += [f"*Paper* (ImageNet, MobileNetV2-1.4, 180 finetuning epochs; top-1 change and V100 speed-up): "
                f"{'; '.join(paper)}.", ""]
    for _, row in rows.iterrows():
        out.append(f"- **{row['network']}** ({row['removed']} blocks removed): {against_base(row)} after "
                   f"{row['epochs']} epochs; target {row['target (points)'] or 'none'}"
                   + (f"; chapter 3 ({chapter3_epochs or 'fewer'} epochs): {row['chapter 3 (%)']}%."
                      if row["chapter 3 (%)"] else "."))
    return out


def lines(table: pd.DataFrame | None, base: float | None = None, shorter: dict[str, float] | None = None,
          chapter3_epochs: int | None = None) -> list[str]:
    """The page's section: what ran, its figure, its reading and how to rerun it."""
    head = ["## Finetuning to convergence", ""]
    if table is None or not len(table):
        return head + ["No convergence run is published yet (`python benchmarks/convergence_sweep.py --stage 1` "
                       "writes `benchmarks/results/convergence_sweep.csv`).", ""]
    out = head + [description(table, base, chapter3_epochs), "",
                  "```{figure} " + FIGURE, ":name: convergence-curves", "",
                  "Test top-1 after every epoch of the long finetune (solid) and held-out top-1 (dotted), one "
                  "colour per network; a cross is chapter 3's finetune of the same network, at the end of its "
                  "shorter schedule (which decays to zero there); the grey line is the base network, the dashed "
                  "red line the target (the base less the allowed drop).", "```", "",
                  *reading(table, base, shorter, chapter3_epochs)]
    return out + ["", "To rerun it: the sweep runs what is missing and resumes an interrupted run (two configurations "
                  "can run side by side, one `--only NAME` each); then regenerate this page:", "",
                  "```bash", *[f"python benchmarks/convergence_sweep.py --stage {int(s)}" for s in
                               dict.fromkeys(table["stage"])], "python -m ds.study pages", "```", "",
                  "Each configuration is one command:", "",
                  "```bash", *table.groupby("config", sort=False)["command"].first(), "```", ""]


def results_lines(base_source: str | None, base: float, sweep: Path = SWEEP) -> list[str]:
    """For the results page of a run whose base is the published checkpoint `base_source`: what the
    convergence sweep's finished networks, finetuned longer from that same base, keep (test top-1
    and the drop against `base` with its standard error, and the target); [] when the sweep started
    from another base or has no finished network."""
    table = read(sweep)
    if table is None or not base_source or not (table["arg_init"] == base_source).all():
        return []
    rows = summary(table, base)
    rows = rows[~rows["_running"]]
    if rows.empty:
        return []
    epochs = int(table["arg_epochs"].iloc[0])
    out = [f"*Finetuned longer* (outside this run's budget: the convergence sweep, the same recipe for {epochs} "
           f"epochs from the same base, one seed; the *Recovering accuracy* page has its curves):", ""]
    for _, row in rows.iterrows():
        out.append(f"- `{row['network']}` ({row['removed']} blocks removed): {row['test top-1 (%)']}%, "
                   f"{against_base(row)}; target {row['target (points)'] or 'none'}.")
    return out + [""]


def _markdown(frame: pd.DataFrame) -> str:
    shown = frame.drop(columns=[c for c in frame.columns if c.startswith("_")])
    for column in ("train acc (%)", "held-out (%)"):
        shown[column] = shown[column].map(lambda v: f"{v:.2f}")
    header = "| " + " | ".join(shown.columns) + " |"
    return "\n".join([header, "|" + "---|" * len(shown.columns)]
                     + ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)])


def figure(table: pd.DataFrame, base: float, shorter: dict[str, float] | None = None,
           chapter3_epochs: int | None = None):
    """Test (solid) and held-out (dotted) top-1 per epoch, one colour per network, the base and
    each count's target as lines; chapter 3's shorter finetune of the same network (`shorter`) as a
    cross at its last epoch."""
    fig, ax = plt.subplots(figsize=(7.2, 3.9))
    for i, (name, curve) in enumerate(table.groupby("config", sort=False)):
        curve = curve.sort_values("epoch")
        colour = plt.get_cmap("tab10")(i % 10)
        label = f"{curve['pattern_name'].iloc[0]} ({curve['test_acc'].iloc[-1]:.2f}% test)"
        ax.plot(curve["epoch"], curve["test_acc"], marker="o", ms=2.5, lw=1.3, color=colour, label=label)
        ax.plot(curve["epoch"], curve["holdout_acc"], ls=":", lw=1.0, color=colour)
        short = (shorter or {}).get(curve["pattern_name"].iloc[0])
        if short is not None and chapter3_epochs:
            ax.plot([chapter3_epochs], [short], marker="x", ms=7, mew=1.5, ls="none", color=colour,
                    label=f"chapter 3, {chapter3_epochs}-epoch schedule ({short:.2f}%)")
    ax.axhline(base, color="grey", lw=0.8, label=f"base ({base:.2f}%)")
    for removed in sorted(set(table["removed_blocks"].astype(int)) & set(TARGETS)):
        ax.axhline(base - TARGETS[removed], color="tab:red", lw=0.8, ls="--",
                   label=f"target at {removed} removed (base - {TARGETS[removed]:.1f})")
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel("top-1 (%)", fontsize=8)
    ax.set_ylim(max(0.0, table["test_acc"].min() - 2), base + 3)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    return fig


def write(book_dir: Path, sweep: Path = SWEEP, study: Path = STUDY, results_dir: Path = RESULTS_DIR,
          chapter3_epochs: int | None = None) -> list[str]:
    """The section's lines for the page, its figure written under `book_dir`."""
    table = read(sweep)
    if table is None:
        return lines(None)
    base = base_top1(table["arg_init"].iloc[0], results_dir)
    shorter = published_chapter3(pd.read_csv(study) if Path(study).is_file() else None)
    (Path(book_dir) / "images").mkdir(exist_ok=True)
    fig = figure(table, base, shorter, chapter3_epochs)
    fig.savefig(Path(book_dir) / FIGURE, dpi=110)
    plt.close(fig)
    return lines(table, base, shorter, chapter3_epochs)

