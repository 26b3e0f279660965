"""Where and from what a result was made: the device, the machine, the code (git) and versions.

One helper per question, used by the benchmarks, the training CLI and the study alike.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

from .errors import DeviceError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device="auto") -> torch.device:
    """A torch.device for 'auto' (CUDA when present, else CPU), 'cpu' or 'cuda[:i]'.

    Raises DeviceError for an unknown name, and for CUDA on a machine without it."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu or cuda (or 'cuda:N')")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"device {device!r} was requested but CUDA is not available here "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False): run on a machine "
            f"with an NVIDIA GPU and a CUDA build of torch, or use the CPU (--device cpu, "
            f"device: cpu in a profile)")
    return dev


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Instruction sets that decide which kernels a CPU runtime picks (a VM may report the same model
# name on hosts of different generations, so the name alone does not say which ran).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                "amx_tile")


def cpu_flags() -> set[str] | None:
    """The flags /proc/cpuinfo lists for the first CPU; None where there is no /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return set()


def cpu_features() -> list[str]:
    """Which of CPU_FEATURES /proc/cpuinfo lists (empty where there is no /proc/cpuinfo)."""
    flags = cpu_flags() or set()
    return [name for name in CPU_FEATURES if name in flags]


def device_name(device: torch.device) -> str:
    """The GPU's or the CPU's model name."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def describe_device(device: torch.device) -> str:
    """The device in words, with the CUDA version or the CPU thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU ({cpu_name()}, {torch.get_num_threads()} threads)"


def git_commit(path: str | Path = REPO_ROOT) -> dict:
    """HEAD of the repository holding `path` ({'commit', 'short', 'dirty'}; None where unknown).

    `dirty` says whether tracked files had uncommitted changes. A copy of the tree without its
    .git (e.g. on a lent GPU machine) names its commit in $DS_GIT_COMMIT; it is used when git
    cannot tell."""
    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD") or None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    if commit is None and os.environ.get("DS_GIT_COMMIT"):
        commit = os.environ["DS_GIT_COMMIT"].strip()
    return {"commit": commit, "short": commit[:7] if commit else None, "dirty": dirty}


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    """Versions of what produced a result: python, torch, timm, CUDA, cuDNN."""
    import timm  # heavy; only loaded when a record is written
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def machine() -> dict:
    return {"platform": platform.platform(), "host": platform.node(), "cpu": cpu_name(),
            "cpu_features": cpu_features(), "cpu_count": os.cpu_count()}


# What nvidia-smi is asked for (names as `nvidia-smi --help-query-gpu` lists them).
NVIDIA_SMI_FIELDS = ("name", "driver_version", "memory.total", "power.limit", "clocks.sm", "clocks.max.sm",
                     "clocks.mem", "clocks.max.mem", "temperature.gpu")


def gpu_record() -> dict:
    """The GPUs torch sees (name, memory, compute capability), torch, CUDA and cuDNN versions, and
    what nvidia-smi reports (driver, clocks, power limit); where nvidia-smi is absent or fails, the
    reason instead. Never raises: a record on a machine without a GPU says so."""
    record = {"torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
              "cuda_available": torch.cuda.is_available(), "gpus": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            record["gpus"].append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                                   "capability": f"{props.major}.{props.minor}",
                                   "multiprocessors": props.multi_processor_count})
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        record["nvidia_smi"] = f"not available: {err}"
        return record
    if done.returncode:
        record["nvidia_smi"] = f"failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[:300]}"
        return record
    record["nvidia_smi"] = [dict(zip(NVIDIA_SMI_FIELDS, (v.strip() for v in line.split(","))))
                            for line in done.stdout.strip().splitlines()]
    return record
