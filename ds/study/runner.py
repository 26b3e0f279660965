"""Run the study: the five chapter notebooks in order with papermill, then the book.

    python -m ds.study run --profile quick        # runs/quick/, then book/_build/html
    python -m ds.study run --profile full         # GPU; stops after piece_minutes, rerun to continue

Each chapter's executed notebook lands in runs/<profile>/NN_name.ipynb and a marker
runs/<profile>/NN_name.done once it finished, so a rerun skips finished chapters; inside a
chapter, training resumes from its checkpoints. The first failure stops the run and names the
chapter and its error. Everything is logged to runs/<profile>/study.log.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from .chapter import DEADLINE_ENV
from .profiles import REPO_ROOT, ProfileError, load_profile, notebook_parameters

CHAPTERS = ("01_observation", "02_search", "03_finetune", "04_merge", "05_throughput")
NOTEBOOKS = REPO_ROOT / "notebooks"
BOOK = REPO_ROOT / "book"
TIMINGS = "timings.json"
EXIT_PAUSED = 3


class ChapterFailed(RuntimeError):
    """A chapter notebook raised; the message names the chapter, the error and the executed copy."""


class PiecePaused(RuntimeError):
    """The time slice of this piece of the run ended inside a chapter; rerun to continue."""


def declared_parameters(chapter: str, notebooks: Path = NOTEBOOKS) -> dict:
    """The names and defaults of a chapter notebook's `parameters` cell (via papermill)."""
    import papermill
    return papermill.inspect_notebook(str(notebooks / f"{chapter}.ipynb"))


def chapter_parameters(profile: dict, run_dir: Path, notebooks: Path = NOTEBOOKS) -> dict[str, dict]:
    """Per chapter, the profile's values for the parameters that chapter declares.

    A profile key that no chapter declares is a typo or a stale name: an error that lists them.
    """
    values = dict(notebook_parameters(profile), run_dir=str(run_dir))
    declared = {chapter: declared_parameters(chapter, notebooks) for chapter in CHAPTERS}
    known = set().union(*declared.values())
    unknown = sorted(set(values) - known)
    if unknown:
        raise ProfileError(f"profile {profile['profile']!r} sets {', '.join(unknown)}, which no chapter "
                           f"declares; chapters take: {', '.join(sorted(known))}")
    return {chapter: {k: v for k, v in values.items() if k in names} for chapter, names in declared.items()}


def _logger(run_dir: Path) -> logging.Logger:
    log = logging.getLogger("ds.study")
    log.setLevel(logging.INFO)
    log.handlers.clear()
    file = logging.FileHandler(run_dir / "study.log")
    file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    screen = logging.StreamHandler(sys.stdout)
    screen.setFormatter(logging.Formatter("[study] %(message)s"))
    log.addHandler(file)
    log.addHandler(screen)
    papermill_log = logging.getLogger("papermill")   # cell outputs go to the log file only
    papermill_log.setLevel(logging.INFO)
    papermill_log.handlers.clear()
    papermill_log.addHandler(file)
    papermill_log.propagate = False
    return log


def run_chapter(chapter: str, parameters: dict, run_dir: Path, log: logging.Logger,
                notebooks: Path = NOTEBOOKS) -> float:
    """Execute one chapter with papermill (kernel python3, cwd the repository); seconds taken."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = run_dir / f"{chapter}.ipynb"
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(notebooks / f"{chapter}.ipynb"), str(output), parameters=parameters,
                                   kernel_name="python3", cwd=str(REPO_ROOT), log_output=True,
                                   progress_bar=False)
    except PapermillExecutionError as err:
        if err.ename in ("PieceTimeUp", "ds.study.chapter.PieceTimeUp"):
            raise PiecePaused(f"{chapter}: {err.evalue}") from None
        raise ChapterFailed(f"chapter {chapter} failed: {err.ename}: {err.evalue}\n"
                            f"executed notebook with the traceback: {output}; log: {run_dir / 'study.log'}") from None
    return time.perf_counter() - start


def run_study(profile_name: str, *, profiles_file=None, run_root: str | Path = REPO_ROOT / "runs",
              chapters=None, restart: bool = False, book: bool = True, notebooks: Path = NOTEBOOKS) -> Path:
    """Run the chapters not yet finished, then publish and build the book; the run directory."""
    profile = load_profile(profile_name, profiles_file)
    run_dir = (Path(run_root) / profile_name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log = _logger(run_dir)
    parameters = chapter_parameters(profile, run_dir, notebooks)
    chosen = list(chapters or CHAPTERS)
    bad = [c for c in chosen if c not in CHAPTERS]
    if bad:
        raise ProfileError(f"unknown chapter(s) {', '.join(bad)}; chapters: {', '.join(CHAPTERS)}")
    if restart:
        for chapter in chosen:
            (run_dir / f"{chapter}.done").unlink(missing_ok=True)

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    if profile.get("piece_minutes"):
        os.environ[DEADLINE_ENV] = str(time.time() + 60 * float(profile["piece_minutes"]))
    else:
        os.environ.pop(DEADLINE_ENV, None)
    timings_path = run_dir / TIMINGS
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    log.info(f"profile {profile_name}: {profile.get('description', '')}".rstrip(": "))
    log.info(f"run directory {run_dir}")
    for chapter in CHAPTERS:
        if chapter not in chosen:
            continue
        marker = run_dir / f"{chapter}.done"
        if marker.exists():
            log.info(f"{chapter}: finished before, skipped (delete {marker.name} to rerun it)")
            continue
        log.info(f"{chapter}: running")
        seconds = run_chapter(chapter, parameters[chapter], run_dir, log, notebooks)
        timings[chapter] = seconds   # the piece that finished it
        timings_path.write_text(json.dumps(timings, indent=1) + "\n")
        marker.write_text(time.strftime("%Y-%m-%d %H:%M:%S UTC\n", time.gmtime()))
        log.info(f"{chapter}: done in {seconds:.0f} s")
    log.info(f"chapters finished; time of the finishing pieces: {sum(timings.values()):.0f} s")
    if book:
        from .book import build_book, publish
        book_dir = BOOK if profile.get("publish", True) else run_dir / "book"
        publish(run_dir, book_dir, log)
        html = build_book(book_dir, log)
        log.info(f"book: {html}")
    return run_dir
