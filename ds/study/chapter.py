"""What every chapter notebook does first and uses throughout: its context (run directory,
device, provenance, data and loaders), models from checkpoints, and training that resumes (and
pauses when the time slice of a piece of the run ends).

A chapter reads its inputs from and writes its outputs to the run directory, at the paths
`ds.study.layout.RunLayout` names.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ds import data as ds_data
from ds import gating
from ds.loaders import DeviceLoader
from ds.meta import info as net_info
from ds.provenance import cpu_features, describe_device, git_commit, resolve_device
from ds.switches import switches
from ds.train import CHECKPOINT, METRICS, TrainConfig, build_model, evaluate, fit, load_weights, model_state

from . import recovery as recipes
from .layout import RunLayout

DEADLINE_ENV = "DS_STUDY_DEADLINE"      # unix time at which the current piece of a run should end
PROGRESS_ENV = "DS_STUDY_PIECE_PROGRESS"  # "1" once the current piece has finished a chapter


class PieceTimeUp(RuntimeError):
    """The time slice of this piece of the run is spent; rerun the chapter to continue."""


class MissingInput(FileNotFoundError):
    """A chapter needs the output of an earlier chapter that is not in the run directory."""


# ---------------------------------------------------------------- pieces of a run

@dataclass
class Piece:
    """The time slice a runner gave this chapter (no deadline: run to the end).

    A piece pauses before a unit of work (an epoch, a block) that would end after the deadline,
    but only once it has done some work: every piece moves the run forward, however short."""
    deadline: float | None = None
    progressed: bool = False

    @classmethod
    def from_env(cls) -> "Piece":
        deadline = os.environ.get(DEADLINE_ENV)
        return cls(float(deadline) if deadline else None, os.environ.get(PROGRESS_ENV) == "1")

    def check(self, seconds_needed: float, what: str) -> None:
        """Raise PieceTimeUp when `what` (taking about `seconds_needed`) would end after the deadline."""
        if self.deadline is None or not self.progressed:
            return
        if time.time() + seconds_needed > self.deadline:
            raise PieceTimeUp(f"the time slice ends before {what} would; rerun to continue from the checkpoints")

    def record_progress(self) -> None:
        self.progressed = True


# ---------------------------------------------------------------- the chapter's context

@dataclass
class Chapter:
    """One chapter's run: where it writes, on what it runs, who produced it when, and (from
    `setup`) the network it studies and its data."""
    name: str
    run_dir: Path
    profile: str
    device: torch.device
    seed: int
    date_utc: str
    backbone: str | None = None
    input_size: int | None = None
    data: ds_data.ArrayDataset | None = None
    train_loader: DeviceLoader | None = None
    test_loader: DeviceLoader | None = None
    piece: Piece = field(default_factory=Piece.from_env)
    workers: int = 1               # processes for independent trainings (ds.study.workers)
    threads: int | None = None     # the chapter's torch threads (None: torch's default), shared by its workers

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def out(self) -> Path:
        """This chapter's own output directory."""
        path = self.layout.chapter_dir(self.name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def base_dir(self) -> Path:
        return self.layout.base_dir

    @property
    def num_classes(self) -> int:
        if self.data is None:
            raise ValueError(f"chapter {self.name} was set up without data: pass dataset=... to study.setup")
        return self.data.num_classes

    def provenance_line(self) -> str:
        return (f"Produced by profile **{self.profile}** on **{describe_device(self.device)}** "
                f"on {self.date_utc} (run directory `{self.run_dir.name}`, torch {torch.__version__}, "
                f"commit {git_commit()['short'] or 'unknown'}).")

    def summary(self) -> str:
        """The chapter's opening line: provenance, and the data when it has some."""
        data = f" Data: {describe_data(self.data)}." if self.data is not None else ""
        return self.provenance_line() + data

    def require(self, path: Path, chapter: str) -> Path:
        """`path` if it exists, else a clear error naming the chapter that makes it."""
        if not Path(path).exists():
            raise MissingInput(f"{path} is missing: run chapter {chapter} with run_dir={str(self.run_dir)!r} first "
                               f"(python -m ds.study run --profile {self.profile})")
        return Path(path)


def start(name: str, *, run_dir: str | Path, profile: str = "custom", device: str = "auto", seed: int = 0,
          threads: int | None = None, workers: int = 1) -> Chapter:
    """Set up a chapter: seeds, threads, device, and a provenance record in the run directory.
    `workers` > 1 trains the chapter's independent finetunes side by side (ds.study.workers), CPU only."""
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if not isinstance(workers, int) or workers < 1 or (workers > 1 and dev.type != "cpu"):
        raise ValueError(f"workers {workers!r}: give 1, or more on the CPU only (each worker is a CPU process with "
                         f"threads // workers threads); on {dev.type} set workers: 1")
    layout = RunLayout(run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    chapter = Chapter(name, layout.root, profile, dev, seed, now, workers=workers, threads=threads)
    record = json.loads(layout.provenance.read_text()) if layout.provenance.is_file() else {}
    record[name] = {"profile": profile, "device": describe_device(dev), "date_utc": now,
                    "commit": git_commit()["short"], "torch": torch.__version__, "host": platform.node(),
                    "cpu_features": cpu_features()}   # the kernels a CPU runtime picks (INT8, bf16) depend on them
    layout.provenance.write_text(json.dumps(record, indent=1) + "\n")
    return chapter


def setup(name: str, *, run_dir: str | Path, profile: str = "custom", device: str = "auto", seed: int = 0,
          threads: int | None = None, backbone: str | None = None, input_size: int | None = None,
          dataset: str | None = None, data_dir: str | None = None, limit_train: int | None = None,
          limit_test: int | None = None, batch_size: int | None = None, workers: int = 1) -> Chapter:
    """The first call of every chapter: `start`, then (when `dataset` is given) its data and its
    (train, test) loaders on the chapter's device. Show `ctx.summary()` under it."""
    ch = start(name, run_dir=run_dir, profile=profile, device=device, seed=seed, threads=threads, workers=workers)
    ch.backbone, ch.input_size = backbone, input_size
    if dataset is not None:
        if input_size is None or batch_size is None:
            raise ValueError("study.setup with a dataset needs input_size and batch_size")
        ch.data = load_data(dataset, data_dir, input_size, limit_train, limit_test, seed)
        ch.train_loader, ch.test_loader = loaders(ch.data, batch_size, ch.device, seed)
    return ch


# ---------------------------------------------------------------- data

def load_data(dataset: str, data_dir: str | None, input_size: int, limit_train: int | None = None,
              limit_test: int | None = None, seed: int = 0) -> ds_data.ArrayDataset:
    """The chapter's dataset as uint8 arrays, subset and resized as the profile asks.

    dataset: cifar10, cifar100, fake, or auto (CIFAR-10 when the data directory holds it, else the
    synthetic set, which the returned dataset's name says). Images are resized (area) when
    `input_size` differs from the stored size, e.g. 16 px for the test profile.
    """
    return ds_data.prepare(dataset, data_dir, input_size, limit_train, limit_test, seed)


def describe_data(dataset: ds_data.ArrayDataset) -> str:
    name = {"cifar10": "CIFAR-10 (the JPEG copy, see Deviations)", "fake": "synthetic (no CIFAR-10 found)"}
    return (f"{name.get(dataset.name, dataset.name)}: {len(dataset.train_labels)} training and "
            f"{len(dataset.test_labels)} test images of {dataset.train_images.shape[1]} px, "
            f"{dataset.num_classes} classes")


def loaders(dataset: ds_data.ArrayDataset, batch_size: int, device: torch.device, seed: int = 0,
            eval_batch_size: int | None = None) -> tuple[DeviceLoader, DeviceLoader]:
    """(train, test) loaders holding the whole dataset on `device`."""
    channels_last = device.type == "cuda"
    common = dict(device=device, seed=seed, channels_last=channels_last)
    train = DeviceLoader(dataset.train_images, dataset.train_labels, min(batch_size, len(dataset.train_labels)),
                         dataset.mean, dataset.std, train=True, **common)
    test = DeviceLoader(dataset.test_images, dataset.test_labels, eval_batch_size or 2 * batch_size,
                        dataset.mean, dataset.std, train=False, **common)
    return train, test


# ---------------------------------------------------------------- models and training

def load_model(backbone: str, num_classes: int, input_size: int, checkpoint: str | Path,
               pattern=None) -> torch.nn.Module:
    """The network a ds checkpoint holds: the base (pattern None) or a shrunk one, in eval mode."""
    model = build_model(backbone, num_classes, input_size, pattern)
    state, meta = model_state(checkpoint)
    return load_weights(model, state, str(checkpoint), meta).eval()


def is_finished(out_dir: str | Path, epochs: int) -> bool:
    """Whether the run in `out_dir` has trained all `epochs` (its checkpoint says so)."""
    metrics = Path(out_dir) / METRICS
    if not (Path(out_dir) / CHECKPOINT).is_file() or not metrics.is_file():
        return False
    return len(pd.read_csv(metrics)) >= epochs


def train(model, train_loader, test_loader, cfg: TrainConfig, out_dir: str | Path, *, teacher=None,
          meta=None, run=None, piece: Piece | None = None):
    """`ds.train.fit` with checkpoints in `out_dir`, resuming what is there.

    When the runner gave this piece a deadline (`piece`, default: from $DS_STUDY_DEADLINE), train
    epoch by epoch and raise PieceTimeUp before an epoch that would not end in time (once the
    piece has done some work); the next piece resumes from the checkpoint. `run(cfg)` replaces
    `fit` (e.g. a gate search, which returns a SearchResult with its metrics in
    `.extra["metrics"]`); it must resume from `out_dir`.
    """
    fit_run = run or (lambda c: fit(model, train_loader, test_loader, c, out_dir=out_dir, teacher=teacher,
                                    resume=True, meta=meta))
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    def run(c):
        with epoch_log(Path(out_dir) / "train.log"):
            return fit_run(c)

    piece = piece or Piece.from_env()
    if piece.deadline is None:
        return run(dataclasses.replace(cfg, progress=False))
    metrics_path = Path(out_dir) / METRICS
    while True:
        done = pd.read_csv(metrics_path) if metrics_path.is_file() else None
        epochs_done = 0 if done is None else len(done)
        if epochs_done < cfg.epochs:
            last = 0.0 if done is None else float(done["seconds"].iloc[-1])
            piece.check(1.3 * last + 10, f"epoch {epochs_done + 1}/{cfg.epochs} of {out_dir} "
                                         f"(the last epoch took {last:.0f} s)")
        result = run(dataclasses.replace(cfg, progress=False, stop_after_epoch=epochs_done + 1))
        piece.record_progress()
        metrics = result.metrics if hasattr(result, "metrics") else result.extra["metrics"]   # fit or search
        if len(metrics) >= cfg.epochs:
            return result


@dataclass(frozen=True)
class FromBase:
    """What a chapter's finetunes from its base network share (a worker process receives it once)."""
    backbone: str
    num_classes: int
    input_size: int
    base_checkpoint: Path
    device: torch.device
    train_loader: DeviceLoader
    test_loader: DeviceLoader
    holdout_loader: DeviceLoader | None = None   # held-out training images, measured once finetuned
    piece: Piece | None = None

    @classmethod
    def of(cls, ch: Chapter, train_loader: DeviceLoader | None = None,
           holdout_loader: DeviceLoader | None = None) -> "FromBase":
        """The chapter's network, base checkpoint, device, test images and piece; its training images
        unless `train_loader` is given."""
        return cls(ch.backbone, ch.num_classes, ch.input_size, ch.layout.base_checkpoint, ch.device,
                   train_loader or ch.train_loader, ch.test_loader, holdout_loader, ch.piece)


@dataclass(frozen=True)
class Finetune:
    """One finetune: `pattern`'s network built from the base weights, trained `epochs` with `recipe`
    (ds.study.recovery) and seed `seed`, its checkpoints in `out_dir`."""
    name: str
    pattern: tuple[int, ...]
    recipe: dict
    epochs: int
    seed: int
    out_dir: Path


def finetune_from_base(shared: FromBase, job: Finetune) -> dict:
    """Run `job`, resuming what its out_dir holds (a job for ds.study.workers.side_by_side): test
    top-1 right after removal (`top1_removed`) and once finetuned (`top1`), top-1 on the held-out
    images when `shared` has some (`holdout_top1`), and the epochs' `metrics`."""
    model = build_model(shared.backbone, shared.num_classes, shared.input_size, list(job.pattern),
                        init=shared.base_checkpoint).to(shared.device)
    before = evaluate(model, shared.test_loader)["acc"]
    teacher = (load_model(shared.backbone, shared.num_classes, shared.input_size, shared.base_checkpoint)
               .to(shared.device) if recipes.distills(job.recipe) else None)
    metrics = train(model, shared.train_loader, shared.test_loader, recipes.config(job.recipe, job.epochs, job.seed),
                    job.out_dir, teacher=teacher, meta=net_info(model), piece=shared.piece).metrics
    result = {"top1_removed": before, "top1": float(metrics["test_acc"].iloc[-1]), "metrics": metrics}
    if shared.holdout_loader is not None:
        result["holdout_top1"] = evaluate(model, shared.holdout_loader)["acc"]
    return result


@contextlib.contextmanager
def epoch_log(path: Path):
    """Send what training prints (one line per epoch) to `path` instead of the notebook."""
    with open(path, "a") as log, contextlib.redirect_stdout(log):
        yield


# ---------------------------------------------------------------- shared by the chapters' steps

def append_row(path: Path, rows: list[dict], row: dict) -> None:
    """Add `row` to `rows` and rewrite the table at `path` (a chapter's table grows row by row)."""
    rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)


def read_published(parameter: str, value: str, columns: set[str], what: str, fix: str) -> pd.DataFrame:
    """The table a profile parameter names (`parameter`: `value`) for a chapter to show beside its own:
    a one-line error when the file does not exist (`fix`: what makes it) or lacks a column of `what`."""
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{parameter} {value} does not exist: {fix} or set {parameter}: null")
    table = pd.read_csv(path)
    missing = columns - set(table.columns)
    if missing:
        raise ValueError(f"{value} is not {what} (no {', '.join(sorted(missing))} column)")
    return table


def read_rows(path: Path) -> list[dict]:
    """The rows a chapter's table already holds (none when it is not there yet)."""
    return pd.read_csv(path, dtype={"pattern_bits": str}).to_dict("records") if path.is_file() else []


def all_ones(model) -> list[int]:
    return [1] * len(switches(model))


def removed_blocks(model, pattern) -> int:
    """Blocks (not stem or head) whose activations `pattern` removes."""
    return sum(1 for s in gating.searchable_switches(model) if pattern[s.index] == 0)


def at_count(table: pd.DataFrame, counts: dict[str, int], name: str) -> pd.DataFrame:
    """The rows of `table` that remove as many blocks as pattern `name` (its count in `counts`);
    none when `counts` does not know it."""
    removed = counts.get(name)
    return table[table["removed_blocks"] == removed] if removed is not None else table.iloc[0:0]


def load_base(ch: Chapter):
    """The trained base network of this run (chapter 1 makes it), on the chapter's device."""
    path = ch.require(ch.layout.base_checkpoint, "01_observation")
    return load_model(ch.backbone, ch.num_classes, ch.input_size, path).to(ch.device)
