"""Run the study: the five chapter notebooks in order with papermill, then the run's own book.

    python -m ds.study run --profile quick        # runs/quick/, its book in runs/quick/book/
    python -m ds.study run --profile gpu          # GPU; stops after piece_minutes, rerun to continue

Each chapter's executed notebook lands in the run directory with a `.done` record of the
parameters and notebook it ran with (`ds.study.freshness`). A rerun skips current chapters and
reruns stale ones (their parameters or notebook changed, or a chapter before them was rerun),
clearing their outputs first; inside a chapter, training resumes from its checkpoints. One process
at a time holds a run directory (`ds.study.lock`). The first failure stops the run and names the
chapter and its error. Everything is logged to the run directory's study.log.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from . import book as study_book
from .chapter import DEADLINE_ENV, PROGRESS_ENV
from .freshness import (chapter_state, chapter_states, done_record, matches, notebook_hash, read_done,
                        recorded_fingerprint)
from .layout import (CHAPTERS, CHECKPOINTS_DIR, NOTEBOOKS, REPO_ROOT, RESULTS_DIR, RunLayout, notebook_source,
                     relative_to_repo)
from .lock import hold
from .profiles import ProfileError, chapter_parameters, covers_study, load_profile, profile_chapters
from .results import publish_results
from .snapshot import STATE_DIR, describe, holds_chapters, restore, snapshot_path

RUNS = REPO_ROOT / "runs"
EXIT_PAUSED = 3


class ChapterFailed(RuntimeError):
    """A chapter notebook raised; the message names the chapter, the error and the executed copy."""


class PiecePaused(RuntimeError):
    """The time slice of this piece of the run ended inside a chapter; rerun to continue."""


class StaleRun(RuntimeError):
    """A book was asked of a run whose chapters are not all finished with the current parameters."""


def run_layout(profile_name: str, run_root: str | Path = RUNS) -> RunLayout:
    return RunLayout((Path(run_root) / profile_name).resolve())


def run_parameters(profile: dict, layout: RunLayout, notebooks: Path = NOTEBOOKS) -> dict[str, dict]:
    """Per chapter, its papermill parameters; `run_dir` relative to the repository when inside it
    (the notebooks run with the repository as working directory)."""
    return chapter_parameters(profile, relative_to_repo(layout.root), notebooks)


def not_current(layout: RunLayout, parameters: dict[str, dict], notebooks: Path = NOTEBOOKS,
                chapters: tuple[str, ...] = CHAPTERS) -> list[str]:
    """'chapter: why' for every chapter of `chapters` that is missing or stale."""
    return [f"{s.chapter} ({s.reason})" for s in chapter_states(layout, parameters, notebooks)
            if s.status != "current" and s.chapter in chapters]


def _logger(layout: RunLayout) -> logging.Logger:
    log = logging.getLogger("ds.study")
    log.setLevel(logging.INFO)
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)
    file = logging.FileHandler(layout.log)
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


def run_chapter(chapter: str, parameters: dict, layout: RunLayout, notebooks: Path = NOTEBOOKS) -> float:
    """Execute one chapter with papermill (kernel python3, cwd the repository); seconds taken."""
    import papermill  # optional dependency (the `study` extra); ds.study imports without it
    from papermill.exceptions import PapermillExecutionError

    output = layout.notebook(chapter)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(notebook_source(chapter, notebooks)), str(output), parameters=parameters,
                                   kernel_name="python3", cwd=str(REPO_ROOT), log_output=True,
                                   progress_bar=False,
                                   # the kernel's own log (its start-up warning, and the traceback
                                   # of a Ctrl-C that reaches it) stays off the terminal; the
                                   # notebook's output is logged above
                                   extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except PapermillExecutionError as err:
        if err.ename in ("PieceTimeUp", "ds.study.chapter.PieceTimeUp"):
            raise PiecePaused(f"{chapter}: {err.evalue}") from None
        if err.ename == "KeyboardInterrupt":   # Ctrl-C reached the kernel before this process
            raise KeyboardInterrupt from None
        raise ChapterFailed(f"chapter {chapter} failed: {err.ename}: {err.evalue}\n"
                            f"executed notebook with the traceback: {output}; log: {layout.log}") from None
    return time.perf_counter() - start


def clear_outputs(layout: RunLayout, chapter: str) -> None:
    """Remove what a chapter wrote (it ran with other parameters or on other inputs)."""
    paths = [layout.chapter_dir(chapter), layout.notebook(chapter)]
    if chapter == CHAPTERS[0]:
        paths.append(layout.base_dir)
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def run_study(profile_name: str, *, profiles_file=None, run_root: str | Path = RUNS, chapters=None,
              restart: bool = False, book: bool = True, notebooks: Path = NOTEBOOKS,
              state_dir: str | Path = STATE_DIR) -> Path:
    """Run the chapters not current, then build the run's own book; the run directory. A run
    directory that holds no chapter yet is first restored from the profile's committed snapshot,
    when there is one (`ds.study.snapshot`)."""
    profile = load_profile(profile_name, profiles_file)
    own = profile_chapters(profile)
    chosen = list(chapters or own)
    bad = [c for c in chosen if c not in own]
    if bad:
        raise ProfileError(f"chapter(s) {', '.join(bad)} are not part of profile {profile_name!r}; its chapters: "
                           f"{', '.join(own)}")
    book = book and covers_study(profile)
    layout = run_layout(profile_name, run_root)
    layout.root.mkdir(parents=True, exist_ok=True)
    with hold(layout.lock):
        log = _logger(layout)
        _restore_snapshot(layout, profile_name, state_dir, log)
        parameters = run_parameters(profile, layout, notebooks)
        _run_chapters(profile, layout, parameters, chosen, restart, log, notebooks)
        if book:
            stale = not_current(layout, parameters, notebooks)
            if stale:
                raise StaleRun(f"the run's book needs every chapter finished with the current parameters; not so: "
                               f"{'; '.join(stale)}. Run python -m ds.study run --profile {profile_name} (without "
                               f"--chapters) to bring them up to date, or pass --no-book")
            html = study_book.build_run_book(layout, log)
            log.info(f"book of this run: {html}")
        elif not covers_study(profile):
            log.info(f"profile {profile_name} runs {', '.join(own)} only: no book of its own; make publish "
                     f"PROFILE={profile_name} publishes its tables and networks for the profiles that use them")
    return layout.root


def _restore_snapshot(layout: RunLayout, profile_name: str, state_dir: str | Path, log: logging.Logger) -> None:
    """A run directory without chapters starts from the profile's committed snapshot, if any."""
    path = snapshot_path(profile_name, state_dir)
    if not path.is_file():
        return
    source = relative_to_repo(path)
    if holds_chapters(layout):
        log.info(f"{source} is not restored: this run directory holds chapters already (move it away to "
                 f"restore the snapshot instead)")
        return
    manifest = restore(layout, profile_name, state_dir)
    log.info(f"restored the run from {source} ({describe(manifest)}); delete that file to start over instead")


def _run_chapters(profile: dict, layout: RunLayout, parameters: dict, chosen: list[str], restart: bool,
                  log: logging.Logger, notebooks: Path) -> None:
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    deadline = None
    if profile.get("piece_minutes"):
        deadline = time.time() + 60 * float(profile["piece_minutes"])
        os.environ[DEADLINE_ENV] = str(deadline)
    else:
        os.environ.pop(DEADLINE_ENV, None)
    os.environ[PROGRESS_ENV] = "0"
    timings = json.loads(layout.timings.read_text()) if layout.timings.is_file() else {}
    log.info(f"profile {profile['profile']}: {profile.get('description', '')}".rstrip(": "))
    log.info(f"run directory {layout.root}")
    progressed, before = False, None
    for chapter in CHAPTERS:
        previous = recorded_fingerprint(layout, before) if before else None
        if restart and chapter in chosen:
            layout.done(chapter).unlink(missing_ok=True)
        state = chapter_state(layout, chapter, parameters[chapter], previous, before, notebooks)
        before = chapter
        if chapter not in chosen:
            if state.status == "stale":
                log.info(f"{chapter}: stale ({state.reason}), not chosen by --chapters")
            continue
        if state.status == "current":
            log.info(f"{chapter}: finished before with these parameters, skipped "
                     f"(--restart --chapters {chapter} reruns it)")
            continue
        notebook = notebook_hash(notebook_source(chapter, notebooks))
        started = read_done(layout.started(chapter))
        if state.status == "stale":
            log.info(f"{chapter}: rerunning from scratch: {state.reason}")
            layout.done(chapter).unlink()
            clear_outputs(layout, chapter)
        elif started is not None and not matches(started, parameters[chapter], notebook, previous):
            log.info(f"{chapter}: an unfinished earlier attempt ran with other parameters, inputs or notebook; "
                     f"starting from scratch")
            clear_outputs(layout, chapter)
        if deadline is not None and progressed and time.time() > deadline:
            raise PiecePaused(f"the time slice ended before {chapter} started")
        log.info(f"{chapter}: running")
        now = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        record = done_record(parameters[chapter], notebook, previous, now)
        layout.started(chapter).write_text(json.dumps(record, indent=1) + "\n")
        seconds = run_chapter(chapter, parameters[chapter], layout, notebooks)
        timings[chapter] = seconds   # the piece that finished it
        layout.timings.write_text(json.dumps(timings, indent=1) + "\n")
        record["finished_utc"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        layout.done(chapter).write_text(json.dumps(record, indent=1) + "\n")
        layout.started(chapter).unlink()
        progressed = True
        os.environ[PROGRESS_ENV] = "1"
        log.info(f"{chapter}: done in {seconds:.0f} s")
    log.info(f"chapters finished; time of the finishing pieces: {sum(timings.values()):.0f} s")


def rebuild_book(profile_name: str, *, profiles_file=None, run_root: str | Path = RUNS,
               notebooks: Path = NOTEBOOKS) -> Path:
    """Build the book of a finished run inside its run directory; the path of its index.html."""
    profile = load_profile(profile_name, profiles_file)
    if not covers_study(profile):
        raise StaleRun(f"profile {profile_name!r} runs {', '.join(profile_chapters(profile))} only and has no book; "
                       f"its tables are shown by the profiles that use them")
    layout = run_layout(profile_name, run_root)
    with hold(layout.lock):
        stale = not_current(layout, run_parameters(profile, layout, notebooks), notebooks)
        if stale:
            raise StaleRun(f"run {layout.root} is not finished with the current parameters: {'; '.join(stale)}; "
                           f"run python -m ds.study run --profile {profile_name} first")
        return study_book.build_run_book(layout)


def publish(profile_name: str, *, profiles_file=None, run_root: str | Path = RUNS, book_dir: Path | None = None,
            notebooks: Path = NOTEBOOKS, results_dir: Path = RESULTS_DIR,
            checkpoints_dir: Path = CHECKPOINTS_DIR, state_dir: Path = STATE_DIR) -> Path | None:
    """Publish a complete, current run into the tracked book (default book/) and build it, then copy
    its tables to `results_dir` and its small checkpoints to `checkpoints_dir` (`ds.study.results`);
    the path of the book's index.html (None for a profile of a few chapters, which has no book and
    publishes its tables and networks only). A snapshot of the run left in `state_dir` is named for
    deletion. Refuses, before touching anything, a profile marked
    `publish: false` and a run with a missing or stale chapter."""
    profile = load_profile(profile_name, profiles_file)
    if not profile.get("publish", True):
        raise study_book.NotPublishable(f"profile {profile_name!r} is marked publish: false (its results are not "
                                        f"the book's); publish a run of another profile, e.g. --profile cpu")
    layout = run_layout(profile_name, run_root)
    if not layout.root.is_dir():
        raise study_book.NotPublishable(f"no run of profile {profile_name!r} in {layout.root}: run "
                                        f"python -m ds.study run --profile {profile_name} first")
    own = profile_chapters(profile)
    with hold(layout.lock):
        stale = not_current(layout, run_parameters(profile, layout, notebooks), notebooks, own)
        if stale:
            raise study_book.NotPublishable(
                f"run {layout.root} is not complete with the current parameters of profile {profile_name!r}: "
                f"{'; '.join(stale)}. Run python -m ds.study run --profile {profile_name} until it finishes, "
                f"then publish; book/ is unchanged")
        html = study_book.publish(layout, book_dir or study_book.BOOK) if covers_study(profile) else None
        for path in publish_results(layout, profile_name, results_dir, checkpoints_dir):
            print(f"published {relative_to_repo(path)}")
        leftover = snapshot_path(profile_name, state_dir)
        if leftover.is_file():
            print(f"the run is published: delete its snapshot, git rm {relative_to_repo(leftover)}")
        return html
