"""The gate-search sweep: which way of training the scores gives a stable pattern that finetunes well.

    nohup python benchmarks/gate_search_sweep.py --run > runs/gate_sweep/sweep.log 2>&1 &   # resumable
    python benchmarks/gate_search_sweep.py --run --only sens-centred-2ep    # named ones (the last group too)
    python benchmarks/gate_search_sweep.py --collect                       # only rewrite the results

The proxy (cheap enough for 2 CPU cores shared with other jobs, one torch thread): the published
cpu base (data/checkpoints/cpu/base.pt, mobilenetv2_035, CIFAR-10 at 32 px). Of the 50,000
training images (a permutation with seed 0), 5,000 are the search images, the next 2,000 the
held-out images; the test set is not used. Every configuration searches at DS-E's budget (keep 6
of 17 searchable blocks) and DS-A's (keep 11), each with 3 data orders (loader seeds 0, 1, 2 over
the same 5,000 images): 1 epoch at batch 64, i.e. 78 steps, at lr 0.02 and gate lr 0.05, no
warm-up (the cpu profile's learning rates; 78 steps are what 10,000 images at its batch of 128
give, at half the compute). Each pattern found is then finetuned alike (1 epoch over the first
2,560 search images at batch 64, 40 steps, lr 0.02, no warm-up, seed 0; one finetune per distinct
pattern, cached) and measured on the 2,000 held-out images. The references get the same
finetune: the sensitivity ranking (`ds.gating.sensitivity_init`: one-shot drops on 500 search
images drawn with the seed, as `SearchOptions(init="sensitivity", init_images=500)` measures
them) and 3 random patterns per budget.

Results, rewritten after every finished unit:
- benchmarks/results/gate_search_sweep.csv: one row per configuration and budget: the options, the
  removed blocks per seed, their agreement (mean pairwise Jaccard index of the removed sets, mean
  pairwise Hamming distance in blocks, distinct patterns), the held-out top-1 per seed with mean
  and standard error over the 3 seeds' patterns (identical patterns give identical numbers: the
  finetune's own noise is not in it; the binomial standard error of one top-1 on the held-out
  images is `top1_binomial_se`), how separated the final scores are (`score_std`, spread over the
  blocks; `score_mean`, their common level; `boundary_gap`, k-th minus (k+1)-th score in units of
  the spread), how often the top-k set changed during the search (`topk_changes`, mean over seeds)
  and the step of its last change, the search's wall time and the load average around it.
- benchmarks/results/gate_search_trajectories.csv: the scores after every step (the search's own
  per-step trajectory, gates.csv) per configuration, budget and seed;
  benchmarks/gate_search_figure.py plots them.

Runs live in runs/gate_sweep/<config>/k<budget>-s<seed>/ (the search's checkpoint, gates.csv,
patterns.json; an interrupted search resumes from its checkpoint) and runs/gate_sweep/finetune/.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np   # noqa: E402
import pandas as pd   # noqa: E402
import torch   # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ds   # noqa: E402
from ds import data, gating   # noqa: E402
from ds.loaders import DeviceLoader   # noqa: E402
from ds.train import TrainConfig, evaluate, fit   # noqa: E402

RUNS = ROOT / "runs" / "gate_sweep"
RESULTS = ROOT / "benchmarks" / "results" / "gate_search_sweep.csv"
TRAJECTORIES = ROOT / "benchmarks" / "results" / "gate_search_trajectories.csv"
BASE = ROOT / "data" / "checkpoints" / "cpu" / "base.pt"
SEARCH_IMAGES, HELDOUT_IMAGES, FINETUNE_IMAGES, SENSITIVITY_IMAGES = 5_000, 2_000, 2_560, 500
BATCH = 64
BUDGETS = {"DS-E": 6, "DS-A": 11}    # blocks that keep their activations (11 / 6 of 17 removed)
SEEDS = (0, 1, 2)
SEARCH = dict(epochs=1, lr=0.02, gate_lr=0.05, warmup_epochs=0.0)   # the cpu profile's search
FINETUNE = dict(epochs=1, lr=0.02, warmup_epochs=0.0, seed=0)

# name -> SearchOptions arguments (plus "epochs" for a longer search); every option the runs used is
# spelled out, so the table records them whatever SearchOptions' defaults become
ZEROS = {"init": "zeros", "init_scale": 1.0, "init_images": 1000, "temperature": 1.0}
SENSITIVITY = {"init": "sensitivity", "init_images": SENSITIVITY_IMAGES, "temperature": 1.0}
CONFIGS = {
    "legacy": gating.LEGACY.settings(),                                     # the first version
    "centred": {"optimizer": "adam", "weight_decay": 0.0, "centre": True, **ZEROS},
    "sgd-decay": {"optimizer": "sgd", "weight_decay": 5e-4, "centre": True, **ZEROS},   # the reference's
    "sens-centred": {"optimizer": "adam", "weight_decay": 0.0, "centre": True, **SENSITIVITY, "init_scale": 1.0},
    "sens-centred-s3": {"optimizer": "adam", "weight_decay": 0.0, "centre": True, **SENSITIVITY,
                        "init_scale": 3.0},   # the search can only swap blocks of close sensitivity
    "sens-centred-2ep": {"optimizer": "adam", "weight_decay": 0.0, "centre": True, **SENSITIVITY,
                         "init_scale": 3.0, "epochs": 2},
    "sens-centred-t4": {"optimizer": "adam", "weight_decay": 0.0, "centre": True, **SENSITIVITY,
                        "init_scale": 3.0, "temperature": 4.0},
}
REFERENCES = ("sensitivity", "random")
# the order they run in, a group at both budgets before the next: a sweep cut short still compares
# the first version, the references and the candidate default
# the last group (a longer search, a temperature) runs only when named with --only: the first two
# fill the sweep's hour on 2 shared cores
GROUPS = (("legacy", "sensitivity", "sens-centred", "random"), ("centred", "sgd-decay", "sens-centred-s3"),
          ("sens-centred-2ep", "sens-centred-t4"))
ORDER = tuple(name for group in GROUPS for name in group)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------- data and networks

class Proxy:
    """The base network, the search/finetune/held-out loaders (CPU)."""

    def __init__(self):
        dataset = data.prepare("cifar10", None, 32)
        order = np.random.default_rng(0).permutation(len(dataset.train_labels))
        self.search_idx = np.sort(order[:SEARCH_IMAGES])
        self.held_idx = np.sort(order[SEARCH_IMAGES:SEARCH_IMAGES + HELDOUT_IMAGES])
        self.dataset = dataset
        self.base = ds.load_network(BASE)
        self.held = self._loader(self.held_idx, train=False, seed=0)
        self.finetune = self._loader(self.search_idx[:FINETUNE_IMAGES], train=True, seed=FINETUNE["seed"])

    def _loader(self, idx, train: bool, seed: int) -> DeviceLoader:
        d = self.dataset
        return DeviceLoader(d.train_images[idx], d.train_labels[idx], BATCH if train else 2 * BATCH, d.mean, d.std,
                            train=train, seed=seed)

    def search_loader(self, seed: int) -> DeviceLoader:
        return self._loader(self.search_idx, train=True, seed=seed)


def sensitivity(proxy: Proxy, seed: int) -> list[float]:
    """The one-shot drops the sensitivity initialization and reference use (cached per seed)."""
    path = RUNS / "sensitivity" / f"s{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())["drops"]
    started = time.time()
    result = gating.sensitivity_init(proxy.base, proxy.search_loader(seed), SENSITIVITY_IMAGES, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"drops": result.scores, "base_acc": result.extra["base_acc"],
                                "seconds": time.time() - started}) + "\n")
    log(f"sensitivity s{seed}: {time.time() - started:.0f} s")
    return result.scores


def finetuned_top1(proxy: Proxy, pattern: list[int]) -> dict:
    """Held-out top-1 of `pattern` after the sweep's finetune (cached by pattern)."""
    bits = "".join(map(str, pattern))
    path = RUNS / "finetune" / f"{bits}.json"
    if path.is_file():
        return json.loads(path.read_text())
    started = time.time()
    torch.manual_seed(FINETUNE["seed"])
    net = ds.apply_pattern(proxy.base, pattern)
    fit(net, proxy.finetune, None, TrainConfig(**FINETUNE, progress=False))
    measured = evaluate(net, proxy.held)
    record = {"pattern": bits, "top1": measured["acc"], "loss": measured["loss"], "n": measured["n"],
              "seconds": time.time() - started}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) + "\n")
    log(f"finetune {bits}: top-1 {measured['acc']:.2f}% ({record['seconds']:.0f} s)")
    return record


# ---------------------------------------------------------------- the searches

def options_of(settings: dict) -> gating.SearchOptions:
    return gating.SearchOptions(**{k: v for k, v in settings.items() if k != "epochs"})


def call(name: str, budget: int, seed: int) -> str:
    """The library call a search unit makes (what reproduces it)."""
    settings = CONFIGS[name]
    cfg = {**SEARCH, "epochs": settings.get("epochs", SEARCH["epochs"]), "seed": seed}
    opts = ", ".join(f"{k}={v!r}" for k, v in settings.items() if k != "epochs")
    init = ", init_scores=sensitivity(seed)" if settings.get("init") == "sensitivity" else ""
    return (f"ds.gating.search(base, search_loader(seed={seed}), None, {budget}, "
            f"TrainConfig({', '.join(f'{k}={v!r}' for k, v in cfg.items())}), "
            f"options=SearchOptions({opts}){init}, out_dir=..., resume=True)")


def unit_dir(name: str, budget: int, seed: int) -> Path:
    return RUNS / name / f"k{budget}-s{seed}"


def run_search(proxy: Proxy, name: str, budget: int, seed: int) -> None:
    out = unit_dir(name, budget, seed)
    if (out / "sweep.json").is_file():
        return
    settings = CONFIGS[name]
    options = options_of(settings)
    init = sensitivity(proxy, seed) if options.init == "sensitivity" else None
    cfg = TrainConfig(**{**SEARCH, "epochs": settings.get("epochs", SEARCH["epochs"])}, seed=seed, progress=False)
    load_before, started = os.getloadavg()[0], time.time()
    log(f"search {name} k{budget} s{seed}")
    result = gating.search(proxy.base, proxy.search_loader(seed), None, budget, cfg, out_dir=out, resume=True,
                           options=options, init_scores=init)
    (out / "sweep.json").write_text(json.dumps({
        "pattern": result.pattern(budget), "scores": result.scores, "seconds": time.time() - started,
        "load_before": load_before, "load_after": os.getloadavg()[0], "call": call(name, budget, seed),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")


def reference_patterns(proxy: Proxy, name: str, budget: int) -> list[list[int]]:
    if name == "random":
        return gating.random_patterns(proxy.base, budget, len(SEEDS), seed=0)
    searched = [s.index for s in gating.searchable_switches(proxy.base)]
    return [gating.SearchResult("sensitivity", len(ds.switches(proxy.base)), searched,
                                sensitivity(proxy, seed)).pattern(budget) for seed in SEEDS]


# ---------------------------------------------------------------- the table

def removed(pattern) -> set[int]:
    return {i for i, keep in enumerate(pattern) if not keep}


def agreement(patterns: list[list[int]]) -> dict:
    pairs = list(itertools.combinations([removed(p) for p in patterns], 2))
    return {"jaccard": float(np.mean([len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs])),
            "hamming": float(np.mean([len(a ^ b) for a, b in pairs])),
            "distinct_patterns": len({tuple(p) for p in patterns})}


def score_shape(trajectory: pd.DataFrame, budget: int) -> dict:
    """How separated the final scores are and how often the top-k changed over the search."""
    scores = trajectory.drop(columns="step").to_numpy()
    final = np.sort(scores[-1])[::-1]
    spread = final.std()
    kept = [frozenset(np.argsort(-row, kind="stable")[:budget]) for row in scores]
    changes = [i for i in range(1, len(kept)) if kept[i] != kept[i - 1]]
    gap = (final[budget - 1] - final[budget]) / spread if 0 < budget < len(final) and spread > 0 else float("nan")
    return {"score_mean": float(final.mean()), "score_std": float(spread), "boundary_gap": float(gap),
            "topk_changes": len(changes), "last_change_step": changes[-1] if changes else 0}


def summary(name: str, kind: str, budget_name: str, budget: int, patterns: list, top1: list, extra: dict) -> dict:
    n = top1[0]["n"] if top1 else HELDOUT_IMAGES
    values = [t["top1"] for t in top1]
    mean = float(np.mean(values)) if values else float("nan")
    row = {"config": name, "kind": kind, "budget": budget_name, "kept": budget, "removed": 17 - budget,
           "seeds": len(patterns),
           "removed_blocks": " | ".join(" ".join(map(str, sorted(removed(p)))) for p in patterns),
           **agreement(patterns)}
    for i, v in enumerate(values):
        row[f"top1_s{i}"] = v
    row.update(top1_mean=mean, top1_se=float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1
               else float("nan"), top1_binomial_se=float(np.sqrt(mean * (100 - mean) / n)), heldout_images=n)
    row.update(extra)
    return row


def collect(proxy: Proxy | None = None) -> pd.DataFrame:
    rows, curves = [], []
    for budget_name, budget in BUDGETS.items():
        for name in REFERENCES:
            if name == "sensitivity" and not all((RUNS / "sensitivity" / f"s{s}.json").is_file() for s in SEEDS):
                continue
            patterns = reference_patterns(proxy or _Light(), name, budget)
            top1 = [_cached(p) for p in patterns]
            if any(t is None for t in top1):
                continue
            rows.append(summary(name, "reference", budget_name, budget, patterns, top1,
                                {"options": "", "epochs": 0, "call": f"reference: {name}"}))
        for name, settings in CONFIGS.items():
            units = [unit_dir(name, budget, s) for s in SEEDS]
            if not all((u / "sweep.json").is_file() for u in units):
                continue
            records = [json.loads((u / "sweep.json").read_text()) for u in units]
            patterns = [r["pattern"] for r in records]
            top1 = [_cached(p) for p in patterns]
            top1 = top1 if all(t is not None for t in top1) else []
            shapes = []
            for seed, unit in zip(SEEDS, units):
                trajectory = pd.read_csv(unit / "gates.csv")
                shapes.append(score_shape(trajectory, budget))
                trajectory.insert(0, "seed", seed)
                trajectory.insert(0, "budget", budget)
                trajectory.insert(0, "config", name)
                curves.append(trajectory)
            extra = {key: float(np.mean([s[key] for s in shapes])) for key in shapes[0]}
            extra.update(options=json.dumps(options_of(settings).settings()), epochs=settings.get("epochs", 1),
                         search_s=float(np.mean([r["seconds"] for r in records])),
                         load_before=float(np.mean([r["load_before"] for r in records])),
                         load_after=float(np.mean([r["load_after"] for r in records])),
                         finished_utc=max(r["finished_utc"] for r in records), call=records[0]["call"])
            rows.append(summary(name, "search", budget_name, budget, patterns, top1, extra))
    table = pd.DataFrame(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS, index=False)
    if curves:
        pd.concat(curves, ignore_index=True).to_csv(TRAJECTORIES, index=False)
    if len(table):
        shown = [c for c in ("config", "budget", "jaccard", "hamming", "distinct_patterns", "top1_mean", "top1_se",
                             "score_std", "topk_changes") if c in table]
        print(table[shown].to_string(index=False), flush=True)
    return table


class _Light:
    """What `reference_patterns` needs without loading the data (for --collect)."""

    def __init__(self):
        self.base = ds.create_model("mobilenetv2_035", num_classes=10, input_size=32)


def _cached(pattern) -> dict | None:
    path = RUNS / "finetune" / f"{''.join(map(str, pattern))}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run(only: list[str] | None) -> None:
    torch.set_num_threads(1)
    proxy = Proxy()
    log(f"proxy: {SEARCH_IMAGES} search / {HELDOUT_IMAGES} held-out training images; base {BASE.relative_to(ROOT)}")
    for group, budget in ((g, b) for g in (GROUPS if only else GROUPS[:2]) for b in BUDGETS.values()):
        for name in group:
            if only and name not in only:
                continue
            if name in REFERENCES:
                for pattern in reference_patterns(proxy, name, budget):
                    finetuned_top1(proxy, pattern)
            else:
                for seed in SEEDS:
                    run_search(proxy, name, budget, seed)
                    finetuned_top1(proxy, json.loads((unit_dir(name, budget, seed) / "sweep.json").read_text())["pattern"])
            collect(proxy)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="store_true", help="run what is missing, then collect")
    p.add_argument("--only", nargs="+", help=f"configurations to run: {', '.join((*REFERENCES, *CONFIGS))}")
    p.add_argument("--collect", action="store_true", help="only rewrite the results tables")
    a = p.parse_args()
    if not a.run and not a.collect:
        p.error("give --run (run what is missing) or --collect")
    unknown = sorted(set(a.only or []) - set(CONFIGS) - set(REFERENCES))
    if unknown:
        p.error(f"unknown configuration(s) {unknown}; choose among {', '.join((*REFERENCES, *CONFIGS))}")
    if a.run:
        run(a.only)
    else:
        torch.set_num_threads(1)
        collect()


if __name__ == "__main__":
    main()
