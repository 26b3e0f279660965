"""Deploy a shrunk network: fold every BatchNorm, merge each linear run, check the result."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .anatomy import parse_units
from .cost import image_size, input_shape
from .errors import MergeError
from .kernels import fold_batchnorm
from .linear import LinearRun
from .meta import info, set_info
from .paths import get_module, set_module

MERGE_TOLERANCE = 1e-4  # relative error allowed in float32
# Relative error allowed by the parameters' dtype. Merged weights are composed in float64 and
# rounded once to the model's dtype. Measured with ds.verify (float32 arithmetic) on mobilenetv2_140,
# mobilenetv2_035, tv_mobilenet_v2 (DS-A, DS-C, DS-F) and efficientnet_lite0 (every other block
# removed), with and without final_act (DS-F with it only), BatchNorm calibrated on random images, 32 px: the largest
# error was 3.2e-5 in float32, 1.4e-1 in bfloat16 and 3.1e-2 in float16 (the rounding of the merged
# weights alone: 8 and 11 bits of mantissa). The low-precision tolerances leave about 3x over that;
# to check a low-precision merge at float32's tolerance, merge a float32 copy and cast the result.
MERGE_TOLERANCES = {torch.float32: MERGE_TOLERANCE, torch.float64: 1e-9,
                    torch.bfloat16: 0.4, torch.float16: 0.1}


def merge(model: nn.Module, *, merge_depthwise_separable: bool = False, verify: bool = True,
          input_size=None, tolerance: float | None = None) -> nn.Module:
    """A new eval-mode network equal to `model` (in eval mode) with BN folded and runs merged.

    Every BatchNorm is folded into the conv before it. Every `LinearRun` made by
    `ds.apply_pattern` becomes one dense conv (kernel and stride of its spatial convs, skip folded
    in), except that an expansion-1 depthwise-separable block stays a depthwise + pointwise pair
    unless `merge_depthwise_separable` is set: as one dense conv it costs about 6.5x its MACs.

    With `verify` (the default) both networks run on random inputs of `input_size` (an int or a
    (height, width) pair; default: the size the model was created for, else 224), computed in
    float32, and a relative error above `tolerance` (default: MERGE_TOLERANCES for the model's
    dtype) raises MergeError; the errors found are recorded on the result (`ds.meta.info(merged)`'s
    `merge_max_abs` and `merge_max_rel`). The given model is not modified.

    Refused with a MergeError before any work: a network already merged, and one whose BatchNorm
    statistics or weights are not finite or whose running variances are negative (broken weights).
    """
    if info(model).merged:
        raise MergeError("this network is already merged (ds.meta.info(model).merged is True); merge the "
                         "shrunk network it came from, or use this one as it is")
    if input_size is not None:
        input_size = image_size(input_size)   # raises a ValueError naming a bad size
    dtype = _parameter_dtype(model)
    if tolerance is None:
        if dtype not in MERGE_TOLERANCES:
            raise MergeError(f"ds.merge has no tolerance for parameters of dtype {dtype}; cast the network "
                             f"to float32 first (model.float()), or pass tolerance=")
        tolerance = MERGE_TOLERANCES[dtype]
    _check_weights(model)
    merged = copy.deepcopy(model).eval()
    for unit in parse_units(merged):
        module = get_module(merged, unit.path)
        if isinstance(module, LinearRun):
            set_module(merged, unit.path, module.merged(merge_depthwise_separable))
            continue
        for op in unit.ops:
            _fold_into_conv(get_module(merged, op.conv), get_module(merged, op.norm))
            set_module(merged, op.norm, _activation_of(get_module(merged, op.norm)))
    set_info(merged, info(model), merged=True, merge_depthwise_separable=merge_depthwise_separable)
    if verify:
        errors = _check_equal(model, merged, input_size or info(model).input_size or 224, tolerance,
                              merge_depthwise_separable, dtype)
        set_info(merged, merge_max_abs=errors["max_abs"], merge_max_rel=errors["max_rel"])
    return merged


def _parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's floating-point parameters (the first one's)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


@torch.no_grad()
def _check_weights(model: nn.Module) -> None:
    """MergeError naming the first layer whose BatchNorm statistics or weights cannot be folded."""
    for path, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_var is not None:
            var, mean = module.running_var, module.running_mean
            problem = ("NaN or infinite running_var" if not torch.isfinite(var).all() else
                       f"negative running_var (min {var.min().item():.3g})" if (var < 0).any() else
                       "NaN or infinite running_mean" if not torch.isfinite(mean).all() else "")
        else:
            problem = ""
        if not problem:
            bad = [name for name, p in module.named_parameters(recurse=False) if not torch.isfinite(p).all()]
            problem = f"NaN or infinite {bad[0]}" if bad else ""
        if problem:
            raise MergeError(
                f"layer '{path}' ({type(module).__name__}) has {problem}: the network's weights are broken "
                f"(a diverged training, or a damaged checkpoint), not something a merge can fix. Load a "
                f"checkpoint from before the problem or retrain; ds.merge has not changed anything.")


def _check_equal(model: nn.Module, merged: nn.Module, input_size, tolerance: float,
                 merge_depthwise_separable: bool, dtype: torch.dtype) -> dict[str, float]:
    # float32 arithmetic shows the rounding of low-precision weights without adding its own;
    # a float64 network is checked in float64
    errors = verify(model, merged, input_size, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    if errors["max_rel"] <= tolerance:
        return errors
    # Tell rounding from a wrong merge: merged in float64 from a float64 copy, a correct merge
    # agrees to ~1e-13 whatever the network's conditioning.
    model64 = copy.deepcopy(model).double()
    merged64 = merge(model64, merge_depthwise_separable=merge_depthwise_separable, verify=False)
    exact = verify(model64, merged64, input_size, dtype=torch.float64)["max_rel"]
    low_precision = dtype in (torch.bfloat16, torch.float16)
    cause = (f"In float64 the two agree to {exact:.1e}, so the merge is exact and the gap is the rounding of "
             f"the merged weights to {dtype}; merge a float32 copy and cast the result "
             f"(ds.merge(model.float()).to({dtype})) to check the merge at float32's tolerance, or pass a "
             f"larger tolerance to accept it."
             if exact < 1e-9 and low_precision else
             f"In float64 the two agree to {exact:.1e}, so the merge is exact and the gap is float32 "
             f"rounding in a badly conditioned network (long runs merged into large kernels); pass a "
             f"larger tolerance to accept it, or keep runs short (final_act=True)."
             if exact < 1e-9 else
             f"They differ by {exact:.1e} in float64 too: this is a bug in ds, please report the model "
             f"and pattern.")
    raise MergeError(
        f"merged network differs from the original: max relative error {errors['max_rel']:.3g} "
        f"(max absolute {errors['max_abs']:.3g}) exceeds {tolerance:g} (parameters in {dtype}) at input "
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
