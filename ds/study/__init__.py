"""The study: chapter helpers for the notebooks, the papermill runner and the book.

Notebooks call `start` first (run directory, device, provenance), then `load_data`, `loaders`,
`train` / `load_model`, and the figures in `ds.study.figures`. `python -m ds.study run --profile
quick` runs the five chapters and builds the book (see `ds.study.runner`).
"""
from .chapter import (Chapter, MissingInput, PieceTimeUp, check_time, describe_data, is_finished, load_data,
                      load_model, loaders, start, train)
from .profiles import ProfileError, load_profile, read_profiles

__all__ = ["Chapter", "MissingInput", "PieceTimeUp", "ProfileError", "check_time", "describe_data",
           "is_finished", "load_data", "load_model", "load_profile", "loaders", "read_profiles",
           "start", "train"]
