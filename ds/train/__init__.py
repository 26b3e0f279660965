"""Training and evaluation: `fit`, `evaluate`, checkpoints, EMA; `python -m ds.train` is the CLI
(ds/train/cli.py).

One concept per module: config (TrainConfig), loop (fit), evaluate, checkpoint (files and
weights), resume (what a resumed run must share with its checkpoint), hooks (what a use of fit
adds, e.g. the gate search of ds.gating), ema, optim (param groups, schedule), rng, build
(base/shrunk networks and teachers from checkpoints), anneal (annealed and progressive removal:
the removed activations fade out in merge-ready form), recalibrate (BatchNorm statistics
recomputed after removal). The library never imports ds.gating.
"""
from .build import build_model, build_teacher, load_base_weights
from .checkpoint import (CHECKPOINT, CheckpointError, CheckpointMismatch, CorruptCheckpoint, UnsafeCheckpoint,
                         check_weights, load_checkpoint, load_weights, model_state, save_checkpoint)
from .config import MAY_CHANGE_ON_RESUME, TrainConfig, amp_dtype
from .ema import ModelEma
from .evaluate import evaluate
from .hooks import FitHooks
from .loop import METRICS, FitResult, NonFiniteLoss, fit
from .recalibrate import recalibrate_batchnorm
from .optim import param_groups, warmup_cosine
from .resume import ResumeMismatch
from .rng import rng_state, seed_everything, set_rng_state

__all__ = [
    "CHECKPOINT", "METRICS", "TrainConfig", "MAY_CHANGE_ON_RESUME", "fit", "FitResult", "FitHooks", "evaluate",
    "build_model", "build_teacher", "load_base_weights", "save_checkpoint", "load_checkpoint", "model_state",
    "load_weights", "check_weights", "CheckpointError", "CheckpointMismatch", "CorruptCheckpoint",
    "UnsafeCheckpoint", "ResumeMismatch",
    "NonFiniteLoss", "ModelEma", "param_groups", "warmup_cosine", "amp_dtype", "rng_state", "set_rng_state",
    "seed_everything", "recalibrate_batchnorm",
]
