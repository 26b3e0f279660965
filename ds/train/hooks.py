"""What one use of `fit` adds to plain supervised training.

`fit` calls these methods at fixed points; the defaults do nothing, so plain training passes no
hooks. The gate search (`ds.gating.GateSearch`) is one such use: its scores live in the hooks, not
in the network, and its state is saved under its own checkpoint key.
"""
from __future__ import annotations

import torch


class FitHooks:
    key: str = "hooks"          # the checkpoint entry that holds state_dict() and settings()

    def settings(self) -> dict:
        """What this use was configured with; a resume with other settings is refused."""
        return {}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Extra optimizers, zeroed and stepped together with the network's."""
        return []

    def loss(self) -> torch.Tensor | None:
        """A term added to each step's training loss (None: nothing)."""
        return None

    def before_step(self) -> None:
        """After backward, before the optimizers step (e.g. average extra gradients over processes)."""

    def after_step(self) -> None:
        """After the optimizers stepped."""

    def end_epoch(self, epoch: int) -> None:
        """After each epoch's training steps, before evaluation and the checkpoint (epoch from 0)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what state_dict() returned (on resume)."""
