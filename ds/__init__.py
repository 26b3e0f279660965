"""DepthShrinker, reproduced: remove activations from inverted-residual networks, merge the
now-linear blocks into dense convs, and measure what it buys."""
import importlib

from .cost import macs, params
from .errors import MergeError, PatternError, UnsupportedModelError
from .merging import MERGE_TOLERANCE, merge, verify
from .models import create_model
from .patterns import PATTERNS
from .shrink import apply_pattern
from .switches import Switch, switches

# Training-side modules load on first use (ds.train.fit, ds.gating.search, ds.data.load_cifar10):
# `python -m ds.train` does not find ds.train already imported, and `import ds` does not load them.
_LAZY_SUBMODULES = {"data", "loaders", "train", "distill", "gating", "ddp", "bench", "export", "networks"}
# Network files (ds.networks) need the training side's checkpoint reader: loaded on first use too.
_LAZY_FUNCTIONS = {"load_network": "networks", "save_network": "networks"}


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "create_model", "switches", "apply_pattern", "merge", "verify", "load_network", "save_network", "macs", "params", "PATTERNS", "MERGE_TOLERANCE",
    "Switch", "MergeError", "PatternError", "UnsupportedModelError",
]
