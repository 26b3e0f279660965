"""The GPU results on a machine lent one command at a time (at most 10 minutes a command, a
15-minute lease in all, the machine's start-up included): the throughput tables of the paper's
network first, then the `gpu` study profile, sized to one command from the training speed that
the first command measures.

The first command is planned for at most FIRST_CALL_S of running, so that a second one still fits
the lease. It runs these steps in this order, each only when its estimate fits the time left:

  machine      the GPU's name, driver and clocks (nvidia-smi), torch, CUDA and cuDNN versions
  paper        the paper's table: ds.bench, mobilenetv2_140, the base and DS-A..F, fp32, NCHW,
               eager, batch 128, 224 px (printed beside the paper's V100 speed-ups)
  fast         bf16 and fp16, channels_last, CUDA graphs, batch 128
  sweep-paper  batch 1 and 16 in the paper's setting (its batch 128 is the paper table)
  sweep-fast   batch 1 and 16 in bf16, channels_last, CUDA graphs
  train-speed  images/s of ds.train for mobilenetv2_140 and _100 at 32 px, bf16, channels_last
  compile      torch.compile (bf16, channels_last) of the base and the fastest pattern of `fast`,
               only when its estimate leaves room (tried once; never what leaves more to do)
  study        python -m ds.study run --profile gpu, sized by ds.study.sizing from train-speed to
               the time this command has left; skipped for good when at the measured speed no
               choice fits even a command of its own (STUDY_CALL_S)

A step that fails does not stop the ones after it. After every step the command writes the state
so far into $OUT (MANIFEST.json, state.tar.xz.NN) with summary.txt, so a later step that fails, or
the machine killing the command at its limit, loses that step only. The next command restores
the state (the caller copies the returned files into .gpu_state/ and carries that folder), skips
what is done and goes on; a machine still warm from the last command continues from its runs/.

    scripts/gpu_publish.sh --plan                 # the time plan (no GPU needed)
    scripts/gpu_publish.sh                        # on the GPU machine, $OUT set by the tool
    scripts/gpu_publish.sh --budget-seconds 540   # the study's command of its own
    scripts/gpu_publish.sh --dry-run              # the same path on the CPU: tiny tables, tiny profile
    scripts/gpu_publish.sh --publish              # on the CPU machine: unpack .gpu_state/ and publish

Exit codes: 0 everything is done; 3 more to do (run again); 1 a step failed; 2 this machine
lacks something (a module, CUDA, the data); 4 the state is too large to carry (the results came
back, the study's checkpoints did not; see the summary).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import fnmatch
import hashlib
import importlib
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20

# The machine's limits (the tool's documentation) and what this script keeps for itself.
COMMAND_LIMIT_S = 600          # a command is killed after 10 minutes
CARRY_LIMIT = 64 * MIB         # working tree + carried paths
OUT_FILES = 8                  # files that come back from $OUT ...
OUT_FILE_LIMIT = 16 * MIB      # ... each at most this large ...
OUT_TOTAL_LIMIT = 64 * MIB     # ... and at most this much in all
PART_SIZE = 15 * MIB           # archive parts: under the per-file limit
MARGIN = 1 * MIB               # headroom under every limit
FIRST_CALL_S = 480             # the first command's budget: 8 minutes, so a second one still fits the lease
STUDY_CALL_S = 540             # the most one command gives the study: 9 minutes (the machine kills at 10)
CHECK_S = 10                   # restoring the state and checking the machine, before the first step (assumed)
TABLE_PACK_RESERVE_S = 15      # kept free at the end for packing tables and logs
STUDY_PACK_RESERVE_S = 30      # ... and after the study (a paused study's checkpoints: tens of MiB to xz)
DRY_BUDGET_S = 900             # the dry run's default budget (the CPU has no 10-minute limit)
DRY_STEP_S = 30                # a tiny CPU stand-in for a table
KILL_GRACE_S = 15              # a step overrunning its time gets SIGTERM, then SIGKILL after this
RESUME_MIN_S = 60              # a paused study resumes only with at least this long left

# The GPU steps' estimates (seconds). Measured on this project's 2-core CPU VM: importing ds.bench
# and timm takes about 7 s, and building, merging and verifying mobilenetv2_140's base and DS-A..F
# at 224 px 23 s (BUILD_S per network; the GPU machine's CPU is no slower). Assumed: python and
# CUDA start-up, the roofline's peak measurement per setting, each network's warm-up with cudnn
# autotuning or CUDA-graph capture per setting, and torch.compile per network (the earlier plan
# gave 7 networks 420 s). The train-speed estimate assumes train_speed.py's goal for a GPU, a
# 50k-image epoch in 10 s, and the decoding of CIFAR-10 on a fresh machine.
START_S = 15                   # python, torch, timm, the CUDA context
BUILD_S = 3.3                  # per network: create, apply the pattern, merge, verify
PEAKS_S = 5                    # per setting: the roofline's peak measurement
NET_S = 2.0                    # per network and setting: warm-up, autotuning, graph capture
COMPILE_S = 60                 # per network: torch.compile
REPEATS, MIN_TIME = 5, 0.5     # ds.bench's protocol: timed repeats of at least MIN_TIME seconds
SWEEP_MIN_TIME = 0.25          # the sweeps' repeats (small batches: many iterations per repeat)
PAPER_NETWORKS = 7             # the base and DS-A..F
TRAIN_SPEED_IMAGES, TRAIN_SPEED_EPOCHS = 25_000, 2   # per network: one warm-up epoch, one timed
TRAIN_SPEED_ASSUMED = 5000     # img/s, for the train-speed step's estimate only
DECODE_S = 20                  # CIFAR-10 decoded once on a fresh machine (README: about 20 s)
GPU_BACKBONES = ("mobilenetv2_140", "mobilenetv2_100")   # the gpu profile's choices (ds.study.sizing)

EXIT_DONE, EXIT_FAILED, EXIT_MACHINE, EXIT_MORE, EXIT_TOO_LARGE = 0, 1, 2, 3, 4
STUDY_PAUSED = 3               # `python -m ds.study run` exit code: paused at the piece deadline

STATE_DIR = ".gpu_state"       # where the caller puts the returned files (git-ignored, carried)
WORK = "gpu_publish"           # <run root>/gpu_publish: progress.json, machine.json, train_speed.json, bench/, logs/
MANIFEST = "MANIFEST.json"
SUMMARY = "summary.txt"
ARCHIVE = "state.tar.xz"       # parts are state.tar.xz.00, .01, ...
MACHINE_RECORD = "machine.json"
TRAIN_SPEED = "train_speed.json"
BENCH = "bench"                # <work>/bench/<step>.csv and .json: the ds.bench tables

# Which study outputs a chapter reads after the chapter that wrote them: a checkpoint under
# <run_dir>/<top>/ is carried while one of these chapters is unfinished (default: <top> itself;
# an unknown folder is always carried). Chapter 1 trains base/, chapter 2 the candidates of its
# comparison (02_search/finetune/, merged by chapter 4), chapter 3 03_finetune/.
READERS = {
    "base": ("01_observation", "02_search", "03_finetune", "04_merge", "05_throughput"),
    "02_search": ("02_search", "03_finetune", "04_merge"),
    "03_finetune": ("03_finetune", "04_merge", "05_throughput"),
}
WRITERS = {"base": "01_observation"}   # folders a chapter writes that are not named after it


class PublishError(RuntimeError):
    """Something this script cannot work around; the message says what and how to fix it."""

    def __init__(self, message: str, code: int = EXIT_MACHINE):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- the steps

@dataclasses.dataclass
class Step:
    name: str
    what: str
    estimate_s: float               # started only when this much of the budget is left
    argv: list[str] | Callable[[], list[str]] | None = None   # run as `python <argv>` from the repository root
    call: Callable[[Path], None] | None = None                # or run here, given the work folder
    optional: bool = False          # tried once, when its estimate leaves room; no room is no failure


def bench_estimate(networks: int, settings: int, min_time: float = MIN_TIME, compile: bool = False) -> float:
    """Seconds one `python -m ds.bench` call takes on the GPU machine (the constants above)."""
    per_network = REPEATS * min_time + NET_S + (COMPILE_S if compile else 0)
    return START_S + networks * BUILD_S + settings * (PEAKS_S + networks * per_network)


def train_speed_estimate(backbones: int, images: int, epochs: int, img_s: float = TRAIN_SPEED_ASSUMED) -> float:
    return START_S + DECODE_S + backbones * (epochs * images / img_s + NET_S * 5)


def fastest_pattern(bench_dir: Path) -> str:
    """The merged network that ran fastest in the `fast` table (DS-F, the paper's fastest, until
    that table exists)."""
    import pandas as pd
    path = bench_dir / "fast.csv"
    if not path.is_file():
        return "DS-F"
    table = pd.read_csv(path)
    merged = table[table["pattern"] != "base"]
    return str(merged.loc[merged["img_s_median"].idxmax(), "pattern"]) if len(merged) else "DS-F"


def write_machine_record(work: Path) -> None:
    from ds.provenance import gpu_record, machine, versions
    write_json(work / MACHINE_RECORD, {"date_utc": utc_now(), **versions(), **machine(), "gpu": gpu_record()})


def plan_steps(dry_run: bool, work: Path, profile: dict | None = None) -> list[Step]:
    """The steps before the study, in order. The dry run takes the same steps with a tiny network on
    the CPU; there it times the base, DS-A and DS-F in fp32 only (the roofline's CPU peak
    measurement in bf16/fp16 takes minutes), runs CUDA-graph and compile steps eagerly, and
    measures the training speed of `profile`'s backbone on a few hundred images in fp32, as the tiny
    study trains on a CPU (bf16 autocast on a CPU without bf16 instructions is emulated, many times
    slower, and would size the study out of its budget)."""
    bench_dir = work / BENCH
    if dry_run:
        common = ["--model", "mobilenetv2_035", "--device", "cpu", "--input", "32", "--threads", "1",
                  "--iters", "1", "--warmup", "1"]
        batch, sweep, patterns = "2", "1,2", "paper:DS-A,DS-F"
        dtype_map, mode_map = {"bf16,fp16": "fp32", "bf16": "fp32"}, {"cudagraph": "eager", "compile": "eager"}
        speed = ["--device", "cpu", "--threads", "1", "--backbone", (profile or {}).get("backbone", "mobilenetv2_035"),
                 "--limit-train", "256", "--epochs", "2", "--batch-size", "64", "--amp", "off"]
    else:
        common = ["--model", "mobilenetv2_140", "--device", "cuda", "--input", "224"]
        batch, sweep, patterns, dtype_map, mode_map = "128", "1,16", "paper", {}, {}
        speed = ["--device", "cuda", "--backbone", ",".join(GPU_BACKBONES), "--limit-train", str(TRAIN_SPEED_IMAGES),
                 "--epochs", str(TRAIN_SPEED_EPOCHS), "--batch-size", "256", "--amp", "bf16"]

    def bench(name, batch, dtypes="fp32", layouts="nchw", mode="eager", chosen=None, min_time=None):
        def argv():
            return ["-m", "ds.bench", *common, "--patterns", chosen() if chosen else patterns, "--batch", batch,
                    "--dtypes", dtype_map.get(dtypes, dtypes), "--layouts", layouts, "--modes", mode_map.get(mode, mode),
                    *(["--min-time", str(min_time)] if min_time and not dry_run else []),
                    "--out", str(bench_dir / f"{name}.csv")]
        return argv

    steps = [
        Step("machine", "the GPU's name, driver, clocks; torch, CUDA and cuDNN versions", 5, call=write_machine_record),
        Step("paper", "the paper's setting: fp32, NCHW, eager, batch 128, 224 px", bench_estimate(PAPER_NETWORKS, 1),
             bench("paper", batch)),
        Step("fast", "bf16 and fp16, channels_last, CUDA graphs, batch 128", bench_estimate(PAPER_NETWORKS, 2),
             bench("fast", batch, "bf16,fp16", "channels_last", "cudagraph")),
        Step("sweep-paper", "batch 1 and 16, fp32 NCHW eager", bench_estimate(PAPER_NETWORKS, 2, SWEEP_MIN_TIME),
             bench("sweep-paper", sweep, min_time=SWEEP_MIN_TIME)),
        Step("sweep-fast", "batch 1 and 16, bf16 channels_last CUDA graphs",
             bench_estimate(PAPER_NETWORKS, 2, SWEEP_MIN_TIME),
             bench("sweep-fast", sweep, "bf16", "channels_last", "cudagraph", min_time=SWEEP_MIN_TIME)),
        Step("train-speed", "ds.train images/s at 32 px, bf16, channels_last (sizes the study)",
             train_speed_estimate(len(GPU_BACKBONES), TRAIN_SPEED_IMAGES, TRAIN_SPEED_EPOCHS),
             ["benchmarks/train_speed.py", *speed, "--channels-last", "1",
              "--out", str(work / TRAIN_SPEED)]),
        Step("compile", "torch.compile, bf16, channels_last, batch 128: the base and fast's fastest pattern",
             bench_estimate(2, 1, compile=True),
             bench("compile", batch, "bf16", "channels_last", "compile",
                   chosen=lambda: f"paper:{fastest_pattern(bench_dir)}"), optional=True),
    ]
    if dry_run:
        for step in steps:
            step.estimate_s = 5 if step.call else DRY_STEP_S
            step.what = f"tiny CPU stand-in for: {step.what}"
    return steps


STUDY_STEP = "study"


def step_names(dry_run: bool) -> list[str]:
    return [s.name for s in plan_steps(dry_run, Path("."))] + [STUDY_STEP]


def study_choices(dry_run: bool, profile: dict):
    """What the study may be sized to: the gpu profile's choices; in the dry run, the profile as it is."""
    from ds.study.sizing import GPU_CHOICES
    return ((profile["backbone"], profile["base_epochs"]),) if dry_run else GPU_CHOICES


def study_budget(command_s: float) -> float:
    """The seconds a command of `command_s` leaves the study, when the study is all it runs."""
    return command_s - CHECK_S - STUDY_PACK_RESERVE_S


def plan_lines(steps: list[Step], budget_s: float, dry_run: bool, profile_name: str, profile: dict) -> list[str]:
    """The time plan: every step's estimate and when it would end, the optional step's rule, and
    how the study is sized and when it is skipped."""
    from ds.study.sizing import required_speed
    lines = [f"plan for a command of {budget_s:.0f} s{' (dry run)' if dry_run else ''}: a step starts only when "
             f"its estimate fits the time left; {CHECK_S} s for the checks first, {TABLE_PACK_RESERVE_S} s kept "
             f"for packing; after every step the state so far is written to $OUT"]
    clock = CHECK_S
    for step in steps:
        if step.optional:
            lines.append(f"  {step.name:<12} {step.estimate_s:4.0f} s  only if {step.estimate_s:.0f} s are left "
                         f"then (tried once): {step.what}")
            continue
        clock += step.estimate_s
        lines.append(f"  {step.name:<12} {step.estimate_s:4.0f} s  ends by {clock:4.0f} s: {step.what}")
    lines.append(f"  steps before the study: {clock - CHECK_S:.0f} s; with checks and packing {clock + TABLE_PACK_RESERVE_S:.0f} s "
                 f"of {budget_s:.0f} s")
    whole = DRY_BUDGET_S if dry_run else STUDY_CALL_S
    needs = ", ".join(f"{b} {e} epochs {required_speed({**profile, 'backbone': b, 'base_epochs': e}, study_budget(whole)):.0f}"
                      for b, e in study_choices(dry_run, profile))
    lines += [f"  {STUDY_STEP:<12} sized after train-speed (ds.study.sizing): the first choice whose estimate fits "
              f"the time this command has left, less {STUDY_PACK_RESERVE_S} s for packing; in a command of its own "
              f"(`scripts/gpu_publish.sh --budget-seconds {whole}`: {study_budget(whole):.0f} s for the study) a "
              f"choice fits from this measured training speed on (img/s): {needs}; slower than the last, the "
              f"study is skipped for good"]
    return lines


# ---------------------------------------------------------------- what this machine has

STUDY_MODULES = ("papermill", "nbformat", "nbclient", "ipykernel", "matplotlib")
BENCH_MODULES = ("torch", "torchvision", "timm", "numpy", "pandas", "yaml", "tqdm", "PIL")


def missing_modules(names) -> list[str]:
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def check_modules(names) -> None:
    """PublishError naming the modules this machine lacks and how to bring them."""
    missing = missing_modules(names)
    if missing:
        raise PublishError(
            f"missing Python modules on this machine: {', '.join(missing)} (python {sys.version.split()[0]}, "
            f"{sys.executable}). Bring them as wheels: on a machine with the package index run "
            f"`pip download --only-binary=:all: --python-version {sys.version_info.major}.{sys.version_info.minor} "
            f"--platform manylinux2014_x86_64 -d .whl <packages>` (pip names: timm, papermill, ipykernel, "
            f"matplotlib, pyyaml, pillow, ...) and name .whl in carry; gpu_publish.sh installs them with "
            f"`pip install --no-index --no-deps --target`. Add their dependencies the same way.")


def check_machine(dry_run: bool) -> str:
    """A line naming the device; PublishError naming what is missing for the tables (the study's
    modules are checked when it starts, so that a machine without them still makes the tables)."""
    check_modules(BENCH_MODULES)
    import torch
    if dry_run:
        return "cpu (dry run)"
    if not torch.cuda.is_available():
        raise PublishError(f"torch {torch.__version__} sees no CUDA device (torch.version.cuda="
                           f"{torch.version.cuda}); run on the GPU machine, or pass --dry-run on a CPU")
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def check_data() -> None:
    """The study trains on all of CIFAR-10: find it before the study's time is spent on it."""
    from ds import data
    try:
        data.load_dataset("cifar10")   # decodes and caches once; the chapters then read the cache
    except data.DataError as err:
        raise PublishError(f"{err}\nOn the GPU machine the data comes with the working tree: commit "
                           f"data/cifar10-jpeg.tar.xz, or carry a git-ignored copy and set DS_DATA.") from None


# ---------------------------------------------------------------- progress records

def read_json(path: Path, default):
    return json.loads(path.read_text()) if path.is_file() else default


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------- running one step

def run_step(argv: list[str], log_path: Path, seconds: float) -> tuple[int, float]:
    """Run `python argv` from the repository root, output to `log_path`, for at most `seconds`
    (then its whole process group is stopped: papermill's kernels too). (exit code, seconds);
    exit code 124 when it ran out of time."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    start = time.monotonic()
    with open(log_path, "a") as log:
        log.write(f"\n$ python {' '.join(argv)}   # {utc_now()}, at most {seconds:.0f} s\n")
        log.flush()
        proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, seconds))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = 124
            time.sleep(3)   # papermill's kernel runs in its own session; it exits when its parent is gone
            log.write(f"\n[gpu_publish] stopped after {seconds:.0f} s (the command's time budget)\n")
    return code, time.monotonic() - start


def run_call(call: Callable[[Path], None], work: Path, log_path: Path) -> tuple[int, float]:
    """Run an in-process step; (0 or 1, seconds), its traceback in `log_path` when it raised."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        call(work)
        code = 0
    except Exception:
        with open(log_path, "a") as log:
            log.write(traceback.format_exc())
        code = 1
    return code, time.monotonic() - start


def log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join("    " + line for line in text[-lines:])


def head_commit() -> str | None:
    """HEAD of this checkout, or None (the GPU machine's copy of the tree has no .git)."""
    if not (REPO / ".git").exists() or not shutil.which("git"):
        return None
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or None


def study_profiles(profile: str, piece_minutes: float, target: Path, overrides: dict | None = None) -> Path:
    """profiles.yaml with `profile`'s piece length shortened to end inside this command and the
    keys the sizing chose (`overrides`: backbone, base_epochs) set; the profile keeps its name, so
    its run directory stays runs/<profile>."""
    import yaml
    profiles = yaml.safe_load((REPO / "profiles.yaml").read_text())
    if profile not in profiles:
        raise PublishError(f"profile {profile!r} is not in profiles.yaml ({', '.join(profiles)})")
    own = profiles[profile].get("piece_minutes")
    profiles[profile]["piece_minutes"] = round(min(piece_minutes, own or piece_minutes), 3)
    profiles[profile].update(overrides or {})
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("# written by scripts/gpu_publish.py: profiles.yaml, piece_minutes fitted to one command"
                      + (f", sized: {overrides}" if overrides else "") + "\n"
                      + yaml.safe_dump(profiles, sort_keys=False))
    return target


# ---------------------------------------------------------------- packing the state

def chapters() -> list[str]:
    return sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def checkpoint_needed(relative: Path, done: set[str]) -> bool:
    """Whether a checkpoint at <run_dir>/`relative` is still read by an unfinished chapter."""
    top = relative.parts[0]
    readers = READERS.get(top, (top,) if top in chapters() else None)
    if readers is None:
        return True   # a folder this script does not know: carry it rather than lose it
    return any(chapter not in done for chapter in readers)


def slim_checkpoint(source: Path, target: Path) -> bool:
    """Copy a ds.train checkpoint, without the optimizer's per-parameter state when its training is
    finished (`ds.train.checkpoint.slimmed`); unfinished trainings are copied whole. True when
    something was dropped. Read as data only (a file holding Python objects is refused, never run)."""
    from ds.train.checkpoint import load_checkpoint, save_checkpoint, slimmed
    slim = slimmed(load_checkpoint(source))
    if slim is None:
        shutil.copy2(source, target)
        return False
    save_checkpoint(slim, target)
    return True


def study_files(run_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(small files, checkpoints still needed, checkpoints no chapter reads any more) of a run
    directory, as paths relative to it. Half-written files (.*.tmp) are left out."""
    done = {p.stem for p in run_dir.glob("*.done")}
    small, needed, dropped = [], [], []
    for path in sorted(run_dir.rglob("*")):
        if not path.is_file() or (path.name.startswith(".") and path.name.endswith(".tmp")):
            continue
        relative = path.relative_to(run_dir)
        if path.suffix != ".pt":
            small.append(relative)
        elif checkpoint_needed(relative, done):
            needed.append(relative)
        else:
            dropped.append(relative)
    return small, needed, dropped


def rollback_dirs(needed: list[Path], done: set[str]) -> list[Path]:
    """The training folders to give up when the state does not fit: those of needed checkpoints
    that an unfinished chapter writes (it reruns them from their start next time; what finished
    chapters wrote is never given up)."""
    owner = lambda r: WRITERS.get(r.parts[0], r.parts[0])   # noqa: E731
    return sorted({r.parent for r in needed if owner(r) in chapters() and owner(r) not in done})


class PartWriter:
    """A binary file object that writes `<prefix>.00`, `.01`, ... of at most `part_size` bytes."""

    def __init__(self, prefix: Path, part_size: int):
        self.prefix, self.part_size = prefix, part_size
        self.paths: list[Path] = []
        self._file, self._left = None, 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        while view:
            if self._left == 0:
                self._next()
            n = min(self._left, len(view))
            self._file.write(view[:n])
            self._left -= n
            view = view[n:]
        return len(data)

    def _next(self) -> None:
        if self._file:
            self._file.close()
        self.paths.append(Path(f"{self.prefix}.{len(self.paths):02d}"))
        self._file, self._left = open(self.paths[-1], "wb"), self.part_size

    def flush(self) -> None:
        if self._file:
            self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


class PartReader:
    """The concatenation of part files as one readable binary stream."""

    def __init__(self, paths: list[Path]):
        self._paths, self._file = list(paths), None

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size is None or size < 0 or len(out) < size:
            if self._file is None:
                if not self._paths:
                    break
                self._file = open(self._paths.pop(0), "rb")
            chunk = self._file.read(-1 if size is None or size < 0 else size - len(out))
            if not chunk:
                self._file.close()
                self._file = None
            out += chunk
        return bytes(out)

    def close(self) -> None:
        if self._file:
            self._file.close()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(members: list[tuple[Path, str]], out: Path, part_size: int) -> list[Path]:
    """Tar (file, name in the archive) pairs, xz-compressed, into parts out/state.tar.xz.NN."""
    writer = PartWriter(out / ARCHIVE, part_size)
    with lzma.LZMAFile(writer, "w", preset=0) as xz, tarfile.open(fileobj=xz, mode="w|") as tar:
        for path, name in members:
            tar.add(path, arcname=name, recursive=False)
    writer.close()
    return writer.paths


def unpack(state: Path, run_root: Path) -> dict:
    """Check the parts against the manifest and extract them under `run_root`; the manifest."""
    manifest = read_json(state / MANIFEST, None)
    parts = [state / p["name"] for p in manifest["parts"]]
    for part, record in zip(parts, manifest["parts"]):
        if not part.is_file():
            raise PublishError(f"{part} is missing: copy every file the last command returned into {state}/ "
                               f"(its summary lists them) and carry that folder")
        if part.stat().st_size != record["bytes"] or sha256(part) != record["sha256"]:
            raise PublishError(f"{part} differs from the one the last command wrote (size or sha256): "
                               f"copy the returned files again, unchanged")
    run_root.mkdir(parents=True, exist_ok=True)
    reader = PartReader(parts)
    with lzma.LZMAFile(reader, "r") as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(run_root, **extra)
    reader.close()
    return manifest


def tree_bytes() -> int:
    """What the tool copies besides the carried state: tracked and untracked-not-ignored files
    (`git ls-files` in a git checkout; else every file .gitignore does not exclude), plus .whl/."""
    total = sum(p.stat().st_size for p in (REPO / ".whl").glob("*") if p.is_file())
    if (REPO / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True)
        if listed.returncode == 0:
            names = [n for n in listed.stdout.decode().split("\0") if n]
            return total + sum((REPO / n).stat().st_size for n in names if (REPO / n).is_file())
    patterns = [line.strip().strip("/") for line in (REPO / ".gitignore").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "!"))] if (REPO / ".gitignore").is_file() else []
    patterns += [".git", STATE_DIR, ".whl"]

    def ignored(relative: str) -> bool:
        return any(fnmatch.fnmatch(relative, pat) or fnmatch.fnmatch(os.path.basename(relative), pat)
                   for pat in patterns)

    for root, dirs, files in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        rel = (lambda name: name) if rel_root == "." else (lambda name: f"{rel_root}/{name}")
        dirs[:] = [d for d in dirs if not ignored(rel(d))]
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files
                     if not ignored(rel(f)) and os.path.isfile(os.path.join(root, f)))
    return total


# ---------------------------------------------------------------- the command

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/gpu_publish.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="the same steps on the CPU: tiny tables, the tiny profile, state and output under "
                        "runs/gpu_publish_dry/ unless --state/--out/--run-root say otherwise")
    p.add_argument("--plan", action="store_true", help="print the time plan and stop (no GPU needed)")
    p.add_argument("--budget-seconds", type=float,
                   help=f"time this command may use, packing included (default {FIRST_CALL_S}: the first command; "
                        f"give {STUDY_CALL_S} to the study's command of its own; {DRY_BUDGET_S} with --dry-run; "
                        f"the machine kills a command at {COMMAND_LIMIT_S})")
    p.add_argument("--state", help=f"the returned files of the last command (default {STATE_DIR}/)")
    p.add_argument("--out", help="where the files to return go (default $OUT)")
    p.add_argument("--run-root", help="where runs/<profile> and runs/gpu_publish live (default runs/)")
    p.add_argument("--profile", help="study profile (default gpu; tiny with --dry-run)")
    p.add_argument("--skip", nargs="+", default=[], metavar="STEP",
                   help=f"steps to leave out (e.g. a table that fails): {', '.join(step_names(False))}")
    p.add_argument("--restart-study", action="store_true",
                   help="delete runs/<profile> first: the study starts over (the tables are kept)")
    p.add_argument("--piece-seconds", type=float,
                   help="end the study's piece after at most this long (default: what the budget leaves)")
    p.add_argument("--carry-limit-mib", type=float,
                   help="MiB the carried state may take (default: 64 MiB minus the working tree and .whl/)")
    p.add_argument("--part-mib", type=float, default=PART_SIZE / MIB, help="size of archive parts (default 15)")
    p.add_argument("--commit", default=os.environ.get("DS_GIT_COMMIT"),
                   help="the commit of this working tree, recorded in the summary and passed to the steps as "
                        "DS_GIT_COMMIT (the GPU machine's copy has no .git; default: $DS_GIT_COMMIT, else git)")
    p.add_argument("--unpack-only", action="store_true",
                   help="restore the state into the run root and stop (to look at it on another machine)")
    p.add_argument("--publish", action="store_true",
                   help="on the CPU machine: restore the state into the run root, then publish the GPU tables to "
                        "data/results/ and, when the study ran, its tables and book pages beside the CPU ones "
                        "(ds.study.gpu), and build the book")
    p.add_argument("--gpu", help="with --publish: the GPU's short name in the published file names (default: from "
                                 "the GPU's name, e.g. h200)")
    p.add_argument("--no-build", action="store_true", help="with --publish: write the book's pages, do not build it")
    args = p.parse_args(argv)
    unknown = sorted(set(args.skip) - set(step_names(args.dry_run)))
    if unknown:
        p.error(f"--skip {' '.join(unknown)}: no such step (the steps: {', '.join(step_names(args.dry_run))})")
    if args.budget_seconds is None:
        args.budget_seconds = DRY_BUDGET_S if args.dry_run else FIRST_CALL_S
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started_at = float(os.environ.get("GPU_PUBLISH_T0") or time.time())   # set by gpu_publish.sh
    start = time.monotonic() - max(0.0, time.time() - started_at)
    dry = args.dry_run
    dry_root = REPO / "runs" / "gpu_publish_dry"
    state = Path(args.state or (dry_root / "state" if dry else REPO / STATE_DIR)).resolve()
    run_root = Path(args.run_root or (dry_root / "runs" if dry else REPO / "runs")).resolve()
    out_arg = args.out or (str(dry_root / "out") if dry else os.environ.get("OUT"))
    profile = args.profile or ("tiny" if dry else "gpu")
    work, run_dir = run_root / WORK, run_root / profile
    try:
        if args.plan:
            values = profile_values(profile)
            print("\n".join(plan_lines(plan_steps(dry, work, values), args.budget_seconds, dry, profile, values)))
            return EXIT_DONE
        if args.unpack_only or args.publish:
            lines = []
            restore(state, run_root, work, run_dir, profile, fresh=True, restart_study=False, lines=lines)
            print("\n".join(lines))
            return publish(work, run_dir, profile, args.gpu, build=not args.no_build) if args.publish else EXIT_DONE
        if not out_arg:
            raise PublishError("$OUT is not set: pass --out DIR (the folder whose files come back)")
        out = Path(out_arg).resolve()
        if out.exists() and any(out.iterdir()):
            raise PublishError(f"{out} is not empty: the files to return must be the only ones there")
        out.mkdir(parents=True, exist_ok=True)
    except PublishError as err:
        print(f"[gpu_publish] error: {err}", file=sys.stderr)
        return err.code

    args.commit = args.commit or head_commit()
    if args.commit:
        os.environ["DS_GIT_COMMIT"] = args.commit
    lines = [f"gpu_publish {'dry run ' if dry else ''}started {utc_now()}, budget {args.budget_seconds:.0f} s, "
             f"profile {profile}, run root {run_root}, commit {args.commit or 'unknown (pass --commit)'}"]
    progress, seq_before, printed = None, None, 0

    def show() -> None:   # what is new in the summary, as it happens
        nonlocal printed
        if len(lines) > printed:
            print("\n".join(lines[printed:]), flush=True)
            printed = len(lines)

    try:
        restore(state, run_root, work, run_dir, profile, fresh=False, restart_study=args.restart_study,
                lines=lines)
        progress = read_json(work / "progress.json", {"seq": 0, "profile": profile, "steps": {}, "commands": []})
        seq_before = progress["seq"]
        values = profile_values(profile)
        steps = plan_steps(dry, work, values)
        lines.append(f"device: {check_machine(dry)}")
        lines += plan_lines(steps, args.budget_seconds, dry, profile, values)
        show()
        if args.restart_study:
            shutil.rmtree(run_dir, ignore_errors=True)
            progress["steps"].pop(STUDY_STEP, None)
            lines.append(f"--restart-study: deleted {run_dir}; the study starts over")

        def save(after: str) -> None:   # the state so far into $OUT: what a stop in the next step leaves
            show()
            finish(progress, args, profile, out, work, run_dir, start, list(lines), None, after=after)

        code = run_steps(steps, progress, args, dry, profile, values, run_root, work, start, lines, save, show)
    except PublishError as err:
        lines.append(f"ERROR: {err}")
        code = err.code
    except Exception:   # a fault of this script: still pack what the steps made, and say what broke
        lines.append("ERROR (a fault in gpu_publish):\n" + traceback.format_exc())
        code = EXIT_FAILED
    if progress is None or progress["seq"] == seq_before:
        lines += ["no state returned: nothing ran, so keep the state folder as it is", f"exit code {code}"]
        (out / SUMMARY).write_text("\n".join(lines) + "\n")
        show()
        return code
    return finish(progress, args, profile, out, work, run_dir, start, lines, code, echo_from=printed)


def profile_values(profile: str) -> dict:
    """The study profile's keys as its chapters get them (`extends` resolved)."""
    from ds.study.profiles import ProfileError, load_profile
    try:
        return load_profile(profile)
    except ProfileError as err:
        raise PublishError(str(err)) from None


def publish(work: Path, run_dir: Path, profile: str, gpu: str | None, build: bool, **where) -> int:
    """The CPU machine's side: hand what the GPU commands made to ds.study.gpu (`where`: its
    results_dir and book_dir, default the repository's)."""
    from ds.study import gpu as gpu_results
    progress = read_json(work / "progress.json", None)
    if progress is None:
        raise PublishError(f"{work} holds no progress.json: the state holds no GPU run")
    tables = {name: work / BENCH / f"{name}.csv" for name in step_names(False)
              if (work / BENCH / f"{name}.csv").is_file()}
    study = run_dir if progress["steps"].get(STUDY_STEP, {}).get("status") == "done" else None
    try:
        written = gpu_results.publish(tables, read_json(work / MACHINE_RECORD, {}), read_json(work / TRAIN_SPEED, None),
                                      progress, study, profile, gpu=gpu, study_profiles=work / "profiles.yaml",
                                      build=build, **where)
    except gpu_results.GpuPublishError as err:
        raise PublishError(str(err), EXIT_FAILED) from None
    for path in written:
        print(f"published {path}")
    if study is None:
        print(f"no study published: the {STUDY_STEP} step's status is "
              f"{progress['steps'].get(STUDY_STEP, {}).get('status', 'not run')}")
    return EXIT_DONE


def restore(state: Path, run_root: Path, work: Path, run_dir: Path, profile: str, *, fresh: bool,
            restart_study: bool, lines: list[str]) -> None:
    """Bring back the state of the last command, unless this machine's copy in `run_root` is as
    new (a machine still warm from the last command keeps runs/); `fresh` always unpacks."""
    manifest = read_json(state / MANIFEST, None)
    local = read_json(work / "progress.json", None)
    if manifest is None:
        if fresh:
            raise PublishError(f"{state} holds no {MANIFEST}: copy the files the last command returned there")
        lines.append(f"state: none in {state}; " + (f"this machine's copy (command {local['seq']}) continues"
                                                    if local else "starting from the beginning"))
        return
    if manifest["profile"] != profile:
        raise PublishError(f"{state} holds profile {manifest['profile']!r}, not {profile!r}: use another "
                           f"state folder for another profile")
    if local and local["seq"] >= manifest["seq"] and not fresh:
        lines.append(f"state: this machine already holds command {local['seq']}'s state in {run_root} "
                     f"(carried: command {manifest['seq']}); continuing there")
        return
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    unpack(state, run_root)
    lines.append(f"state: restored command {manifest['seq']}'s state from {len(manifest['parts'])} part(s) "
                 f"into {run_root}")
    study_done = read_json(work / "progress.json", {}).get("steps", {}).get(STUDY_STEP, {}).get("status") == "done"
    if not manifest["resumable"] and not study_done and not restart_study and not fresh:
        raise PublishError(
            f"command {manifest['seq']} returned the study's results but not its checkpoints (they exceeded "
            f"the carry limit; its summary says which), and this machine holds no copy of {run_dir}: the "
            f"study cannot resume here. Its tables and notebooks are in {work / 'study-results'}. Pass "
            f"--restart-study to run the study from its start.", EXIT_TOO_LARGE)


def run_steps(steps, progress, args, dry, profile, values, run_root, work, start, lines, save, show) -> int:
    """Run what is left, in order, each step when its estimate fits the budget; after each one,
    `save` the state so far (`show` prints the summary's new lines). The exit code."""
    progress["seq"] += 1
    command = {"seq": progress["seq"], "started_utc": utc_now(), "budget_s": args.budget_seconds, "ran": []}
    progress["commands"].append(command)
    write_json(work / "progress.json", progress)

    def record(name, status, seconds, extra=None):
        progress["steps"][name] = dict(status=status, seconds=round(seconds, 1), utc=utc_now(), **(extra or {}))
        command["ran"].append(name)
        write_json(work / "progress.json", progress)

    def left(reserve=TABLE_PACK_RESERVE_S):
        return args.budget_seconds - reserve - (time.monotonic() - start)

    more = failed = False
    for step in steps:
        before = progress["steps"].get(step.name, {})
        if before.get("status") == "done" or (step.optional and before.get("status") == "no room"):
            lines.append(f"skip   {step.name}: {before['status']} before ({before.get('seconds', 0):.0f} s)")
            continue
        if step.name in args.skip:
            lines.append(f"skip   {step.name}: --skip")
            more = True
            continue
        if left() < step.estimate_s:
            if step.optional:
                record(step.name, "no room", 0, {"what": step.what, "needed_s": step.estimate_s,
                                                 "left_s": round(left(), 1)})
                lines.append(f"no room {step.name}: needs {step.estimate_s:.0f} s, {left():.0f} s left (tried once)")
                continue
            lines.append(f"next   {step.name}: needs up to {step.estimate_s:.0f} s, {left():.0f} s left")
            more = True
            break
        log = work / "logs" / f"{step.name}.log"
        if step.call:
            code, seconds = run_call(step.call, work, log)
            how = f"in gpu_publish: {step.call.__name__}"
        else:
            argv = step.argv() if callable(step.argv) else step.argv
            code, seconds = run_step(argv, log, left())
            how = "python " + " ".join(argv)
        status = "done" if code == 0 else "timed out" if code == 124 else "failed"
        record(step.name, status, seconds, {"what": step.what, "command": how, "estimate_s": step.estimate_s})
        lines.append(f"{status:6} {step.name}: {seconds:.0f} s (estimate {step.estimate_s:.0f} s), {step.what}")
        if code != 0:
            lines.append(f"  log {log}:\n{log_tail(log)}")
            lines.append(f"  fix the cause, or pass --skip {step.name} to go on without it")
            failed = True
        save(step.name)
    else:
        code = run_study(progress, args, dry, profile, values, run_root, work, start, lines, record, show)
        if code == EXIT_FAILED:
            failed = True
        elif code == EXIT_MORE:
            more = True
    return EXIT_FAILED if failed else EXIT_MORE if more else EXIT_DONE


def run_study(progress, args, dry, profile, values, run_root, work, start, lines, record, show) -> int:
    """The study step: sized from the measured training speed to the time left, run, recorded."""
    from ds.study.sizing import Sizing, size_study, study_seconds
    before = progress["steps"].get(STUDY_STEP, {})
    if before.get("status") in ("done", "skipped"):
        lines.append(f"skip   study: {before['status']} before" + (f" ({before['why']})" if "why" in before else ""))
        return EXIT_DONE
    if STUDY_STEP in args.skip:
        lines.append("skip   study: --skip")
        return EXIT_MORE
    measured = read_json(work / TRAIN_SPEED, None)
    if not measured or not measured.get("backbones"):
        lines.append("next   study: cannot be sized: the train-speed step has not measured the training speed "
                     "(see its log above)")
        return EXIT_MORE
    speeds = {name: m["images_per_s"] for name, m in measured["backbones"].items()}
    choices = study_choices(dry, values)
    whole = DRY_BUDGET_S if dry else STUDY_CALL_S
    ever = size_study(values, speeds, study_budget(whole), choices)
    if not ever.fits:
        why = (f"at the measured training speed ({', '.join(f'{b} {v:.0f} img/s' for b, v in speeds.items())}) "
               f"no choice fits even a command of its own ({whole} s): {ever.describe()}")
        record(STUDY_STEP, "skipped", 0, {"why": why, "sizing": ever.describe()})
        lines.append(f"SKIPPED study: {why}")
        return EXIT_DONE
    now_s = args.budget_seconds - STUDY_PACK_RESERVE_S - (time.monotonic() - start)
    if before.get("sized"):   # a study that started keeps its size: it resumes from its checkpoints
        chosen = (before["sized"]["backbone"], before["sized"]["base_epochs"])
        speed = speeds.get(chosen[0]) or min(speeds.values())
        sizing = Sizing(now_s, chosen, study_seconds({**values, **before["sized"]}, speed))   # the whole study's estimate
        if now_s < RESUME_MIN_S:
            lines.append(f"next   study: {now_s:.0f} s left; it resumes in a command with at least {RESUME_MIN_S} s left")
            return EXIT_MORE
    else:
        sizing = size_study(values, speeds, now_s, choices)
        if not sizing.fits:
            lines.append(f"next   study: {now_s:.0f} s left is too little ({sizing.describe()}); in a command of its "
                         f"own (`scripts/gpu_publish.sh --budget-seconds {whole}`): {ever.describe()}")
            return EXIT_MORE
    check_modules(STUDY_MODULES)
    if not dry:
        check_data()
    now_s = args.budget_seconds - STUDY_PACK_RESERVE_S - (time.monotonic() - start)
    piece_minutes = max(0.05, now_s / 60)
    if args.piece_seconds is not None:
        piece_minutes = min(piece_minutes, args.piece_seconds / 60)
    profiles = study_profiles(profile, piece_minutes, work / "profiles.yaml", sizing.overrides)
    argv = ["-m", "ds.study", "run", "--profile", profile, "--profiles-file", str(profiles),
            "--run-root", str(run_root), "--no-book"]
    lines.append(f"{'resume' if before.get('sized') else 'start '} study: sized to {sizing.describe()}")
    show()
    log = work / "logs" / "study.log"
    code, seconds = run_step(argv, log, now_s)
    pieces = before.get("pieces", 0) + 1
    spent = before.get("seconds_all_pieces", 0.0) + seconds
    extra = {"pieces": pieces, "seconds_all_pieces": round(spent, 1), "exit_code": code,
             "piece_minutes": round(piece_minutes, 2), "command": "python " + " ".join(argv),
             "sized": sizing.overrides, "estimate_s": round(sum(sizing.seconds.values()), 1),
             "sizing": sizing.describe(), "train_speed": speeds}
    if code == 0:
        record(STUDY_STEP, "done", seconds, extra)
        lines.append(f"done   study: piece {pieces} finished it ({seconds:.0f} s, estimate "
                     f"{sum(sizing.seconds.values()):.0f} s; {spent:.0f} s in {pieces} pieces)")
        return EXIT_DONE
    if code in (STUDY_PAUSED, 124):
        record(STUDY_STEP, "paused", seconds, extra)
        why = "paused at its piece deadline" if code == STUDY_PAUSED else "stopped at the command's budget"
        finished = sorted(p.stem for p in (run_root / profile).glob("*.done"))
        lines.append(f"paused study: piece {pieces} {why} after {seconds:.0f} s (estimate "
                     f"{sum(sizing.seconds.values()):.0f} s); chapters done: {', '.join(finished) or 'none'}")
        return EXIT_MORE
    record(STUDY_STEP, "failed", seconds, extra)
    lines.append(f"failed study: exit code {code} after {seconds:.0f} s; log {log}:\n{log_tail(log, 25)}")
    return EXIT_FAILED


def install_parts(parts: list[Path], out: Path) -> list[Path]:
    """Move freshly packed parts into `out` in place of the last ones. The manifest goes first, so
    a stop in between leaves no manifest (an error that says so) rather than a wrong one."""
    (out / MANIFEST).unlink(missing_ok=True)
    for old in out.glob(f"{ARCHIVE}.*"):
        old.unlink()
    installed = []
    for part in parts:
        installed.append(out / part.name)
        shutil.move(str(part), installed[-1])
    return installed


def finish(progress, args, profile, out, work, run_dir, start, lines, code, after: str | None = None,
           echo_from: int = 0) -> int:
    """Pack the state into `out`, check it against the limits, write the summary and print its
    lines from `echo_from` on; the exit code. With `after` (a step's name) this is the save after
    that step, while the command goes on: nothing is printed."""
    part_size = int(args.part_mib * MIB)
    carry_limit = (int(args.carry_limit_mib * MIB) if args.carry_limit_mib is not None
                   else CARRY_LIMIT - tree_bytes() - MARGIN)
    staging = work.parent / f".{WORK}-pack"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    resumable = True
    try:
        members = [(p, str(p.relative_to(work.parent))) for p in sorted(work.rglob("*")) if p.is_file()]
        small, needed, dropped = study_files(run_dir) if run_dir.is_dir() else ([], [], [])
        base = f"{run_dir.name}/"
        members += [(run_dir / r, base + str(r)) for r in small]
        slimmed = []
        for r in needed:
            copy = staging / str(r).replace("/", "__")
            if slim_checkpoint(run_dir / r, copy):
                slimmed.append(str(r))
            members.append((copy, base + str(r)))

        def try_pack(chosen):
            parts_dir = staging / "parts"
            shutil.rmtree(parts_dir, ignore_errors=True)
            parts_dir.mkdir()
            parts = pack(chosen, parts_dir, part_size)
            total = sum(p.stat().st_size for p in parts)
            return parts, total, limits_problem(parts, total, carry_limit, part_size)

        parts, total, problem = try_pack(members)
        give_up = rollback_dirs(needed, {p.stem for p in run_dir.glob("*.done")}) if problem else []
        if give_up:
            kept = [(p, n) for p, n in members if not any(n.startswith(f"{base}{d}/") for d in give_up)]
            parts, total, second = try_pack(kept)
            if not second:
                lines.append(f"ROLLED BACK: {problem} with every checkpoint; left out the unfinished chapters' "
                             f"trainings {', '.join(map(str, give_up))}: the next machine reruns them from their "
                             f"start (this machine keeps them in {run_dir}: running again before it is given "
                             f"back loses nothing)")
                needed = [r for r in needed if r.parent not in give_up]
                problem = None
        if problem:
            sizes = ", ".join(f"{r} {(run_dir / r).stat().st_size / MIB:.1f} MiB" for r in needed)
            lines.append(f"TOO LARGE: {problem}. The study's checkpoints still needed: {sizes or 'none'}. "
                         f"Packed again without them: results only (tables, CSVs, notebooks, logs).")
            resumable = False
            light = [(p, n) for p, n in members if not n.endswith(".pt")]
            light = [(p, n.replace(base, f"{WORK}/study-results/", 1) if n.startswith(base) else n)
                     for p, n in light]
            parts, total, second = try_pack(light)
            if second:
                lines.append(f"  even the results alone are too large: {second}")
            lines.append(f"  This machine still holds {run_dir}: run the same command again before it is "
                         f"given back and it continues there. A fresh machine cannot resume the study from "
                         f"this state (only --restart-study).")
            code = EXIT_TOO_LARGE if code not in (EXIT_FAILED, None) else code
        parts = install_parts(parts, out)
        manifest = {"seq": progress.get("seq", 0), "profile": profile, "resumable": resumable,
                    "created_utc": utc_now(), "carry_limit_bytes": carry_limit, "after_step": after,
                    "parts": [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)} for p in parts]}
        write_json(out / MANIFEST, manifest)
        lines.append(f"state: {len(parts)} part(s), {total / MIB:.1f} MiB compressed (carry limit "
                     f"{carry_limit / MIB:.1f} MiB, parts of at most {part_size / MIB:.0f} MiB)"
                     + (f"; {len(needed)} checkpoint(s), {len(slimmed)} of finished trainings without "
                        f"optimizer state, {len(dropped)} no chapter reads any more left out"
                        if resumable else ""))
    except Exception as err:   # the summary must still say what happened
        lines.append(f"ERROR while packing: {type(err).__name__}: {err}")
        code = EXIT_FAILED
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    steps = progress.get("steps", {})
    not_done = [n for n in step_names(args.dry_run) if steps.get(n, {}).get("status") not in ("done", "skipped")]
    lines += [f"steps: " + ", ".join(f"{n} {s['status']}" for n, s in steps.items()),
              f"not done yet: {', '.join(not_done) or 'nothing'}"]
    if after is not None:   # a save while the command goes on
        lines += [f"SAVED after step {after} at {time.monotonic() - start:.0f} s; the command went on. If this is "
                  f"the summary that came back, the command was stopped during the next step: the state holds "
                  f"every step up to {after}; run the same command again to continue"]
    else:
        next_line = {EXIT_DONE: "next: nothing; publish (README, 'GPU results')",
                     EXIT_MORE: "next: run the same command again with the returned files as the state "
                                "(for the study: a command of its own, --budget-seconds "
                                f"{DRY_BUDGET_S if args.dry_run else STUDY_CALL_S})",
                     EXIT_FAILED: "next: read the error above; fix it or --skip the step, then run again",
                     EXIT_MACHINE: "next: fix this machine's problem above, then run again",
                     EXIT_TOO_LARGE: "next: run again on this machine (it keeps runs/) or see TOO LARGE above"}[code]
        lines += [f"took {time.monotonic() - start:.0f} s; exit code {code}", next_line]
    lines.append("returned files: " + ", ".join(sorted(p.name for p in out.iterdir() if p.name != SUMMARY)
                                                + [SUMMARY]))
    text = "\n".join(lines) + "\n"
    tmp = out / f".{SUMMARY}.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / SUMMARY)
    if after is None:
        print("\n".join(lines[echo_from:]))
    return code


def limits_problem(parts: list[Path], total: int, carry_limit: int, part_size: int) -> str | None:
    """Why the parts cannot come back and be carried in again, or None."""
    if len(parts) + 2 > OUT_FILES:   # + manifest + summary
        return (f"{len(parts)} parts of {part_size / MIB:.0f} MiB plus 2 files exceed the {OUT_FILES} files "
                f"that come back")
    biggest = max((p.stat().st_size for p in parts), default=0)
    if biggest > OUT_FILE_LIMIT - MARGIN:
        return f"a part of {biggest / MIB:.1f} MiB exceeds the {OUT_FILE_LIMIT / MIB:.0f} MiB per returned file"
    if total > min(carry_limit, OUT_TOTAL_LIMIT - MARGIN):
        return (f"{total / MIB:.1f} MiB compressed exceeds the {min(carry_limit, OUT_TOTAL_LIMIT) / MIB:.1f} MiB "
                f"that can be carried in next time (64 MiB minus the working tree and .whl/)")
    return None


if __name__ == "__main__":
    sys.exit(main())
