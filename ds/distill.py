"""Self-distillation loss, as in DepthShrinker: the teacher is the original trained network
(all activations on, eval mode) and the student the network with activations removed."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the student to the teacher's softened distribution, mean over the batch.

    Scaled by temperature**2 (Hinton et al., 2015) so its gradient keeps its size as T changes;
    at T = 1 this is the plain soft cross-entropy.
    """
    t = temperature
    target = F.softmax(teacher_logits.float() / t, dim=-1)
    log_p = F.log_softmax(student_logits.float() / t, dim=-1)
    return -(target * log_p).sum(-1).mean() * t * t


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      alpha: float = 0.7, temperature: float = 1.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """alpha * soft CE to the teacher + (1 - alpha) * CE to the labels (the paper: alpha = 0.7)."""
    hard = F.cross_entropy(student_logits.float(), labels, label_smoothing=label_smoothing)
    return alpha * soft_cross_entropy(student_logits, teacher_logits, temperature) + (1 - alpha) * hard
