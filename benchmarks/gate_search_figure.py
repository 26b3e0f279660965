"""The gate scores over the search, per configuration and budget, from the gate-search sweep.

    python benchmarks/gate_search_figure.py        # legacy, centred, the default (sens-centred-s3); seed 0
    python benchmarks/gate_search_figure.py --configs legacy sgd-decay --seed 1

Reads benchmarks/results/gate_search_trajectories.csv (benchmarks/gate_search_sweep.py) and writes
benchmarks/results/gate_search_trajectories.png: one panel per configuration (rows) and budget
(columns), one line per searched block, solid for the blocks the search keeps at its end, dashed
for those it removes, the dotted line the mean over the blocks (the common drift).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt   # noqa: E402
import pandas as pd   # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAJECTORIES = ROOT / "benchmarks" / "results" / "gate_search_trajectories.csv"
FIGURE = ROOT / "benchmarks" / "results" / "gate_search_trajectories.png"


def plot(frame: pd.DataFrame, configs: list[str], seed: int, out: Path) -> Path:
    budgets = sorted(frame["budget"].unique())
    fig, axes = plt.subplots(len(configs), len(budgets), figsize=(5.5 * len(budgets), 3.2 * len(configs)),
                             squeeze=False, sharex=True)
    for row, config in enumerate(configs):
        for col, budget in enumerate(budgets):
            ax = axes[row][col]
            run = frame[(frame["config"] == config) & (frame["budget"] == budget) & (frame["seed"] == seed)]
            blocks = [c for c in run.columns if c.startswith("block_")]
            if run.empty:
                ax.set_title(f"{config}, keep {budget}: not run")
                continue
            final = run[blocks].iloc[-1].sort_values(ascending=False)
            kept = set(final.index[:budget])
            for block in blocks:
                ax.plot(run["step"], run[block], lw=1.0, ls="-" if block in kept else "--",
                        color="tab:blue" if block in kept else "tab:red", alpha=0.8)
            ax.plot(run["step"], run[blocks].mean(axis=1), ls=":", color="black", lw=1.5)
            ax.set_title(f"{config}, keep {budget} of {len(blocks)} (seed {seed})", fontsize=9)
            ax.set_ylabel("score")
            if row == len(configs) - 1:
                ax.set_xlabel("search step")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["legacy", "centred", "sens-centred-s3"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=FIGURE)
    a = p.parse_args()
    if not TRAJECTORIES.is_file():
        p.error(f"{TRAJECTORIES} does not exist: run benchmarks/gate_search_sweep.py --run first")
    frame = pd.read_csv(TRAJECTORIES)
    unknown = sorted(set(a.configs) - set(frame["config"]))
    if unknown:
        p.error(f"no trajectories for {unknown}; the sweep has {sorted(frame['config'].unique())}")
    print(plot(frame, a.configs, a.seed, a.out))


if __name__ == "__main__":
    main()
