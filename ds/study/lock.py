"""One study process per run directory: an exclusive `flock` on <run_dir>/study.lock, which holds
the holder's pid. A second process fails at once, naming that pid and the lock file."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class RunLocked(RuntimeError):
    """Another process is running the study in this run directory."""


@contextlib.contextmanager
def hold(path: str | Path):
    """Hold the lock file `path` for the duration of the block, or raise RunLocked at once."""
    path = Path(path)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunLocked(f"run directory {path.parent} is in use by process {holder} (lock file {path}); "
                        f"wait for it to finish, or stop that process, then run the command again") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path
    finally:
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
