"""Read a backbone as the paper does: a stem, a sequence of blocks, a head.

Each part is a `Unit`: the convolutions it runs in order, the BatchNorm after each one, the
activation after each BatchNorm, and whether a skip connection adds the unit's input. Every other
module of ds (switches, shrinking, merging) works from units, so a new backbone family needs only
a reader here.

Known layouts: timm's EfficientNet class (mobilenetv2_*, efficientnet_lite*, mnasnet_*, ...) and
torchvision's MobileNetV2.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from timm.models.efficientnet import EfficientNet
from torch import nn
from torchvision.models import MobileNetV2
from torchvision.models.mobilenetv2 import InvertedResidual

from .errors import UnsupportedModelError
from .linear import LinearRun
from .paths import get_module

SUPPORTED = (
    "timm EfficientNet-family models (mobilenetv2_035..140, mobilenetv2_110d/120d, "
    "efficientnet_lite0..4, mnasnet_100, ...) and torchvision's mobilenet_v2"
)


@dataclass(frozen=True)
class ConvNorm:
    """One convolution, the BatchNorm after it and the activation after that (None if none)."""

    conv: str
    norm: str
    act: str | None


@dataclass(frozen=True)
class Unit:
    """A stem, block or head: its conv/norm/act chain in execution order."""

    kind: str  # "stem" | "block" | "head"
    path: str
    module_type: str
    ops: tuple[ConvNorm, ...]
    skip: bool = False
    drop_path: str | None = None
    blocker: str = ""  # why this unit cannot become linear ("" when it can)

    @property
    def act_paths(self) -> tuple[str, ...]:
        return tuple(op.act for op in self.ops if op.act is not None)

    @property
    def is_placeholder(self) -> bool:
        """An nn.Identity left where a block was folded into the linear run before it."""
        return self.module_type == "Identity"

    @property
    def is_linear_run(self) -> bool:
        return self.module_type == LinearRun.__name__


def parse_units(model: nn.Module) -> list[Unit]:
    """The model's stem, blocks and head in network order."""
    for matches, reader in _READERS:
        if matches(model):
            return [_with_blocker(model, unit) for unit in reader(model)]
    first = next(iter(model.named_children()), ("", model))
    raise UnsupportedModelError(
        f"ds does not understand the model {type(model).__name__}: its first module "
        f"'{first[0]}' ({type(first[1]).__name__}) is not part of a layout ds can read. "
        f"Supported: {SUPPORTED}. To add a family, write a reader in ds/anatomy.py."
    )


# --- timm EfficientNet family -------------------------------------------------------------

def _is_timm_efficientnet(model: nn.Module) -> bool:
    return isinstance(model, EfficientNet)


def _timm_act(model: nn.Module, norm_path: str) -> str | None:
    act = getattr(get_module(model, norm_path), "act", None)
    return None if act is None or isinstance(act, nn.Identity) else f"{norm_path}.act"


def _timm_ops(model: nn.Module, prefix: str, pairs: list[tuple[str, str]]) -> tuple[ConvNorm, ...]:
    join = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
    return tuple(ConvNorm(join(c), join(n), _timm_act(model, join(n))) for c, n in pairs)


# The conv/norm attribute pairs of timm's linearizable block types, in execution order.
_TIMM_BLOCK_OPS = {
    "DepthwiseSeparableConv": [("conv_dw", "bn1"), ("conv_pw", "bn2")],
    "InvertedResidual": [("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")],
    "EdgeResidual": [("conv_exp", "bn1"), ("conv_pwl", "bn2")],
}


def _timm_block_blocker(block: nn.Module) -> str:
    if not isinstance(getattr(block, "se", nn.Identity()), nn.Identity):
        return "squeeze-excite gating multiplies by an input-dependent scale, which is not linear"
    if not isinstance(getattr(block, "aa", nn.Identity()), nn.Identity):
        return "anti-aliased downsampling (aa layer) is not supported"
    if getattr(block, "conv_s2d", None) is not None:
        return "space-to-depth input conv (conv_s2d) is not supported"
    return ""


def _read_timm_efficientnet(model: nn.Module) -> list[Unit]:
    units = [Unit("stem", "conv_stem", "stem", _timm_ops(model, "", [("conv_stem", "bn1")]))]
    for stage_index, stage in enumerate(model.blocks):
        for block_index, block in enumerate(stage):
            path = f"blocks.{stage_index}.{block_index}"
            name = type(block).__name__
            if isinstance(block, (LinearRun, nn.Identity)):
                units.append(Unit("block", path, name, ()))
            elif name in _TIMM_BLOCK_OPS:
                units.append(Unit(
                    "block", path, name, _timm_ops(model, path, _TIMM_BLOCK_OPS[name]),
                    skip=bool(block.has_skip), drop_path=f"{path}.drop_path",
                    blocker=_timm_block_blocker(block),
                ))
            else:
                raise UnsupportedModelError(
                    f"ds does not understand module '{path}' ({name}) of {type(model).__name__}: "
                    f"known block types are {', '.join(_TIMM_BLOCK_OPS)}. "
                    f"Supported models: {SUPPORTED}."
                )
    if isinstance(getattr(model, "conv_head", None), nn.Conv2d):
        units.append(Unit("head", "conv_head", "head", _timm_ops(model, "", [("conv_head", "bn2")])))
    return units


# --- torchvision MobileNetV2 ----------------------------------------------------------------

def _is_torchvision_mobilenet_v2(model: nn.Module) -> bool:
    return isinstance(model, MobileNetV2)


def _conv_norm_act(model: nn.Module, path: str) -> ConvNorm:
    """torchvision's Conv2dNormActivation: a Sequential of conv, norm and (optionally) act."""
    layers = get_module(model, path)
    act = f"{path}.2" if len(layers) > 2 and not isinstance(layers[2], nn.Identity) else None
    return ConvNorm(f"{path}.0", f"{path}.1", act)


def _torchvision_ops(model: nn.Module, path: str) -> tuple[ConvNorm, ...]:
    """Conv/norm/act triples of a block body made of Conv2dNormActivation and bare conv, norm."""
    ops, pending_conv = [], None
    for name, child in get_module(model, path).named_children():
        child_path = f"{path}.{name}"
        if isinstance(child, nn.Sequential):
            ops.append(_conv_norm_act(model, child_path))
        elif isinstance(child, nn.Conv2d):
            pending_conv = child_path
        elif isinstance(child, nn.BatchNorm2d) and pending_conv is not None:
            ops.append(ConvNorm(pending_conv, child_path, None))
            pending_conv = None
        else:
            raise UnsupportedModelError(
                f"ds does not understand module '{child_path}' ({type(child).__name__}) "
                f"in torchvision's MobileNetV2; expected convs, BatchNorms and activations."
            )
    return tuple(ops)


def _read_torchvision_mobilenet_v2(model: nn.Module) -> list[Unit]:
    last = len(model.features) - 1
    units = []
    for index, block in enumerate(model.features):
        path = f"features.{index}"
        if index == 0:
            units.append(Unit("stem", path, "stem", (_conv_norm_act(model, path),)))
        elif index == last:
            units.append(Unit("head", path, "head", (_conv_norm_act(model, path),)))
        elif isinstance(block, (LinearRun, nn.Identity)):
            units.append(Unit("block", path, type(block).__name__, ()))
        elif isinstance(block, InvertedResidual):
            units.append(Unit("block", path, "InvertedResidual",
                              _torchvision_ops(model, f"{path}.conv"), skip=bool(block.use_res_connect)))
        else:
            raise UnsupportedModelError(
                f"ds does not understand module '{path}' ({type(block).__name__}) in torchvision's "
                f"MobileNetV2; expected InvertedResidual blocks between the stem and the head."
            )
    return units


_READERS = [
    (_is_timm_efficientnet, _read_timm_efficientnet),
    (_is_torchvision_mobilenet_v2, _read_torchvision_mobilenet_v2),
]


# --- checks that make a unit linearizable ---------------------------------------------------

def _conv_blocker(conv: nn.Module, path: str) -> str:
    if type(conv) is not nn.Conv2d:
        return f"'{path}' is a {type(conv).__name__}, not a plain nn.Conv2d (e.g. dynamic 'same' padding)"
    kh, kw = conv.kernel_size
    ph, pw = conv.padding if isinstance(conv.padding, tuple) else (None, None)
    if kh != kw or ph != pw or ph is None:
        return f"'{path}' has a non-square kernel or asymmetric padding"
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros" or conv.stride[0] != conv.stride[1]:
        return f"'{path}' uses dilation, non-zero padding or unequal strides"
    return ""


def _norm_blocker(norm: nn.Module, path: str) -> str:
    if not isinstance(norm, nn.BatchNorm2d) or not norm.track_running_stats:
        return f"'{path}' is not a BatchNorm2d with running statistics"
    if not isinstance(getattr(norm, "drop", nn.Identity()), nn.Identity):
        return f"'{path}' applies a dropout-like layer between norm and activation"
    return ""


def _with_blocker(model: nn.Module, unit: Unit) -> Unit:
    """The unit with `blocker` naming the first part that keeps it from becoming a linear map."""
    if unit.blocker or unit.kind != "block":
        return unit
    for op in unit.ops:
        reason = (_conv_blocker(get_module(model, op.conv), op.conv)
                  or _norm_blocker(get_module(model, op.norm), op.norm))
        if reason:
            return replace(unit, blocker=reason)
    return unit
