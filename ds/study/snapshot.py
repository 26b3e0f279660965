"""Carry an unfinished run to another machine: a snapshot of its run directory, committed to git.

A study run of the `cpu` profiles takes longer than one working session, and run directories
(runs/) are not tracked. `python -m ds.study snapshot --profile P` packs runs/P into
state/P.tar.gz: every file a resume needs (chapter records, checkpoints, metrics, executed
notebooks, the log), without the lock and the run's own book, with a manifest (SNAPSHOT.json: the
profile, when, at which commit, each file's size and sha256). The networks of a finished chapter's
own experiments, which no later chapter reads (`RunLayout.spent`), are left out and listed in the
manifest: they would only weigh on git. A finished training's checkpoint goes in without its
optimizer state (`ds.train.checkpoint.slimmed`: a resume takes no step from it, so nothing reads
that state again), which halves a chapter of finished one-epoch finetunes; the manifest lists them
under `slimmed`. Commit it; on a fresh clone,
`python -m ds.study run --profile P` finds runs/P missing and restores the snapshot before running,
so training resumes from the saved checkpoints.

Restoring reads the archive as data (regular files and folders only, names inside the run
directory, every file checked against the manifest); nothing in it is executed. Which chapters are
still current after a restore is decided as always (`ds.study.freshness`): a snapshot made with
other parameters or notebooks restarts those chapters. Once a run is published, delete its snapshot.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path, PurePosixPath

import torch

from ds.provenance import git_commit, utc_now
from ds.train.checkpoint import provenance_path, slimmed

from .layout import REPO_ROOT, RunLayout, relative_to_repo

STATE_DIR = REPO_ROOT / "state"
MANIFEST = "SNAPSHOT.json"
SKIPPED = ("study.lock", "book")        # the runner's lock, and the run's own book (rebuilt from the chapters)
MAX_BYTES = 64 * 2**20                  # a snapshot is committed to git: larger ones are refused


class SnapshotError(RuntimeError):
    """A snapshot that cannot be made or restored; the message says why and what to do."""


def snapshot_path(profile: str, state_dir: str | Path = STATE_DIR) -> Path:
    return Path(state_dir) / f"{profile}.tar.gz"


def _files(layout: RunLayout) -> tuple[list[Path], list[Path]]:
    """The files a snapshot holds, and the spent ones it leaves out (`RunLayout.spent`)."""
    root, spent = layout.root, layout.spent()
    skipped = set(spent)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] not in SKIPPED
                  and p not in skipped), spent


def _packed(path: Path) -> tuple[bytes, bool]:
    """A file's bytes as a snapshot holds them, read once, and whether they were slimmed: a finished
    training's checkpoint without its optimizer state. Any other file, a published copy (it has a
    provenance record whose sha256 it must keep) and a checkpoint that cannot be read as data go in as
    they are (a resume reports a damaged one)."""
    data = path.read_bytes()
    if path.suffix != ".pt" or provenance_path(path).exists():
        return data, False
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:   # not readable as data: left for the resume to name
        return data, False
    slim = slimmed(ckpt) if isinstance(ckpt, dict) else None
    if slim is None:
        return data, False
    buffer = io.BytesIO()
    torch.save(slim, buffer)
    return buffer.getvalue(), True


def save(layout: RunLayout, profile: str, state_dir: str | Path = STATE_DIR) -> Path:
    """Pack the run directory into state_dir/<profile>.tar.gz (replacing an older one); its path.

    Each file is read whole before it is added, so a checkpoint the running study replaces
    meanwhile (it writes a new file and renames it) goes in as the old or the new one, never mixed.
    """
    root = layout.root
    if not root.is_dir():
        raise SnapshotError(f"no run directory {root} to snapshot: run python -m ds.study run --profile {profile} first")
    kept, spent = _files(layout)
    packed = {p.relative_to(root).as_posix(): _packed(p) for p in kept}
    contents = {name: data for name, (data, _) in packed.items()}
    total = sum(len(b) for b in contents.values())
    if total > MAX_BYTES:
        largest = sorted(contents, key=lambda k: -len(contents[k]))[:3]
        raise SnapshotError(f"run {root} holds {total / 2**20:.1f} MiB, over the {MAX_BYTES // 2**20} MiB a committed "
                            f"snapshot may hold (largest: {', '.join(largest)}); remove what a resume does not need")
    manifest = {"profile": profile, "saved_utc": utc_now(), "git": git_commit(),
                "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                          for name, data in contents.items()},
                "left_out": [p.relative_to(root).as_posix() for p in spent],
                "slimmed": [name for name, (_, slim) in packed.items() if slim]}
    contents[MANIFEST] = (json.dumps(manifest, indent=1) + "\n").encode()
    target = snapshot_path(profile, state_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for name, data in contents.items():
            member = tarfile.TarInfo(name)
            member.size, member.mtime, member.mode = len(data), 0, 0o644
            tar.addfile(member, io.BytesIO(data))
    partial.replace(target)
    return target


def _read(path: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the files of a snapshot, each checked; SnapshotError names what is wrong."""
    contents = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                name = PurePosixPath(member.name)
                if member.isdir():
                    continue
                if not member.isfile() or name.is_absolute() or ".." in name.parts:
                    raise SnapshotError(f"snapshot {path} holds {member.name!r}, which is not a plain file inside "
                                        f"the run directory; it was not made by ds.study snapshot: delete it")
                contents[name.as_posix()] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise SnapshotError(f"snapshot {path} cannot be read ({err}); restore it with git checkout -- {path} "
                            f"or delete it to start the run over") from None
    try:
        manifest = json.loads(contents.pop(MANIFEST))
    except (KeyError, ValueError):
        raise SnapshotError(f"snapshot {path} has no readable {MANIFEST}; delete it to start the run over") from None
    listed = manifest.get("files", {})
    for name, data in contents.items():
        expected = listed.get(name, {}).get("sha256")
        if expected != hashlib.sha256(data).hexdigest():
            raise SnapshotError(f"snapshot {path}: {name} does not match its manifest (damaged or edited); restore "
                                f"it with git checkout -- {path} or delete it to start the run over")
    missing = sorted(set(listed) - set(contents))
    if missing:
        raise SnapshotError(f"snapshot {path} lacks {', '.join(missing)} named in its manifest; restore it with "
                            f"git checkout -- {path} or delete it to start the run over")
    return manifest, contents


def read_manifest(path: str | Path) -> dict:
    """The manifest of a snapshot, after checking every file in it against it."""
    return _read(Path(path))[0]


def holds_chapters(layout: RunLayout) -> bool:
    """Whether a run directory holds a started or finished chapter (so a snapshot is not restored over it)."""
    return any(layout.root.glob("*.done")) or any(layout.root.glob("*.started"))


def restore(layout: RunLayout, profile: str, state_dir: str | Path = STATE_DIR) -> dict | None:
    """Unpack state_dir/<profile>.tar.gz into a run directory that holds no chapter yet; its manifest,
    or None when there is no snapshot. A run directory that already holds chapters is never overwritten."""
    source = snapshot_path(profile, state_dir)
    if not source.is_file():
        return None
    root = layout.root
    if holds_chapters(layout):
        raise SnapshotError(f"run {root} already holds chapters; a snapshot is restored into a new run directory "
                            f"only: move {root} away to restore {relative_to_repo(source)}")
    manifest, contents = _read(source)
    if manifest.get("profile") != profile:
        raise SnapshotError(f"snapshot {source} is of profile {manifest.get('profile')!r}, not {profile!r}; rename "
                            f"or delete it")
    # the chapter records last: a restore cut short leaves no record, so the next run restores again
    for name in sorted(contents, key=lambda name: name.endswith((".done", ".started"))):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(contents[name])
    return manifest


def describe(manifest: dict) -> str:
    """One line: when and at which commit a snapshot was saved, and its size."""
    files = manifest.get("files", {})
    commit = (manifest.get("git") or {}).get("commit") or "unknown commit"
    size = sum(f.get("bytes", 0) for f in files.values()) / 2**20
    spent = len(manifest.get("left_out", []))
    left_out = f"; {spent} spent checkpoint{'s' * (spent != 1)} of finished chapters left out" if spent else ""
    slim = len(manifest.get("slimmed", []))
    slimmed_ = f"; {slim} finished training{'s' * (slim != 1)} without optimizer state" if slim else ""
    return f"saved {manifest.get('saved_utc', '?')} at {commit[:7]}, {len(files)} files, {size:.1f} MiB{left_out}{slimmed_}"
