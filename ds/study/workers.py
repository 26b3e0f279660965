"""Independent trainings side by side: a chapter's finetunes in worker processes.

A 32 px network's small convolutions do not split well over threads; whole trainings do. Measured
on the 2-core VM (benchmarks/workers_speed.py, mobilenetv2_035, 32 px, batch 128, 2026-12-01, in
benchmarks/results/workers_speed.csv): one process with 2 torch threads trained at 293-382
images/s, two processes with 1 thread each at 313-426 images/s in all, 1.07 to 1.20 times as fast
in the same round (median 1.11). A profile's `workers: 2` therefore runs chapter 2's candidates
and chapter 3's networks two at a time, each worker with threads // workers torch threads.

A job trains exactly what the chapter's own process would: the same seed, data order and recipe;
only the order in which the threads sum floating-point numbers differs. Results come back as each
job ends, so a chapter's table grows row by row and an interrupted run keeps what finished. On
Linux a worker dies with the process that started it, so a killed run leaves no orphan writing
into its checkpoints.
"""
from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import signal
import sys
from typing import Any, Callable, Iterator

import torch

_SHARED: Any = None   # in a worker process: what all the pool's jobs share, received once at start


def side_by_side(job: Callable[[Any, Any], Any], shared: Any, specs: list, workers: int = 1,
                 threads: int | None = None) -> Iterator[tuple[Any, Any]]:
    """(spec, job(shared, spec)) for every spec, as each ends.

    workers 1 (or a single spec): in this process, in order. More: in that many spawned processes
    (at most one per spec), each given `shared` once and threads // workers torch threads
    (`threads` None: this process's). `job` must be a module-level function and `shared` and the
    specs picklable. The first job that fails stops the rest: jobs not started are cancelled, the
    running ones end, and its error is raised here."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number of processes, 1 or more; got {workers!r}")
    if workers == 1 or len(specs) <= 1:
        for spec in specs:
            yield spec, job(shared, spec)
        return
    per_worker = max(1, (threads or torch.get_num_threads()) // workers)
    with futures.ProcessPoolExecutor(min(workers, len(specs)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_start_worker, initargs=(shared, per_worker)) as pool:
        running = {pool.submit(_run, job, spec): spec for spec in specs}
        try:
            for done in futures.as_completed(running):
                yield running[done], done.result()
        finally:
            for future in running:
                future.cancel()


def _start_worker(shared: Any, threads: int) -> None:
    global _SHARED
    _SHARED = shared
    torch.set_num_threads(threads)
    if sys.platform.startswith("linux"):   # PR_SET_PDEATHSIG: end with the parent, never write on alone
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def _run(job: Callable[[Any, Any], Any], spec: Any) -> Any:
    return job(_SHARED, spec)
