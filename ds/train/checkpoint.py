"""Checkpoint files: atomic writes, reads that name what is wrong, and network weights in and out.

A training checkpoint is a dict: "model" (state_dict), "meta" (`ds.meta.NetInfo.as_dict()` of the
network), "config" (the TrainConfig), "epoch", "metrics", optimizer/scheduler/scaler/EMA/RNG
state, and the hooks' state under their own key (e.g. "search"). A plain state_dict is accepted
wherever only weights are read.

Reading a file never runs code from it: every read is `torch.load(..., weights_only=True)`, so a
checkpoint holds only tensors and plain containers, strings and numbers (`save_checkpoint`
refuses anything else before writing). A file that holds Python objects (a pickled module, or a
checkpoint of an older ds with numpy's RNG state) is refused with `UnsafeCheckpoint`, which names
the objects and the conversion command for a file you trust (`python -m ds.convert FILE`).
A published file has its sha256 in the provenance record beside it (`FILE.provenance.json`);
when that record exists, the file must match it.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from ds.meta import NetInfo, info
from ds.provenance import file_sha256

CHECKPOINT = "checkpoint.pt"
PROVENANCE_SUFFIX = ".provenance.json"
CONVERT_COMMAND = "python -m ds.convert"
# What a checkpoint may hold besides tensors: the types torch's weights_only reader accepts
# without being told of more (torch.Size, dtypes and OrderedDict among them).
PLAIN_TYPES = (str, bytes, int, float, bool, type(None), torch.Size, torch.dtype)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used as it is."""


class CorruptCheckpoint(CheckpointError):
    """A file that is not a readable ds checkpoint: truncated, not a checkpoint, keys missing,
    or weights that no healthy run produces (NaN, negative BatchNorm variances)."""


class CheckpointMismatch(CheckpointError):
    """A checkpoint was made for a different network than the one being built."""


class UnsafeCheckpoint(CorruptCheckpoint):
    """A file that holds Python objects, not only data: reading it could run code, so ds does not."""


def _not_plain(value, where: str = "") -> str | None:
    """Where in `value` something other than tensors and plain data sits (None: nowhere)."""
    if torch.is_tensor(value) or isinstance(value, PLAIN_TYPES):
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return f"{where or 'the checkpoint'} ({type(value).__module__}.{type(value).__qualname__})"
    for key, item in items:
        if not isinstance(key, PLAIN_TYPES):
            return f"a key of {where or 'the checkpoint'} ({type(key).__qualname__})"
        found = _not_plain(item, f"{where}[{key!r}]")
        if found:
            return found
    return None


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write atomically: a reader never sees a half-written checkpoint, and an interrupted write
    leaves the previous checkpoint in place. TypeError, before writing, when `state` holds
    anything but tensors and plain data (the file could not be read without running code)."""
    path = Path(path)
    found = _not_plain(state)
    if found:
        raise TypeError(f"cannot save {path}: {found} is not a tensor or plain data (dict, list, tuple, str, "
                        f"number); convert it (e.g. NetInfo.as_dict(), a numpy array to a tensor) so the "
                        f"file loads with weights_only=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def slimmed(ckpt: dict) -> dict | None:
    """`ckpt` without the optimizer's per-parameter state (SGD momentum, as large as the weights)
    when it says its training is finished, else None: resuming a finished training loads the
    optimizer but takes no step, so nothing reads that state again. `ckpt` is left as it is."""
    finished = (isinstance(ckpt.get("config"), dict) and "epoch" in ckpt
                and ckpt["epoch"] + 1 >= ckpt["config"].get("epochs", float("inf")))
    if not finished:
        return None
    return {key: dict(value, state={}) if key in ("optimizer", "gate_optimizer") and isinstance(value, dict)
            else value for key, value in ckpt.items()}


def provenance_path(path: str | Path) -> Path:
    """Where the provenance record of a published file lies: beside it, FILE.provenance.json."""
    path = Path(path)
    return path.with_name(path.name + PROVENANCE_SUFFIX)


def check_published_hash(path: str | Path) -> None:
    """CorruptCheckpoint naming both hashes when `path` has a provenance record whose sha256 it
    does not match; nothing when there is no record, or it names no sha256."""
    path, record_path = Path(path), provenance_path(path)
    if not record_path.is_file():
        return
    try:
        expected = json.loads(record_path.read_text()).get("sha256")
    except (ValueError, AttributeError) as error:
        raise CorruptCheckpoint(f"{record_path} is not a readable provenance record ({error}); restore it "
                                f"(git checkout -- {record_path}) or remove it") from None
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise CorruptCheckpoint(f"{path} has sha256 {actual}, but its provenance record {record_path} says "
                                f"{expected}: the file was changed or damaged after it was published. Restore "
                                f"it (git checkout -- {path}), or remove the record if you changed it on purpose")


def _unsafe_globals(path: Path) -> list[str]:
    """The Python objects a torch file's pickle names beyond what weights_only reads (read without
    running any of them); [] when there are none or the file cannot be parsed."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:   # a damaged file: the caller reports it as such
        return []


def _unsafe(path: Path, names: list[str]) -> UnsafeCheckpoint:
    what = f"{', '.join(names[:4])}{', ...' if len(names) > 4 else ''}"
    return UnsafeCheckpoint(
        f"{path} holds Python objects ({what}), not only tensors and plain data, so reading it could run code "
        f"and ds does not read it. A network file of an older ds (a pickled module, numpy RNG state) looks "
        f"like this; one from elsewhere may be hostile. If you trust where it came from, convert it once: "
        f"{CONVERT_COMMAND} {path}")


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    """The dict saved at `path`, read as data only (weights_only=True); UnsafeCheckpoint when it
    holds code objects, CorruptCheckpoint naming the file when it is not a checkpoint, lacks a key
    of `required`, or does not match the sha256 of its provenance record."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    check_published_hash(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:   # torch.load fails in many ways on a damaged file: name the file
        names = _unsafe_globals(path) if isinstance(error, pickle.UnpicklingError) else []
        if names:
            raise _unsafe(path, names) from None
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
