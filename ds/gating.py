"""The activation search: which blocks keep their activations.

One learnable score per switchable block. In the forward pass the hard top-k of the scores
(k = the budget) keeps those k blocks' activations; the others run linear. In the backward pass a
straight-through estimator gives the scores the task gradient:
    g = hard + (soft - soft.detach()),  soft = sigmoid(score)   (value exactly hard),
and each gated activation computes  out = g * act(x) + (1 - g) * x.
Stem and head switches are not searched (always kept).

An optional latency term, weight * sum_i saved_i * sigmoid(score_i) with saved_i the time saved by
merging block i (normalized to max 1), pushes the scores of blocks whose merge saves more time
*down*, so they are more likely to be shrunk. (The reference code has this sign backwards.)

How the scores are trained is `SearchOptions` (the gate learning rate is `TrainConfig.gate_lr`):
the optimizer (Adam, or SGD with the weights' momentum as in the reference code), a weight decay
on the scores, centring (the common part of the scores' gradient is removed before each step and
the scores are re-centred after it, so they cannot all drift up together: removing any activation
hurts, so the task gradient pushes every score the same way), the initial scores (zeros, where
ties go to the earlier block, or the standardized `sensitivity_ranking` measured on training
images) and a temperature of the sigmoid. `LEGACY` is the first version's search (Adam, zeros, no
centring: every score rose together and the top-k changed at 32-38 of 78 steps in the sweep
that `SearchOptions` describes, with the defaults it chose). The score trajectory (`gates.csv`)
has one row per step.

Baselines with the same result type: `random_ranking`, `random_patterns` and
`sensitivity_ranking` (accuracy drop when one block's activations are removed, no finetuning).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ds import ddp
from ds.paths import get_module, set_module
from ds.switches import switches
from ds.train import CHECKPOINT, FitHooks, TrainConfig, evaluate, fit


GATE_OPTIMIZERS = ("adam", "sgd")
GATE_INITS = ("zeros", "sensitivity")


@dataclass(frozen=True)
class SearchOptions:
    """How the gate search trains its scores (their learning rate is `TrainConfig.gate_lr`).

    optimizer: "adam", or "sgd" with the weights' momentum and Nesterov setting (TrainConfig), as
      the reference code trains its scores; constant learning rate either way.
    weight_decay: on the scores (decoupled for Adam, i.e. AdamW; SGD's own for "sgd").
    centre: remove the mean over the searched blocks from the scores' gradient before each step
      and from the scores after it. The top-k is invariant to a common shift, so this removes only
      the common drift (every score rising together, sigmoid saturating) and makes Adam, which
      normalizes each score's gradient, rank by the gradient *relative to the other blocks*.
    init: "zeros" (ties go to the earlier block) or "sensitivity": the one-shot accuracy drop of
      each block (`sensitivity_ranking`) on `init_images` training images (drawn with the search's
      seed, un-augmented), standardized over the blocks and times `init_scale`.
    temperature: gates' gradient is d sigmoid(score / temperature) / d score.

    The defaults (Adam, centred, starting from the sensitivity at scale 3) and why:
    `benchmarks/gate_search_sweep.py --run` (benchmarks/results/gate_search_sweep.csv; 2026-12-01,
    a 2-core AMD EPYC VM shared with other jobs, one torch thread) searched from the published cpu
    base with 3 data orders per budget (78 steps on 5,000 training images), finetuned each pattern
    alike (40 steps) and measured it on 2,000 held-out training images (mean +- standard error over
    the 3 seeds' patterns; in brackets the Jaccard index of their removed blocks, 1 = the same
    pattern every time):
      keep 6 of 17 (DS-E):  LEGACY 29.8 +- 1.5 (0.44, what random subsets give); centred 34.6 +- 0.6
        (0.89); centred from the sensitivity, scale 1: 36.3 +- 0.5 (0.89), scale 3: 35.8 +- 0.0
        (0.89); SGD with decay 5e-4, centred: 34.0 +- 0.0 (1.00); references: the sensitivity
        ranking 33.5 +- 1.5, random patterns 31.2 +- 1.4.
      keep 11 of 17 (DS-A): LEGACY 39.3 +- 1.4 (0.29); centred 40.5 +- 1.6 (0.57); from the
        sensitivity, scale 1: 38.2 +- 1.0 (0.67), scale 3: 41.5 +- 0.5 (0.64); SGD with decay
        39.7 +- 1.4 (0.52); references: the sensitivity ranking 43.3 +- 0.2, random 36.0 +- 1.1.
    Centring makes the pattern stable; the sensitivity start at scale 3 (the search can swap only
    blocks of close sensitivity) is the one setting above LEGACY (+6.1, +2.2) and above centred
    alone (+1.2, +1.0) at both budgets. At DS-A's budget no gate search reaches the one-shot
    sensitivity ranking itself (-1.9 +- 0.6 for the default).
    """
    optimizer: str = "adam"
    weight_decay: float = 0.0
    centre: bool = True
    init: str = "sensitivity"
    init_scale: float = 3.0
    init_images: int = 500
    temperature: float = 1.0

    def __post_init__(self):
        def bad(name, accepted):
            return ValueError(f"SearchOptions.{name} = {getattr(self, name)!r} is invalid: accepted {accepted}")

        def number(name, low_open: bool):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (low_open and value == 0):
                raise bad(name, f"a finite number {'>' if low_open else '>='} 0")

        if self.optimizer not in GATE_OPTIMIZERS:
            raise bad("optimizer", " or ".join(GATE_OPTIMIZERS))
        if self.init not in GATE_INITS:
            raise bad("init", " or ".join(GATE_INITS))
        if not isinstance(self.centre, bool):
            raise bad("centre", "True or False")
        number("weight_decay", low_open=False)
        number("init_scale", low_open=False)
        number("temperature", low_open=True)
        if isinstance(self.init_images, bool) or not isinstance(self.init_images, int) or self.init_images < 1:
            raise bad("init_images", "an int >= 1")

    def settings(self) -> dict:
        return asdict(self)


LEGACY = SearchOptions(optimizer="adam", weight_decay=0.0, centre=False, init="zeros", init_scale=1.0,
                       temperature=1.0)


class GateScores(nn.Module):
    """Scores of the searched blocks and the hard top-k gates they produce."""

    def __init__(self, num_blocks: int, budget: int, temperature: float = 1.0):
        super().__init__()
        if not 0 <= budget <= num_blocks:
            raise ValueError(f"search budget {budget} is outside 0..{num_blocks}: the model has "
                             f"{num_blocks} switchable blocks; choose a budget in that range")
        self.budget = budget
        self.temperature = float(temperature)
        self.scores = nn.Parameter(torch.zeros(num_blocks))
        self.register_buffer("saved_time", torch.zeros(num_blocks))   # latency term, normalized
        self.latency_weight = 0.0
        self.forced: torch.Tensor | None = None   # fixed 0/1 gates (sensitivity analysis), no gradient

    def soft(self) -> torch.Tensor:
        return torch.sigmoid(self.scores / self.temperature)

    def hard_mask(self) -> torch.Tensor:
        """1 for the `budget` highest scores (ties go to the earlier block), else 0."""
        order = torch.argsort(self.scores.detach(), descending=True, stable=True)
        mask = torch.zeros_like(self.scores)
        mask[order[: self.budget]] = 1.0
        return mask

    def gates(self) -> torch.Tensor:
        if self.forced is not None:
            return self.forced.to(self.scores.device)
        soft = self.soft()
        return self.hard_mask() + (soft - soft.detach())   # value exactly hard; gradient d soft / d score

    def set_latency(self, saved_time, weight: float) -> None:
        saved = torch.as_tensor(saved_time, dtype=torch.float32).flatten()
        if saved.numel() != self.scores.numel():
            raise ValueError(f"latency table has {saved.numel()} entries for {self.scores.numel()} searched blocks")
        peak = saved.abs().max()
        self.saved_time.copy_(saved / peak if peak > 0 else saved)
        self.latency_weight = float(weight)

    def latency_penalty(self) -> torch.Tensor:
        """Lower when blocks that save much time have low scores (and so get shrunk)."""
        if not self.latency_weight:
            return self.scores.new_zeros(())
        return self.latency_weight * (self.saved_time * self.soft()).sum()


class GatedActivation(nn.Module):
    """An activation that one block-wide gate switches between act(x) (g = 1) and x (g = 0).

    The scores are not a submodule: they live outside the network (held by the search), so the
    network's state_dict and parameters are those of the network without gates."""

    def __init__(self, act: nn.Module, gates: GateScores, index: int):
        super().__init__()
        act = copy.deepcopy(act)
        if hasattr(act, "inplace"):   # x is needed after act(x)
            act.inplace = False
        self.act = act
        self.index = index
        object.__setattr__(self, "_gates", gates)   # a reference, not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self._gates.gates()[self.index].to(x.dtype)
        return x + g * (self.act(x) - x)


def searchable_switches(model: nn.Module) -> list:
    """The switches the search scores: switchable blocks (stem and head are kept)."""
    return [s for s in switches(model) if s.kind == "block" and s.switchable]


def add_gates(model: nn.Module, budget: int, temperature: float = 1.0) -> tuple[nn.Module, GateScores]:
    """(a copy of `model` whose searchable blocks' activations are gated, the gate scores).

    Score i belongs to `searchable_switches(model)[i]`; the copy's parameters and state_dict keys
    are those of `model`."""
    searched = searchable_switches(model)
    gated = copy.deepcopy(model)
    gates = GateScores(len(searched), budget, temperature)
    for i, sw in enumerate(searched):
        for path in sw.act_paths:
            set_module(gated, path, GatedActivation(get_module(gated, path), gates, i))
    return gated, gates


class GateSearch(FitHooks):
    """What the gate search adds to `ds.train.fit`: the scores' optimizer (`SearchOptions`), the
    centring, the latency term, the score trajectory (one row per step), and their state under the
    checkpoint key "search". The scores start as they are in `gates` (see `initial_scores`)."""
    key = "search"

    def __init__(self, gates: GateScores, searched: list[int], gate_lr: float,
                 options: SearchOptions = LEGACY, momentum: float = 0.9, nesterov: bool = True,
                 init_scores: list[float] | None = None):
        self.gates, self.searched, self.options = gates, list(searched), options
        params, decay = list(gates.parameters()), options.weight_decay
        if options.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=gate_lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                                             weight_decay=decay)
        elif decay:
            self.optimizer = torch.optim.AdamW(params, lr=gate_lr, weight_decay=decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=gate_lr, weight_decay=0.0)
        self.init_scores = init_scores   # given by the caller (not measured): part of the settings
        self.trajectory: list[list[float]] = [[0] + gates.scores.detach().cpu().tolist()]
        self._epoch_scores: list[torch.Tensor] = []

    def settings(self) -> dict:
        settings = {"budget": self.gates.budget, "searched": self.searched,
                    "latency_weight": self.gates.latency_weight,
                    "saved_time": [round(v, 12) for v in self.gates.saved_time.cpu().tolist()]}
        if self.options != LEGACY:   # a checkpoint of the first version's search resumes as before
            settings["options"] = self.options.settings()
        if self.init_scores is not None:
            settings["init_scores"] = [round(float(v), 12) for v in self.init_scores]
        return settings

    def optimizers(self) -> list:
        return [self.optimizer]

    def loss(self) -> torch.Tensor:
        return self.gates.latency_penalty()

    def before_step(self) -> None:
        grad = self.gates.scores.grad   # the scores are outside the DDP-wrapped network: average by hand
        if grad is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(grad)
            grad /= torch.distributed.get_world_size()
        if grad is not None and self.options.centre:
            grad -= grad.mean()

    def after_step(self) -> None:   # kept on the device: no synchronization per step
        if self.options.centre:
            with torch.no_grad():
                self.gates.scores -= self.gates.scores.mean()
        self._epoch_scores.append(self.gates.scores.detach().clone())

    def end_epoch(self, epoch: int) -> None:
        for scores in torch.stack(self._epoch_scores).cpu().tolist() if self._epoch_scores else []:
            self.trajectory.append([len(self.trajectory)] + scores)
        self._epoch_scores = []
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self._check_processes_agree(epoch)

    def _check_processes_agree(self, epoch: int) -> None:
        """Every process must hold rank 0's scores (they are trained outside DDP)."""
        reference = self.gates.scores.detach().clone()
        torch.distributed.broadcast(reference, 0)
        differs = torch.tensor([float(not torch.equal(reference, self.gates.scores.detach()))],
                               device=reference.device)
        torch.distributed.all_reduce(differs)
        if differs.item():
            raise RuntimeError(f"after epoch {epoch + 1} the processes hold different gate scores: their "
                               f"gradients were not averaged (a bug in ds.gating.GateSearch)")

    def state_dict(self) -> dict:
        return {"scores": self.gates.scores.detach().cpu(), "optimizer": self.optimizer.state_dict(),
                "trajectory": self.trajectory}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.gates.scores.copy_(state["scores"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.trajectory = [list(row) for row in state["trajectory"]]

    def trajectory_frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.trajectory, columns=["step"] + [f"block_{i}" for i in self.searched])
        frame["step"] = frame["step"].astype(int)
        return frame


# ---------------------------------------------------------------- results

@dataclass
class SearchResult:
    """Scores per searched block, the ranking and a pattern for every budget."""
    method: str
    num_switches: int
    searched: list[int]            # switch index of each scored block
    scores: list[float]            # higher = more worth keeping its activations
    trajectory: object = None      # pandas DataFrame: step, one column per block (gate search only)
    extra: dict = field(default_factory=dict)

    @property
    def ranking(self) -> list[int]:
        """Switch indices, most worth keeping first (ties: earlier block first)."""
        order = sorted(range(len(self.scores)), key=lambda i: (-self.scores[i], i))
        return [self.searched[i] for i in order]

    def pattern(self, budget: int) -> list[int]:
        """Keep (1) the top-`budget` blocks, every non-searched switch (stem, head); remove the rest."""
        if not 0 <= budget <= len(self.searched):
            raise ValueError(f"budget {budget} is outside 0..{len(self.searched)}")
        pattern = [1] * self.num_switches
        for index in self.ranking[budget:]:
            pattern[index] = 0
        return pattern

    @property
    def patterns(self) -> dict[str, list[int]]:
        return {f"{self.method}-k{k}": self.pattern(k) for k in range(len(self.searched) + 1)}

    def write(self, out_dir: str | Path) -> None:
        """`patterns.json` and, for the gate search, `gates.csv`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "patterns.json").write_text(json.dumps(self.patterns, indent=1) + "\n")
        if self.trajectory is not None:
            self.trajectory.to_csv(out / "gates.csv", index=False)


def search(model: nn.Module, train_loader, test_loader, budget: int, cfg: TrainConfig | None = None, *,
           out_dir=None, latency=None, latency_weight: float = 0.0, teacher=None, resume: bool = False,
           dist: ddp.DistInfo | None = None, meta=None, extra: dict | None = None,
           options: SearchOptions | None = None, init_scores=None) -> SearchResult:
    """Gate search: scores and weights trained jointly from a trained `model` (not modified).

    latency: saved time per searched block (list in search order, or dict keyed by switch index
    or block path; see `load_latency_table`), used with `latency_weight` > 0.
    options: how the scores are trained (`SearchOptions`; default `SearchOptions()`, `LEGACY` is
    the first version's search). init_scores: with options.init "sensitivity", the drops to start
    from (a `SearchResult` of `sensitivity_ranking`, or one number per searched block) instead of
    measuring them on the training images (`sensitivity_init`).
    Writes checkpoint.pt (the scores under "search"), metrics.csv, gates.csv and patterns.json to
    `out_dir` when given; `resume`, `dist`, `meta` and `extra` as in `ds.train.fit` (a resume with
    another budget, latency term or options is refused).
    """
    cfg = cfg or TrainConfig()
    options = options or SearchOptions()
    if cfg.ema_decay:
        raise ValueError("the gate search does not keep an EMA (its gates live outside the network): "
                         "set ema_decay=None (CLI: drop --ema-decay) for the search")
    if init_scores is not None and options.init != "sensitivity":
        raise ValueError(f"init_scores are the sensitivity drops to start from: they need options.init "
                         f"'sensitivity', not {options.init!r}")
    searched = searchable_switches(model)
    given = _given_drops(init_scores, searched)
    gated, gates = add_gates(model, budget, options.temperature)
    if latency is not None and latency_weight:
        gates.set_latency(latency_vector(latency, searched), latency_weight)
    device = dist.device if dist is not None else next(model.parameters()).device
    continuing = resume and out_dir is not None and (Path(out_dir) / CHECKPOINT).is_file()
    if options.init == "sensitivity" and not continuing:   # a resume takes the scores from its checkpoint
        drops = given if given is not None else sensitivity_init(
            model, train_loader, options.init_images, cfg.seed, device=device, amp=cfg.amp).scores
        with torch.no_grad():
            gates.scores.copy_(initial_scores(drops, options))
    hooks = GateSearch(gates.to(device), [s.index for s in searched], cfg.gate_lr, options,
                       momentum=cfg.momentum, nesterov=cfg.nesterov, init_scores=given)
    result = fit(gated, train_loader, test_loader, cfg, out_dir=out_dir, teacher=teacher, resume=resume,
                 dist=dist, meta=meta, hooks=hooks, extra=extra)
    search_result = SearchResult("searched", len(switches(model)), hooks.searched,
                                 gates.scores.detach().cpu().tolist(), hooks.trajectory_frame())
    search_result.extra["metrics"] = result.metrics
    if out_dir is not None and (dist is None or dist.is_main):
        search_result.write(out_dir)
    return search_result


def _given_drops(init_scores, searched) -> list[float] | None:
    if init_scores is None:
        return None
    if isinstance(init_scores, SearchResult):
        if init_scores.searched != [s.index for s in searched]:
            raise ValueError(f"init_scores rank blocks {init_scores.searched}, the model searches "
                             f"{[s.index for s in searched]}: measure them on this model")
        init_scores = init_scores.scores
    values = [float(v) for v in init_scores]
    if len(values) != len(searched) or not all(math.isfinite(v) for v in values):
        raise ValueError(f"init_scores need one finite number per searched block ({len(searched)}), "
                         f"got {len(values)}")
    return values


def initial_scores(drops, options: SearchOptions) -> torch.Tensor:
    """The scores a search starts from: zeros, or the drops standardized over the blocks (mean 0,
    standard deviation 1; all zeros when the drops are all equal) times `options.init_scale`."""
    drops = torch.as_tensor(drops, dtype=torch.float32).flatten()
    if options.init == "zeros":
        return torch.zeros_like(drops)
    spread = drops.std(unbiased=False)
    centred = drops - drops.mean()
    return options.init_scale * (centred / spread if spread > 0 else centred)


def sensitivity_init(model: nn.Module, train_loader, images: int, seed: int, *, device=None,
                     amp: str = "off") -> SearchResult:
    """`sensitivity_ranking` on `images` training images drawn with `seed` (un-augmented): what
    SearchOptions(init="sensitivity") starts the search from. Needs a ds.loaders.DeviceLoader."""
    if not hasattr(train_loader, "subset"):
        raise ValueError("the sensitivity initialization measures on training images held by a "
                         "ds.loaders.DeviceLoader (cifar10, cifar100, fake); with another loader pass "
                         "init_scores (CLI: use --gate-init zeros)")
    count = len(train_loader.labels)
    picked = np.sort(np.random.default_rng(seed).permutation(count)[:min(images, count)])
    return sensitivity_ranking(model, train_loader.subset(picked, train=False), device=device, amp=amp)


# ---------------------------------------------------------------- latency table

def latency_vector(table, searched) -> list[float]:
    """Saved time per searched block from a list (search order) or a dict keyed by switch index or path."""
    if isinstance(table, (list, tuple)):
        values = list(table)
    else:
        values = []
        for sw in searched:
            for key in (str(sw.index), sw.index, sw.path):
                if key in table:
                    values.append(table[key])
                    break
            else:
                raise ValueError(f"latency table has no entry for switch {sw.index} ({sw.path}); "
                                 f"keys are switch indices or block paths")
    if len(values) != len(searched):
        raise ValueError(f"latency table has {len(values)} entries, the model {len(searched)} searched blocks")
    return [float(v) for v in values]


def load_latency_table(path: str | Path) -> dict | list:
    """A JSON file: {"<switch index or block path>": saved_seconds, ...} or a list in search order.

    Measure it in the runtime the pattern will run on with `ds.bench.latency_table` or
    `python -m ds.bench ... --latency-table FILE`: for each searched block, time of the base
    network minus time with only that block merged.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latency table {path} does not exist; make one with python -m ds.bench --model NAME --latency-table FILE (ds.bench.latency_table)")
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"latency table {path} is not valid JSON ({error})") from None
    if not isinstance(table, (dict, list)):
        raise ValueError(f"latency table {path} holds a {type(table).__name__}: it must be an object "
                         f'{{"<switch index or block path>": seconds}} or a list in search order')
    return table


# ---------------------------------------------------------------- baselines

def random_ranking(model: nn.Module, seed: int = 0) -> SearchResult:
    """A uniformly random ranking of the searched blocks (its pattern(k) is a random k-subset)."""
    searched = searchable_switches(model)
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(len(searched), generator=g).tolist()
    return SearchResult("random", len(switches(model)), [s.index for s in searched], scores)


def random_patterns(model: nn.Module, budget: int, count: int, seed: int = 0) -> list[list[int]]:
    """`count` random patterns that keep exactly `budget` searched blocks."""
    return [random_ranking(model, seed + i).pattern(budget) for i in range(count)]


@torch.no_grad()
def sensitivity_ranking(model: nn.Module, loader, *, device=None, amp: str = "off") -> SearchResult:
    """Accuracy drop when one block's activations are removed (no finetuning); bigger drop ranks higher."""
    searched = searchable_switches(model)
    gated, gates = add_gates(model, budget=0)
    if device is not None:
        gated.to(device)
    n = gates.scores.numel()
    gates.forced = torch.ones(n)
    base = evaluate(gated, loader, device=device, amp=amp)["acc"]
    drops = []
    for i in range(n):
        forced = torch.ones(n)
        forced[i] = 0.0
        gates.forced = forced
        drops.append(base - evaluate(gated, loader, device=device, amp=amp)["acc"])
    result = SearchResult("sensitivity", len(switches(model)), [s.index for s in searched], drops)
    result.extra["base_acc"] = base
    return result
