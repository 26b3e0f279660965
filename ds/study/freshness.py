"""Whether a finished chapter is still the chapter asked for.

A chapter's `.done` record (JSON) keeps the parameters it ran with, a hash of its notebook's cells,
the fingerprint of the chapter before it as it was then, and its own fingerprint (new at every
execution). A chapter is *current* when all three still hold; otherwise it is *stale* (and so is
every chapter after it: a rerun gives a new fingerprint, which breaks their chain), or *missing*
when it has no record. The runner reruns stale chapters; a publish refuses them.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from .layout import CHAPTERS, NOTEBOOKS, RunLayout, notebook_source

UNHASHED = ("run_dir", "profile")   # where a run lives and what its profile is called change nothing it computes


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def notebook_hash(path: str | Path) -> str:
    """A hash of a notebook's cells (type and source): prose or code edits count, metadata not."""
    cells = json.loads(Path(path).read_text())["cells"]
    return _digest([(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
                    for c in cells])


def hashed_parameters(parameters: dict) -> dict:
    return {k: v for k, v in parameters.items() if k not in UNHASHED}


def read_done(path: str | Path) -> dict | None:
    """The record of a finished chapter; None when unfinished, {} for a record without parameters."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def done_record(parameters: dict, notebook: str, previous: str | None, started_utc: str) -> dict:
    """What a chapter runs with (its .started record; with `finished_utc` added, its .done record)."""
    return {"started_utc": started_utc, "parameters": hashed_parameters(parameters), "notebook": notebook,
            "previous": previous, "fingerprint": uuid.uuid4().hex}


@dataclass(frozen=True)
class ChapterState:
    chapter: str
    status: str          # current, stale or missing
    reason: str          # why it is stale or missing ("" when current)


def why_stale(record: dict, parameters: dict, notebook: str, previous: str | None, before: str | None) -> str:
    if "fingerprint" not in record:
        return "its .done record holds no parameters (an older runner wrote it)"
    then, now = record.get("parameters", {}), hashed_parameters(parameters)
    changed = sorted(k for k in set(then) | set(now) if then.get(k, "<unset>") != now.get(k, "<unset>"))
    if changed:
        return "parameters changed since it ran: " + ", ".join(
            f"{k} {then.get(k, '<unset>')!r} -> {now.get(k, '<unset>')!r}" for k in changed)
    if record.get("notebook") != notebook:
        return "its notebook changed since it ran"
    if previous is None:
        return f"{before} has no finished record any more"
    return f"{before} was rerun after it ran"


def matches(record: dict, parameters: dict, notebook: str, previous: str | None) -> bool:
    """Whether a chapter's record was made with these parameters, notebook and predecessor."""
    return ("fingerprint" in record and record.get("parameters") == hashed_parameters(parameters)
            and record.get("notebook") == notebook and record.get("previous") == previous)


def chapter_state(layout: RunLayout, chapter: str, parameters: dict, previous: str | None, before: str | None,
                  notebooks: Path = NOTEBOOKS) -> ChapterState:
    """The state of `chapter` given the recorded fingerprint of the chapter `before` it (`previous`)."""
    notebook = notebook_hash(notebook_source(chapter, notebooks))
    record = read_done(layout.done(chapter))
    if record is None:
        return ChapterState(chapter, "missing", "not finished")
    if matches(record, parameters, notebook, previous):
        return ChapterState(chapter, "current", "")
    return ChapterState(chapter, "stale", why_stale(record, parameters, notebook, previous, before))


def recorded_fingerprint(layout: RunLayout, chapter: str) -> str | None:
    record = read_done(layout.done(chapter))
    return record.get("fingerprint") if record else None


def chapter_states(layout: RunLayout, parameters: dict[str, dict], notebooks: Path = NOTEBOOKS) -> list[ChapterState]:
    """The state of every chapter of a run, in order, for the given per-chapter parameters."""
    states, before = [], None
    for chapter in CHAPTERS:
        previous = recorded_fingerprint(layout, before) if before else None
        states.append(chapter_state(layout, chapter, parameters[chapter], previous, before, notebooks))
        before = chapter
    return states
