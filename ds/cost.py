"""Cost of a network: multiply-accumulates and parameter count."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def image_size(input_size) -> tuple[int, int]:
    """(height, width) from a positive int or a (height, width) pair of positive ints.

    Anything else (0, negative sizes, floats, strings, pairs of another length) is a ValueError
    that names the value and what is accepted.
    """
    def positive(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value > 0

    if positive(input_size):
        return int(input_size), int(input_size)
    if isinstance(input_size, (tuple, list)) and len(input_size) == 2 and all(map(positive, input_size)):
        return int(input_size[0]), int(input_size[1])
    raise ValueError(f"input_size must be a positive int (a square image) or a (height, width) pair of "
                     f"positive ints, e.g. 32 or (224, 160); got {input_size!r}")


def input_shape(model: nn.Module, input_size) -> tuple[int, int, int, int]:
    """(1, channels, height, width) of one input image; `input_size` is an int or (height, width)."""
    height, width = image_size(input_size)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return 1, first_conv.in_channels, height, width


@torch.no_grad()
def macs(model: nn.Module, input_size=224) -> int:
    """Multiply-accumulates of all convs and linear layers for one image (BatchNorm excluded)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    parameter = next(model.parameters())
    try:
        model.eval()
        model(torch.randn(input_shape(model, input_size), device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


def params(model: nn.Module) -> int:
    """Number of parameters (BatchNorm affine parameters included, buffers not)."""
    return sum(p.numel() for p in model.parameters())
