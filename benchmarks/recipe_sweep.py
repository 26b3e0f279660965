"""The training-recipe sweep for the `cpu` profile: mobilenetv2_035 on all of CIFAR-10 at 32 px, 2 CPU cores.

    python benchmarks/recipe_sweep.py --stage 1          # run what is missing of stage 1, then collect
    python benchmarks/recipe_sweep.py --collect          # only rewrite the results from runs/recipe/

Each configuration is one `python -m ds.train` command (printed, and stored in the results) writing
runs/recipe/<name>/; an interrupted run is continued with --resume, a finished one is skipped. The
results are benchmarks/results/recipe_sweep.csv: one row per configuration and epoch (the curve:
train accuracy on augmented batches, test top-1 on all 10,000 test images, seconds), with the
configuration's arguments (arg_*), the command, the date it finished (empty: unfinished) and the
load average around the run. The
per-epoch `seconds` are wall time: where the machine was shared (the sweep paused while benchmarks
ran, or CI beside it) they are not training speed; take that from undisturbed epochs.

Stage 1 narrows the recipe on a cheap proxy (4 epochs: each schedule warms up and decays to zero);
stage 2 trains the stage-1 winner for the epoch budgets the profile can afford; stage 3 measures
what a longer schedule than the profile affords would reach.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

import sweep_runs   # beside this script

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "recipe"
RESULTS = ROOT / "benchmarks" / "results" / "recipe_sweep.csv"
COMMON = {"backbone": "mobilenetv2_035", "dataset": "cifar10", "input-size": 32, "threads": 2, "seed": 0}
DEFAULT = {"batch-size": 128, "lr": 0.2, "weight-decay": 5e-4, "label-smoothing": 0.1, "warmup-epochs": 1}

STAGES = {
    1: {   # 4 epochs each: learning rate, batch, weight decay, label smoothing
        "s1-lr0.2": {"epochs": 4},
        "s1-lr0.1": {"epochs": 4, "lr": 0.1},
        "s1-lr0.4": {"epochs": 4, "lr": 0.4},
        "s1-bs256-lr0.4": {"epochs": 4, "batch-size": 256, "lr": 0.4},
        "s1-wd1e-4": {"epochs": 4, "weight-decay": 1e-4},
        "s1-ls0": {"epochs": 4, "label-smoothing": 0.0},
    },
    2: {   # the epoch budget: what the default recipe reaches in 20 epochs (the curve, every epoch)
        "s2-lr0.2-e20": {"epochs": 20},
    },
    3: {   # would a longer schedule pass 85%? The cpu profile's base recipe (lr 0.4) for 40 epochs instead of
           # 25, with ds.create_model's N(0, 0.01) classifier (stages 1-2 ran with timm's initialization)
        "s3-lr0.4-e40": {"epochs": 40, "lr": 0.4},
    },
}


def arguments(settings: dict) -> dict:
    return {**COMMON, **DEFAULT, **settings}


def collect() -> pd.DataFrame:
    rows = []
    for stage, configs in STAGES.items():
        for name, settings in configs.items():
            curve = sweep_runs.curve(RUNS, name, stage, arguments(settings))
            if curve is None:
                continue
            rows.append(curve)
    if not rows:   # no run of this sweep on this machine: the published table stays as it is
        print(f"no runs in {RUNS.relative_to(ROOT)}: {RESULTS.relative_to(ROOT)} left unchanged")
        return pd.read_csv(RESULTS) if RESULTS.is_file() else pd.DataFrame()
    table = sweep_runs.keep_published(RESULTS, pd.concat(rows, ignore_index=True))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS, index=False)
    if len(table):
        last = table.sort_values("epoch").groupby("config").tail(1)
        print(last[["config", "epoch", "train_acc", "test_acc", "seconds"]].to_string(index=False))
    return table


def main() -> None:
    sweep_runs.main(__doc__.splitlines()[0], RUNS, STAGES, arguments, collect)


if __name__ == "__main__":
    main()
