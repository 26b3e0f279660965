"""The settings of a training run that are neither the network nor the data."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from .anneal import parse_order

# Settings that change how a run is executed or shown, never its numbers: a resumed run may
# change them (see `config_differences`).
MAY_CHANGE_ON_RESUME = ("progress", "stop_after_epoch")

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 0.1                  # for the global batch
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4       # not applied to BN weights and biases
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    amp: str = "auto"                # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
    channels_last: bool | None = None   # None: on GPU only
    ema_decay: float | None = None
    distill_alpha: float = 0.7       # weight of the soft CE to the teacher
    distill_temperature: float = 1.0
    gate_lr: float = 0.01            # the gate scores' learning rate (how they train: ds.gating.SearchOptions)
    grad_clip: float | None = None
    seed: int = 0
    progress: bool = True
    stop_after_epoch: int | None = None   # leave after this epoch (time-sliced jobs; resume tests)
    compile: bool = False            # torch.compile the training forward/backward (minutes to compile)
    # Recovery after removal (a network from ds.apply_pattern; see ds.train.anneal, ds.train.recalibrate):
    anneal_start: float = 0.0        # epoch at which the removed activations start to fade (with anneal_end)
    anneal_end: float = 0.0          # epoch at which they are gone (0: removed at once, before training)
    progressive: int = 0             # remove this many switches at a time, one group after another (0: all together)
    removal_order: str = "network"   # progressive order: network | reverse | switch indices "3,2,0,..."
    recalibrate_bn: int = 0          # batches to recompute BatchNorm statistics on before training (0: off)

    def __post_init__(self):
        def bad(name, accepted):
            return ValueError(f"TrainConfig.{name} = {getattr(self, name)!r} is invalid: accepted {accepted}")

        def number(name, low, high=math.inf, low_open=False, high_open=False):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, f"a finite number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
            if value < low or (low_open and value == low) or value > high or (high_open and value == high):
                raise bad(name, f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")

        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise bad("epochs", "an int >= 1")
        number("lr", 0, low_open=True)
        number("momentum", 0, 1, high_open=True)
        number("weight_decay", 0)
        number("warmup_epochs", 0)
        number("label_smoothing", 0, 1, high_open=True)
        number("distill_alpha", 0, 1)
        number("distill_temperature", 0, low_open=True)
        number("gate_lr", 0, low_open=True)
        if self.ema_decay is not None:
            number("ema_decay", 0, 1, low_open=True, high_open=True)
        if self.grad_clip is not None:
            number("grad_clip", 0, low_open=True)
        if self.amp not in AMP_CHOICES:
            raise bad("amp", " or ".join(AMP_CHOICES))
        if self.stop_after_epoch is not None and (not isinstance(self.stop_after_epoch, int) or self.stop_after_epoch < 1):
            raise bad("stop_after_epoch", "None or an int >= 1")
        self._check_recovery(bad, number)

    def _check_recovery(self, bad, number):
        number("anneal_start", 0)
        number("anneal_end", 0)
        for name in ("progressive", "recalibrate_bn"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, "an int >= 0")
        if not isinstance(self.removal_order, str):
            raise bad("removal_order", "network, reverse or comma-separated switch indices such as 2,3,0")
        if self.anneal_end:
            if not self.anneal_start < self.anneal_end <= self.epochs:
                raise ValueError(f"TrainConfig anneal_start = {self.anneal_start}, anneal_end = {self.anneal_end} "
                                 f"are invalid: accepted 0 <= anneal_start < anneal_end <= epochs ({self.epochs})")
            if self.ema_decay is not None:
                raise ValueError("TrainConfig.ema_decay cannot be combined with annealing (anneal_end): the EMA "
                                 "copy would keep the blended activations; set one of them")
        elif self.anneal_start or self.progressive:
            raise ValueError(f"TrainConfig.{'anneal_start' if self.anneal_start else 'progressive'} needs "
                             f"anneal_end > 0 (the epoch at which the removed activations are gone)")
        if self.removal_order != "network":
            if not self.progressive:
                raise ValueError(f"TrainConfig.removal_order = {self.removal_order!r} is used only by progressive "
                                 f"removal: set progressive (switches removed at a time) too")
            if self.removal_order != "reverse":
                parse_order(self.removal_order)   # the switches themselves are checked against the network


def config_differences(saved: dict, new: TrainConfig) -> dict[str, tuple]:
    """{key: (saved, new)} for the settings that differ, MAY_CHANGE_ON_RESUME left out.

    A key the saved record lacks (a checkpoint from an older ds) is compared with its default.
    """
    defaults = asdict(TrainConfig())
    current = asdict(new)
    return {f.name: (saved.get(f.name, defaults[f.name]), current[f.name]) for f in fields(TrainConfig)
            if f.name not in MAY_CHANGE_ON_RESUME and saved.get(f.name, defaults[f.name]) != current[f.name]}


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an `amp` setting on `device` (None: full precision)."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "off":
        return None
    if amp in ("bf16", "fp16"):
        return torch.bfloat16 if amp == "bf16" else torch.float16
    raise ValueError(f"amp must be {', '.join(AMP_CHOICES)}, not {amp!r}")
