"""Minimal memory traffic of a forward pass: the memory side of the roofline.

Lower bound on bytes moved for one batch, assuming perfect fusion: every convolution's and
linear layer's input activation is read once and its output written once, and every weight
(parameters and buffers, each tensor counted once) is read once. Elementwise work (activations,
residual adds) is taken as fused into the neighbouring layer and costs nothing. A sibling of
`ds.macs`: MACs give the compute side, this gives the bytes side.
"""
from __future__ import annotations

import torch
from torch import nn

from ds.cost import image_size

from .settings import INT8, resolve_dtype

COUNTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _weight_elements(model: nn.Module) -> int:
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point() and id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel()
    return total


def activation_elements(model: nn.Module, input_size, in_chans: int = 3) -> int:
    """Elements read and written by conv/linear layers in one forward pass at batch 1."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        total += sum(t.numel() for t in inputs if torch.is_tensor(t)) + output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, COUNTED_LAYERS)]
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None else torch.float32
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            model(torch.randn(1, in_chans, *image_size(input_size), device=device, dtype=dtype))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return total


def memory_traffic(model: nn.Module, input_size, batch: int = 1, dtype=torch.float32,
                   in_chans: int = 3) -> int:
    """Bytes a forward pass of `batch` images must move at least, with tensors stored in `dtype`
    ('int8': one byte each, the least a quantized network can store)."""
    itemsize = 1 if dtype == INT8 else torch.empty((), dtype=resolve_dtype(dtype)).element_size()
    return itemsize * (batch * activation_elements(model, input_size, in_chans)
                       + _weight_elements(model))
