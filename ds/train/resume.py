"""A resumed run is the run that was asked for: compare a checkpoint with the run resuming it.

What may differ: the settings in `ds.train.config.MAY_CHANGE_ON_RESUME` (`progress`,
`stop_after_epoch`), which change how the run is executed or shown, not its numbers. Everything
else — every other TrainConfig field, the network (backbone, classes, input size, pattern,
final activation), the number of training steps per epoch (batch size and training-set size), and
the hooks' settings (e.g. the search budget) — must be equal, else `ResumeMismatch` lists each
difference with its saved and new value.
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint import CheckpointMismatch
from .config import TrainConfig, config_differences
from .hooks import FitHooks

NETWORK_KEYS = ("backbone", "num_classes", "input_size", "pattern", "final_act")


class ResumeMismatch(CheckpointMismatch):
    """The checkpoint to resume was made with other settings than the run resuming it."""

    def __init__(self, path, differences: dict[str, tuple], way_out: str):
        self.differences = differences
        listed = "; ".join(f"{key}: saved {old!r}, now {new!r}" for key, (old, new) in differences.items())
        super().__init__(f"cannot resume {path}: it was made with other settings ({listed}). Resuming would "
                         f"mix two runs. {way_out}")


def resume_differences(ckpt: dict, cfg: TrainConfig, meta: dict, steps_per_epoch: int,
                       hooks: FitHooks, hooks_used: bool) -> dict[str, tuple]:
    """{what: (saved, now)} for everything that differs between `ckpt` and the run resuming it."""
    differences = config_differences(ckpt.get("config") or {}, cfg)
    saved_meta = ckpt.get("meta") or {}
    for key in NETWORK_KEYS:
        if key in saved_meta and saved_meta[key] != meta.get(key):
            differences[f"network {key}"] = (saved_meta[key], meta.get(key))
    saved_steps = ckpt.get("steps_per_epoch")
    if saved_steps is not None and saved_steps != steps_per_epoch:
        differences["training steps per epoch (batch size or training images)"] = (saved_steps, steps_per_epoch)
    saved_use, use = ckpt.get("hooks"), hooks.key if hooks_used else None
    if saved_use != use:
        differences["made by"] = (saved_use or "plain training", use or "plain training")
    elif use is not None:
        saved_settings = (ckpt.get(use) or {}).get("settings", {})
        for key in sorted(saved_settings.keys() | hooks.settings().keys()):
            old, new = saved_settings.get(key), hooks.settings().get(key)
            if old != new:
                differences[f"{use} {key}"] = (old, new)
    return differences


def check_resume(path: Path, ckpt: dict, cfg: TrainConfig, meta: dict, steps_per_epoch: int,
                 hooks: FitHooks, hooks_used: bool) -> None:
    differences = resume_differences(ckpt, cfg, meta, steps_per_epoch, hooks, hooks_used)
    if differences:
        raise ResumeMismatch(path, differences, "Resume with the saved settings, or start over in "
                                                "another directory (the CLI: --restart).")
