"""The DP search: which blocks lose their activations, chosen by an exact dynamic program.

The successors of DepthShrinker (Kim et al., ICML 2023; LayerMerge, ICML 2024) replace the gate
search by two measured tables and an exact optimization over them:

1. **Importance** (`importance_table`): for each searchable block alone, the network with only that
   block linearized (`ds.apply_pattern` with one 0) is finetuned for `steps` batches from the base
   weights, then its top-1 is measured on a held-out part of the *training* set (`holdout_split`:
   seeded, disjoint from the finetuning images; the test set is never used). Two more rows: the
   unmodified base on the same images (`base`), and the base finetuned exactly like every entry with
   nothing linearized (`reference`). A block's cost is its accuracy drop, reference top-1 minus its
   top-1: the finetune's own effect (an under-trained base gains from any extra training) cancels,
   and what remains is what linearizing that block costs after a short recovery.
2. **Latency** (`ds.bench.latency_table`, measured in the target runtime): the seconds per batch
   that merging each block saves. With `final_act` (the paper's setting) every removed block merges
   on its own, so a pattern saves the sum of its blocks' savings.
3. **The dynamic program** (`choose`, `frontier`): over the blocks in switch order, keeping for
   every number of removed blocks the Pareto front of (total cost, total saving) states. It finds
   the removal of least total cost (a) for a given number of removed blocks and (b) for a given
   latency budget: predicted time, base time minus the savings, at most the budget. Both at once
   work too. Only the blocks of the table, which must be the switchable ones, can be removed.

Why the objective is additive. The DP minimizes sum_i drop_i over the removed blocks, i.e. it
maximizes the surrogate accuracy  reference - sum_i drop_i  (the sum of per-block accuracy
changes, with 0 for a kept block). This is the first-order (independent-effects) model of removing
several blocks: each block's drop is measured alone and interactions between removed blocks are
neglected, the same assumption under which ranking blocks one at a time (sensitivity) makes sense.
It is what makes an exact optimization possible; the study measures how well the surrogate
predicts the finetuned network. A plain sum of per-block accuracies would give the same answer at
a fixed count, but not under a latency budget, where it would reward removing more blocks. Drops
may be negative (a block whose linearization the finetune recovers fully) and are used as they are.

Exactness and ties. The DP adds costs and savings as exact rationals (every float converts exactly
to a `fractions.Fraction`), so real-valued latencies are compared with the budget without rounding
or discretization. Ties are broken deterministically, in this order: least total cost; then the
larger total saving (when there is a latency table); then the pattern that keeps the earlier blocks
(lexicographically largest 0/1 pattern in switch order, as the gate search gives ties to the
earlier block). Pruning a state dominated in (cost, saving) under that order is safe, because every
completion adds the same cost and saving to both states; so the result equals a brute force over
all subsets (tests/test_dpsearch.py checks it). The fronts hold at most 2^n states; for 17 blocks
with savings that rise with the cost (the hard case) they hold a few thousand, 1-2 s of work.

Cost of `importance_table`: 1 + n finetunes of `steps` batches (the reference and n blocks) and
n + 2 evaluations of the held-out images. The default, DEFAULT_STEPS = 50 batches per entry, is
long enough for BN's running statistics (momentum 0.1) to forget the base's (0.9 ** 50 < 1%) and
for the layers around the linearized block to adapt, so an entry measures what a finetune
recovers rather than the one-shot drop that `ds.gating.sensitivity_ranking` measures; at batch
128 it is 6,400 images, an eighth of a CIFAR-10 epoch, so the 17 + 1 entries of MobileNetV2 cost
about 2.3 epochs of training (measured on the tests' tiny case, mobilenetv2_035 at 16 px, batch 32,
2,000 held-out images, on 2 shared CPU cores: 4-8 s per entry, 95 s for all 19). DEFAULT_HOLDOUT = 2,000 held-out images: a top-1 there has a standard
error of about 1 point, and the entries are compared on the same images (paired), which makes
their differences less noisy than that. The table is resumable: with `out_dir` every finished
entry is written to importance.json at once, and a rerun with `resume=True` and the same settings
skips them.

The held-out images are held out of the entries' finetuning only: the base network was trained on
the whole training set, so their accuracies are optimistic in level; the comparison between entries
is what the DP uses.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ds import ddp
from ds.gating import latency_vector, searchable_switches
from ds.meta import info
from ds.shrink import apply_pattern
from ds.switches import switches
from ds.train import ResumeMismatch, TrainConfig, evaluate, fit
from ds.train.config import MAY_CHANGE_ON_RESUME

METHOD = "dp"
SEARCH_METHODS = ("gate", "dp")   # ds.gating.search, ds.dpsearch.search
DEFAULT_STEPS = 50                # finetuning batches per importance entry (see the module's docstring)
DEFAULT_HOLDOUT = 2000            # held-out training images
DEFAULT_LR = 0.02                 # the study's finetuning learning rate
IMPORTANCE_JSON = "importance.json"   # settings and rows, written after every entry (resume)
IMPORTANCE_CSV = "importance.csv"
FRONTIER_CSV = "frontier.csv"
PATTERNS_JSON = "patterns.json"
OUTPUT_FILES = (IMPORTANCE_JSON, IMPORTANCE_CSV, FRONTIER_CSV, PATTERNS_JSON)
COLUMNS = ("entry", "block", "path", "top1", "loss", "drop", "finetune_images", "holdout_images", "seconds")


def check_method(method: str) -> str:
    """`method` if it names a search method, else a one-line ValueError listing them."""
    if method not in SEARCH_METHODS:
        raise ValueError(f"unknown search method {method!r}: choose {' or '.join(SEARCH_METHODS)}")
    return method


def entry_config(lr: float = DEFAULT_LR, seed: int = 0) -> TrainConfig:
    """The default finetuning of one importance entry: SGD at `lr`, no warm-up, no progress bars."""
    return TrainConfig(epochs=1, lr=lr, warmup_epochs=0.0, seed=seed, progress=False)


# ---------------------------------------------------------------- the dynamic program

@dataclass(frozen=True)
class Choice:
    """One removal: the pattern (0/1 per switch), the removed switch indices, its total cost (the sum
    of the removed blocks' drops, in top-1 points), its total saving (seconds per batch; None without
    a latency table) and predicted time per batch (None without a base latency)."""
    pattern: tuple[int, ...]
    removed: tuple[int, ...]
    cost: float
    saved: float | None = None
    latency: float | None = None


def _exact(table: Mapping, what: str, num_switches: int) -> dict[int, Fraction]:
    """{switch index: exact value} from a table keyed by switch indices (ints or their strings)."""
    exact = {}
    for key, value in table.items():
        try:
            index = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{what} has key {key!r}: keys are switch indices") from None
        if not 0 <= index < num_switches:
            raise ValueError(f"{what} has switch {index}, outside 0..{num_switches - 1}")
        if index in exact:
            raise ValueError(f"{what} has switch {index} twice")
        try:
            exact[index] = _number(value, "")
        except ValueError:
            raise ValueError(f"{what} has {value!r} for switch {index}: values must be finite numbers") from None
    return exact


def _number(value, name: str) -> Fraction:
    """A finite number as an exact rational; else a one-line ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    return Fraction(int(value)) if isinstance(value, (int, np.integer)) else Fraction(float(value))


# A state of the DP over the first j blocks: (total cost, total saving, keep bits of those j blocks).
_State = tuple[Fraction, Fraction, tuple[int, ...]]


def _prune(states: list[_State]) -> list[_State]:
    """The states no other state beats: sorted by saving (descending), cost strictly falling.

    State A beats B when A's cost <= B's, A's saving >= B's and A comes first in the order least
    cost, larger saving, larger bits. Sorted by saving descending, then cost ascending, then bits
    descending, a state survives exactly when its cost is below every cost before it."""
    states.sort(key=lambda s: (-s[1], s[0], tuple(-b for b in s[2])))
    kept, least = [], None
    for state in states:
        if least is None or state[0] < least:
            kept.append(state)
            least = state[0]
    return kept


def _fronts(blocks: list[int], cost: dict[int, Fraction], saving: dict[int, Fraction]) -> dict[int, list[_State]]:
    """{number removed: its Pareto front} after the DP over `blocks` (in switch order)."""
    fronts: dict[int, list[_State]] = {0: [(Fraction(0), Fraction(0), ())]}
    for block in blocks:
        grown: dict[int, list[_State]] = {}
        for count, states in fronts.items():
            for total, saved, bits in states:
                grown.setdefault(count, []).append((total, saved, bits + (1,)))
                grown.setdefault(count + 1, []).append((total + cost[block], saved + saving[block], bits + (0,)))
        fronts = {count: _prune(states) for count, states in grown.items()}
    return fronts


def _choice(state: _State, blocks: list[int], num_switches: int, with_saving: bool,
            base_latency: Fraction | None) -> Choice:
    total, saved, bits = state
    pattern = [1] * num_switches
    for block, bit in zip(blocks, bits):
        pattern[block] = bit
    return Choice(tuple(pattern), tuple(b for b, bit in zip(blocks, bits) if not bit), float(total),
                  float(saved) if with_saving else None,
                  float(base_latency - saved) if with_saving and base_latency is not None else None)


def _tables(costs: Mapping, savings: Mapping | None, num_switches: int):
    cost = _exact(costs, "the importance (cost) table", num_switches)
    if not cost:
        raise ValueError("the cost table is empty: there is no block to remove")
    blocks = sorted(cost)
    if savings is None:
        return blocks, cost, {b: Fraction(0) for b in blocks}
    saving = _exact(savings, "the latency table", num_switches)
    missing = [b for b in blocks if b not in saving]
    if missing:
        raise ValueError(f"the latency table has no entry for block(s) {', '.join(map(str, missing))}")
    return blocks, cost, saving


def choose(costs: Mapping, num_switches: int, *, removed: int | None = None, savings: Mapping | None = None,
           latency_budget: float | None = None, base_latency: float | None = None) -> Choice:
    """The removal of least total cost, exactly, under the constraints given.

    costs: {switch index: cost of removing that block} (e.g. `ImportanceTable.costs()`, accuracy
      drops in points); only these blocks can be removed.
    removed: remove exactly this many of them.
    savings: {switch index: seconds per batch saved by merging it} (a latency table, as
      `ds.bench.latency_table` measures it; keys may be strings).
    latency_budget, base_latency: the predicted time per batch, base_latency minus the removed
      blocks' savings, must be at most latency_budget (seconds, the table's runtime and batch).
    At least one of `removed` and `latency_budget` is needed; an infeasible one is a ValueError
    that names the best reachable value. Ties: see the module's docstring.
    """
    if removed is None and latency_budget is None:
        raise ValueError("choose needs a constraint: removed=<number of blocks> and/or latency_budget=<seconds>")
    if latency_budget is not None and (savings is None or base_latency is None):
        raise ValueError("a latency budget needs savings (the latency table) and base_latency (the base's time "
                         "per batch in the same runtime)")
    blocks, cost, saving = _tables(costs, savings, num_switches)
    if removed is not None and (isinstance(removed, bool) or not isinstance(removed, (int, np.integer))
                                or not 0 <= removed <= len(blocks)):
        raise ValueError(f"cannot remove {removed!r} blocks: the table has {len(blocks)} removable blocks, "
                         f"so choose 0..{len(blocks)}")
    base = _number(base_latency, "base_latency") if base_latency is not None else None
    fronts = _fronts(blocks, cost, saving)
    candidates = fronts[removed] if removed is not None else [s for front in fronts.values() for s in front]
    if latency_budget is not None:
        need = base - _number(latency_budget, "latency_budget")
        feasible = [s for s in candidates if s[1] >= need]
        if not feasible:
            fastest = float(base - max(s[1] for s in candidates))
            count = f" with {removed} blocks removed" if removed is not None else ""
            raise ValueError(f"latency budget {latency_budget:.6g} s is infeasible: the fastest pattern{count} "
                             f"takes {fastest:.6g} s by the latency table (base {float(base):.6g} s)")
        candidates = feasible
    best = max(candidates, key=lambda s: (-s[0], s[1], s[2]))
    return _choice(best, blocks, num_switches, savings is not None, base)


def best_per_count(costs: Mapping, num_switches: int, savings: Mapping | None = None) -> dict[int, Choice]:
    """{number removed: `choose(costs, num_switches, removed=that, savings=savings)`} for 0..n, in one DP."""
    blocks, cost, saving = _tables(costs, savings, num_switches)
    fronts = _fronts(blocks, cost, saving)
    return {count: _choice(max(front, key=lambda s: (-s[0], s[1], s[2])), blocks, num_switches,
                           savings is not None, None)
            for count, front in sorted(fronts.items())}


def frontier(costs: Mapping, savings: Mapping, num_switches: int,
             base_latency: float | None = None) -> list[Choice]:
    """Every removal that no other beats in both total cost and total saving, by saving ascending.

    Cost and saving both rise along it; for any latency budget, `choose` returns the first point
    whose saving reaches base_latency - budget, so this list answers every budget at once."""
    blocks, cost, saving = _tables(costs, savings, num_switches)
    states = _prune([s for front in _fronts(blocks, cost, saving).values() for s in front])
    base = _number(base_latency, "base_latency") if base_latency is not None else None
    return [_choice(s, blocks, num_switches, True, base) for s in reversed(states)]


# ---------------------------------------------------------------- the importance table

def holdout_split(num_images: int, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(finetuning indices, held-out indices) of `num_images` training images: a seeded random
    `holdout` of them held out, the rest for finetuning; disjoint, each sorted."""
    if isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer)) or holdout < 1:
        raise ValueError(f"holdout must be a positive number of images, got {holdout!r}")
    if holdout >= num_images:
        raise ValueError(f"cannot hold out {holdout} of {num_images} training images and finetune on the rest: "
                         f"lower the held-out images (CLI: --dp-holdout) below {num_images}")
    order = np.random.default_rng(seed).permutation(num_images)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


class _Batches:
    """The first `steps` batches of a training loader's epochs 0, 1, ..., as one epoch of `fit`."""

    def __init__(self, loader, steps: int):
        self.loader, self.steps, self.device = loader, steps, loader.device

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        done, epoch = 0, 0
        while True:
            self.loader.set_epoch(epoch)
            for batch in self.loader:
                yield batch
                done += 1
                if done == self.steps:
                    return
            epoch += 1


def _fingerprint(tensors) -> str:
    """sha256 of tensors' bytes (names and values), to tell one base network or label set from another."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ImportanceTable:
    """Rows `base` (unmodified base), `reference` (base finetuned like the entries) and one `block`
    row per searchable block: top-1 (%) and loss on the held-out images, drop (reference top-1 minus
    the row's), finetuning images, held-out images, seconds; and the settings they were made with."""
    rows: list[dict]
    settings: dict = field(default_factory=dict)

    @property
    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=list(COLUMNS))
        frame["block"] = frame["block"].astype("Int64")
        return frame

    def _entry(self, name: str) -> dict:
        found = [r for r in self.rows if r["entry"] == name]
        if not found:
            raise ValueError(f"the importance table has no {name!r} row (unfinished: resume it)")
        return found[0]

    @property
    def base_top1(self) -> float:
        return self._entry("base")["top1"]

    @property
    def reference_top1(self) -> float:
        return self._entry("reference")["top1"]

    def costs(self) -> dict[int, float]:
        """{switch index: drop in top-1 points}: what the DP minimizes."""
        self._entry("reference")   # the drops need it
        return {int(r["block"]): float(r["drop"]) for r in self.rows if r["entry"] == "block"}

    def write(self, out_dir: str | Path) -> None:
        """importance.json (settings and rows; what a resume reads) and importance.csv, atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _atomic(out / IMPORTANCE_JSON, json.dumps({"settings": self.settings, "rows": self.rows}, indent=1) + "\n")
        _atomic(out / IMPORTANCE_CSV, self.frame.to_csv(index=False))

    @classmethod
    def read(cls, path: str | Path) -> "ImportanceTable":
        """The table in an importance.json (or a directory holding one)."""
        path = Path(path)
        path = path / IMPORTANCE_JSON if path.is_dir() else path
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"importance table {path} does not exist") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"importance table {path} is not valid JSON ({error}); remove it to measure "
                             f"again") from None
        if not isinstance(record, dict) or not isinstance(record.get("rows"), list):
            raise ValueError(f"importance table {path} holds no rows: it was not written by ds.dpsearch")
        return cls(record["rows"], record.get("settings") or {})


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def importance_table(model: nn.Module, train_loader, cfg: TrainConfig | None = None, *,
                     steps: int = DEFAULT_STEPS, holdout: int = DEFAULT_HOLDOUT, seed: int = 0,
                     teacher: nn.Module | None = None, out_dir: str | Path | None = None, resume: bool = False,
                     progress: bool = True, extra: dict | None = None) -> ImportanceTable:
    """The importance table of `model` (a trained base network; not modified).

    train_loader: a `ds.loaders.DeviceLoader` over the training set. `holdout` of its images
      (`holdout_split` with `seed`) are held out for measuring; the others are the finetuning
      images, in the loader's order, batch size and augmentation (its own seed), the same batches for
      every entry.
    cfg: the finetuning of each entry (default `entry_config()`): lr, momentum, weight decay,
      label smoothing, amp, seed; `warmup_epochs` counts in entries (1.0 warms up over the whole
      entry) and `epochs` is not used, an entry being `steps` batches (0: no finetuning, the
      one-shot drop on held-out training data). Every entry starts from `model`'s weights with the
      same RNG state (`fit` seeds with cfg.seed).
    teacher: distil each entry from it (as `ds.train.fit`).
    out_dir: write importance.json and importance.csv after every entry; an existing table there is
      an error unless `resume`, which skips its finished entries (only with the same settings:
      else ResumeMismatch). `extra` is stored with the settings as is (the CLI keeps its arguments).
    progress: a progress bar over the entries.
    """
    cfg = cfg or entry_config()
    if cfg.ema_decay:
        raise ValueError("the importance entries keep no EMA: set ema_decay=None (CLI: drop --ema-decay)")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a number of finetuning batches >= 0, got {steps!r}")
    if getattr(train_loader, "world_size", 1) > 1 or not hasattr(train_loader, "subset"):
        raise ValueError("the importance table needs one process and a ds.loaders.DeviceLoader over the training "
                         "set (an array dataset: cifar10, cifar100 or fake)")
    searched = searchable_switches(model)
    if not searched:
        raise ValueError("the model has no searchable (switchable) blocks: there is nothing to search")
    tune_idx, hold_idx = holdout_split(len(train_loader.labels), holdout, seed)
    tune = train_loader.subset(tune_idx, train=True)
    held = train_loader.subset(hold_idx, train=False)
    entry_cfg = replace(cfg, epochs=1, stop_after_epoch=None, progress=False)
    device = train_loader.device
    settings = {
        "method": METHOD, "steps": int(steps), "holdout": int(holdout), "seed": int(seed),
        "batch_size": tune.batch_size, "loader_seed": tune.seed, "train_images": len(train_loader.labels),
        "labels_sha256": _fingerprint([("labels", train_loader.labels)]),
        "base_sha256": _fingerprint(sorted(model.state_dict().items())),
        "teacher_sha256": _fingerprint(sorted(teacher.state_dict().items())) if teacher is not None else None,
        "network": info(model).as_dict(), "searched": [s.index for s in searched],
        "config": {k: v for k, v in asdict(entry_cfg).items() if k not in MAY_CHANGE_ON_RESUME},
        "extra": extra,
    }
    settings = json.loads(json.dumps(settings))   # as a resume reads it back (tuples are lists)
    table = _start(out_dir, settings, resume)
    done = {r["entry"] if r["entry"] != "block" else r["block"] for r in table.rows}
    num_switches = len(switches(model))
    entries = [("base", None), ("reference", None)] + [("block", s) for s in searched]
    bar = tqdm(entries, desc="importance", disable=not progress)
    for kind, sw in bar:
        if (sw.index if sw is not None else kind) in done:
            continue
        bar.set_postfix_str(kind if sw is None else f"block {sw.index}")
        started = time.perf_counter()
        pattern = [1] * num_switches
        if sw is not None:
            pattern[sw.index] = 0
        net = apply_pattern(model, pattern).to(device)
        finetuned = kind != "base" and steps > 0
        if finetuned:
            fit(net, _Batches(tune, steps), None, entry_cfg, teacher=teacher, dist=ddp.DistInfo(device=device))
        measured = evaluate(net, held, device=device, amp=cfg.amp)
        table.rows.append({"entry": kind, "block": sw.index if sw is not None else None,
                           "path": sw.path if sw is not None else "", "top1": measured["acc"],
                           "loss": measured["loss"], "drop": None,
                           "finetune_images": steps * tune.batch_size if finetuned else 0,
                           "holdout_images": measured["n"], "seconds": time.perf_counter() - started})
        _fill_drops(table)
        if out_dir is not None:
            table.write(out_dir)
    return table


def _fill_drops(table: ImportanceTable) -> None:
    reference = [r["top1"] for r in table.rows if r["entry"] == "reference"]
    for row in table.rows:
        row["drop"] = reference[0] - row["top1"] if reference else None


def _start(out_dir, settings: dict, resume: bool) -> ImportanceTable:
    """An empty table, or the one in out_dir to continue (same settings only)."""
    if out_dir is None:
        return ImportanceTable([], settings)
    path = Path(out_dir) / IMPORTANCE_JSON
    if not path.is_file():
        return ImportanceTable([], settings)
    if not resume:
        raise FileExistsError(f"{path} exists and resume=False would overwrite it: pass resume=True (CLI: --resume) "
                              f"to continue it, or remove it / choose another out_dir (CLI: --restart) to start over")
    saved = ImportanceTable.read(path)
    differences = {key: (saved.settings.get(key), settings.get(key))
                   for key in sorted(saved.settings.keys() | settings.keys())
                   if key != "extra" and saved.settings.get(key) != settings.get(key)}
    if differences:
        raise ResumeMismatch(path, differences, "Resume with the same settings, or start over in another "
                                                "directory (the CLI: --restart).")
    return ImportanceTable(saved.rows, settings)


# ---------------------------------------------------------------- the search

@dataclass
class DPSearchResult:
    """The DP's answers for one model: costs (drop per searched block) and, with a latency table,
    savings (seconds per batch). Like `ds.gating.SearchResult`, `pattern(budget)` keeps `budget`
    searched blocks and `patterns` names one pattern per budget (dp-k<budget>), but the DP's patterns
    are not nested: each budget is optimized on its own."""
    num_switches: int
    searched: list[int]
    costs: dict[int, float]
    savings: dict[int, float] | None = None
    importance: ImportanceTable | None = None
    method: str = METHOD

    def removal(self, removed: int | None = None, latency_budget: float | None = None,
                base_latency: float | None = None) -> Choice:
        """`choose` on this result's tables."""
        return choose(self.costs, self.num_switches, removed=removed, savings=self.savings,
                      latency_budget=latency_budget, base_latency=base_latency)

    def pattern(self, budget: int) -> list[int]:
        """Keep (1) `budget` searched blocks and every switch not searched; remove the others, at least cost."""
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) \
                or not 0 <= budget <= len(self.searched):
            raise ValueError(f"budget {budget!r} is outside 0..{len(self.searched)}")
        return list(self.removal(removed=len(self.searched) - budget).pattern)

    def pattern_within(self, latency_budget: float, base_latency: float) -> list[int]:
        """The pattern of least cost whose predicted time per batch is at most `latency_budget`."""
        return list(self.removal(latency_budget=latency_budget, base_latency=base_latency).pattern)

    @property
    def patterns(self) -> dict[str, list[int]]:
        n = len(self.searched)
        best = best_per_count(self.costs, self.num_switches, self.savings)
        return {f"{self.method}-k{k}": list(best[n - k].pattern) for k in range(n + 1)}

    def frontier_frame(self, base_latency: float | None = None) -> pd.DataFrame | None:
        """The (cost, saving) Pareto front as a table (None without a latency table): removed blocks,
        total saving (s per batch), predicted time (with `base_latency`), total drop, predicted top-1
        (reference minus drop, with an importance table) and the pattern as "1,0,...""."""
        if self.savings is None:
            return None
        reference = self.importance.reference_top1 if self.importance is not None else None
        rows = [{"removed": len(c.removed), "blocks": ",".join(map(str, c.removed)), "saved_s": c.saved,
                 "latency_s": c.latency, "drop": c.cost,
                 "predicted_top1": reference - c.cost if reference is not None else None,
                 "pattern": ",".join(map(str, c.pattern))}
                for c in frontier(self.costs, self.savings, self.num_switches, base_latency)]
        return pd.DataFrame(rows)

    def write(self, out_dir: str | Path) -> None:
        """patterns.json (dp-k<budget> for every budget) and, with a latency table, frontier.csv."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _atomic(out / PATTERNS_JSON, json.dumps(self.patterns, indent=1) + "\n")
        front = self.frontier_frame()
        if front is not None:
            _atomic(out / FRONTIER_CSV, front.to_csv(index=False))


def plan(model: nn.Module, costs: Mapping | ImportanceTable, latency=None) -> DPSearchResult:
    """The DP over `costs` ({switch index: drop} or an ImportanceTable) for `model`, with `latency`
    (a latency table: {switch index or block path: seconds saved} or a list in search order, as
    `ds.gating.load_latency_table` reads it) when given. The costs must cover exactly the model's
    searchable blocks: stem, head and blocks that cannot be linear are never removed."""
    importance = costs if isinstance(costs, ImportanceTable) else None
    table = importance.costs() if importance is not None else {int(k): v for k, v in costs.items()}
    searched = searchable_switches(model)
    indices = [s.index for s in searched]
    foreign = sorted(set(table) - set(indices))
    if foreign:
        kinds = {s.index: s for s in switches(model)}
        named = ", ".join(f"{i} ({kinds[i].kind} {kinds[i].path}{': ' + kinds[i].reason if kinds[i].reason else ''})"
                          if i in kinds else str(i) for i in foreign)
        raise ValueError(f"the cost table has switch(es) that are not searchable blocks: {named}; only "
                         f"switchable blocks can be removed")
    missing = [i for i in indices if i not in table]
    if missing:
        raise ValueError(f"the cost table has no entry for searchable block(s) {', '.join(map(str, missing))}")
    savings = dict(zip(indices, latency_vector(latency, searched))) if latency is not None else None
    return DPSearchResult(len(switches(model)), indices, {i: float(table[i]) for i in indices}, savings, importance)


def search(model: nn.Module, train_loader, cfg: TrainConfig | None = None, *, steps: int = DEFAULT_STEPS,
           holdout: int = DEFAULT_HOLDOUT, seed: int = 0, latency=None, teacher: nn.Module | None = None,
           out_dir: str | Path | None = None, resume: bool = False, progress: bool = True,
           extra: dict | None = None) -> DPSearchResult:
    """The DP search from a trained `model` (not modified): `importance_table` (arguments as there),
    then `plan` with `latency`. With `out_dir`: importance.json/.csv, patterns.json (dp-k<budget>,
    `--pattern FILE:dp-k8` finetunes one) and, with a latency table, frontier.csv."""
    table = importance_table(model, train_loader, cfg, steps=steps, holdout=holdout, seed=seed, teacher=teacher,
                             out_dir=out_dir, resume=resume, progress=progress, extra=extra)
    result = plan(model, table, latency)
    if out_dir is not None:
        result.write(out_dir)
    return result
