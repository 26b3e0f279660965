"""Annealed and progressive removal: the removed activations fade out during finetuning.

Removing the activations of a trained network at once (`ds.apply_pattern`, then finetuning) starts
the finetune from a network near chance. Here each removed activation is computed as
`x + g (act(x) - x)`, with g going from 1 (the trained network's activation) to 0 (identity)
linearly in the training step between the first and the last step of its window, and the
activation `ds.apply_pattern` puts after a removed block (`final_act`, the paper's setting) is
blended in as `x + (1 - g) (act(x) - x)`. The network is `ds.apply_pattern`'s output throughout,
in merge-ready form (each removed block's zero padding hoisted onto its first conv), so at g = 0
it is exactly the network `ds.merge` deploys, borders included. (Annealing the original blocks and
moving the padding afterwards changes every border pixel, which at 8x8 and 4x4 feature maps is
most of the map.)

Where the blended activations sit while g > 0:
- a removed block (a `LinearStage` of a `LinearRun`) becomes an `AnnealedStage`: the same convs
  and norms, with the original block's own activation type after each norm that had one;
- that run's `final_act` becomes a `Blend` fading in (with `final_act=False` there is none);
- a removed stem or head activation (an `nn.Identity` after `ds.apply_pattern`) becomes a `Blend`
  fading out.
None of them has a parameter or a persistent buffer: the state_dict is the shrunk network's
throughout, so every checkpoint holds the plain shrunk network. Once a switch's g reaches 0 its
modules are replaced by the ones `ds.apply_pattern` made (the same convs and norms, so the
optimizer keeps its parameters), and after the last window no annealing module is left.

Progressive removal gives each removed switch its own window: `removal_windows` splits the anneal
window into consecutive equal windows, one per group of `group` switches taken in `order`
("network": input to output; "reverse": output to input; or an explicit list of the removed
switch indices, e.g. least sensitive first from `ds.gating.sensitivity_ranking`).

The anneal's only state is its position, the number of optimizer steps done: `fit` sets it
before every step (`RemovalAnneal.set_step`) and saves it in each checkpoint as plain data.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ds.anatomy import parse_units
from ds.errors import MergeError
from ds.linear import LinearStage
from ds.meta import info
from ds.models import create_model
from ds.paths import get_module, set_module

ORDERS = ("network", "reverse")


class Blend(nn.Module):
    """`x + weight * (act(x) - x)`: the activation at weight 1, the identity at weight 0."""

    def __init__(self, act: nn.Module, weight: float, device=None):
        super().__init__()
        self.act = _out_of_place(act)
        self.register_buffer("weight", torch.tensor(float(weight), device=device), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.weight * (self.act(x) - x)


class AnnealedStage(LinearStage):
    """A removed block's stage with its activations blended back in (`acts[i]` after norm i)."""

    def __init__(self, stage: LinearStage, acts: list[nn.Module | None], gate: float):
        super().__init__(list(stage.convs), list(stage.norms), stage.own_paddings,
                         stage.skip_shift if stage.has_skip else None, stage.drop_path, stage.mergeable)
        if len(acts) != len(stage.convs):
            raise ValueError(f"an AnnealedStage needs one activation (or None) per conv: {len(stage.convs)} "
                             f"convs, {len(acts)} activations")
        device = stage.convs[0].weight.device
        self.acts = nn.ModuleList([Blend(act, gate, device) if act is not None else nn.Identity() for act in acts])
        self.train(stage.training)

    def after_norm(self, index: int, y: Tensor) -> Tensor:
        return self.acts[index](y)

    def set_gate(self, gate: float) -> None:
        for act in self.acts:
            if isinstance(act, Blend):
                act.weight.fill_(gate)

    def affines(self):
        gates = sorted({round(float(a.weight), 4) for a in self.acts if isinstance(a, Blend)})
        raise MergeError(f"this network is being annealed (removed activations still blended in with g = "
                         f"{gates}): it is not linear yet; merge it once the anneal has ended")


def is_annealing(module: nn.Module) -> bool:
    """Whether any annealing module (Blend, AnnealedStage) is left in `module`."""
    return any(isinstance(m, (Blend, AnnealedStage)) for m in module.modules())


def gate(step: int, window: tuple[int, int]) -> float:
    """g at `step` (optimizer steps done) for a window (start, end): 1 up to start, 0 from end on."""
    start, end = window
    return min(1.0, max(0.0, (end - step) / (end - start)))


class RemovalAnneal:
    """Fades the removed activations of a network from `ds.apply_pattern` out, each removed switch
    over its own window of optimizer steps {switch index: (start, end)}; `set_step` moves it."""

    def __init__(self, model: nn.Module, windows: dict[int, tuple[int, int]]):
        removed = removed_switches(model)
        unknown = sorted(set(windows) - set(removed))
        if unknown:
            raise ValueError(f"annealing windows for switches {unknown}, which the network does not remove "
                             f"(removed: {removed})")
        for switch, (start, end) in windows.items():
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end):
                raise ValueError(f"the annealing window of switch {switch} is {(start, end)}: it needs integer "
                                 f"steps 0 <= start < end")
        self.model = model
        self.windows = dict(sorted(windows.items()))
        self.step: int | None = None
        self._activations = _original_activations(model)
        self._undo: dict[int, list] = {}   # switch -> [(parent, attribute or index, module before), ...]
        self._blends: dict[int, list[tuple[nn.Module, bool]]] = {}   # switch -> [(module, fades in)]

    def gates(self, step: int | None = None) -> dict[int, float]:
        step = self.step if step is None else step
        return {switch: gate(step, window) for switch, window in self.windows.items()}

    @property
    def done(self) -> bool:
        """Every removed activation is gone (g = 0) and no annealing module is left."""
        return self.step is not None and not self._undo and all(g == 0 for g in self.gates().values())

    def set_step(self, step: int) -> None:
        """Put the network at `step`: install, update or strip each switch's blended activations."""
        with torch.no_grad():
            for switch, g in self.gates(step).items():
                if g == 0:
                    self._strip(switch)
                    continue
                if switch not in self._undo:
                    self._install(switch, g)
                for module, fades_in in self._blends[switch]:
                    if isinstance(module, AnnealedStage):
                        module.set_gate(g)
                    else:
                        module.weight.fill_(1 - g if fades_in else g)
        self.step = step

    def state(self) -> dict:
        """Plain data for a checkpoint: the position and the windows."""
        return {"step": int(self.step or 0), "windows": [[s, a, b] for s, (a, b) in self.windows.items()]}

    # -------------------------------------------------------------- installing and stripping

    def _install(self, switch: int, g: float) -> None:
        kind, where = self._activations[switch]
        undo, blends = [], []
        device = next(self.model.parameters()).device
        if kind == "activation":   # a removed stem or head activation: [(path, act)]
            for path, act in where:
                before = get_module(self.model, path)
                blend = Blend(act, g, device).train(before.training)
                parent_path, _, name = path.rpartition(".")
                undo.append((get_module(self.model, parent_path), name, before))
                set_module(self.model, path, blend)
                blends.append((blend, False))
        else:                      # a removed block: (run path, stage index, [act or None per conv])
            run_path, index, acts = where
            run = get_module(self.model, run_path)
            stage = run.stages[index]
            annealed = AnnealedStage(stage, acts, g)
            undo.append((run.stages, index, stage))
            run.stages[index] = annealed
            blends.append((annealed, False))
            if index == len(run.stages) - 1 and not isinstance(run.final_act, nn.Identity):
                before = run.final_act
                blend = Blend(before, 1 - g, device).train(before.training)
                undo.append((run, "final_act", before))
                run.final_act = blend
                blends.append((blend, True))
        self._undo[switch], self._blends[switch] = undo, blends

    def _strip(self, switch: int) -> None:
        for parent, key, before in reversed(self._undo.pop(switch, [])):
            # `before` is what ds.apply_pattern made; an AnnealedStage shares its convs and norms
            if isinstance(parent, nn.ModuleList):
                before.train(parent[key].training)
                parent[key] = before
            else:
                before.train(getattr(parent, key).training)
                setattr(parent, key, before)
        self._blends.pop(switch, None)


# ------------------------------------------------------------------ what to anneal, and when

def removed_switches(model: nn.Module, base_units=None) -> list[int]:
    """Switch indices whose activations `ds.apply_pattern` removed (a stem or head without one left out)."""
    pattern = info(model).pattern
    if pattern is None:
        return []
    units = base_units if base_units is not None else _base_units(model)[1]
    return [i for i, bit in enumerate(pattern) if bit == 0 and (units[i].kind == "block" or units[i].act_paths)]


def removal_order(removed: list[int], order: str) -> list[int]:
    """The removed switches in the order they are removed: "network", "reverse" or "i,j,..." (each once)."""
    if order == "network":
        return sorted(removed)
    if order == "reverse":
        return sorted(removed, reverse=True)
    listed = parse_order(order)
    missing, extra = sorted(set(removed) - set(listed)), sorted(set(listed) - set(removed))
    if missing or extra or len(listed) != len(set(listed)):
        raise ValueError(f"removal_order {order!r} must list each removed switch once ({sorted(removed)}): "
                         f"missing {missing}, not removed {extra}, "
                         f"repeated {sorted({s for s in listed if listed.count(s) > 1})}")
    return listed


def parse_order(order: str) -> list[int]:
    """An explicit removal order "3,2,5" as a list of switch indices (ValueError if it is not one)."""
    try:
        listed = [int(part) for part in order.split(",")]
    except ValueError:
        raise ValueError(f"removal_order {order!r} is not {' or '.join(ORDERS)} or a comma-separated list of "
                         f"switch indices such as 2,3,0") from None
    if any(s < 0 for s in listed):
        raise ValueError(f"removal_order {order!r} has a negative switch index")
    return listed


def removal_windows(model: nn.Module, start_epoch: float, end_epoch: float, steps_per_epoch: int,
                    group: int = 0, order: str = "network") -> dict[int, tuple[int, int]]:
    """{switch: (start step, end step)}: every removed switch over the whole window (group 0), or
    groups of `group` switches in `order`, one after the other, each over an equal share of it."""
    removed = removed_switches(model)
    if not removed:
        raise ValueError(f"annealing needs a network with removed activations (ds.apply_pattern's output); "
                         f"this one's pattern is {info(model).pattern}")
    ordered = removal_order(removed, order)
    groups = [ordered] if not group else [ordered[i:i + group] for i in range(0, len(ordered), group)]
    first, last = start_epoch * steps_per_epoch, end_epoch * steps_per_epoch
    width = (last - first) / len(groups)
    windows = {}
    for j, switches_of_group in enumerate(groups):
        start, end = round(first + j * width), round(first + (j + 1) * width)
        if end <= start:
            raise ValueError(f"the anneal window (epochs {start_epoch} to {end_epoch}, {steps_per_epoch} steps per "
                             f"epoch) gives each of {len(groups)} groups less than one step: widen it or remove "
                             f"more blocks per group")
        windows.update({switch: (start, end) for switch in switches_of_group})
    return windows


def from_config(model: nn.Module, cfg, steps_per_epoch: int) -> RemovalAnneal | None:
    """The anneal a TrainConfig asks for (None without `anneal_end`)."""
    if not cfg.anneal_end:
        return None
    return RemovalAnneal(model, removal_windows(model, cfg.anneal_start, cfg.anneal_end, steps_per_epoch,
                                                cfg.progressive, cfg.removal_order))


# ------------------------------------------------------------------ the activations removal took away

def _base_units(model: nn.Module):
    """The units of the unshrunk network `model` was made from (rebuilt from ds.meta.info, no weights)."""
    record = info(model)
    if None in (record.backbone, record.num_classes, record.input_size):
        raise ValueError(f"annealing rebuilds the unshrunk network to know the removed activations, which needs "
                         f"ds.meta.info(model) to name backbone, num_classes and input_size (it is {record}); "
                         f"build the network with ds.create_model or ds.train.build_model")
    base = create_model(record.backbone, num_classes=record.num_classes, input_size=record.input_size)
    return base, parse_units(base)


def _original_activations(model: nn.Module) -> dict:
    """{switch: ("activation", [(path, act)]) for a stem or head, or ("block", (run path, stage index,
    [act or None per conv]))}, each act a copy of the unshrunk network's."""
    base, base_units = _base_units(model)
    removed = set(removed_switches(model, base_units))
    found = {}
    for index, unit in enumerate(base_units):
        if index in removed and unit.kind != "block":
            found[index] = ("activation", [(path, copy.deepcopy(get_module(base, path))) for path in unit.act_paths])
    for index, unit in enumerate(parse_units(model)):
        if not unit.is_linear_run:
            continue
        run = get_module(model, unit.path)
        for offset, stage in enumerate(run.stages):
            switch = index + offset
            ops = base_units[switch].ops
            if switch not in removed or len(ops) != len(stage.convs):
                raise ValueError(f"the linear run at '{unit.path}' does not match the unshrunk "
                                 f"{info(model).backbone} (stage {offset}, switch {switch})")
            acts = [copy.deepcopy(get_module(base, op.act)) if op.act else None for op in ops]
            found[switch] = ("block", (unit.path, offset, acts))
    return found


def _out_of_place(act: nn.Module) -> nn.Module:
    """A copy of `act` that does not overwrite its input (Blend needs x after act(x))."""
    act = copy.deepcopy(act)
    for module in act.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return act
