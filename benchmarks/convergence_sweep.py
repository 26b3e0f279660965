"""Finetuning to convergence: how much of the gap to the base the recovery recipe closes.

    python benchmarks/convergence_sweep.py --stage 1 --only e-dp-k6   # one configuration (resumes)
    python benchmarks/convergence_sweep.py --stage 1                  # every missing one, in turn
    python benchmarks/convergence_sweep.py --collect                  # only rewrite the results

The `cpu` profile's chapter 3 finetunes its final networks 6 epochs (its 170-minute budget): the DP
pattern at DS-E's 11 removed blocks (`dp-k6`) ends 2.93 points below the base there, short of the
2.0-point target, with its curve still rising when the cosine schedule reaches zero. This sweep
finetunes the same networks with the same recipe for longer, outside that budget, to say whether
the gap closes.

Every configuration starts from the published base network the `cpu` profile adopts
(data/checkpoints/cpu-observe/base.pt: mobilenetv2_035, CIFAR-10 at 32 px, 86.04% test top-1) and
finetunes the network `ds.apply_pattern` makes with chapter 3's recipe (ds.study.recovery: lr 0.05,
0.3 epochs of warm-up, per-step cosine to zero, distilled from the base at alpha 0.7 and temperature
1, SGD with Nesterov momentum, weight decay 5e-4, label smoothing 0.1, batch 128) on all of CIFAR-10
but 2,000 held-out training images (48,000 train), one torch thread each (two run side by side on 2
cores). Every epoch is evaluated on the held-out images and on all 10,000 test images: the held-out
curve says where finetuning stops improving; the test column gives the numbers (the last epoch's,
never the best one's).

Stage 1: DS-E (the paper's) and `dp-k6`, the DP search's pattern at DS-E's count (11 removed) in
the published cpu run, which chapter 3 finetuned (chapter 2's importance table: the 11 switches with
the smallest held-out drop after a short finetune, i.e. every one but 4, 7, 8, 9, 11 and 14). Stage 2:
DS-A and `dp-k11` at DS-A's count (6 removed: switches 1, 3, 12, 15, 16 and 17). ds.dpsearch.choose
reproduces both DP patterns from that table (tests/test_convergence.py).

Each configuration is one `python -m ds.train` command (printed, and stored in the results) writing
runs/convergence/<name>/; an interrupted run is continued with --resume (the script does it), a
finished one is skipped. runs/ stays on the machine that ran it: a session that must stop before a
configuration finishes commits its run directories as state/convergence.tar.gz (`tar -czf
state/convergence.tar.gz runs/convergence/NAME ...`), and the next one restores them with `tar -xzf
state/convergence.tar.gz` and reruns the same --stage command, which resumes them; delete the file
once they have finished and been collected.

The results are benchmarks/results/convergence_sweep.csv, one row per configuration and epoch with
held-out and test top-1 and their binomial standard errors, the arguments (arg_*), the command,
when it finished and the load average around it. `python -m ds.study pages` turns it into the
section *Finetuning to convergence* of the book's page *Recovering accuracy*, with the curves
(book/images/convergence_curves.png). `seconds` are wall time on a shared machine.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

import sweep_runs   # beside this script

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "convergence"
RESULTS = ROOT / "benchmarks" / "results" / "convergence_sweep.csv"
BASE = "data/checkpoints/cpu-observe/base.pt"
HOLDOUT, TEST_IMAGES = 2000, 10000
# dp-k6 and dp-k11 of the published cpu run: 0 removes a block's activations, 1 keeps them, one entry per switch
DP_K6 = "1,0,0,0,1,0,0,1,1,1,0,1,0,0,1,0,0,0,1"
DP_K11 = "1,0,1,0,1,1,1,1,1,1,1,1,0,1,1,0,0,0,1"
NAMES = {DP_K6: "dp-k6", DP_K11: "dp-k11"}   # a pattern's name in the study's tables (data/results/study_cpu.csv)
COMMON = {"backbone": "mobilenetv2_035", "dataset": "cifar10", "input-size": 32, "threads": 1, "seed": 0,
          "init": BASE, "holdout": HOLDOUT, "batch-size": 128, "epochs": 16, "lr": 0.05, "warmup-epochs": 0.3,
          "weight-decay": 5e-4, "label-smoothing": 0.1, "teacher": BASE}

STAGES = {
    1: {   # DS-E's count, 16 epochs (the cpu profile's chapter 3: 6)
        "e-dp-k6": {"pattern": DP_K6},
        "e-ds-e": {"pattern": "DS-E"},
    },
    2: {   # DS-A's count (6 removed), the same 16 epochs: chapter 3 met its 1.0-point target there in 6
        "a-dp-k11": {"pattern": DP_K11},
        "a-ds-a": {"pattern": "DS-A"},
    },
}


def arguments(settings: dict) -> dict:
    return {**COMMON, **settings}


def removed_blocks(pattern: str) -> int:
    """How many blocks (not stem or head) `pattern` removes, counted as the study counts them."""
    import ds
    from ds.patterns import resolve_pattern
    from ds.study.chapter import removed_blocks as count
    from ds.train import build_model

    model = build_model(COMMON["backbone"], 10, COMMON["input-size"])
    return count(model, resolve_pattern(model, pattern, len(ds.switches(model))))


def collect() -> pd.DataFrame:
    sys.path.insert(0, str(ROOT))
    from ds.study.uncertainty import test_se   # the binomial standard error the book uses

    rows = []
    for stage, configs in STAGES.items():
        for name, settings in configs.items():
            curve = sweep_runs.curve(RUNS, name, stage, arguments(settings))
            if curve is not None:
                curve["holdout_n"], curve["test_n"] = HOLDOUT, TEST_IMAGES
                curve["pattern_name"] = NAMES.get(settings["pattern"], settings["pattern"])
                curve["removed_blocks"] = removed_blocks(settings["pattern"])
                rows.append(curve)
    if not rows:   # no run of this sweep on this machine: the published table stays as it is
        print(f"no runs in {RUNS.relative_to(ROOT)}: {RESULTS.relative_to(ROOT)} left unchanged")
        return pd.read_csv(RESULTS) if RESULTS.is_file() else pd.DataFrame()
    table = sweep_runs.keep_published(RESULTS, pd.concat(rows, ignore_index=True))
    for split in ("holdout", "test"):
        table[f"{split}_se"] = [test_se(p, n) for p, n in zip(table[f"{split}_acc"], table[f"{split}_n"])]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS, index=False)
    last = table.sort_values("epoch").groupby("config", sort=False).tail(1)
    print(last[["config", "epoch", "train_acc", "holdout_acc", "test_acc", "test_se", "seconds"]].to_string(
        index=False, float_format=lambda v: f"{v:.2f}"))
    return table


def main() -> None:
    sweep_runs.main(__doc__.splitlines()[0], RUNS, STAGES, arguments, collect)


if __name__ == "__main__":
    main()
