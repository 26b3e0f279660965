"""The networks a benchmark compares: the BN-folded base and merged DS variants of one model.

All variants derive from one randomly initialized model: `ds.apply_pattern` removes the
activations a pattern switches off, `ds.merge` folds BN and merges linear blocks, and
`ds.verify` checks every merged network against the one it replaces before it is timed.
The base is the all-ones pattern, merged too, so it is BN-folded exactly like the variants.
"""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

import ds

from .settings import BenchError

BASE = "base"


def load_patterns(spec: str, model_name: str) -> dict[str, list[int]]:
    """Named patterns from 'paper' (the paper's DS-A..F for `model_name`), 'paper:DS-A,DS-F'
    (a subset) or a JSON file holding {"name": [0/1, ...], ...}."""
    if spec == "paper" or spec.startswith("paper:"):
        known = getattr(ds, "PATTERNS", {})
        if model_name not in known:
            raise BenchError(f"--patterns paper: ds.PATTERNS holds the paper's patterns only for "
                             f"{', '.join(sorted(known)) or 'no model known to ds.PATTERNS'}, not "
                             f"{model_name!r}; pass a JSON file of named 0/1 patterns instead")
        names = [n.strip() for n in spec.partition(":")[2].split(",") if n.strip()]
        names = names or list(known[model_name])
        unknown = [n for n in names if n not in known[model_name]]
        if unknown:
            raise BenchError(f"--patterns {spec}: no paper pattern {unknown[0]!r}; choose from "
                             f"{', '.join(known[model_name])}")
        return {name: list(known[model_name][name]) for name in names}
    path = Path(spec)
    if not path.is_file():
        raise BenchError(f"--patterns {spec!r}: not 'paper' and no such file; pass 'paper' or "
                                "the path of a JSON file like {\"DS-X\": [1, 0, 1, ...]}")
    try:
        patterns = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BenchError(f"--patterns {spec}: not valid JSON ({e}); expected "
                         "{\"name\": [0/1, ...], ...}") from None
    if not isinstance(patterns, dict) or not patterns:
        raise BenchError(f"--patterns {spec}: expected a non-empty JSON object "
                         "{\"name\": [0/1, ...], ...}")
    for name, pattern in patterns.items():
        if name == BASE:
            raise BenchError(f"--patterns {spec}: the name {BASE!r} is reserved for the all-ones "
                             "baseline that every run measures; rename that pattern")
        if not isinstance(pattern, list):  # entries and length are checked by ds.apply_pattern
            raise BenchError(f"--patterns {spec}: pattern {name!r} must be a list of 0/1 "
                             f"entries, got {pattern!r}")
    return {name: list(p) for name, p in patterns.items()}


def build_variants(model: nn.Module, patterns: dict[str, list[int]], input_size,
                   merge_depthwise_separable: bool = False):
    """({name: merged network}, {name: verification errors}) for the base and every pattern.

    `ds.merge` checks each merged network against the shrunk network it replaces (a relative
    error above its tolerance raises ds.MergeError: a bug, not something to time) and records
    the errors it found, which are returned here.
    """
    n = len(ds.switches(model))
    merged, errors = {}, {}
    for name, pattern in {BASE: [1] * n, **patterns}.items():
        try:
            shrunk = ds.apply_pattern(model, pattern).eval()
        except ds.PatternError as e:
            raise BenchError(f"pattern {name!r}: {e}") from None
        merged[name] = ds.merge(shrunk, input_size=input_size,
                                merge_depthwise_separable=merge_depthwise_separable)
        record = ds.meta.info(merged[name])
        errors[name] = {"max_abs": record.merge_max_abs, "max_rel": record.merge_max_rel}
    return merged, errors
