"""Remove activations by pattern and put the now-linear blocks in merge-ready form."""
from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from .anatomy import Unit, parse_units
from .errors import PatternError
from .linear import LinearRun, LinearStage
from .meta import info, set_info
from .paths import get_module, set_module
from .patterns import resolve_pattern
from .switches import unit_switchable


def apply_pattern(model: nn.Module, pattern, final_act: bool = True) -> nn.Module:
    """A copy of `model` with the activations that `pattern` switches off removed.

    `pattern` gives one 0/1 entry per switch of `ds.switches(model)` (1 keeps, 0 removes): a 1-D
    list, tuple, numpy array or tensor (bools allowed), an inline string "1,0,1,..." or "101...",
    a JSON file (FILE or FILE:NAME), or a name in `ds.PATTERNS[<model name>]`; see
    `ds.patterns.resolve_pattern`. A removed stem or head activation becomes an identity. A removed
    block becomes a `LinearRun` in merge-ready form (its zero padding moved to its first conv),
    so that the network one finetunes is exactly the one `ds.merge` deploys. With `final_act`
    (the paper's setting) each removed block is its own run, followed by the block's activation
    type after its residual add; without it, consecutive removed blocks form one run with no
    activation at all. The given model is not modified.
    """
    units = parse_units(model)
    bits = resolve_pattern(model, pattern, len(units))
    for index, (unit, bit) in enumerate(zip(units, bits)):
        switchable, reason = unit_switchable(unit)
        if bit == 0 and not switchable:
            raise PatternError(
                f"pattern removes switch {index} ('{unit.path}', {unit.module_type}) but it is not "
                f"switchable: {reason}. Set position {index} of the pattern to 1."
            )
    shrunk = copy.deepcopy(model)
    for unit, bit in zip(units, bits):
        if bit == 0 and unit.kind != "block":
            for act in unit.act_paths:
                set_module(shrunk, act, nn.Identity())
    for run in _removed_runs(units, bits, final_act):
        linear_run = _build_linear_run(shrunk, run, final_act)
        linear_run.train(model.training)
        set_module(shrunk, run[0].path, linear_run)
        for unit in run[1:]:
            set_module(shrunk, unit.path, nn.Identity())
    return set_info(shrunk, info(model), pattern=tuple(bits), final_act=final_act)


def _removed_runs(units: list[Unit], bits: list[int], final_act: bool) -> list[list[Unit]]:
    """Removed blocks grouped into linear runs: each alone, or maximal consecutive groups."""
    runs: list[list[Unit]] = []
    previous_removed = False
    for unit, bit in zip(units, bits):
        removed = unit.kind == "block" and bit == 0
        if removed and previous_removed and not final_act:
            runs[-1].append(unit)
        elif removed:
            runs.append([unit])
        previous_removed = removed
    return runs


def hoisted_padding(convs: Sequence[nn.Conv2d]) -> int:
    """Zero padding at the input of a chain of convs equivalent to each conv's own padding.

    A conv after total stride s sees its padding p scaled to s * p input pixels.
    """
    total, stride = 0, 1
    for conv in convs:
        total += conv.padding[0] * stride
        stride *= conv.stride[0]
    return total


def _build_linear_run(model: nn.Module, run: list[Unit], final_act: bool) -> LinearRun:
    convs_per_unit = [[get_module(model, op.conv) for op in unit.ops] for unit in run]
    run_padding = hoisted_padding([conv for convs in convs_per_unit for conv in convs])
    stages = []
    for index, (unit, convs) in enumerate(zip(run, convs_per_unit)):
        own_paddings = tuple(conv.padding[0] for conv in convs)
        skip_shift = None
        if unit.skip:
            applied = run_padding if index == 0 else 0
            skip_shift = applied - hoisted_padding(convs)
        for position, conv in enumerate(convs):
            padding = run_padding if index == 0 and position == 0 else 0
            conv.padding = (padding, padding)
        stages.append(LinearStage(
            convs, [_plain_batchnorm(get_module(model, op.norm)) for op in unit.ops], own_paddings,
            skip_shift=skip_shift,
            drop_path=get_module(model, unit.drop_path) if unit.drop_path else None,
            mergeable=not _is_depthwise_separable(convs),
        ))
    act = None
    if final_act:
        acts = [path for unit in run for path in unit.act_paths]
        act = copy.deepcopy(get_module(model, acts[-1])) if acts else None
    return LinearRun(stages, act, sources=tuple(unit.path for unit in run))


def _is_depthwise_separable(convs: Sequence[nn.Conv2d]) -> bool:
    """Expansion-1 block: a depthwise conv first, then a pointwise one."""
    first = convs[0]
    return len(convs) == 2 and first.groups > 1 and first.groups == first.in_channels == first.out_channels


def _plain_batchnorm(norm: nn.BatchNorm2d) -> nn.BatchNorm2d:
    """A plain BatchNorm2d with the same state (timm's BatchNormAct2d carries its activation)."""
    plain = nn.BatchNorm2d(norm.num_features, eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                           track_running_stats=True, device=norm.running_mean.device,
                           dtype=norm.running_mean.dtype)
    plain.load_state_dict(norm.state_dict())
    return plain
