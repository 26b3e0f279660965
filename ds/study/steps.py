"""The chapters' experiments: each takes the chapter's context (`study.setup`) and the chapter's
parameters, writes its table to the run directory (row by row where a row is expensive, skipping
rows already there, so an interrupted chapter resumes) and returns it for the notebook to show."""
from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

import ds
from ds import bench, gating
from ds.bench.latency import table_from
from ds.bench.compare import setting_labels, short_name
from ds.bench.profile import SETTINGS, time_share_table
from ds.bench.runtimes import unsupported
from ds.bench.settings import all_cores
from ds.bench.variants import build_variants
from ds.meta import info as net_info
from ds.networks import load_network, save_network
from ds.patterns import resolve_pattern
from ds.provenance import resolve_device
from ds.train import METRICS, TrainConfig, build_model, evaluate, fit, load_checkpoint, save_checkpoint

from .chapter import Chapter, epoch_log, load_model, loaders, train
from .uncertainty import difference, test_se


def _append(path: Path, rows: list[dict], row: dict) -> None:
    rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)


def _rows(path: Path) -> list[dict]:
    return pd.read_csv(path, dtype={"pattern_bits": str}).to_dict("records") if path.is_file() else []


def all_ones(model) -> list[int]:
    return [1] * len(ds.switches(model))


def removed_blocks(model, pattern) -> int:
    """Blocks (not stem or head) whose activations `pattern` removes."""
    return sum(1 for s in gating.searchable_switches(model) if pattern[s.index] == 0)


def load_base(ch: Chapter):
    """The trained base network of this run (chapter 1 makes it), on the chapter's device."""
    path = ch.require(ch.layout.base_checkpoint, "01_observation")
    return load_model(ch.backbone, ch.num_classes, ch.input_size, path).to(ch.device)


# ---------------------------------------------------------------- chapter 1

def train_base(ch: Chapter, epochs: int, lr: float, base_checkpoint: str | None = None) -> pd.DataFrame:
    """Train the base network into <run_dir>/base (resuming), or adopt `base_checkpoint`; its metrics."""
    layout = ch.layout
    if base_checkpoint:
        if layout.base_checkpoint.is_file():
            return pd.read_csv(layout.base_metrics)
        model = build_model(ch.backbone, ch.num_classes, ch.input_size, init=base_checkpoint).to(ch.device)
        test = evaluate(model, ch.test_loader)
        layout.base_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint({"model": model.state_dict(), "meta": net_info(model).as_dict(), "epoch": -1}, layout.base_checkpoint)
        metrics = pd.DataFrame([{"epoch": 0, "test_loss": test["loss"], "test_acc": test["acc"],
                                 "source": str(base_checkpoint)}])
        metrics.to_csv(layout.base_metrics, index=False)
        return metrics
    model = build_model(ch.backbone, ch.num_classes, ch.input_size)
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=ch.seed)
    return train(model, ch.train_loader, ch.test_loader, cfg, layout.base_dir, meta=net_info(model),
                 piece=ch.piece).metrics


def block_removal(ch: Chapter, train_images: int, test_images: int, lr: float,
                  batch_size: int) -> tuple[pd.DataFrame, float]:
    """For each removable block alone: test top-1 right after removing its activations and after
    one short finetuning epoch, on subsets of `train_images` / `test_images` (removal.csv, row by
    row). Returns the table and the base network's top-1 on the same test subset."""
    observe = ch.data.limit(train_images, test_images, seed=ch.seed)
    train_loader, test_loader = loaders(observe, batch_size, ch.device, ch.seed)
    path = ch.layout.removal_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _rows(path)
    finished = {r["switch"] for r in rows}
    base_ckpt = ch.layout.base_checkpoint
    base = load_model(ch.backbone, ch.num_classes, ch.input_size, base_ckpt)
    last = 0.0
    for sw in gating.searchable_switches(base):
        if sw.index in finished:
            continue
        ch.piece.check(1.3 * last + 5, f"block {sw.index}'s removal experiment (the last took {last:.0f} s)")
        started = time.perf_counter()
        pattern = all_ones(base)
        pattern[sw.index] = 0
        shrunk = build_model(ch.backbone, ch.num_classes, ch.input_size, pattern, init=base_ckpt).to(ch.device)
        removed = evaluate(shrunk, test_loader)["acc"]
        with epoch_log(ch.layout.removal_log):
            fit(shrunk, train_loader, None, TrainConfig(epochs=1, lr=lr, warmup_epochs=0, seed=ch.seed, progress=False))
        finetuned = evaluate(shrunk, test_loader)["acc"]
        _append(path, rows, {"switch": sw.index, "block": sw.path, "stride": sw.stride, "skip": sw.skip,
                             "channels": f"{sw.in_channels}>{sw.out_channels}",
                             "acc_removed": removed, "acc_finetuned": finetuned})
        ch.piece.record_progress()
        last = time.perf_counter() - started
    base_acc = evaluate(load_base(ch), test_loader)["acc"]
    return pd.DataFrame(rows), base_acc


ARMS = ("with_activations", "after_training", "from_scratch")


@dataclass
class Observation:
    """Chapter 1's comparison: one row per arm and seed (observation.csv), the pattern, and how
    many of the blocks it makes linear."""
    table: pd.DataFrame
    pattern: list[int]
    linear_blocks: int
    removable_blocks: int

    def summary(self) -> pd.DataFrame:
        """Per setting and arm: seeds, mean, standard deviation, min and max of top-1."""
        grouped = self.table.groupby(["setting", "arm"], sort=False)["top1"]
        return grouped.agg(seeds="count", mean="mean", sd="std", min="min", max="max").reset_index()

    def reading(self) -> str:
        return observation_reading(self.table)


def observation_reading(table: pd.DataFrame) -> str:
    """What chapter 1's comparison (observation.csv) says, per setting, with its uncertainty."""
    lines = []
    for setting, rows in table.groupby("setting", sort=False):
        arm = rows.groupby("arm")["top1"]
        d = difference(arm.get_group("after_training"), arm.get_group("from_scratch"), int(rows["test_images"].iloc[0]),
                       "after_training", "from_scratch")
        epochs = rows.loc[rows["arm"] == "from_scratch", "epochs"].iloc[0]
        spread = (f"the seed spread gives {d.seed_se:.2f}" if d.seeds_a > 1 and d.seeds_b > 1
                  else "with one seed per arm the seed spread is unknown")
        verdict = {"after_training better": "**The observation holds here**: removing the activations after "
                                            "training beats training the linear network from scratch.",
                   "from_scratch better": "**The observation does not hold here**: the linear network "
                                          "trained from scratch is better.",
                   "not separated": "**The two arms are not separated**: the difference is within two "
                                    "standard errors, so this run neither confirms nor refutes the "
                                    "observation."}[d.verdict]
        lines.append(
            f"- **{setting}** ({epochs} epochs in all per arm; "
            f"{d.seeds_a if d.seeds_a == d.seeds_b else f'{d.seeds_a} and {d.seeds_b}'} seed(s) per arm): after "
            f"training {d.mean_a:.2f}%, from scratch {d.mean_b:.2f}%, difference **{d.value:+.2f} points** "
            f"+- {d.se:.2f} (one standard error; {spread}, the test set's {int(rows['test_images'].iloc[0])} images "
            f"{d.test_se:.2f}). {verdict}")
    return "\n".join(lines)


def _setting(images: int, input_size: int) -> str:
    """How observation.csv names a setting: training images and input size, e.g. 10k-32px."""
    return f"{images // 1000}k-{input_size}px" if images % 1000 == 0 else f"{images}-{input_size}px"


def _run_base_trained_as(ch: Chapter, epochs: int, lr: float, warmup_epochs: float) -> bool:
    """Whether the run's base network was trained here for `epochs` at `lr` with that warm-up (not
    adopted)."""
    if not ch.layout.base_checkpoint.is_file():
        return False
    saved = load_checkpoint(ch.layout.base_checkpoint)
    config = saved.get("config") or {}
    return (config.get("epochs") == epochs and config.get("lr") == lr and config.get("warmup_epochs") == warmup_epochs
            and saved.get("epoch") == epochs - 1)


def observation(ch: Chapter, pattern, train_images: int | None, seeds: list[int], base_epochs: int,
                finetune_epochs: int, base_lr: float, finetune_lr: float, warmup_epochs: float = 1.0) -> Observation:
    """The paper's core comparison, per seed (observation.csv, row by row): a network trained with
    its activations for `base_epochs` on `train_images` training images (None: the chapter's own),
    then stripped of the activations `pattern` removes and finetuned for `finetune_epochs`
    (after_training), against the stripped network trained from scratch for as many epochs in all
    (from_scratch). Each seed draws its own initialization, data order and augmentation; the
    training images are the same for every seed. Every top-1 is on the chapter's whole test set.
    The trainings from scratch warm up for `warmup_epochs` (on a few thousand images an epoch is a
    few dozen steps). Where the setting is the run's own (same images, seed, epochs and learning
    rate), the run's base is reused.

    `pattern` is a name of ds.PATTERNS or a 0/1 list, one entry per switch."""
    model = build_model(ch.backbone, ch.num_classes, ch.input_size)
    bits = resolve_pattern(model, pattern, len(ds.switches(model)))
    name = pattern if isinstance(pattern, str) else "".join(map(str, bits))
    data = ch.data if train_images is None else ch.data.limit(train_images, None, seed=ch.seed)
    setting = _setting(len(data.train_labels), ch.input_size)
    path = ch.layout.observation_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = _rows(path)
    done = {(r["arm"], r["seed"]) for r in rows}
    epochs = {"with_activations": base_epochs, "after_training": base_epochs + finetune_epochs,
              "from_scratch": base_epochs + finetune_epochs}

    def record(arm: str, seed: int, net) -> None:
        _append(path, rows, {"pattern": "base" if arm == "with_activations" else name, "arm": arm,
                             "setting": setting, "seed": seed, "epochs": epochs[arm],
                             "top1": evaluate(net.to(ch.device), ch.test_loader)["acc"],
                             "test_images": len(ch.data.test_labels)})
        ch.piece.record_progress()

    for seed in seeds:
        if all((arm, seed) in done for arm in ARMS):
            continue
        train_loader, _ = loaders(data, ch.train_loader.batch_size, ch.device, seed)
        out = ch.layout.observation_dir(setting, seed)
        reuse = train_images is None and seed == ch.seed and _run_base_trained_as(ch, base_epochs, base_lr,
                                                                                  warmup_epochs)
        base_ckpt = ch.layout.base_checkpoint if reuse else out / "with_activations" / "checkpoint.pt"
        if not reuse:
            torch.manual_seed(seed)
            with_acts = build_model(ch.backbone, ch.num_classes, ch.input_size)
            train(with_acts, train_loader, None, TrainConfig(epochs=base_epochs, lr=base_lr, seed=seed,
                                                             warmup_epochs=warmup_epochs),
                  out / "with_activations", meta=net_info(with_acts), piece=ch.piece)
        if ("with_activations", seed) not in done:
            record("with_activations", seed, load_model(ch.backbone, ch.num_classes, ch.input_size, base_ckpt))
        if ("after_training", seed) not in done:
            after = build_model(ch.backbone, ch.num_classes, ch.input_size, bits, init=base_ckpt)
            train(after, train_loader, None, TrainConfig(epochs=finetune_epochs, lr=finetune_lr, warmup_epochs=0,
                                                         seed=seed), out / "after_training",
                  meta=net_info(after), piece=ch.piece)
            record("after_training", seed, after.eval())
        if ("from_scratch", seed) not in done:
            torch.manual_seed(seed)
            scratch = build_model(ch.backbone, ch.num_classes, ch.input_size, bits)
            train(scratch, train_loader, None, TrainConfig(epochs=epochs["from_scratch"], lr=base_lr, seed=seed,
                                                           warmup_epochs=warmup_epochs),
                  out / "from_scratch", meta=net_info(scratch), piece=ch.piece)
            record("from_scratch", seed, scratch.eval())
    return Observation(pd.DataFrame(rows), bits, removed_blocks(model, bits), len(gating.searchable_switches(model)))


# ---------------------------------------------------------------- chapter 2

def search(ch: Chapter, base, budgets: list[int], epochs: int, lr: float, gate_lr: float,
           latency: dict | None = None, latency_weight: float = 0.0, runtime: str | None = None,
           seed: int | None = None) -> dict:
    """The gate search from the base network at every budget ({budget: SearchResult}); each
    resumes from its checkpoint in <run_dir>/02_search/k<budget>/. With `latency` (a latency table,
    {switch index: seconds saved}) and `latency_weight` > 0, the search weighs the time each block
    saves in `runtime` (directory k<budget>@<runtime>). `seed` other than the run's (directory
    k<budget>-seed<seed>) repeats a search to see how much its pattern varies by chance."""
    if (latency is None) != (runtime is None):
        raise ValueError("give a latency table and the runtime it was measured in together")
    seed = ch.seed if seed is None else seed
    train_loader, test_loader = (ch.train_loader, ch.test_loader) if seed == ch.seed else \
        loaders(ch.data, ch.train_loader.batch_size, ch.device, seed)   # another order and augmentation
    searches = {}
    for budget in budgets:
        cfg = TrainConfig(epochs=epochs, lr=lr, warmup_epochs=0, gate_lr=gate_lr, seed=seed)
        out = ch.layout.search_dir(budget, runtime, None if seed == ch.seed else seed)
        searches[budget] = train(
            None, train_loader, test_loader, cfg, out, piece=ch.piece,
            run=lambda c, out=out, budget=budget: gating.search(base, train_loader, test_loader, budget, c,
                                                                out_dir=out, resume=True, latency=latency,
                                                                latency_weight=latency_weight if latency else 0.0,
                                                                meta=net_info(base)))
        searches[budget].extra["metrics"].to_csv(out / "search_metrics.csv", index=False)
    return searches


# How chapter 2 may run a pattern when it measures latency tables: ds.bench runtime and torch layout.
LATENCY_RUNTIMES = {"torch": ("torch", "nchw"), "torch_channels_last": ("torch", "channels_last"),
                    "onnxruntime": ("onnxruntime", "nchw"), "openvino": ("openvino", "nchw")}


@dataclass
class LatencyTables:
    blocks: dict[str, pd.DataFrame]   # runtime -> ds.bench.block_latencies rows
    skipped: dict[str, str]           # runtime -> why it cannot run here

    def table(self, runtime: str) -> dict[str, float]:
        """{switch index: seconds per batch saved}, what the search's latency term reads."""
        return table_from(self.blocks[runtime])

    def saved_ms(self) -> pd.DataFrame:
        """Milliseconds per batch each block saves, one column per runtime."""
        return pd.DataFrame({r: f.set_index("block")["saved_ms"] for r, f in self.blocks.items()})


def latency_tables(ch: Chapter, base, runtimes: list[str], batch: int, input_size=None,
                   min_time: float = 0.1, repeats: int = 7) -> LatencyTables:
    """Per runtime, every searchable block of the base timed alone and merged (one thread, batch
    `batch`, `input_size` default the study's), saved to 02_search/latency_<runtime>.csv and reused
    from there. A runtime that cannot run here is skipped with the reason."""
    unknown = [r for r in runtimes if r not in LATENCY_RUNTIMES]
    if unknown:
        raise ValueError(f"latency_runtimes {unknown}: choose among {', '.join(LATENCY_RUNTIMES)}")
    blocks, skipped = {}, {}
    cpu_base = copy.deepcopy(base).cpu()
    for runtime in runtimes:
        path = ch.layout.latency_csv(runtime)
        if path.is_file():
            blocks[runtime] = pd.read_csv(path)
            continue
        engine, layout = LATENCY_RUNTIMES[runtime]
        device = ch.device if engine == "torch" else torch.device("cpu")
        reason = unsupported(engine, "fp32", device) if engine != "torch" else None
        if reason:
            skipped[runtime] = reason
            continue
        frame = bench.block_latencies(base if engine == "torch" else cpu_base, input_size or ch.input_size,
                                      batch, engine, threads=1, device=device, layout=layout,
                                      repeats=repeats, warmup=2, min_time=min_time, seed=ch.seed)
        frame["load_average"] = os.getloadavg()[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        blocks[runtime] = frame
    return LatencyTables(blocks, skipped)


CONTROL = "none, another seed"   # the label of the repeated search without latency term


def runtime_patterns(plain: dict, by_runtime: dict[str, dict], tables: LatencyTables,
                     control: dict | None = None) -> pd.DataFrame:
    """One row per budget and search (without latency term; the `control`, the same search with
    another seed; then one per runtime): the blocks it removes, how many differ from the search
    without latency term, and the milliseconds per batch its pattern saves by every runtime's table."""
    rows = []
    for budget, result in plain.items():
        reference = set(_removed(result.pattern(budget)))
        searches = [("none", result)] + ([(CONTROL, control[budget])] if control else []) \
            + [(r, s[budget]) for r, s in by_runtime.items()]
        for label, searched in searches:
            pattern = searched.pattern(budget)
            removed = _removed(pattern)
            row = {"budget": budget, "latency term": label, "removed blocks": " ".join(map(str, removed)),
                   "differs from no latency term": len(reference.symmetric_difference(removed)) // 2}
            for runtime in tables.blocks:
                row[f"saves in {runtime} (ms)"] = 1e3 * bench.predicted_saving(tables.table(runtime), pattern)
            rows.append(row)
    return pd.DataFrame(rows)


def runtime_pattern_reading(table: pd.DataFrame, skipped: dict[str, str]) -> str:
    """What the table of `runtime_patterns` says, in sentences: per budget, which runtimes' latency
    terms changed the searched pattern, and whether the runtimes chose alike."""
    lines = []
    for budget, group in table.groupby("budget"):
        runs = group[~group["latency term"].isin(["none", CONTROL])]
        chance = group.loc[group["latency term"] == CONTROL, "differs from no latency term"]
        changed = [f"{r['latency term']} ({r['differs from no latency term']} of the "
                   f"{len(r['removed blocks'].split())} removed blocks)"
                   for _, r in runs.iterrows() if r["differs from no latency term"]]
        distinct = runs["removed blocks"].nunique()
        lines.append(f"- **k={budget}.** " + (
            f"The latency term changed the searched pattern for {', '.join(changed)}." if changed else
            "No runtime's latency term changed the searched pattern.")
            + ("" if len(runs) < 2 else " The runtimes chose the same pattern." if distinct == 1 else
               f" The {len(runs)} runtimes chose {distinct} different patterns.")
            + ("" if not len(chance) else _chance_sentence(int(chance.iloc[0]))))
    for runtime, reason in skipped.items():
        lines.append(f"- {runtime} was not measured: {reason}.")
    return "\n".join(lines)


def _chance_sentence(differs: int) -> str:
    if differs == 0:
        return (" Repeated without latency term with another seed (data order and augmentation), the "
                "search chose the same pattern, so the changes above come from the latency term.")
    return (f" Repeated without latency term with another seed (data order and augmentation), the search "
            f"changed {differs} block{'' if differs == 1 else 's'} by chance alone: changes of that size are "
            f"within the search's own noise.")


def _removed(pattern) -> list[int]:
    return [i for i, keep in enumerate(pattern) if not keep]


def sensitivity(ch: Chapter, base, test_images: int, batch_size: int):
    """The one-shot baseline: blocks ranked by the top-1 drop when linearized alone."""
    subset = ch.data.limit(None, test_images, seed=ch.seed)
    _, test_loader = loaders(subset, batch_size, ch.device, ch.seed)
    return gating.sensitivity_ranking(base, test_loader)


def resolve_budgets(base, budgets: list) -> list[int]:
    """Search budgets (blocks that keep their activations), each a number or the name of one of the
    paper's patterns: as many removed blocks as it removes (mobilenetv2's DS-A removes 6 of 17: k=11)."""
    removable = len(gating.searchable_switches(base))
    resolved = []
    for budget in budgets:
        if isinstance(budget, str):
            budget = removable - removed_blocks(base, resolve_pattern(base, budget, len(ds.switches(base))))
        if not isinstance(budget, int) or not 0 <= budget <= removable:
            raise ValueError(f"search budget {budget!r}: give a number of blocks to keep (0..{removable}) or the "
                             f"name of a paper pattern (DS-A ... DS-F) for as many removed blocks as it removes")
        resolved.append(budget)
    return resolved


def candidate_patterns(base, searches: dict, sensitivity_result, random_seed: int, backbone: str,
                       runtime_searches: dict[str, dict] | None = None, random_count: int = 1) -> dict[str, list[int]]:
    """Searched, sensitivity and `random_count` random patterns (random-k<budget>-<i>) at every
    searched budget, the searches with a runtime's latency term (searched-k<budget>@<runtime>), then
    the paper's (when it has patterns for this backbone)."""
    patterns = {}
    for budget, result in searches.items():
        patterns[f"searched-k{budget}"] = result.pattern(budget)
    for budget in searches:
        patterns[f"sensitivity-k{budget}"] = sensitivity_result.pattern(budget)
    for budget in searches:
        for i, pattern in enumerate(gating.random_patterns(base, budget, random_count, seed=random_seed), 1):
            patterns[f"random-k{budget}-{i}"] = pattern
    for runtime, results in (runtime_searches or {}).items():
        for budget, result in results.items():
            patterns[f"searched-k{budget}@{runtime}"] = result.pattern(budget)
    for name, pattern in ds.PATTERNS.get(backbone, {}).items():
        patterns[name] = list(pattern)
    return patterns


def pattern_source(name: str) -> str:
    """Where a pattern comes from: base, searched, sensitivity, random, paper, or given (a 0/1 list)."""
    if name == "base":
        return "base"
    for source in ("searched", "sensitivity", "random"):
        if name.startswith(source + "-"):
            return source
    return "paper" if any(name in patterns for patterns in ds.PATTERNS.values()) else "given"


def finetune_candidates(ch: Chapter, base, candidates: dict[str, list[int]], budgets: list[int], epochs: int,
                        lr: float) -> pd.DataFrame:
    """Every candidate pattern that removes as many blocks as a searched budget, finetuned from the
    base alike (no distillation, `epochs` at `lr`, the run's seed): top-1 right after removal and
    finetuned (candidates.csv, row by row; networks in 02_search/finetune/<pattern>/). A candidate
    with the same pattern as one finetuned already (e.g. a search whose latency term changed
    nothing) gets a copy of that network: same pattern, seed and data give the same training."""
    removable = len(gating.searchable_switches(base))
    path = ch.layout.candidates_csv
    rows = _rows(path)
    done = {r["pattern"] for r in rows}
    for budget in budgets:
        for name, pattern in candidates.items():
            if name in done or removed_blocks(base, pattern) != removable - budget:
                continue
            bits = "".join(map(str, pattern))
            twin = next((r for r in rows if str(r["pattern_bits"]) == bits), None)
            if twin is not None:   # the same pattern under another name trains the same network: copy it
                shutil.copytree(ch.layout.candidate_dir(twin["pattern"]), ch.layout.candidate_dir(name),
                                dirs_exist_ok=True)
                _append(path, rows, {**twin, "pattern": name, "source": pattern_source(name)})
                done.add(name)
                continue
            model = build_model(ch.backbone, ch.num_classes, ch.input_size, pattern,
                                init=ch.layout.base_checkpoint).to(ch.device)
            before = evaluate(model, ch.test_loader)["acc"]
            cfg = TrainConfig(epochs=epochs, lr=lr, warmup_epochs=0, seed=ch.seed)
            metrics = train(model, ch.train_loader, ch.test_loader, cfg, ch.layout.candidate_dir(name),
                            meta=net_info(model), piece=ch.piece).metrics
            _append(path, rows, {"pattern": name, "source": pattern_source(name), "budget": budget,
                                 "removed_blocks": removable - budget, "epochs": epochs, "top1_removed": before,
                                 "top1": metrics["test_acc"].iloc[-1], "test_images": len(ch.data.test_labels),
                                 "pattern_bits": bits})
            done.add(name)
    return pd.DataFrame(rows)


def pattern_speed(ch: Chapter, patterns: dict[str, list[int]], setting: str, batch: int,
                  threads: int | None = None, repeats: int = 5, min_time: float = 0.2) -> pd.DataFrame:
    """Measured speed of every pattern: its merged network, built from a freshly initialized network
    as ds.bench does (the speed of a network does not depend on its weights; a briefly trained one
    can be too badly conditioned for the merge's float32 check), timed in one CPU setting (a name of
    ds.bench.profile.SETTINGS, e.g. 'openvino bf16'), the networks interleaved. One row per pattern
    with img/s, ms per batch and the speed-up over the base; a setting that cannot run here falls
    back to torch NCHW (the `setting` column says which ran). Saved to candidate_speed.csv and
    reused from there."""
    path = ch.layout.candidate_speed_csv
    if path.is_file():
        return pd.read_csv(path)
    if setting not in SETTINGS:
        raise ValueError(f"candidate_setting {setting!r}: choose among {', '.join(SETTINGS)}")
    runtime, dtype, channels_last = SETTINGS[setting]
    reason = unsupported(runtime, dtype, torch.device("cpu")) if runtime != "torch" else None
    if reason:
        warnings.warn(f"{setting} cannot run here ({reason}): patterns timed in torch NCHW instead", stacklevel=2)
        runtime, dtype, channels_last = SETTINGS["torch NCHW"]
    torch.manual_seed(ch.seed)
    fresh = build_model(ch.backbone, ch.num_classes, ch.input_size).eval()
    merged, _ = build_variants(fresh, patterns, ch.input_size)
    load = os.getloadavg()[0]
    results = bench.measure(merged, ch.input_size, batch, "cpu", dtype, channels_last, runtime=runtime,
                            repeats=repeats, min_time=min_time, threads=threads or all_cores(), seed=ch.seed)
    base_s = results["base"].seconds_per_batch
    frame = pd.DataFrame([{"setting": short_name(r.runtime, r.layout, r.dtype), "pattern": name, "batch": r.batch,
                           "threads": r.threads, "img_s_median": r.img_s_median, "img_s_min": r.img_s_min,
                           "img_s_max": r.img_s_max, "ms_per_batch": 1e3 * r.seconds_per_batch,
                           "speedup_same_runtime": base_s / r.seconds_per_batch, "load_average": load}
                          for name, r in results.items()])
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame


def candidate_table(finetuned: pd.DataFrame, speed: pd.DataFrame, base_top1: float) -> pd.DataFrame:
    """The comparison at equal removed blocks: per candidate its source, top-1 (and the change
    against the base), measured speed and speed-up over the base in the same setting; by budget,
    best first."""
    table = finetuned.merge(speed[["pattern", "img_s_median", "ms_per_batch", "speedup_same_runtime"]],
                            on="pattern", how="left")
    table["delta_top1"] = table["top1"] - base_top1
    table = table.rename(columns={"speedup_same_runtime": "speedup"})
    return table.sort_values(["removed_blocks", "top1"], ascending=[True, False]).reset_index(drop=True)


def candidate_reading(table: pd.DataFrame) -> str:
    """Per number of removed blocks: where the searched pattern ranks, against the paper's, the
    sensitivity-ranked and the random patterns, with the test set's standard error."""
    lines = []
    for removed, group in table.groupby("removed_blocks"):
        by_source = {source: g for source, g in group.groupby("source")}
        searched = by_source.get("searched")
        if searched is None:
            continue
        best = searched.sort_values("top1").iloc[-1]
        se = test_se(best["top1"], int(best["test_images"]))
        parts = []
        for source in ("paper", "sensitivity", "random"):
            if source in by_source:
                others = by_source[source]["top1"]
                parts.append(f"{source} {others.mean():.2f}%" + (f" (mean of {len(others)}, {others.min():.2f} to "
                                                                 f"{others.max():.2f})" if len(others) > 1 else ""))
        def rank(top1: float) -> int:
            return int((group["top1"] > top1).sum()) + 1

        rest = "".join(f"; `{row['pattern']}` {row['top1']:.2f}%, rank {rank(row['top1'])}"
                       for _, row in searched.sort_values("top1", ascending=False).iloc[1:].iterrows())
        lines.append(f"- **{removed} blocks removed.** The best searched pattern, `{best['pattern']}`, reaches "
                     f"{best['top1']:.2f}% (+- {se:.2f}, the test set's standard error) and ranks "
                     f"{rank(best['top1'])} of {len(group)}{rest}; " + ", ".join(parts) + ". Differences under about "
                     f"{2 * 2 ** 0.5 * se:.1f} points (two standard errors of a difference) are within the test "
                     f"set's noise." + _latency_term_sentence(group))
    return "\n".join(lines)


def _latency_term_sentence(group: pd.DataFrame) -> str:
    """How the searches with a latency term compare with the search without, at one budget."""
    rows = group.set_index("pattern")
    plain = [p for p in rows.index if re.fullmatch(r"searched-k\d+", p)]
    if not plain:
        return ""
    ref = rows.loc[plain[0]]
    parts = []
    for name in rows.index:
        if name.startswith(plain[0] + "@"):
            row = rows.loc[name]
            same = row["pattern_bits"] == ref["pattern_bits"]
            parts.append(f"`{name}` is the same pattern" if same else
                         f"`{name}` runs at {row['speedup'] / ref['speedup']:.2f}x the speed of `{plain[0]}` "
                         f"with {row['top1'] - ref['top1']:+.2f} points of top-1")
    return (" With a latency term: " + "; ".join(parts) + ".") if parts else ""


def write_patterns(ch: Chapter, patterns: dict[str, list[int]]) -> None:
    """Chapter 2's candidate patterns, for chapter 3."""
    path = ch.layout.patterns_json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(patterns, indent=1) + "\n")


def read_patterns(ch: Chapter) -> dict[str, list[int]]:
    return json.loads(ch.require(ch.layout.patterns_json, "02_search").read_text())


def select_patterns(candidates: dict[str, list[int]], wanted: list[str]) -> dict[str, list[int]]:
    """`wanted` names from the candidates; 'searched' stands for every search without latency
    term (searched-k<budget>), 'searched@<runtime>' for every search with that runtime's."""
    chosen = {}
    for name in wanted:
        if name == "searched" or (name.startswith("searched@") and name != "searched@"):
            suffix = name[len("searched"):]
            found = {k: v for k, v in candidates.items()
                     if re.fullmatch(r"searched-k\d+" + re.escape(suffix), k)}
            if not found:
                raise ValueError(f"pattern {name!r}: chapter 2 made no such search (its patterns: "
                                 f"{', '.join(candidates)})")
            chosen.update(found)
        elif name in candidates:
            chosen[name] = candidates[name]
        else:
            raise ValueError(f"pattern {name!r} is not among chapter 2's patterns: {', '.join(candidates)} "
                             f"(or 'searched' for the searches without latency term, 'searched@RUNTIME' "
                             f"for those with a runtime's)")
    return chosen


# ---------------------------------------------------------------- chapter 3

def finetune_patterns(ch: Chapter, patterns: dict, epochs: int, lr: float, distill_modes=(False, True),
                      distill_alpha: float = 0.7) -> pd.DataFrame:
    """Finetune every pattern from the base weights, with and without self-distillation from the
    base network; results.csv has one row per (pattern, distill)."""
    base_ckpt = ch.layout.base_checkpoint
    teacher = load_model(ch.backbone, ch.num_classes, ch.input_size, base_ckpt)
    rows = []
    for name, pattern in patterns.items():
        for distill in distill_modes:
            model = build_model(ch.backbone, ch.num_classes, ch.input_size, pattern, init=base_ckpt).to(ch.device)
            before = evaluate(model, ch.test_loader)["acc"]
            cfg = TrainConfig(epochs=epochs, lr=lr, warmup_epochs=0, distill_alpha=distill_alpha, seed=ch.seed)
            metrics = train(model, ch.train_loader, ch.test_loader, cfg, ch.layout.finetune_dir(name, distill),
                            teacher=teacher if distill else None, meta=net_info(model), piece=ch.piece).metrics
            rows.append({"pattern": name, "removed_blocks": removed_blocks(teacher, pattern), "distill": distill,
                         "acc_before": before, "acc": metrics["test_acc"].iloc[-1],
                         "test_images": len(ch.data.test_labels), "pattern_bits": "".join(map(str, pattern))})
    table = pd.DataFrame(rows)
    table.to_csv(ch.layout.finetune_results, index=False)
    return table


def finetune_summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per pattern: top-1 right after removal, finetuned, and finetuned with distillation."""
    table = results.pivot_table(index=["pattern", "removed_blocks"], columns="distill", values=["acc_before", "acc"])
    table.columns = [f"{'top-1 right after removal' if v == 'acc_before' else 'top-1 finetuned'}"
                     f"{' (distilled)' if d else ''}" for v, d in table.columns]
    return table.loc[:, ~table.columns.duplicated()].drop(columns=["top-1 right after removal (distilled)"],
                                                          errors="ignore")


def finetune_curves(ch: Chapter, results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{'<pattern>, distilled' or '<pattern>, plain': its per-epoch metrics} for every finetune."""
    return {f"{row.pattern}, {'distilled' if row.distill else 'plain'}":
            pd.read_csv(ch.layout.finetune_dir(row.pattern, bool(row.distill)) / METRICS)
            for row in results.itertuples()}


def distill_reading(results: pd.DataFrame) -> str:
    """Per pattern finetuned both ways: what self-distillation changed, against the test set's
    standard error of the difference (one seed: training noise is not measured here)."""
    lines = []
    for pattern, group in results.groupby("pattern", sort=False):
        acc = {bool(d): a for d, a in zip(group["distill"], group["acc"])}
        if len(acc) < 2:
            continue
        d = difference(pd.Series([acc[True]]), pd.Series([acc[False]]), int(group["test_images"].iloc[0]),
                       "distilled", "plain")
        lines.append(f"- **{pattern}**: plain {d.mean_b:.2f}%, distilled {d.mean_a:.2f}%: "
                     f"{d.value:+.2f} points (+- {d.test_se:.2f}, the test set's standard error of the difference; "
                     f"one seed each). " + {"distilled better": "Self-distillation helped.",
                                            "plain better": "Self-distillation hurt.",
                                            "not separated": "Within the test set's noise."}[d.verdict])
    return "\n".join(lines)


FINETUNES = ("distill", "plain", "candidate")   # which finetune of a pattern stands for it, best first


def finetuned_networks(ch: Chapter):
    """(name, finetune, pattern, model) for every network chapters 2 and 3 finetuned: 'candidate'
    for chapter 2's comparison, 'plain' and 'distill' for chapter 3's."""
    tables = [("candidate", ch.layout.candidates_csv)] if ch.layout.candidates_csv.is_file() else []
    tables.append((None, ch.require(ch.layout.finetune_results, "03_finetune")))
    for finetune, path in tables:
        for row in pd.read_csv(path, dtype={"pattern_bits": str}).itertuples():
            kind = finetune or ("distill" if row.distill else "plain")
            pattern = [int(b) for b in row.pattern_bits]
            yield row.pattern, kind, pattern, load_model(ch.backbone, ch.num_classes, ch.input_size,
                                                         ch.layout.finetuned_checkpoint(row.pattern, kind), pattern)


# ---------------------------------------------------------------- chapter 4

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


# ---------------------------------------------------------------- chapter 5

def merged_networks(ch: Chapter) -> dict:
    """{'base': the BN-folded base, pattern name: the merged network that stands for it} as
    chapter 4 saved them (`standing`: speed depends on the pattern, not on how it was finetuned)."""
    table = standing(pd.read_csv(ch.require(ch.layout.merge_csv, "04_merge")))
    return {row.pattern: load_network(ch.require(ch.layout.merged_network(row.pattern, row.finetune), "04_merge"))
            for row in table.itertuples()}


def bench_devices(devices: str | list[str]) -> list[str]:
    """'auto': the CPU, and the GPU when there is one; else the listed devices (each checked)."""
    names = ["cpu", "auto"] if devices == "auto" else ([devices] if isinstance(devices, str) else list(devices))
    resolved = []
    for name in names:
        device = str(resolve_device(name))
        if device not in resolved:
            resolved.append(device)
    return resolved


@dataclass
class ThroughputResult:
    table: pd.DataFrame        # one row per device, runtime setting and network (throughput.csv)
    not_measured: list[str]    # settings asked for that cannot run here, each with the reason


def throughput(ch: Chapter, devices, inputs: list[tuple[int | None, int]], repeats: int = 5,
               min_time: float = 0.2, threads: int | None = None,
               runtimes=("torch", "onnxruntime", "openvino")) -> ThroughputResult:
    """Images/s of the BN-folded base and every merged network (the one that stands for each
    pattern, as chapter 4 saved it) in every runtime (torch NCHW and channels_last, ONNX Runtime,
    OpenVINO; on a GPU torch only), at every (input size, batch) of `inputs` (None: the training
    size), networks interleaved within each setting. Each row has the speed-up over the base in the
    same setting and over the fastest base of the device at that input, the setting's label and the
    top-1 chapter 4 measured (throughput.csv)."""
    models = merged_networks(ch)
    accuracy = standing(pd.read_csv(ch.layout.merge_csv)).set_index("pattern")["acc_merged"]
    frames, not_measured = [], []
    for device in bench_devices(devices):
        here = ",".join(runtimes) if device == "cpu" else "torch"
        for size, batch in inputs:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                frame = bench.runtime_table(models, size or ch.input_size, batch, runtimes=here,
                                            threads=threads or all_cores(), device=device, model_name=ch.backbone,
                                            repeats=repeats, min_time=min_time, log=lambda text: None)
            not_measured += [f"{device}: {w.message}" for w in caught
                             if "not measured" in str(w.message) and f"{device}: {w.message}" not in not_measured]
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table.insert(table.columns.get_loc("runtime") + 1, "setting", setting_labels(table))
    table["top1"] = table["pattern"].map(accuracy)
    table["delta_acc"] = table["top1"] - accuracy["base"]
    path = ch.layout.throughput_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return ThroughputResult(table, not_measured)


def best_setting_per_pattern(table: pd.DataFrame) -> pd.DataFrame:
    """For each device, input size and network, the row of the setting where it runs fastest (what a user
    who deploys it well gets), with its speed-up over the device's fastest base."""
    best = table.loc[table.groupby(["device", "input", "pattern"])["img_s_median"].idxmax()]
    return best.reset_index(drop=True)


def study_table(ch: Chapter, throughput: pd.DataFrame, device: str = "cpu") -> pd.DataFrame:
    """One row per network of the run (study.csv): pattern, source, finetune, removed_blocks,
    distilled, seed, top1 (unmerged) and top1_merged, macs (merged, at the training input), and on
    `device` at the training input the img/s in the setting where the network runs fastest and the
    speed-up over the fastest base (img_s, speedup, setting); other input sizes add the same three
    columns suffixed _<size>px. Speed is the pattern's: every finetune of a pattern shares it."""
    merge = pd.read_csv(ch.require(ch.layout.merge_csv, "04_merge"))
    table = pd.DataFrame({
        "pattern": merge["pattern"], "source": merge["pattern"].map(pattern_source), "finetune": merge["finetune"],
        "removed_blocks": merge["removed_blocks"], "distilled": merge["distill"], "seed": ch.seed,
        "top1": merge["acc_unmerged"], "top1_merged": merge["acc_merged"], "macs": merge["macs_merged"]})
    best = best_setting_per_pattern(throughput[throughput["device"] == device])
    for size, group in best.groupby("input"):
        suffix = "" if size == ch.input_size else f"_{size}px"
        speed = group.set_index("pattern")
        table[f"img_s{suffix}"] = table["pattern"].map(speed["img_s_median"])
        table[f"speedup{suffix}"] = table["pattern"].map(speed["speedup_over_best_base"])
        table[f"setting{suffix}"] = table["pattern"].map(speed["setting"])
    path = ch.layout.study_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table


def throughput_reading(table: pd.DataFrame) -> str:
    """Two sentences per device and input size with the numbers a reader needs: the fastest base,
    and what the fastest merged network gains over it and over the base in its own runtime."""
    lines = []
    for (device, size), group in table.groupby(["device", "input"]):
        base = group[group["pattern"] == "base"].sort_values("img_s_median").iloc[-1]
        best = group[group["pattern"] != "base"].sort_values("speedup_over_best_base").iloc[-1]
        losers = group[(group["pattern"] != "base") & (group["speedup_over_best_base"] < 1)]
        lines.append(
            f"On **{device}** ({base['device_name']}) at {size} px, batch {base['batch']}, the fastest way to run the base network is "
            f"**{base['setting']}** at {base['img_s_median']:.1f} img/s. The fastest merged network, "
            f"**{best['pattern']}** in {best['setting']}, runs at {best['img_s_median']:.1f} img/s: "
            f"**{best['speedup_over_best_base']:.2f}x** over that best base "
            f"({best['speedup_same_runtime']:.2f}x over the base in its own setting). "
            + (f"{len(losers)} of {int((group['pattern'] != 'base').sum())} (setting, network) rows are slower "
               f"than the best base: a merged network run in a slow runtime does not beat the base run in "
               f"a fast one." if len(losers) else "Every merged network beats the best base in every setting."))
    return "\n\n".join(lines)


@dataclass
class TimeShares:
    table: pd.DataFrame        # one row per setting and network: ms per batch by kind of layer
    not_measured: list[str]    # settings that cannot run here, each with the reason


def time_shares(ch: Chapter, settings: list[str], batch: int, input_size: int | None = None,
                threads: int = 1, runs: int = 5) -> TimeShares:
    """Where each network's CPU time goes (ds.bench.profile.time_share_table): ms per batch in
    depthwise, 1x1 and dense k x k convolutions and the rest, per runtime setting, for the base and
    every merged (distilled) network as chapter 4 saved them, each through its runtime's own profiler
    (time_shares.csv). Shares are what to read: profiling adds overhead to the times."""
    table, not_measured = time_share_table(merged_networks(ch), input_size or ch.input_size, batch, settings,
                                           threads=threads, runs=runs, seed=ch.seed)
    path = ch.layout.time_shares_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return TimeShares(table, not_measured)


def time_share_reading(table: pd.DataFrame) -> str:
    """Per setting: where the base's time goes, the most a merge could save if depthwise convs
    cost nothing, and where the time of the fastest merged network (by the profile) goes."""
    lines = []
    for setting, group in table.groupby("setting", sort=False):
        base = group[group["pattern"] == "base"].iloc[0]
        merged = group[group["pattern"] != "base"]
        if merged.empty:
            continue
        best = merged.sort_values("total_ms").iloc[0]
        lines.append(
            f"- **{setting}.** The base spends {100 * base['depthwise_share']:.0f}% of its profiled time in "
            f"depthwise convolutions, {100 * base['pointwise_share']:.0f}% in 1x1 convolutions and "
            f"{100 * base['other_share']:.0f}% outside convolutions; were its depthwise convolutions free, it "
            f"would run {1 / (1 - base['depthwise_share']):.2f}x faster. **{best['pattern']}** spends "
            f"{100 * best['dense_kxk_share']:.0f}% in dense k x k convolutions, "
            f"{100 * best['pointwise_share']:.0f}% in 1x1 ones and {100 * best['depthwise_share']:.0f}% in the "
            f"depthwise ones it keeps; its profiled pass takes {best['total_ms'] / base['total_ms']:.2f} of the "
            f"base's time.")
    return "\n".join(lines)


def published_tables(results_dir: str | Path, kind: str = "throughput") -> dict[str, pd.DataFrame]:
    """The tables published under `results_dir` ({path: table}): ds.bench throughput CSVs (kind
    'throughput', for the paper's table) or time-share CSVs (kind 'time_shares', ds.bench --time-shares)."""
    column = {"throughput": "img_s_median", "time_shares": "depthwise_share"}[kind]
    tables = {path: pd.read_csv(path) for path in sorted(glob.glob(os.path.join(str(results_dir), "*.csv")))}
    return {path: table for path, table in tables.items() if column in table.columns}
