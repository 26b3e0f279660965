"""Checkpoint files: atomic writes, reads that name what is wrong, and network weights in and out.

A training checkpoint is a dict: "model" (state_dict), "meta" (`ds.meta.NetInfo.as_dict()` of the
network), "config" (the TrainConfig), "epoch", "metrics", optimizer/scheduler/scaler/EMA/RNG
state, and the hooks' state under their own key (e.g. "search"). A plain state_dict is accepted
wherever only weights are read.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ds.meta import NetInfo, info

CHECKPOINT = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used as it is."""


class CorruptCheckpoint(CheckpointError):
    """A file that is not a readable ds checkpoint: truncated, not a checkpoint, keys missing,
    or weights that no healthy run produces (NaN, negative BatchNorm variances)."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint was made for a different network than the one being built."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write atomically: a reader never sees a half-written checkpoint, and an interrupted write
    leaves the previous checkpoint in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    """The dict saved at `path`; CorruptCheckpoint naming the file when it is not one, or lacks a
    key of `required`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:   # torch.load fails in many ways on a damaged file: name the file
        raise CorruptCheckpoint(
            f"{path} cannot be read as a checkpoint ({type(error).__name__}: {str(error)[:200]}); it is "
            f"truncated or not a torch checkpoint. Use another checkpoint, or start over without it") from None
    if not isinstance(ckpt, dict):
        raise CorruptCheckpoint(f"{path} holds a {type(ckpt).__name__}, not a checkpoint (a dict); "
                                f"use a checkpoint written by ds.train or a state_dict")
    missing = [key for key in required if key not in ckpt]
    if missing:
        raise CorruptCheckpoint(f"{path} lacks {', '.join(map(repr, missing))} (it has {', '.join(map(repr, list(ckpt)[:8]))}); "
                                f"it is not a training checkpoint of ds.train, so it cannot be resumed")
    return ckpt


def _strip_prefixes(state: dict) -> dict:
    """Drop the wrappers' prefixes (DDP's "module.", torch.compile's "_orig_mod."), and the gate
    scores that gate searches of older ds versions kept inside the network ("ds_gates.*")."""
    out = {}
    for k, v in state.items():
        if k.startswith("ds_gates."):
            continue
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def check_weights(state: dict, source: str) -> None:
    """CorruptCheckpoint naming the first layer whose BatchNorm statistics are non-finite or
    negative (variances), or whose weights are not finite: no healthy run saves those."""
    for key, value in state.items():
        if not (torch.is_tensor(value) and value.dtype.is_floating_point):
            continue
        layer = key.rpartition(".")[0] or key
        if not torch.isfinite(value).all():
            raise CorruptCheckpoint(f"{source} is broken: {key} holds NaN or infinite values (layer {layer}); "
                                    f"the run that wrote it diverged. Use an earlier checkpoint or retrain")
        if key.endswith("running_var") and (value < 0).any():
            raise CorruptCheckpoint(f"{source} is broken: BatchNorm {layer} has negative running variances; "
                                    f"no training produces those. Use another checkpoint or retrain")


def model_state(checkpoint_or_path) -> tuple[dict, dict]:
    """(state_dict, meta) from a ds checkpoint (path or dict) or a plain state_dict; meta is the
    saved `NetInfo.as_dict()` ({} when unknown). Broken weights raise CorruptCheckpoint."""
    is_path = isinstance(checkpoint_or_path, (str, Path))
    ckpt = load_checkpoint(checkpoint_or_path) if is_path else checkpoint_or_path
    source = str(checkpoint_or_path) if is_path else "the checkpoint"
    if isinstance(ckpt.get("model"), dict):
        state, meta = _strip_prefixes(ckpt["model"]), dict(ckpt.get("meta") or {})
    elif all(torch.is_tensor(v) for v in ckpt.values()):
        state, meta = _strip_prefixes(ckpt), {}
    else:
        raise CorruptCheckpoint(f"{source} is neither a ds checkpoint (no 'model' entry) nor a state_dict "
                                f"(some values are not tensors); keys: {', '.join(map(repr, list(ckpt)[:8]))}")
    check_weights(state, source)
    return state, meta


def describe(meta: dict | NetInfo) -> str:
    record = meta if isinstance(meta, NetInfo) else NetInfo.from_dict(meta or {})
    if record == NetInfo():
        return "an unknown network"
    pattern = list(record.pattern) if record.pattern is not None else None
    return f"backbone={record.backbone} pattern={pattern} input_size={record.input_size}"


def load_weights(model: nn.Module, state: dict, source: str = "checkpoint", meta: dict | None = None) -> nn.Module:
    """Load a state_dict strictly; a mismatch names both networks, broken weights the layer."""
    state = _strip_prefixes(state)
    check_weights(state, source)
    current = model.state_dict()
    missing, unexpected = sorted(current.keys() - state.keys()), sorted(state.keys() - current.keys())
    wrong = [k for k in current.keys() & state.keys() if current[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointMismatch(
            f"{source} does not match the model: checkpoint is {describe(meta or {})}, model is {describe(info(model))}. "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}. Use the checkpoint's backbone/pattern, or a checkpoint of this network.")
    model.load_state_dict(state)
    return model
