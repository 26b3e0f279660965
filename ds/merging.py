"""Deploy a shrunk network: fold every BatchNorm, merge each linear run, check the result."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .anatomy import parse_units
from .cost import input_shape
from .errors import MergeError
from .kernels import fold_batchnorm
from .linear import LinearRun
from .meta import info, set_info
from .paths import get_module, set_module

MERGE_TOLERANCE = 1e-4  # relative error allowed in float32


def merge(model: nn.Module, *, merge_depthwise_separable: bool = False, verify: bool = True,
          input_size=None, tolerance: float = MERGE_TOLERANCE) -> nn.Module:
    """A new eval-mode network equal to `model` (in eval mode) with BN folded and runs merged.

    Every BatchNorm is folded into the conv before it. Every `LinearRun` made by
    `ds.apply_pattern` becomes one dense conv (kernel and stride of its spatial convs, skip folded
    in), except that an expansion-1 depthwise-separable block stays a depthwise + pointwise pair
    unless `merge_depthwise_separable` is set: as one dense conv it costs about 6.5x its MACs.

    With `verify` (the default) both networks run on random inputs of `input_size` (default: the
    size the model was created for, else 224) and a float32 relative error above `tolerance`
    raises MergeError; the errors found are recorded on the result (`ds.meta.info(merged)`'s
    `merge_max_abs` and `merge_max_rel`). The given model is not modified.
    """
    merged = copy.deepcopy(model).eval()
    for unit in parse_units(merged):
        module = get_module(merged, unit.path)
        if isinstance(module, LinearRun):
            set_module(merged, unit.path, module.merged(merge_depthwise_separable))
            continue
        for op in unit.ops:
            _fold_into_conv(get_module(merged, op.conv), get_module(merged, op.norm))
            set_module(merged, op.norm, _activation_of(get_module(merged, op.norm)))
    set_info(merged, info(model), merged=True)
    if verify:
        errors = _check_equal(model, merged, input_size or info(model).input_size or 224, tolerance,
                              merge_depthwise_separable)
        set_info(merged, merge_max_abs=errors["max_abs"], merge_max_rel=errors["max_rel"])
    return merged


def _check_equal(model: nn.Module, merged: nn.Module, input_size, tolerance: float,
                 merge_depthwise_separable: bool) -> dict[str, float]:
    errors = verify(model, merged, input_size)
    if errors["max_rel"] <= tolerance:
        return errors
    # Tell rounding from a wrong merge: merged in float64 from a float64 copy, a correct merge
    # agrees to ~1e-13 whatever the network's conditioning.
    model64 = copy.deepcopy(model).double()
    merged64 = merge(model64, merge_depthwise_separable=merge_depthwise_separable, verify=False)
    exact = verify(model64, merged64, input_size, dtype=torch.float64)["max_rel"]
    cause = (f"In float64 the two agree to {exact:.1e}, so the merge is exact and the gap is float32 "
             f"rounding in a badly conditioned network (long runs merged into large kernels); pass a "
             f"larger tolerance to accept it, or keep runs short (final_act=True)."
             if exact < 1e-9 else
             f"They differ by {exact:.1e} in float64 too: this is a bug in ds, please report the model "
             f"and pattern.")
    raise MergeError(
        f"merged network differs from the original: max relative error {errors['max_rel']:.3g} "
        f"(max absolute {errors['max_abs']:.3g}) in float32 exceeds {tolerance:g} at input "
        f"{input_size}. {cause}"
    )


@torch.no_grad()
def _fold_into_conv(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    affine = fold_batchnorm(conv, norm)
    conv.weight.copy_(affine.weight)
    if conv.bias is None:
        conv.bias = nn.Parameter(affine.bias.to(conv.weight))
    else:
        conv.bias.copy_(affine.bias)


def _activation_of(norm: nn.Module) -> nn.Module:
    """What remains of a norm layer once folded: timm's BatchNormAct2d keeps its activation."""
    act = getattr(norm, "act", None)
    return act if act is not None else nn.Identity()


@torch.no_grad()
def verify(model: nn.Module, merged: nn.Module, input_size=224, batch: int = 2,
           dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, float]:
    """Run both networks (eval mode, in `dtype`) on the same random input.

    Returns {"max_abs": max |merged - model|, "max_rel": max_abs / max |model|}; the relative
    error is taken against the output's scale, since element-wise ratios blow up near zero.
    """
    reference = copy.deepcopy(model).to(dtype).eval()
    candidate = copy.deepcopy(merged).to(dtype).eval()
    device = next(reference.parameters()).device
    shape = (batch,) + input_shape(reference, input_size)[1:]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=dtype).to(device)
    expected, actual = reference(x), candidate(x)
    max_abs = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    return {"max_abs": max_abs, "max_rel": max_abs / scale if scale > 0 else max_abs}
