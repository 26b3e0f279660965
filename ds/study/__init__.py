"""The study: chapter helpers for the notebooks, the papermill runner and the book.

A chapter notebook calls `setup` first (run directory, device, provenance, data and loaders), then
its chapter's steps (`ds.study.observation`, `search`, `finetune`, `merge`,
`throughput`: one module per chapter) and the figures of `ds.study.figures`. `python -m ds.study run
--profile quick` runs the five chapters and builds the run's book (see `ds.study.runner`);
`python -m ds.study publish --profile cpu` puts a finished run into book/.
"""
from .chapter import (Chapter, MissingInput, Piece, PieceTimeUp, describe_data, is_finished, load_base, load_data,
                      load_model, loaders, setup, start, train)
from .layout import CHAPTERS, RunLayout
from .profiles import ProfileError, load_profile, read_profiles

__all__ = ["CHAPTERS", "Chapter", "MissingInput", "Piece", "PieceTimeUp", "ProfileError", "RunLayout",
           "describe_data", "is_finished", "load_base", "load_data", "load_model", "load_profile", "loaders", "read_profiles",
           "setup", "start", "train"]
