"""Cost of a network: multiply-accumulates and parameter count."""
from __future__ import annotations

import torch
from torch import nn


def image_size(input_size) -> tuple[int, int]:
    """(height, width) from an int or a (height, width) pair."""
    if isinstance(input_size, int):
        return input_size, input_size
    height, width = input_size
    return int(height), int(width)


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
