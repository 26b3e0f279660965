"""BatchNorm recalibration: running statistics recomputed on training batches after removal.

Removing activations changes the distribution every later BatchNorm sees, so the running
statistics the trained network kept no longer describe it, and an evaluation right after removal
normalizes with the wrong ones. `recalibrate_batchnorm` resets them and recomputes each as the
plain average over N training batches (train-mode forward, `momentum=None`, no gradient).

What it changes: the network's evaluation until finetuning has replaced the statistics anyway.
A BatchNorm in training mode normalizes with the batch's own statistics, so the finetuning steps
(their gradients, hence the weights) are the same with or without it; the running statistics it
sets decay with the momentum (0.1: to 0.9**n of their weight after n steps). The random-number
state is restored afterwards, so a run with recalibration trains on the same batches, with the
same augmentation and dropout, as one without.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import amp_dtype
from .evaluate import autocast
from .rng import rng_state, set_rng_state


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader, batches: int, *, device=None, amp: str = "off") -> int:
    """Recompute every BatchNorm's running statistics on the first `batches` batches of `loader`
    (at most one pass over it); the model's mode, the momenta and the RNG state are restored.
    Returns the number of batches used."""
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 0:
        raise ValueError(f"batches must be an int >= 0, got {batches!r}")
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or batches == 0:
        return 0
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = amp_dtype(amp, device)
    momenta, was_training, rng = [m.momentum for m in norms], model.training, rng_state()
    used = 0
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None   # cumulative average over the batches seen
        model.train()
        for x, _ in loader:
            if used == batches:
                break
            with autocast(device, dtype):
                model(x.to(device))
            used += 1
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
        set_rng_state(rng)
    return used
