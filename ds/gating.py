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

Baselines with the same result type: `random_ranking`, `random_patterns` and
`sensitivity_ranking` (accuracy drop when one block's activations are removed, no finetuning).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from ds import ddp
from ds.paths import get_module, set_module
from ds.switches import switches
from ds.train import FitHooks, TrainConfig, evaluate, fit


class GateScores(nn.Module):
    """Scores of the searched blocks and the hard top-k gates they produce."""

    def __init__(self, num_blocks: int, budget: int):
        super().__init__()
        if not 0 <= budget <= num_blocks:
            raise ValueError(f"search budget {budget} is outside 0..{num_blocks}: the model has "
                             f"{num_blocks} switchable blocks; choose a budget in that range")
        self.budget = budget
        self.scores = nn.Parameter(torch.zeros(num_blocks))
        self.register_buffer("saved_time", torch.zeros(num_blocks))   # latency term, normalized
        self.latency_weight = 0.0
        self.forced: torch.Tensor | None = None   # fixed 0/1 gates (sensitivity analysis), no gradient

    def hard_mask(self) -> torch.Tensor:
        """1 for the `budget` highest scores (ties go to the earlier block), else 0."""
        order = torch.argsort(self.scores.detach(), descending=True, stable=True)
        mask = torch.zeros_like(self.scores)
        mask[order[: self.budget]] = 1.0
        return mask

    def gates(self) -> torch.Tensor:
        if self.forced is not None:
            return self.forced.to(self.scores.device)
        soft = torch.sigmoid(self.scores)
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
        return self.latency_weight * (self.saved_time * torch.sigmoid(self.scores)).sum()


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


def add_gates(model: nn.Module, budget: int) -> tuple[nn.Module, GateScores]:
    """(a copy of `model` whose searchable blocks' activations are gated, the gate scores).

    Score i belongs to `searchable_switches(model)[i]`; the copy's parameters and state_dict keys
    are those of `model`."""
    searched = searchable_switches(model)
    gated = copy.deepcopy(model)
    gates = GateScores(len(searched), budget)
    for i, sw in enumerate(searched):
        for path in sw.act_paths:
            set_module(gated, path, GatedActivation(get_module(gated, path), gates, i))
    return gated, gates


class GateSearch(FitHooks):
    """What the gate search adds to `ds.train.fit`: the scores' Adam, the latency term, the score
    trajectory (one row per step), and their state under the checkpoint key "search"."""
    key = "search"

    def __init__(self, gates: GateScores, searched: list[int], gate_lr: float):
        self.gates, self.searched = gates, list(searched)
        self.optimizer = torch.optim.Adam(gates.parameters(), lr=gate_lr, weight_decay=0.0)
        self.trajectory: list[list[float]] = [[0] + gates.scores.detach().cpu().tolist()]
        self._epoch_scores: list[torch.Tensor] = []

    def settings(self) -> dict:
        return {"budget": self.gates.budget, "searched": self.searched,
                "latency_weight": self.gates.latency_weight,
                "saved_time": [round(v, 12) for v in self.gates.saved_time.cpu().tolist()]}

    def optimizers(self) -> list:
        return [self.optimizer]

    def loss(self) -> torch.Tensor:
        return self.gates.latency_penalty()

    def before_step(self) -> None:
        grad = self.gates.scores.grad   # the scores are outside the DDP-wrapped network: average by hand
        if grad is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(grad)
            grad /= torch.distributed.get_world_size()

    def after_step(self) -> None:   # kept on the device: no synchronization per step
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
           dist: ddp.DistInfo | None = None, meta=None, extra: dict | None = None) -> SearchResult:
    """Gate search: scores and weights trained jointly from a trained `model` (not modified).

    latency: saved time per searched block (list in search order, or dict keyed by switch index
    or block path; see `load_latency_table`), used with `latency_weight` > 0.
    Writes checkpoint.pt (the scores under "search"), metrics.csv, gates.csv and patterns.json to
    `out_dir` when given; `resume`, `dist`, `meta` and `extra` as in `ds.train.fit` (a resume with
    another budget or latency term is refused).
    """
    cfg = cfg or TrainConfig()
    if cfg.ema_decay:
        raise ValueError("the gate search does not keep an EMA (its gates live outside the network): "
                         "set ema_decay=None (CLI: drop --ema-decay) for the search")
    searched = searchable_switches(model)
    gated, gates = add_gates(model, budget)
    if latency is not None and latency_weight:
        gates.set_latency(latency_vector(latency, searched), latency_weight)
    device = dist.device if dist is not None else next(model.parameters()).device
    hooks = GateSearch(gates.to(device), [s.index for s in searched], cfg.gate_lr)
    result = fit(gated, train_loader, test_loader, cfg, out_dir=out_dir, teacher=teacher, resume=resume,
                 dist=dist, meta=meta, hooks=hooks, extra=extra)
    search_result = SearchResult("searched", len(switches(model)), hooks.searched,
                                 gates.scores.detach().cpu().tolist(), hooks.trajectory_frame())
    search_result.extra["metrics"] = result.metrics
    if out_dir is not None and (dist is None or dist.is_main):
        search_result.write(out_dir)
    return search_result


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
