"""Networks for training: the base or a shrunk network, weights from a base checkpoint, teachers."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ds.meta import NetInfo, info
from ds.models import create_model
from ds.shrink import apply_pattern
from ds.switches import switches

from .checkpoint import CheckpointMismatch, describe, load_weights, model_state


def build_model(backbone: str, num_classes: int, input_size: int, pattern=None, init=None) -> nn.Module:
    """The base network (weights from `init`, a checkpoint path or state_dict of the base network),
    then shrunk by `pattern` when given; `ds.meta.info(model)` says which. Base weights are loaded
    before shrinking because ds.apply_pattern renames the removed blocks' parameters
    (blocks.i.j.* -> blocks.i.j.stages.*)."""
    model = create_model(backbone, num_classes=num_classes, input_size=input_size)
    if init is not None:
        state, meta = model_state(init)
        source = f"--init {init}" if isinstance(init, (str, Path)) else "the init state_dict"
        if meta.get("pattern") not in (None, [1] * len(switches(model))):
            raise CheckpointMismatch(f"{source} holds a shrunk network ({describe(meta)}); "
                                     f"--init wants the base {backbone} network")
        load_weights(model, state, source, meta)
    if pattern is not None:
        model = apply_pattern(model, pattern)
    return model


def load_base_weights(shrunk: nn.Module, base_checkpoint) -> nn.Module:
    """Load the weights of a base (unshrunk) checkpoint into a model made by ds.apply_pattern.

    The shrunk model's parameters have other names; this rebuilds base + pattern from the
    checkpoint and copies the result in. `ds.meta.info(shrunk)` must name backbone, classes and
    input size (networks from `build_model` or `ds.create_model` do).
    """
    record = info(shrunk)
    if None in (record.backbone, record.num_classes, record.input_size):
        raise ValueError(f"ds.meta.info of the model is {record}: backbone, num_classes and input_size are "
                         f"needed to rebuild it; build it with ds.train.build_model or ds.create_model")
    rebuilt = build_model(record.backbone, record.num_classes, record.input_size, record.pattern, base_checkpoint)
    return load_weights(shrunk, rebuilt.state_dict(), "the rebuilt base network", info(rebuilt).as_dict())


def build_teacher(path, backbone: str, num_classes: int, input_size: int) -> nn.Module:
    """The teacher from a checkpoint: the network its meta names (default: the base `backbone`)."""
    state, meta = model_state(path)
    record = NetInfo.from_dict(meta)
    teacher = build_model(record.backbone or backbone, num_classes, input_size, record.pattern)
    return load_weights(teacher, state, f"--teacher {path}", meta).eval()
