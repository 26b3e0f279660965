"""The chapters' experiments: each takes the chapter's context (`study.setup`) and the chapter's
parameters, writes its table to the run directory (row by row where a row is expensive, skipping
rows already there, so an interrupted chapter resumes) and returns it for the notebook to show."""
from __future__ import annotations

import copy
import glob
import json
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

import ds
from ds import bench, gating
from ds.bench.latency import table_from
from ds.bench.compare import setting_labels
from ds.bench.profile import time_share_table
from ds.bench.runtimes import unsupported
from ds.bench.settings import all_cores
from ds.meta import info as net_info
from ds.patterns import resolve_pattern
from ds.provenance import resolve_device
from ds.train import TrainConfig, build_model, evaluate, fit, save_checkpoint

from .chapter import Chapter, epoch_log, load_model, loaders, train


def _append(path: Path, rows: list[dict], row: dict) -> None:
    rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)


def _rows(path: Path) -> list[dict]:
    return pd.read_csv(path).to_dict("records") if path.is_file() else []


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


@dataclass
class Comparison:
    """Chapter 1's comparison: the table, the pattern, and how many of the blocks it makes linear."""
    table: pd.DataFrame
    pattern: list[int]
    linear_blocks: int
    removable_blocks: int


def compare_with_scratch(ch: Chapter, pattern, base_metrics: pd.DataFrame, finetune_epochs: int,
                         finetune_lr: float, base_epochs: int, base_lr: float) -> Comparison:
    """The paper's core comparison (comparison.csv): the same shrunk network obtained from the
    trained base (before and after finetuning) and trained from scratch for as many epochs.

    `pattern` is a name of ds.PATTERNS or a 0/1 list, one entry per switch."""
    model = build_model(ch.backbone, ch.num_classes, ch.input_size)
    bits = resolve_pattern(model, pattern, len(ds.switches(model)))
    after = build_model(ch.backbone, ch.num_classes, ch.input_size, bits, init=ch.layout.base_checkpoint)
    acc_removed = evaluate(after.to(ch.device), ch.test_loader)["acc"]
    after_metrics = train(after, ch.train_loader, ch.test_loader,
                          TrainConfig(epochs=finetune_epochs, lr=finetune_lr, warmup_epochs=0, seed=ch.seed),
                          ch.layout.removed_finetuned_dir, meta=net_info(after), piece=ch.piece).metrics
    scratch = build_model(ch.backbone, ch.num_classes, ch.input_size, bits)
    scratch_metrics = train(scratch, ch.train_loader, ch.test_loader,
                            TrainConfig(epochs=base_epochs + finetune_epochs, lr=base_lr, seed=ch.seed),
                            ch.layout.scratch_dir, meta=net_info(scratch), piece=ch.piece).metrics
    name = pattern if isinstance(pattern, str) else "".join(map(str, bits))
    trained = len(base_metrics)
    table = pd.DataFrame([
        {"network": "base (all activations)", "how": "trained", "epochs": trained,
         "top-1 (%)": base_metrics["test_acc"].iloc[-1]},
        {"network": name, "how": "activations removed after training, no finetune", "epochs": trained,
         "top-1 (%)": acc_removed},
        {"network": name, "how": "activations removed after training, finetuned",
         "epochs": trained + finetune_epochs, "top-1 (%)": after_metrics["test_acc"].iloc[-1]},
        {"network": name, "how": "trained from scratch without those activations",
         "epochs": base_epochs + finetune_epochs, "top-1 (%)": scratch_metrics["test_acc"].iloc[-1]},
    ])
    table.to_csv(ch.layout.comparison_csv, index=False)
    return Comparison(table, bits, removed_blocks(model, bits), len(gating.searchable_switches(model)))


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


def candidate_patterns(base, searches: dict, sensitivity_result, random_seed: int,
                       backbone: str, runtime_searches: dict[str, dict] | None = None) -> dict[str, list[int]]:
    """Searched, sensitivity and random patterns at every searched budget, the searches with a
    runtime's latency term (searched-k<budget>@<runtime>), then the paper's (when it has patterns
    for this backbone)."""
    patterns = {}
    for budget, result in searches.items():
        patterns[f"searched-k{budget}"] = result.pattern(budget)
    for budget in searches:
        patterns[f"sensitivity-k{budget}"] = sensitivity_result.pattern(budget)
    for budget in searches:
        patterns[f"random-k{budget}"] = gating.random_patterns(base, budget, 1, seed=random_seed)[0]
    for runtime, results in (runtime_searches or {}).items():
        for budget, result in results.items():
            patterns[f"searched-k{budget}@{runtime}"] = result.pattern(budget)
    for name, pattern in ds.PATTERNS.get(backbone, {}).items():
        patterns[name] = list(pattern)
    return patterns


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
                         "pattern_bits": "".join(map(str, pattern))})
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


def finetuned_networks(ch: Chapter):
    """(name, distill, pattern, model) for every network chapter 3 finetuned."""
    results = pd.read_csv(ch.require(ch.layout.finetune_results, "03_finetune"), dtype={"pattern_bits": str})
    for row in results.itertuples():
        pattern = [int(b) for b in row.pattern_bits]
        path = ch.layout.finetune_checkpoint(row.pattern, bool(row.distill))
        yield row.pattern, bool(row.distill), pattern, load_model(ch.backbone, ch.num_classes, ch.input_size,
                                                                  path, pattern)


# ---------------------------------------------------------------- chapter 4

def save_network(model, path: Path) -> None:
    """Save a whole (merged) network, its ds.meta record included; written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(model, tmp)
    os.replace(tmp, path)


def load_network(path: Path):
    """A network `save_network` wrote (it is a whole pickled module: load only your own runs' files)."""
    return torch.load(path, map_location="cpu", weights_only=False).eval()


@dataclass
class Merged:
    """Chapter 4's merge: the table, and every merged network keyed by (pattern, distill)."""
    table: pd.DataFrame
    networks: dict

    def network(self, pattern: str):
        """The merged network of `pattern`: its distilled finetune when there is one."""
        key = (pattern, True) if (pattern, True) in self.networks else (pattern, False)
        return self.networks[key]


def _merge_row(ch: Chapter, name: str, distill: bool, removed: int, unmerged, merged) -> dict:
    record = net_info(merged)
    size = ch.input_size
    return {"pattern": name, "distill": distill, "removed_blocks": removed,
            "max_abs": record.merge_max_abs, "max_rel": record.merge_max_rel,
            "macs_unmerged": ds.macs(unmerged, size), "macs_merged": ds.macs(merged, size),
            "params_unmerged": ds.params(unmerged), "params_merged": ds.params(merged),
            "acc_unmerged": evaluate(unmerged.to(ch.device), ch.test_loader)["acc"],
            "acc_merged": evaluate(merged.to(ch.device), ch.test_loader)["acc"]}


def merge_all(ch: Chapter) -> Merged:
    """Merge the base network (BN folded) and every finetuned network once: merge errors (as
    `ds.merge` recorded them), MACs and parameters before and after, top-1 of the unmerged and the
    merged network (merge.csv). Each merged network is saved for chapter 5."""
    base = load_base(ch).cpu()
    networks, rows = {}, []
    entries = [("base", False, all_ones(base), base)] + list(finetuned_networks(ch))
    for name, distill, pattern, unmerged in entries:
        merged = ds.merge(unmerged.cpu(), input_size=ch.input_size)
        save_network(merged, ch.layout.merged_network(name, distill))
        rows.append(_merge_row(ch, name, distill, removed_blocks(base, pattern), unmerged, merged))
        networks[(name, distill)] = merged.cpu()
    table = pd.DataFrame(rows)
    table.to_csv(ch.layout.merge_csv, index=False)
    return Merged(table, networks)


def most_removed(merged: Merged, wanted: str | None = None) -> str:
    """The pattern to draw: `wanted`, else the (distilled) network with the most removed blocks."""
    table = merged.table[merged.table["pattern"] != "base"]
    if wanted is not None:
        if wanted not in set(table["pattern"]):
            raise ValueError(f"diagram_pattern {wanted!r} is not among the merged networks: "
                             f"{', '.join(table['pattern'].unique())}")
        return wanted
    distilled = table[table["distill"]] if table["distill"].any() else table
    return distilled.sort_values("removed_blocks", ascending=False, kind="stable")["pattern"].iloc[0]


# ---------------------------------------------------------------- chapter 5

def merged_networks(ch: Chapter, distill: bool = True) -> dict:
    """{'base': the BN-folded base, pattern name: merged finetuned network} as chapter 4 saved
    them (the distilled finetunes by default)."""
    table = pd.read_csv(ch.require(ch.layout.merge_csv, "04_merge"))
    models = {}
    for row in table.itertuples():
        if row.pattern == "base" or bool(row.distill) == distill:
            path = ch.require(ch.layout.merged_network(row.pattern, bool(row.distill)), "04_merge")
            models[row.pattern] = load_network(path)
    return models


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


def throughput(ch: Chapter, devices, batch: int, input_size: int | None = None, repeats: int = 5,
               min_time: float = 0.2, threads: int | None = None,
               runtimes=("torch", "onnxruntime", "openvino")) -> ThroughputResult:
    """Images/s of the BN-folded base and every merged (distilled) network, as chapter 4 saved
    them, in every runtime (torch NCHW and channels_last, ONNX Runtime, OpenVINO; on a GPU torch
    only), networks interleaved within each setting. Each row has the speed-up over the base in
    the same setting and over the fastest base of the device, the setting's label and the top-1
    chapter 4 measured (throughput.csv)."""
    size = input_size or ch.input_size
    models = merged_networks(ch)
    accuracy = pd.read_csv(ch.layout.merge_csv)
    accuracy = accuracy[(accuracy["pattern"] == "base") | accuracy["distill"]].set_index("pattern")["acc_merged"]
    frames, not_measured = [], []
    for device in bench_devices(devices):
        here = ",".join(runtimes) if device == "cpu" else "torch"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = bench.runtime_table(models, size, batch, runtimes=here, threads=threads or all_cores(),
                                        device=device, model_name=ch.backbone, repeats=repeats,
                                        min_time=min_time, log=lambda text: None)   # the tables say it
        not_measured += [f"{device}: {w.message}" for w in caught if "not measured" in str(w.message)]
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
    """For each device and network, the row of the setting where it runs fastest (what a user
    who deploys it well gets), with its speed-up over the device's fastest base."""
    best = table.loc[table.groupby(["device", "pattern"])["img_s_median"].idxmax()]
    return best.reset_index(drop=True)


def throughput_reading(table: pd.DataFrame) -> str:
    """Two sentences per device with the numbers a reader needs: the fastest base, and what the
    fastest merged network gains over it and over the base in its own runtime."""
    lines = []
    for device, group in table.groupby("device"):
        base = group[group["pattern"] == "base"].sort_values("img_s_median").iloc[-1]
        best = group[group["pattern"] != "base"].sort_values("speedup_over_best_base").iloc[-1]
        losers = group[(group["pattern"] != "base") & (group["speedup_over_best_base"] < 1)]
        lines.append(
            f"On **{device}** ({base['device_name']}) the fastest way to run the base network is "
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
