"""The paper's activation switches: stem, one per block (all activations inside it), head."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .anatomy import Unit, parse_units
from .linear import LinearRun
from .paths import get_module


@dataclass(frozen=True)
class Switch:
    index: int
    kind: str  # "stem" | "block" | "head"
    path: str  # module path of the stem conv, the block, or the head conv
    block_type: str
    in_channels: int
    out_channels: int
    stride: int
    kernel_size: int  # receptive size of the whole unit (the depthwise kernel for a block)
    expansion: float  # widest inner channel count / in_channels
    skip: bool
    act_paths: tuple[str, ...]  # the activation modules this switch turns off
    switchable: bool
    reason: str  # why it is not switchable ("" when it is)


def unit_switchable(unit: Unit) -> tuple[bool, str]:
    if unit.kind != "block":
        return True, ""
    if unit.is_linear_run:
        return False, "already linear (removed by ds.apply_pattern)"
    if unit.is_placeholder:
        return False, "folded into the linear run before it by ds.apply_pattern"
    if unit.blocker:
        return False, unit.blocker
    return True, ""


def switches(model: nn.Module) -> list[Switch]:
    """The model's activation switches in network order, indexed as the paper indexes MobileNetV2.

    For timm's mobilenetv2_140: 0 = stem, 1 = the expansion-1 block, 2..17 = the inverted-residual
    blocks, 18 = head; 19 switches. A block that cannot become linear (squeeze-excite, ...) is
    listed with switchable=False and the reason.
    """
    result = []
    for index, unit in enumerate(parse_units(model)):
        convs = _unit_convs(model, unit)
        switchable, reason = unit_switchable(unit)
        result.append(Switch(
            index=index, kind=unit.kind, path=unit.path, block_type=unit.module_type,
            in_channels=convs[0].in_channels if convs else 0,
            out_channels=convs[-1].out_channels if convs else 0,
            stride=_total_stride(convs), kernel_size=_receptive_size(convs), expansion=_expansion(convs),
            skip=unit.skip, act_paths=unit.act_paths, switchable=switchable, reason=reason,
        ))
    return result


def _unit_convs(model: nn.Module, unit: Unit) -> list[nn.Conv2d]:
    if unit.is_linear_run:
        run = get_module(model, unit.path)
        assert isinstance(run, LinearRun)
        return [conv for stage in run.stages for conv in stage.convs]
    return [get_module(model, op.conv) for op in unit.ops]


def _total_stride(convs: list[nn.Conv2d]) -> int:
    stride = 1
    for conv in convs:
        stride *= conv.stride[0]
    return stride


def _expansion(convs: list[nn.Conv2d]) -> float:
    """Widest inner channel count over the input channels (1 for a single conv or none)."""
    if len(convs) < 2:
        return 1.0
    return max(conv.out_channels for conv in convs[:-1]) / convs[0].in_channels


def _receptive_size(convs: list[nn.Conv2d]) -> int:
    """Kernel size of the single conv equivalent to the chain: k1 + s1 (k2 - 1) + ..."""
    size, stride = 1, 1
    for conv in convs:
        size += stride * (conv.kernel_size[0] - 1)
        stride *= conv.stride[0]
    return size
