"""DepthShrinker, reproduced: remove activations from inverted-residual networks, merge the
now-linear blocks into dense convs, and measure what it buys."""
from .cost import macs, params
from .errors import MergeError, PatternError, UnsupportedModelError
from .merge import merge, verify
from .models import create_model
from .patterns import PATTERNS
from .shrink import apply_pattern
from .switches import Switch, switches

__all__ = [
    "create_model", "switches", "apply_pattern", "merge", "verify", "macs", "params", "PATTERNS",
    "Switch", "MergeError", "PatternError", "UnsupportedModelError",
]
