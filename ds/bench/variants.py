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
VERIFY_MAX_REL = 1e-4  # fp32 relative error above which a merge is wrong (as in ds.merge)


def load_patterns(spec: str, model_name: str) -> dict[str, list[int]]:
    """Named patterns from 'paper' (the paper's DS-A..F for `model_name`) or a JSON file
    holding {"name": [0/1, ...], ...}."""
    if spec == "paper":
        known = getattr(ds, "PATTERNS", {})
        if model_name not in known:
            raise BenchError(f"--patterns paper: the paper publishes patterns only for "
                             f"{', '.join(sorted(known)) or 'no model known to ds.PATTERNS'}, not "
                             f"{model_name!r}; pass a JSON file of named 0/1 patterns instead")
        return {name: list(p) for name, p in known[model_name].items()}
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
        if (not isinstance(pattern, list) or not pattern
                or not all(v in (0, 1) and not isinstance(v, float) for v in pattern)):
            raise BenchError(f"--patterns {spec}: pattern {name!r} must be a list of 0/1 "
                             f"integers, got {pattern!r}")
    return {name: [int(v) for v in p] for name, p in patterns.items()}


def build_variants(model: nn.Module, patterns: dict[str, list[int]], input_size):
    """({name: merged network}, {name: verification errors}) for the base and every pattern."""
    n = len(ds.switches(model))
    for name, pattern in patterns.items():
        if len(pattern) != n:
            raise BenchError(f"pattern {name!r} has {len(pattern)} entries but the model has {n} "
                             "switches (see ds.switches(model))")
    merged, errors = {}, {}
    for name, pattern in {BASE: [1] * n, **patterns}.items():
        shrunk = ds.apply_pattern(model, pattern).eval()
        merged[name] = ds.merge(shrunk, verify=False, input_size=input_size)
        errors[name] = ds.verify(shrunk, merged[name], input_size)
        if not errors[name]["max_rel"] <= VERIFY_MAX_REL:
            raise RuntimeError(f"merged {name!r} differs from the network it replaces: "
                               f"max relative error {errors[name]['max_rel']:.3g} > {VERIFY_MAX_REL}; "
                               "this is a bug in ds.merge, not something to time")
    return merged, errors
