"""Roofline bounds: how fast the hardware would allow a network to run, and how close we get.

The device's peaks are measured in the same run as the networks: peak FLOP/s from a large
matrix product in the dtype, peak bandwidth from a large device-to-device copy (bytes read plus
bytes written). A model's lower bound on time per batch is the larger of its compute time at
peak (2 * MACs * batch / FLOP/s) and its minimal memory traffic at peak bandwidth (see
`traffic.memory_traffic`). Achieved fraction = bound / measured time (1.0 = at the roof).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Mapping

import torch
from torch import nn

from ds.provenance import resolve_device

from .settings import dtype_name, fixed_threads, resolve_dtype
from .timing import synchronize, time_loop
from .traffic import memory_traffic

# Large enough to leave the caches and reach a steady rate, small enough for a busy CPU.
MATMUL_SIZE = {"cuda": 8192, "cpu": 2048}
COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 28}


@dataclass
class Peaks:
    """Best of several trials: FLOP/s of a square matmul, bytes/s of a copy (read + write)."""
    flop_s: float
    bytes_s: float
    device: str
    dtype: str
    threads: int
    matmul_size: int
    copy_bytes: int
    tf32: bool  # fp32 matmul allowed TF32 tensor cores, as cuDNN's fp32 convs are by default

    def best(self, other: "Peaks") -> "Peaks":
        """The higher of two measurements of the same peaks (load can only lower a peak)."""
        return replace(self, flop_s=max(self.flop_s, other.flop_s),
                       bytes_s=max(self.bytes_s, other.bytes_s))


def measure_peaks(device, dtype=torch.float32, *, threads: int | None = None, trials: int = 5,
                  matmul_size: int | None = None, copy_bytes: int | None = None) -> Peaks:
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    n = matmul_size or MATMUL_SIZE[dev.type]
    nbytes = copy_bytes or COPY_BYTES[dev.type]
    # On CUDA, fp32 convolutions run on TF32 tensor cores when cudnn.allow_tf32 is on (torch's
    # default); the fp32 peak must then be the TF32 one, or the roof would sit below the models.
    tf32 = dev.type == "cuda" and dt == torch.float32 and torch.backends.cudnn.allow_tf32
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    on_device = torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()
    with fixed_threads(threads) as n_threads, torch.inference_mode(), on_device:
        a = torch.randn(n, n, device=dev).to(dt)
        b = torch.randn(n, n, device=dev).to(dt)
        matmul = lambda: torch.mm(a, b)  # noqa: E731
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            matmul()
            synchronize(dev)
            flop_s = max(2 * n ** 3 / time_loop(matmul, 1, dev) for _ in range(trials))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32_before
        del a, b
        elements = nbytes // torch.empty((), dtype=dt).element_size()
        src = torch.randn(elements, device=dev).to(dt)
        dst = torch.empty_like(src)
        copy = lambda: dst.copy_(src)  # noqa: E731
        copy()
        synchronize(dev)
        moved = 2 * src.numel() * src.element_size()
        bytes_s = max(moved / time_loop(copy, 1, dev) for _ in range(trials))
    return Peaks(flop_s=flop_s, bytes_s=bytes_s, device=str(dev), dtype=dtype_name(dt),
                 threads=n_threads, matmul_size=n, copy_bytes=nbytes, tf32=tf32)


@dataclass
class Bound:
    """Lower bounds on seconds per batch; `achieved_fraction` is filled when a time is given."""
    macs: int
    traffic_bytes: int
    compute_s: float
    memory_s: float
    bound_s: float
    measured_s: float | None = None
    achieved_fraction: float | None = None


def time_bound(macs: int, traffic_bytes: int, batch: int, peaks: Peaks,
               measured_s: float | None = None) -> Bound:
    """Bound for a model of `macs` multiply-accumulates per image and `traffic_bytes` per batch."""
    compute_s = 2 * macs * batch / peaks.flop_s
    memory_s = traffic_bytes / peaks.bytes_s
    bound_s = max(compute_s, memory_s)
    fraction = None if measured_s is None else bound_s / measured_s
    return Bound(macs=macs, traffic_bytes=traffic_bytes, compute_s=compute_s, memory_s=memory_s,
                 bound_s=bound_s, measured_s=measured_s, achieved_fraction=fraction)


def roofline(models: Mapping[str, nn.Module], input_size, batch: int, device,
             dtype=torch.float32, measured_s: Mapping[str, float] | None = None, *,
             peaks: Peaks | None = None, macs: Mapping[str, int] | None = None,
             threads: int | None = None) -> tuple[Peaks, dict[str, Bound]]:
    """Measure the device's peaks (unless given) and bound every model's time per batch.

    `measured_s[name]`, seconds per batch from a throughput run, gives the achieved fraction.
    MACs come from `ds.macs` unless passed in `macs`.
    """
    if peaks is None:
        peaks = measure_peaks(device, dtype, threads=threads)
    bounds = {}
    for name, model in models.items():
        if macs is not None and name in macs:
            n_macs = macs[name]
        else:
            import ds
            n_macs = ds.macs(model, input_size)
        traffic = memory_traffic(model, input_size, batch, dtype)
        seconds = None if measured_s is None else measured_s.get(name)
        bounds[name] = time_bound(n_macs, traffic, batch, peaks, seconds)
    return peaks, bounds
