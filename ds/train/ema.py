"""Exponential moving average of a network's weights."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """Exponential moving average of a model's parameters and buffers (integer buffers copied)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
        floats = [(e, v) for e, v in pairs if e.dtype.is_floating_point]
        if floats:   # one fused kernel per list instead of one per tensor
            torch._foreach_lerp_([e for e, _ in floats], [v.detach() for _, v in floats], 1 - self.decay)
        for e, v in pairs:
            if not e.dtype.is_floating_point:
                e.copy_(v)
