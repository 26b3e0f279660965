"""Recovery after removal, compared at equal budget on a cheap proxy of the `cpu` profile.

    python benchmarks/recovery_sweep.py --stage 1        # run what is missing of stage 1, then collect
    python benchmarks/recovery_sweep.py --stage 0        # accuracies right after removal (no training)
    python benchmarks/recovery_sweep.py --collect        # only rewrite the results from runs/recovery/

Every configuration starts from the published base network (data/checkpoints/cpu/base.pt:
mobilenetv2_035, CIFAR-10 at 32 px, 84.28% test top-1) and finetunes the network `ds.apply_pattern`
makes, on the proxy: 12,000 random training images of which 2,000 are held out (`--holdout`, never
trained on: settings are chosen on them), so 10,000 train; 3 epochs; batch 128; one torch thread
(the machine is shared); the test accuracy of every epoch on 2,000 random test images. The base saw
the held-out images when it was trained (they are training images), so held-out accuracy is an
upward-biased estimate: use it to rank, and the test column for the numbers.

Each configuration is one `python -m ds.train` command (printed, and stored in the results) writing
runs/recovery/<name>/; an interrupted run is continued with --resume, a finished one is skipped.
Stage 0 trains nothing: it evaluates, in this process, the networks each method starts from (the
base; the pattern removed at once; that network after BatchNorm recalibration; the annealed network
at g = 1, i.e. the base's activations in merge-ready form) on the same held-out and test images,
into runs/recovery/stage0.json.

The results are benchmarks/results/recovery_sweep.csv: one row per configuration and epoch (the
curve; stage 0 at epoch 0), with held-out and test top-1 and their binomial standard errors
sqrt(p (1 - p) / n), the configuration's arguments (arg_*), the command, the date it finished
(empty: unfinished) and the load average around the run; and recovery_sweep.png, the held-out
curves. `seconds` are wall time on a shared machine, not training speed.

Stage 1: the methods at equal budget on DS-E's pattern (12 switches removed), the issue's recipe
(lr 0.02, no warm-up): removed at once; annealed over epochs 0-1.5; progressive (3 switches at a
time, input to output, over epochs 0-2); self-distillation from the base, alone and with the anneal;
and the recipe lr 0.05 with 0.3 epochs of warm-up. Stage 2: stage 1's two best (the lr 0.05 recipe
and distillation) together on DS-E's pattern, and DS-A's pattern (7 removed) removed at once with
the issue's recipe, the lr 0.05 recipe, and that recipe with distillation. BatchNorm recalibration does not change finetuning (see
ds.train.recalibrate): stage 0 measures what it changes.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

import sweep_runs   # beside this script

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "recovery"
RESULTS = ROOT / "benchmarks" / "results" / "recovery_sweep.csv"
FIGURE = RESULTS.with_suffix(".png")
BASE = "data/checkpoints/cpu/base.pt"
COMMON = {"backbone": "mobilenetv2_035", "dataset": "cifar10", "input-size": 32, "threads": 1, "seed": 0,
          "init": BASE, "limit-train": 12000, "holdout": 2000, "limit-test": 2000}
DEFAULT = {"batch-size": 128, "epochs": 3, "lr": 0.02, "warmup-epochs": 0, "weight-decay": 5e-4,
           "label-smoothing": 0.1}
ANNEAL = {"anneal-end": 1.5}
PROGRESSIVE = {"anneal-end": 2, "progressive": 3}   # 4 groups of 3 switches, 0.5 epoch each, input to output
DISTILL = {"teacher": BASE}                          # distill-alpha 0.7, temperature 1 (the defaults)
RECIPE = {"lr": 0.05, "warmup-epochs": 0.3}

STAGES = {
    1: {   # DS-E, 3 epochs each: the methods at equal budget, most telling first
        "e-abrupt": {"pattern": "DS-E"},
        "e-anneal": {"pattern": "DS-E", **ANNEAL},
        "e-progressive": {"pattern": "DS-E", **PROGRESSIVE},
        "e-anneal-distill": {"pattern": "DS-E", **ANNEAL, **DISTILL},
        "e-distill": {"pattern": "DS-E", **DISTILL},
        "e-abrupt-lr0.05-w0.3": {"pattern": "DS-E", **RECIPE},
    },
    2: {   # stage 1's two winners together, and DS-A's pattern with the issue's recipe, the winner and both
        "e-lr0.05-w0.3-distill": {"pattern": "DS-E", **RECIPE, **DISTILL},
        "a-abrupt": {"pattern": "DS-A"},
        "a-abrupt-lr0.05-w0.3": {"pattern": "DS-A", **RECIPE},
        "a-lr0.05-w0.3-distill": {"pattern": "DS-A", **RECIPE, **DISTILL},
    },
}
STAGE0 = RUNS / "stage0.json"
RECALIBRATION_BATCHES = 60


def arguments(settings: dict) -> dict:
    return {**COMMON, **DEFAULT, **settings}


def stage0() -> None:
    """Held-out and test top-1 of the networks each method starts from (no training)."""
    sys.path.insert(0, str(ROOT))
    import torch

    import ds
    from ds.train import evaluate
    from ds.train.anneal import RemovalAnneal, removal_windows
    from ds.train.cli import build_parser, split_holdout, _data
    from ds.train.recalibrate import recalibrate_batchnorm

    torch.set_num_threads(COMMON["threads"])
    done = json.loads(STAGE0.read_text()) if STAGE0.is_file() else {}
    cli = [f"--{k}={v}" for k, v in {**COMMON, "batch-size": DEFAULT["batch-size"]}.items()] + ["--out", str(RUNS)]
    args = build_parser().parse_args(cli)
    train_loader, test_loader, _ = _data(args, ds.ddp.DistInfo(device=torch.device("cpu")), 32, False)
    train_loader, holdout_loader = split_holdout(train_loader, args.holdout, args.seed)
    base = ds.load_network(ROOT / BASE)

    def measure(name: str, network, note: str) -> None:
        if name in done:
            return
        started = time.time()
        row = {"note": note}
        for split, loader in (("holdout", holdout_loader), ("test", test_loader)):
            result = evaluate(network, loader)
            row.update({f"{split}_acc": result["acc"], f"{split}_loss": result["loss"], f"{split}_n": result["n"]})
        row.update(seconds=time.time() - started, finished_utc=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                   load=round(os.getloadavg()[0], 2))
        done[name] = row
        STAGE0.parent.mkdir(parents=True, exist_ok=True)
        STAGE0.write_text(json.dumps(done, indent=1))
        print(f"[{time.strftime('%H:%M:%S')}] {name}: held-out {row['holdout_acc']:.2f}%, test {row['test_acc']:.2f}%",
              flush=True)

    measure("base", base, "the published base network")
    for letter, pattern in (("e", "DS-E"), ("a", "DS-A")):
        removed = ds.apply_pattern(base, pattern).eval()
        measure(f"{letter}-removed", removed, f"{pattern} removed at once, BatchNorm statistics of the base")
        annealed = ds.apply_pattern(base, pattern).eval()
        RemovalAnneal(annealed, removal_windows(annealed, 0, 1, 1)).set_step(0)
        measure(f"{letter}-anneal-g1", annealed, f"{pattern} annealed at g = 1: the base's activations in "
                                                 f"merge-ready form (hoisted padding)")
        recalibrated = ds.apply_pattern(base, pattern)
        recalibrate_batchnorm(recalibrated, train_loader, RECALIBRATION_BATCHES)
        measure(f"{letter}-removed-bn{RECALIBRATION_BATCHES}", recalibrated.eval(),
                f"{pattern} removed at once, BatchNorm recalibrated on {RECALIBRATION_BATCHES} training batches")


# ---------------------------------------------------------------- results

def collect() -> pd.DataFrame:
    sys.path.insert(0, str(ROOT))
    from ds.study.uncertainty import test_se   # the binomial standard error the book uses

    rows = []
    if STAGE0.is_file():
        for name, row in json.loads(STAGE0.read_text()).items():
            rows.append(pd.DataFrame([{"config": name, "stage": 0, "epoch": 0, **row}]))
    for stage, configs in STAGES.items():
        for name, settings in configs.items():
            curve = sweep_runs.curve(RUNS, name, stage, arguments(settings))
            if curve is None:
                continue
            curve["holdout_n"], curve["test_n"] = COMMON["holdout"], COMMON["limit-test"]
            rows.append(curve)
    if not rows:   # no run of this sweep on this machine: the published table stays as it is
        print(f"no runs in {RUNS.relative_to(ROOT)}: {RESULTS.relative_to(ROOT)} left unchanged")
        return pd.read_csv(RESULTS) if RESULTS.is_file() else pd.DataFrame()
    table = sweep_runs.keep_published(RESULTS, pd.concat(rows, ignore_index=True))
    if len(table):
        for split in ("holdout", "test"):
            table[f"{split}_se"] = [test_se(p, n) for p, n in zip(table[f"{split}_acc"], table[f"{split}_n"])]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS, index=False)
    if len(table):
        last = table.sort_values("epoch").groupby("config", sort=False).tail(1).sort_values(["stage", "holdout_acc"])
        shown = [c for c in ("config", "stage", "epoch", "train_acc", "holdout_acc", "holdout_se", "test_acc", "test_se",
                             "seconds") if c in last]
        print(last[shown].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        _plot(table)
    return table


def _plot(table: pd.DataFrame) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = table[table["stage"] > 0]
    if not len(trained):
        return
    panels = [(prefix, title) for prefix, title in (("e-", "DS-E's pattern"), ("a-", "DS-A's pattern"))
              if trained["config"].str.startswith(prefix).any()]   # a pattern with no finetune yet gets no panel
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2), sharey=True, squeeze=False)
    axes = list(axes[0])
    for ax, (prefix, title) in zip(axes, panels):
        start = table[(table["stage"] == 0) & (table["config"] == f"{prefix}removed")]
        for name, curve in trained[trained["config"].str.startswith(prefix)].groupby("config", sort=False):
            xs, ys = list(curve["epoch"]), list(curve["holdout_acc"])
            if len(start):
                xs, ys = [0] + xs, [float(start["holdout_acc"].iloc[0])] + ys
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_title(f"{title}: held-out top-1 (2,000 training images)")
        ax.set_xlabel("epoch (10,000 training images each)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    base = table[(table["stage"] == 0) & (table["config"] == "base")]
    for ax in axes:
        if len(base):
            ax.axhline(float(base["holdout_acc"].iloc[0]), color="grey", linestyle="--", linewidth=1)
    axes[0].set_ylabel("top-1 (%)")
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)


def main() -> None:
    sweep_runs.main(__doc__.splitlines()[0], RUNS, STAGES, arguments, collect, stage0=stage0)


if __name__ == "__main__":
    main()
