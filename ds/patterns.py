"""The paper's published activation patterns, and turning a pattern argument into a 0/1 list."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
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


def resolve_pattern(model: nn.Module, pattern, length: int) -> list[int]:
    """`pattern` as a 0/1 list of `length` entries, one per switch of `model` (1 keeps, 0 removes).

    `pattern` is one of:
    - a 1-D sequence of 0/1: list, tuple, numpy array or torch tensor; bools and the floats 0.0 /
      1.0 count as 0/1;
    - a JSON file: one list, or an object of named lists (a search's patterns.json) with
      `FILE:NAME` choosing one;
    - an inline list as a string, as a command line gives it: "1,0,1,..." (commas and/or spaces,
      optional brackets) or "101..." (digits only). A string is read this way when it is not an
      existing file and holds a comma, or only digits and spaces;
    - a name in ds.PATTERNS for the model (e.g. "DS-A").
    The length is checked before the values, so a wrong-length "0,1,2" reports its length.
    """
    name = model_name(model)
    if isinstance(pattern, (str, Path)) and _names_a_file(str(pattern)):
        pattern = _read_pattern_file(str(pattern))
    elif isinstance(pattern, str) and _is_inline(pattern):
        pattern = _split_inline(pattern)
    if isinstance(pattern, str):
        known = PATTERNS.get(name, {})
        if pattern not in known:
            hint = (f"known for {name}: {', '.join(known)}" if known
                    else f"ds.PATTERNS has no named patterns for {name!r}; pass a 0/1 list")
            raise PatternError(f"unknown pattern name {pattern!r} ({hint}); an inline pattern is written "
                               f"\"1,0,1,...\", a file as path.json or path.json:NAME")
        pattern = known[pattern]
    bits = _entries(pattern)
    if len(bits) != length:
        raise PatternError(
            f"pattern has {len(bits)} entries but {name or type(model).__name__} has {length} switches "
            f"(see ds.switches(model)); give one 0/1 entry per switch"
        )
    bad = [(i, b) for i, b in enumerate(bits) if not _is_bit(b)]
    if bad:
        raise PatternError(f"pattern entries must be 0 (remove) or 1 (keep); got {bad[0][1]!r} at {bad[0][0]}")
    return [int(b) for b in bits]


def _entries(pattern) -> list:
    """The entries of a 1-D pattern as Python scalars; anything else is a PatternError."""
    if isinstance(pattern, torch.Tensor):
        pattern = pattern.detach().cpu().numpy()
    if isinstance(pattern, np.ndarray):
        if pattern.ndim != 1:
            raise PatternError(f"a pattern must be 1-D (one 0/1 entry per switch); got an array of shape "
                               f"{tuple(pattern.shape)}")
        return pattern.tolist()
    if isinstance(pattern, (bytes, dict, set)) or not isinstance(pattern, Sequence):
        raise PatternError(f"a pattern is a 0/1 sequence, a name in ds.PATTERNS or a JSON file; got "
                           f"{type(pattern).__name__} {pattern!r:.60}")
    entries = list(pattern)
    nested = [i for i, b in enumerate(entries)
              if isinstance(b, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(b, str)
              and not (isinstance(b, (np.ndarray, torch.Tensor)) and b.ndim == 0)]
    if nested:
        raise PatternError(f"a pattern must be 1-D (one 0/1 entry per switch); entry {nested[0]} is itself "
                           f"a sequence: {entries[nested[0]]!r:.60}")
    return [b.item() if isinstance(b, (np.generic, np.ndarray, torch.Tensor)) else b for b in entries]


def _is_bit(value) -> bool:
    return isinstance(value, (bool, int, float)) and not isinstance(value, str) and value in (0, 1)


def _is_inline(spec: str) -> bool:
    body = spec.strip().strip("[]").strip()
    return bool(body) and ("," in body or all(c.isdigit() or c.isspace() for c in body))


def _split_inline(spec: str) -> list:
    """ "1,0,1" / "1 0 1" / "[1, 0, 1]" / "101" into entries (ints where they parse, else the text)."""
    body = spec.strip().strip("[]").strip()
    tokens = body.replace(",", " ").split() if ("," in body or " " in body) else list(body)
    return [int(t) if t.lstrip("-").isdigit() else t for t in tokens]


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
