"""Produce the GPU results (throughput tables, then the `full` study) on a machine lent one
command at a time, resuming where the last command stopped.

The machine's limits shape everything here: a command runs at most 10 minutes; the working tree
plus carried files are at most 64 MiB; what comes back is at most 8 files of at most 16 MiB in
the folder $OUT. So every command

  1. restores the state the last command returned (the caller copied its $OUT into .gpu_state/
     and carried that folder in), unless this machine already holds a newer copy in runs/;
  2. runs the steps not done yet, in order, while its time budget lasts: the throughput tables
     (short, each one `python -m ds.bench` call), then `python -m ds.study run --profile full`,
     given a piece length that ends before the budget does (the study pauses with exit code 3);
  3. packs what the next fresh machine needs (the step records, the tables, the study's run
     directory with only the checkpoints an unfinished chapter still reads) into one xz-compressed
     tar split into parts of at most 15 MiB, checks the sizes against the limits, and writes
     $OUT/summary.txt (what ran, how long, what is next).

    scripts/gpu_publish.sh                  # on the GPU machine, $OUT set by the tool
    scripts/gpu_publish.sh --dry-run        # the same path on the CPU: tiny profile, tiny tables

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
BUDGET_S = 540                 # default time this command may use (start-up and transfer need the rest)
PACK_RESERVE_S = 60            # kept free at the end for packing (xz of ~40 MiB of weights)
STUDY_MIN_S = 120              # the study is not started with less time left
STUDY_STARTUP_S = 30           # papermill and kernel start-up, outside the study's own clock
DRY_PACK_RESERVE_S, DRY_STUDY_MIN_S, DRY_STUDY_STARTUP_S = 10, 20, 5   # the same for --dry-run
DRY_STEP_S = 30                # a tiny table on the CPU
KILL_GRACE_S = 15              # a step overrunning its time gets SIGTERM, then SIGKILL after this

EXIT_DONE, EXIT_FAILED, EXIT_MACHINE, EXIT_MORE, EXIT_TOO_LARGE = 0, 1, 2, 3, 4
STUDY_PAUSED = 3               # `python -m ds.study run` exit code: paused at the piece deadline

STATE_DIR = ".gpu_state"       # where the caller puts the returned files (git-ignored, carried)
WORK = "gpu_publish"           # <run root>/gpu_publish: progress.json, bench/, logs/
MANIFEST = "MANIFEST.json"
SUMMARY = "summary.txt"
ARCHIVE = "state.tar.xz"       # parts are state.tar.xz.00, .01, ...

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
    argv: list[str]        # run as `python <argv>` from the repository root
    estimate_s: float      # started only when this much of the budget is left
    what: str


def bench_steps(dry_run: bool, bench_dir: Path) -> list[Step]:
    """The throughput tables: the paper's setting, the fast settings, the batch sweeps.

    The dry run takes the same steps with a tiny network on the CPU; there it times fp32 only
    (the roofline's CPU peak measurement in bf16/fp16 takes minutes) and runs 'compile' steps
    eagerly (compiling seven networks for the CPU takes minutes too).
    """
    if dry_run:
        common = ["--model", "mobilenetv2_035", "--device", "cpu", "--input", "32", "--threads", "1",
                  "--iters", "1", "--warmup", "1"]
        paper_batch, sweep = "2", "1,2"
        fast_dtypes = {"bf16,fp16": "fp32", "bf16": "fp32", "fp16": "fp32"}
        modes = {"compile": "eager"}
    else:
        common = ["--model", "mobilenetv2_140", "--device", "cuda", "--input", "224"]
        paper_batch, sweep = "128", "1,2,4,8,16,32,64,128,256"
        fast_dtypes, modes = {}, {}

    def step(name, estimate, what, batch, patterns="paper", dtypes="fp32", layouts="nchw", mode="eager"):
        argv = ["-m", "ds.bench", *common, "--patterns", patterns, "--batch", batch,
                "--dtypes", fast_dtypes.get(dtypes, dtypes), "--layouts", layouts,
                "--modes", modes.get(mode, mode), "--out", str(bench_dir / f"{name}.csv")]
        if dry_run:
            return Step(name, argv, DRY_STEP_S, f"tiny CPU stand-in for: {what}")
        return Step(name, argv, estimate, what)

    return [
        step("paper", 180, "the paper's setting: fp32, NCHW, eager, batch 128, 224 px", paper_batch),
        step("fast-cudagraph", 240, "bf16 and fp16, channels_last, CUDA graphs", paper_batch,
             dtypes="bf16,fp16", layouts="channels_last", mode="cudagraph"),
        step("fast-compile-bf16", 420, "bf16, channels_last, torch.compile", paper_batch,
             dtypes="bf16", layouts="channels_last", mode="compile"),
        step("fast-compile-fp16", 420, "fp16, channels_last, torch.compile", paper_batch,
             dtypes="fp16", layouts="channels_last", mode="compile"),
        step("sweep-fp32", 300, "batch sweep 1..256, fp32 NCHW eager", sweep),
        step("sweep-fast", 300, "batch sweep 1..256, bf16 channels_last CUDA graphs", sweep,
             dtypes="bf16", layouts="channels_last", mode="cudagraph"),
    ]


STUDY_STEP = "study"


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


def check_machine(dry_run: bool, need_study: bool) -> str:
    """A line naming the device; PublishError naming what is missing and how to bring it."""
    needed = BENCH_MODULES + (STUDY_MODULES if need_study else ())
    missing = missing_modules(needed)
    if missing:
        raise PublishError(
            f"missing Python modules on this machine: {', '.join(missing)} (python {sys.version.split()[0]}, "
            f"{sys.executable}). Bring them as wheels: on a machine with the package index run "
            f"`pip download --only-binary=:all: --python-version {sys.version_info.major}.{sys.version_info.minor} "
            f"--platform manylinux2014_x86_64 -d .whl <packages>` (pip names: timm, papermill, ipykernel, "
            f"matplotlib, pyyaml, pillow, ...) and name .whl in carry; gpu_publish.sh installs them with "
            f"`pip install --no-index --no-deps --target`. Add their dependencies the same way.")
    import torch
    if dry_run:
        return "cpu (dry run)"
    if not torch.cuda.is_available():
        raise PublishError(f"torch {torch.__version__} sees no CUDA device (torch.version.cuda="
                           f"{torch.version.cuda}); run on the GPU machine, or pass --dry-run on a CPU")
    return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def check_data() -> None:
    """The full profile trains on all of CIFAR-10: find it before a piece is spent on it."""
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


def log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join("    " + line for line in text[-lines:])


def head_commit() -> str | None:
    """HEAD of this checkout, or None (the GPU machine's copy of the tree has no .git)."""
    if not (REPO / ".git").exists() or not shutil.which("git"):
        return None
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or None


def study_profiles(profile: str, piece_minutes: float, target: Path) -> Path:
    """profiles.yaml with `profile`'s piece length shortened to end inside this command; the
    profile keeps its name, so its run directory stays runs/<profile>."""
    import yaml
    profiles = yaml.safe_load((REPO / "profiles.yaml").read_text())
    if profile not in profiles:
        raise PublishError(f"profile {profile!r} is not in profiles.yaml ({', '.join(profiles)})")
    own = profiles[profile].get("piece_minutes")
    profiles[profile]["piece_minutes"] = round(min(piece_minutes, own or piece_minutes), 3)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("# written by scripts/gpu_publish.py: profiles.yaml, piece_minutes fitted to one command\n"
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
    """Copy a ds.train checkpoint, dropping the optimizer's per-parameter state (SGD momentum,
    as large as the weights) when the checkpoint says its training is finished: resuming a
    finished training loads the optimizer but takes no step, so nothing reads that state again.
    Unfinished trainings are copied whole. True when something was dropped. Read as data only
    (ds.train's reader: a file holding Python objects is refused, never run)."""
    from ds.train.checkpoint import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(source)
    finished = (isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict) and "epoch" in ckpt
                and ckpt["epoch"] + 1 >= ckpt["config"].get("epochs", float("inf")))
    if not finished:
        shutil.copy2(source, target)
        return False
    for key in ("optimizer", "gate_optimizer"):
        if isinstance(ckpt.get(key), dict):
            ckpt[key] = dict(ckpt[key], state={})
    save_checkpoint(ckpt, target)
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
    p.add_argument("--budget-seconds", type=float, default=BUDGET_S,
                   help=f"time this command may use, packing included (default {BUDGET_S}; the machine "
                        f"kills a command at {COMMAND_LIMIT_S})")
    p.add_argument("--state", help=f"the returned files of the last command (default {STATE_DIR}/)")
    p.add_argument("--out", help="where the files to return go (default $OUT)")
    p.add_argument("--run-root", help="where runs/<profile> and runs/gpu_publish live (default runs/)")
    p.add_argument("--profile", help="study profile (default full; tiny with --dry-run)")
    p.add_argument("--skip", nargs="+", default=[], metavar="STEP",
                   help="steps to leave out (e.g. a table that fails); recorded as skipped")
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
                   help="restore the state into the run root and stop (to publish on another machine)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started_at = float(os.environ.get("GPU_PUBLISH_T0") or time.time())   # set by gpu_publish.sh
    start = time.monotonic() - max(0.0, time.time() - started_at)
    dry = args.dry_run
    dry_root = REPO / "runs" / "gpu_publish_dry"
    state = Path(args.state or (dry_root / "state" if dry else REPO / STATE_DIR)).resolve()
    run_root = Path(args.run_root or (dry_root / "runs" if dry else REPO / "runs")).resolve()
    out_arg = args.out or (str(dry_root / "out") if dry else os.environ.get("OUT"))
    profile = args.profile or ("tiny" if dry else "full")
    work, run_dir = run_root / WORK, run_root / profile
    try:
        if args.unpack_only:
            lines = []
            restore(state, run_root, work, run_dir, profile, fresh=True, restart_study=False, lines=lines)
            print("\n".join(lines))
            return EXIT_DONE
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
    progress, seq_before = None, None
    try:
        restore(state, run_root, work, run_dir, profile, fresh=False, restart_study=args.restart_study,
                lines=lines)
        progress = read_json(work / "progress.json", {"seq": 0, "profile": profile, "steps": {}, "commands": []})
        seq_before = progress["seq"]
        steps = bench_steps(dry, work / "bench")
        study_todo = progress["steps"].get(STUDY_STEP, {}).get("status") != "done"
        lines.append(f"device: {check_machine(dry, study_todo and STUDY_STEP not in args.skip)}")
        if args.restart_study:
            shutil.rmtree(run_dir, ignore_errors=True)
            progress["steps"].pop(STUDY_STEP, None)
            lines.append(f"--restart-study: deleted {run_dir}; the study starts over")
        code = run_steps(steps, progress, args, dry, profile, run_root, work, start, lines)
    except PublishError as err:
        lines.append(f"ERROR: {err}")
        code = err.code
    except Exception:   # a fault of this script: still pack what the steps made, and say what broke
        lines.append("ERROR (a fault in gpu_publish):\n" + traceback.format_exc())
        code = EXIT_FAILED
    if progress is None or progress["seq"] == seq_before:
        lines += ["no state returned: nothing ran, so keep the state folder as it is", f"exit code {code}"]
        (out / SUMMARY).write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return code
    return finish(progress, args, profile, out, work, run_dir, start, lines, code)


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


def run_steps(steps, progress, args, dry, profile, run_root, work, start, lines) -> int:
    """Run what is left in order while the budget lasts; the exit code so far."""
    progress["seq"] += 1
    command = {"seq": progress["seq"], "started_utc": utc_now(), "ran": []}
    progress["commands"].append(command)
    write_json(work / "progress.json", progress)
    reserve = PACK_RESERVE_S if not dry else DRY_PACK_RESERVE_S
    deadline = args.budget_seconds - reserve     # seconds after `start` by which the steps end

    def record(name, status, seconds, extra=None):
        progress["steps"][name] = dict(status=status, seconds=round(seconds, 1), utc=utc_now(), **(extra or {}))
        command["ran"].append(name)
        write_json(work / "progress.json", progress)

    def left():
        return deadline - (time.monotonic() - start)

    skipped = False
    for step in steps:
        if progress["steps"].get(step.name, {}).get("status") == "done":
            lines.append(f"skip   {step.name}: done before ({progress['steps'][step.name]['seconds']:.0f} s)")
            continue
        if step.name in args.skip:
            lines.append(f"skip   {step.name}: --skip")
            skipped = True
            continue
        if left() < step.estimate_s:
            lines.append(f"next   {step.name}: needs up to {step.estimate_s:.0f} s, {left():.0f} s left")
            return EXIT_MORE
        log = work / "logs" / f"{step.name}.log"
        code, seconds = run_step(step.argv, log, left())
        status = "done" if code == 0 else "timed out" if code == 124 else "failed"
        record(step.name, status, seconds, {"what": step.what, "command": "python " + " ".join(step.argv)})
        lines.append(f"{status:6} {step.name}: {seconds:.0f} s, {step.what}")
        if code != 0:
            lines.append(f"  log {log}:\n{log_tail(log)}")
            lines.append(f"  fix the cause, or pass --skip {step.name} to go on without it")
            return EXIT_FAILED

    if progress["steps"].get(STUDY_STEP, {}).get("status") == "done":
        lines.append("skip   study: done before")
        return EXIT_MORE if skipped else EXIT_DONE
    if STUDY_STEP in args.skip:
        lines.append("skip   study: --skip")
        return EXIT_MORE
    if not dry:
        check_data()
    minimum = STUDY_MIN_S if not dry else DRY_STUDY_MIN_S
    if left() < minimum:
        lines.append(f"next   study: needs at least {minimum} s, {left():.0f} s left")
        return EXIT_MORE
    startup = STUDY_STARTUP_S if not dry else DRY_STUDY_STARTUP_S
    piece_minutes = max(0.05, (left() - startup) / 60)
    if args.piece_seconds is not None:
        piece_minutes = min(piece_minutes, args.piece_seconds / 60)
    profiles = study_profiles(profile, piece_minutes, work / "profiles.yaml")
    argv = ["-m", "ds.study", "run", "--profile", profile, "--profiles-file", str(profiles),
            "--run-root", str(run_root), "--no-book"]
    log = work / "logs" / "study.log"
    code, seconds = run_step(argv, log, left())
    before = progress["steps"].get(STUDY_STEP, {})
    pieces, spent = before.get("pieces", 0) + 1, before.get("seconds_all_pieces", 0.0) + seconds
    extra = {"pieces": pieces, "seconds_all_pieces": round(spent, 1), "exit_code": code,
             "piece_minutes": round(piece_minutes, 2), "command": "python " + " ".join(argv)}
    if code == 0:
        record(STUDY_STEP, "done", seconds, extra)
        lines.append(f"done   study: piece {pieces} finished it ({seconds:.0f} s; {spent:.0f} s in {pieces} pieces)")
        return EXIT_MORE if skipped else EXIT_DONE
    if code in (STUDY_PAUSED, 124):
        record(STUDY_STEP, "paused", seconds, extra)
        why = "paused at its piece deadline" if code == STUDY_PAUSED else "stopped at the command's budget"
        finished = sorted(p.stem for p in (run_root / profile).glob("*.done"))
        lines.append(f"paused study: piece {pieces} {why} after {seconds:.0f} s; chapters done: "
                     f"{', '.join(finished) or 'none'}")
        return EXIT_MORE
    record(STUDY_STEP, "failed", seconds, extra)
    lines.append(f"failed study: exit code {code} after {seconds:.0f} s; log {log}:\n{log_tail(log, 25)}")
    return EXIT_FAILED


def finish(progress, args, profile, out, work, run_dir, start, lines, code) -> int:
    """Pack the state into `out`, check it against the limits, write the summary; the exit code."""
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
            for old_part in out.glob(f"{ARCHIVE}.*"):
                old_part.unlink()
            parts = pack(chosen, out, part_size)
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
            code = EXIT_TOO_LARGE if code != EXIT_FAILED else code
        manifest = {"seq": progress.get("seq", 0), "profile": profile, "resumable": resumable,
                    "created_utc": utc_now(), "carry_limit_bytes": carry_limit,
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
    next_line = {EXIT_DONE: "next: nothing; publish (README, 'GPU results')",
                 EXIT_MORE: "next: run the same command again with the returned files as the state",
                 EXIT_FAILED: "next: read the error above; fix it or --skip the step, then run again",
                 EXIT_MACHINE: "next: fix this machine's problem above, then run again",
                 EXIT_TOO_LARGE: "next: run again on this machine (it keeps runs/) or see TOO LARGE above"}[code]
    names = [s.name for s in bench_steps(args.dry_run, work / "bench")] + [STUDY_STEP]
    not_done = [n for n in names if steps.get(n, {}).get("status") != "done"]
    lines += [f"steps: " + ", ".join(f"{n} {s['status']}" for n, s in steps.items()),
              f"not done yet: {', '.join(not_done) or 'nothing'}",
              f"took {time.monotonic() - start:.0f} s; exit code {code}", next_line,
              "returned files: " + ", ".join(sorted(p.name for p in out.iterdir()) + [SUMMARY])]
    text = "\n".join(lines) + "\n"
    (out / SUMMARY).write_text(text)
    print(text, end="")
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
