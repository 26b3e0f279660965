"""Network files: one format for every network ds writes (base, shrunk, merged), and one reader.

    ds.save_network(merged, "out/net.pt")
    model = ds.load_network("data/checkpoints/cpu/base.pt")   # eval mode; ds.meta.info(model) says what it is

A network file is a checkpoint (`ds.train.checkpoint`): a dict with "model", the state_dict, and
"meta", the network's `NetInfo.as_dict()`, which says what builds it (backbone, classes, input
size, pattern, final_act, whether merged and with which merge options). The module itself is
never stored, so the file is data only and is read with weights_only=True: `load_network`
rebuilds the module from the NetInfo (`create_model`, `apply_pattern`, `merge`) and loads the
tensors strictly. A training checkpoint of `ds.train` is a network file too.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ds.meta import NetInfo, info, set_info
from ds.models import create_model
from ds.merging import merge
from ds.shrink import apply_pattern
from ds.train.checkpoint import CheckpointError, load_weights, model_state, save_checkpoint

DESCRIBED_BY = ("backbone", "num_classes", "input_size")   # what a file's meta must name


def save_network(model: nn.Module, path: str | Path, **extra) -> Path:
    """Write `model`'s weights and NetInfo (atomically) as a network file; `extra` entries (plain
    data: numbers, strings, lists, dicts) are stored beside them. The path written."""
    record = info(model)
    missing = [name for name in DESCRIBED_BY if getattr(record, name) is None]
    if missing:
        raise ValueError(f"cannot save {path}: ds.meta.info of the network lacks {', '.join(missing)}, so no "
                         f"reader could rebuild it; build it with ds.create_model (or ds.train.build_model)")
    save_checkpoint({"model": model.state_dict(), "meta": record.as_dict(), **extra}, path)
    return Path(path)


def build_network(record: NetInfo) -> nn.Module:
    """The module `record` describes, with fresh weights: the base network, shrunk by its pattern
    (with its final_act), merged with its merge options when `record.merged`."""
    model = create_model(record.backbone, num_classes=record.num_classes, input_size=record.input_size)
    if record.pattern is not None and 0 in record.pattern:
        model = apply_pattern(model, list(record.pattern), final_act=record.final_act)
    if record.merged:
        model = merge(model, verify=False, merge_depthwise_separable=record.merge_depthwise_separable)
    return model


def load_network(path: str | Path) -> nn.Module:
    """The network in a file ds wrote (base, shrunk or merged; a training checkpoint too), in eval
    mode, its NetInfo (as saved: merge errors included) on it as `ds.meta.info(model)`.

    Read as data only; a file holding Python objects is refused with the command that converts a
    file you trust. CheckpointError (one line, naming the file) when the file is not a ds network."""
    state, meta = model_state(path)
    missing = [name for name in DESCRIBED_BY if meta.get(name) is None]
    if missing:
        raise CheckpointError(f"{path} does not say which network it holds (its 'meta' lacks {', '.join(missing)}): "
                              f"it is a bare state_dict, not a file ds wrote; build the network and load the "
                              f"weights with ds.train.load_weights, or save it with ds.save_network")
    record = NetInfo.from_dict(meta)
    model = load_weights(build_network(record), state, str(path), meta)
    return set_info(model, record).eval()
