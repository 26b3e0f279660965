"""The paper's published activation patterns, and turning a pattern argument into a 0/1 list."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from .errors import PatternError
from .models import model_name
from .paper import PAPER_PATTERNS

# The paper searched its patterns on mobilenetv2_140; every MobileNetV2 of the standard depth
# has the same 19 switches, so the patterns also apply (unsearched) to the other widths.
_STANDARD_DEPTH_MOBILENETV2 = ("mobilenetv2_140", "mobilenetv2_100", "mobilenetv2_075",
                               "mobilenetv2_050", "mobilenetv2_035", "tv_mobilenet_v2")
PATTERNS: dict[str, dict[str, tuple[int, ...]]] = {
    name: dict(PAPER_PATTERNS) for name in _STANDARD_DEPTH_MOBILENETV2
}


def resolve_pattern(model: nn.Module, pattern: str | Sequence[int], length: int) -> list[int]:
    """`pattern` as a 0/1 list. It is a name in PATTERNS, a 0/1 sequence, or a JSON file: one list,
    or an object of named lists (a search's patterns.json) with `FILE:NAME` choosing one."""
    name = model_name(model)
    if isinstance(pattern, str) and _names_a_file(pattern):
        pattern = _read_pattern_file(pattern)
    if isinstance(pattern, str):
        known = PATTERNS.get(name, {})
        if pattern not in known:
            hint = (f"known for {name}: {', '.join(known)}" if known
                    else f"ds.PATTERNS has no named patterns for {name!r}; pass a 0/1 list")
            raise PatternError(f"unknown pattern name {pattern!r} ({hint})")
        pattern = known[pattern]
    bits = list(pattern)
    if len(bits) != length:
        raise PatternError(
            f"pattern has {len(bits)} entries but {name or type(model).__name__} has {length} switches "
            f"(see ds.switches(model)); give one 0/1 entry per switch"
        )
    bad = [(i, b) for i, b in enumerate(bits) if not (isinstance(b, (int, bool)) and b in (0, 1))]
    if bad:
        raise PatternError(f"pattern entries must be 0 (remove) or 1 (keep); got {bad[0][1]!r} at {bad[0][0]}")
    return [int(b) for b in bits]


def _split_key(spec: str) -> tuple[Path, str]:
    """`FILE:NAME` into (FILE, NAME); a spec that is itself an existing path has no NAME."""
    if ":" in spec and not Path(spec).exists():
        file, _, key = spec.rpartition(":")
        return Path(file), key
    return Path(spec), ""


def _names_a_file(spec: str) -> bool:
    path, _ = _split_key(spec)
    return path.is_file() or path.suffix == ".json"


def _read_pattern_file(spec: str) -> list[int]:
    path, key = _split_key(spec)
    if not path.is_file():
        raise PatternError(f"pattern file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PatternError(f"pattern file {path} is not valid JSON: {error}") from None
    if isinstance(data, dict):
        if key not in data and not (not key and len(data) == 1):
            names = ", ".join(list(data)[:6]) + ("..." if len(data) > 6 else "")
            raise PatternError(f"{path} holds patterns {names}; choose one as {path}:NAME")
        data = data[key] if key else next(iter(data.values()))
    if not isinstance(data, list):
        raise PatternError(f"pattern file {path} must hold a JSON list of 0/1 entries, or an object "
                           f"of named lists")
    return data
