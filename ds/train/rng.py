"""Random-number state: seeding, and saving/restoring it for an exact resume.

The saved state is plain data (tensors, numbers, strings, tuples), so a checkpoint holding it
loads with `torch.load(..., weights_only=True)`: numpy's MT19937 key is kept as an int64 tensor.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int, rank: int = 0) -> None:
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def numpy_state_as_data(state: tuple) -> dict:
    """numpy's legacy RNG state (`np.random.get_state()`, a tuple holding an array) as plain data."""
    name, key, pos, has_gauss, cached_gaussian = state
    return {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key).astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state_as_data(np.random.get_state()),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    np.random.set_state((saved["bit_generator"], saved["key"].numpy().astype(np.uint32), saved["pos"],
                         saved["has_gauss"], saved["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
