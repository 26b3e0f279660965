"""The settings of a training run that are neither the network nor the data."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

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
    gate_lr: float = 0.01            # Adam on the gate scores, no weight decay
    grad_clip: float | None = None
    seed: int = 0
    progress: bool = True
    stop_after_epoch: int | None = None   # leave after this epoch (time-sliced jobs; resume tests)
    compile: bool = False            # torch.compile the training forward/backward (minutes to compile)

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
