"""The finetuning recipe after removal that the study's chapters share: a profile's `recovery`.

Removing the activations of a trained network drops it to near chance (chapter 1); how it is
finetuned afterwards decides how much it gets back. `benchmarks/recovery_sweep.py` compares the
methods at equal budget on held-out training images; a profile names the winner once:

    recovery: {lr: 0.05, warmup_epochs: 0.3, distill: true}

Keys: `distill` (true: soft targets from the run's base network, at `distill_alpha` and
`distill_temperature`), and the recovery fields of `ds.train.TrainConfig`: lr, warmup_epochs,
distill_alpha, distill_temperature, anneal_start, anneal_end, progressive, removal_order,
recalibrate_bn. Every chapter that finetunes a shrunk network builds its TrainConfig here, so all
of them finetune alike.
"""
from __future__ import annotations

from ds.train import TrainConfig

FIELDS = ("lr", "warmup_epochs", "distill_alpha", "distill_temperature", "anneal_start", "anneal_end", "progressive",
          "removal_order", "recalibrate_bn")
DEFAULT = {"lr": 0.02, "warmup_epochs": 0.0, "distill": False}   # the study's recipe before the sweep


def check(recovery: dict | None) -> dict:
    """`recovery` with the defaults filled in; a clear error for a key or value that cannot work."""
    if recovery is None:
        return dict(DEFAULT)
    if not isinstance(recovery, dict):
        raise ValueError(f"recovery must be a mapping such as {{lr: 0.05, warmup_epochs: 0.3, distill: true}}, "
                         f"got {recovery!r}")
    unknown = sorted(set(recovery) - set(FIELDS) - {"distill"})
    if unknown:
        raise ValueError(f"recovery sets {', '.join(unknown)}, which is not a recovery setting; accepted: distill, "
                         f"{', '.join(FIELDS)}")
    if not isinstance(recovery.get("distill", False), bool):
        raise ValueError(f"recovery's distill must be true or false, got {recovery['distill']!r}")
    merged = {**DEFAULT, **recovery}
    config(merged, epochs=10**6)   # TrainConfig checks the values (a finetune's own epochs are checked when it runs)
    return merged


def config(recovery: dict | None, epochs: int, seed: int = 0, **overrides) -> TrainConfig:
    """The TrainConfig of a finetune of `epochs` with this recipe (`overrides` win, e.g. lr)."""
    settings = {k: v for k, v in {**DEFAULT, **(recovery or {})}.items() if k in FIELDS}
    return TrainConfig(epochs=epochs, seed=seed, **{**settings, **overrides})


def distills(recovery: dict | None) -> bool:
    """Whether the recipe distills from the base network."""
    return bool({**DEFAULT, **(recovery or {})}["distill"])


def describe(recovery: dict | None) -> str:
    """The recipe in words, e.g. 'lr 0.05, 0.3 epochs of warm-up, distilled from the base at alpha
    0.7 and temperature 1'."""
    r = {**DEFAULT, **(recovery or {})}
    parts = [f"lr {r['lr']:g}", warmup_words(r["warmup_epochs"])]
    if r.get("anneal_end"):
        how = f"{r['progressive']} switches at a time" if r.get("progressive") else "together"
        parts.append(f"activations annealed away ({how}) over epochs {r.get('anneal_start', 0):g}-{r['anneal_end']:g}")
    if r.get("recalibrate_bn"):
        parts.append(f"BatchNorm recalibrated on {r['recalibrate_bn']} batches first")
    if r["distill"]:
        parts.append(f"distilled from the base at alpha {r.get('distill_alpha', 0.7):g} and temperature "
                     f"{r.get('distill_temperature', 1.0):g}")
    else:
        parts.append("no distillation")
    return ", ".join(parts)


def warmup_words(epochs: float) -> str:
    """'no warm-up', '1 epoch of warm-up', '0.3 epochs of warm-up'."""
    return "no warm-up" if not epochs else f"{epochs:g} epoch{'' if epochs == 1 else 's'} of warm-up"
