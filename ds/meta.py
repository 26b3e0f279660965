"""What ds knows about a network it built: one typed record, kept on the module as `ds_info`.

`create_model` writes it, `apply_pattern` adds the pattern, `merge` marks the result merged;
checkpoints store `as_dict()`. Read it with `info(model)`, never through other attributes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from torch import nn

ATTRIBUTE = "ds_info"


@dataclass(frozen=True)
class NetInfo:
    backbone: str | None = None          # the name ds.create_model was given
    num_classes: int | None = None
    input_size: int | tuple[int, int] | None = None  # the size the strides were chosen for
    pattern: tuple[int, ...] | None = None           # 0/1 per switch; None for the unshrunk network
    final_act: bool = True               # apply_pattern's final_act
    merged: bool = False                 # True once ds.merge has folded and composed it
    merge_depthwise_separable: bool = False  # ds.merge's option of that name (with merged)
    merge_max_abs: float | None = None   # ds.merge's check against the network it replaces
    merge_max_rel: float | None = None   # (None when merged with verify=False)

    def as_dict(self) -> dict:
        record = asdict(self)
        record["pattern"] = list(self.pattern) if self.pattern is not None else None
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "NetInfo":
        """The NetInfo fields of `record`; other keys (a checkpoint's meta holds more) are not NetInfo's."""
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        if known.get("pattern") is not None:
            known["pattern"] = tuple(int(b) for b in known["pattern"])
        if isinstance(known.get("input_size"), list):
            known["input_size"] = tuple(known["input_size"])
        return cls(**known)


def info(model: nn.Module) -> NetInfo:
    """The record of `model`; an empty one for a network ds did not build."""
    return getattr(model, ATTRIBUTE, None) or NetInfo()


def set_info(model: nn.Module, record: NetInfo | None = None, **changes) -> nn.Module:
    """Store `record` (default: the model's own) with `changes` applied on `model`; returns it."""
    base = record if record is not None else info(model)
    object.__setattr__(model, ATTRIBUTE, replace(base, **changes))
    return model
