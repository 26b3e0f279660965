"""Loss and top-1 accuracy of a network over a loader."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ds import ddp

from .config import amp_dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.no_grad()
def evaluate(model: nn.Module, loader, *, device=None, amp: str = "off") -> dict:
    """Mean cross-entropy and top-1 accuracy (%) over the whole loader, summed over the processes
    of the process group when there is one (each process holding its shard of the loader)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = amp_dtype(amp, device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with autocast(device, dtype):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(-1) == y).sum()
        count += len(y)
    model.train(was_training)
    loss_sum, correct, count = ddp.all_reduce_sum([loss_sum.item(), correct.item(), float(count)], device)
    return {"loss": loss_sum / max(count, 1), "acc": 100.0 * correct / max(count, 1), "n": int(count)}
