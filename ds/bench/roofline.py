"""Roofline bounds: how fast the hardware would allow a network to run, and how close we get.

A model's lower bound on time per batch is the larger of its compute time at the peak FLOP rate
(2 * MACs * batch / FLOP/s) and its minimal memory traffic (`traffic.memory_traffic`) at the peak
bandwidth. Achieved fraction = bound / measured time (1.0 = at the roof).

The peaks are MEASURED, per runtime and precision, in the same run as the networks; they are not
derived from the core's clock and vector units, because the VMs this project runs on hide both
(the cores report a base clock, not the one they run at, and whether AVX-512 executes in one pass
or two halves is not visible), so a derived peak would be a guess that could sit below what runs.
- FLOP/s on the CPU: the best repeat of compute-bound kernels (one large 1x1 and one large 3x3 conv,
  KERNELS) run by that very runtime in that precision, timed like the networks (ds.bench.measure):
  torch in NCHW and channels_last (oneDNN), ONNX Runtime (MLAS), OpenVINO (oneDNN) in fp32, bf16
  where the CPU has it, and int8 (the kernels quantized by ds.export.quantize; the runtimes' u8/s8
  kernels use AVX-512 VNNI where the CPU has it). A peak from a torch matmul, as this module once
  used, sits below what oneDNN's convolutions reach, so "bounds" were beaten (fractions up to 1.7).
  On CUDA: a large matmul in the dtype (TF32 for fp32 when cuDNN's convs may use it).
- Bytes/s: the best of device copies (read plus write) of several sizes, from cache-sized to far
  beyond the last-level cache: data that stays in cache moves faster than DRAM, and a bound must
  hold for the fastest level a network's tensors may live in.
Every fraction lies in (0, 1] by construction: where a network ran faster than the measured peaks
allow (kernels that are not the runtime's best, a busy machine during the peak measurement),
`roofline` raises the peaks to the rate that network reached, names it in `flop_s_from` /
`bytes_s_from` and warns; that network's fraction is then 1.0. `time_bound` alone refuses a
measured time below its bound.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Mapping

import torch
from torch import nn

from ds.provenance import resolve_device

from .settings import INT8, BenchError, fixed_threads, precision_name, resolve_dtype
from .timing import measure, synchronize, time_loop
from .traffic import memory_traffic

# Large enough to leave the caches and reach a steady rate, small enough for a busy CPU.
MATMUL_SIZE = {"cuda": 8192, "cpu": 2048}
COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 28}
COPY_SIZES = (1 << 8, 1 << 4, 1)   # copies of COPY_BYTES divided by these: 1 MiB, 16 MiB, 256 MiB on the CPU
# The CPU peak kernels: (name, in/out channels, kernel size, input px), run on KERNEL_BATCH images. Of
# 1x1 convs of 128-512 channels on 56-14 px and 3x3/5x5 ones of 64-256 channels, these two ran
# fastest in ONNX Runtime, OpenVINO and torch fp32 (1 thread, the project's 2-core AMD EPYC VM,
# 2026-12-01, machine shared: load average 3.4).
KERNELS = (("conv1x1", 512, 1, 14), ("conv3x3", 256, 3, 14))
KERNEL_BATCH = 8
TOLERANCE = 1e-9   # float rounding of a fraction that is 1 by construction


@dataclass
class Peaks:
    """Best of several trials: FLOP/s of the runtime's compute-bound kernels, bytes/s of copies."""
    flop_s: float
    bytes_s: float
    device: str
    dtype: str
    threads: int
    matmul_size: int | None   # CUDA: the matmul's size; None on the CPU (conv kernels)
    copy_bytes: int           # the largest copy
    tf32: bool  # fp32 matmul allowed TF32 tensor cores, as cuDNN's fp32 convs are by default
    runtime: str = "torch"
    flop_s_from: str = ""     # the kernel (or network) that set flop_s
    bytes_s_from: str = ""

    def best(self, other: "Peaks") -> "Peaks":
        """The higher of two measurements of the same peaks (load can only lower a peak)."""
        flop = (self.flop_s, self.flop_s_from) if self.flop_s >= other.flop_s else (other.flop_s, other.flop_s_from)
        moved = (self.bytes_s, self.bytes_s_from) if self.bytes_s >= other.bytes_s else (other.bytes_s,
                                                                                          other.bytes_s_from)
        return replace(self, flop_s=flop[0], flop_s_from=flop[1], bytes_s=moved[0], bytes_s_from=moved[1])

    def covering(self, rates: Mapping[str, tuple[float, float]]) -> "Peaks":
        """These peaks raised, where needed, to the rates networks reached ({name: (FLOP/s,
        bytes/s)}), with a warning naming each network that ran faster than the peaks allow."""
        peaks = self
        for name, (flop_s, bytes_s) in rates.items():
            if flop_s > peaks.flop_s:
                warnings.warn(f"{name} ran at {flop_s / 1e9:.1f} GFLOP/s in {self.runtime} {self.dtype}, above the "
                              f"measured peak {peaks.flop_s / 1e9:.1f} ({peaks.flop_s_from}): the peak is raised to "
                              "it, so its achieved fraction is 1", stacklevel=3)
                peaks = replace(peaks, flop_s=flop_s, flop_s_from=f"network {name} (faster than the kernels)")
            if bytes_s > peaks.bytes_s:
                warnings.warn(f"{name} moved {bytes_s / 1e9:.1f} GB/s, above the measured copy bandwidth "
                              f"{peaks.bytes_s / 1e9:.1f}: the bandwidth is raised to it", stacklevel=3)
                peaks = replace(peaks, bytes_s=bytes_s, bytes_s_from=f"network {name} (faster than the copies)")
        return peaks


def peak_kernels() -> dict[str, nn.Module]:
    """{name: a single convolution}: the compute-bound kernels of the CPU peak (KERNELS)."""
    with torch.random.fork_rng(devices=[]):   # seeded weights, the caller's random state untouched
        torch.manual_seed(0)
        return {name: nn.Conv2d(c, c, k, padding=k // 2, bias=False).eval() for name, c, k, _ in KERNELS}


def _kernel_flop_s(runtime: str, precision: str, threads: int, min_time: float) -> tuple[float, str]:
    """(FLOP/s, which kernel): the best repeat of any peak kernel in `runtime` and `precision`."""
    kernels = peak_kernels()
    layouts = (False, True) if runtime == "torch" else (False,)
    best, source = 0.0, ""
    for (name, channels, k, size), layout in ((kernel, layout) for kernel in KERNELS for layout in layouts):
        images = None
        if precision == INT8:   # the kernels' outputs mean nothing: calibrate on noise, check nothing
            from ds.export.quantize import Int8Images, image_set
            noise = torch.randn(KERNEL_BATCH, channels, size, size, generator=torch.Generator().manual_seed(0))
            images = Int8Images(image_set(noise.numpy(), f"noise {channels}x{size}x{size}"), None)
        results = measure({name: kernels[name]}, size, KERNEL_BATCH, "cpu",
                          precision if precision == INT8 else resolve_dtype(precision), layout,
                          repeats=5, warmup=1, min_time=min_time, threads=threads, in_chans=channels,
                          runtime=runtime, images=images)
        flop_s = 2 * channels * channels * k * k * size * size * results[name].img_s_max   # the best repeat
        if flop_s > best:
            best = flop_s
            source = (f"{name} kernel ({channels} channels, {size} px, batch {KERNEL_BATCH}) in {runtime} "
                      f"{precision}" + (" channels_last" if layout else ""))
    return best, source


def _copy_bytes_s(dev: torch.device, nbytes: int, trials: int) -> tuple[float, str]:
    best, source = 0.0, ""
    for divisor in COPY_SIZES:
        size = max(nbytes // divisor, 1 << 12)
        src = torch.full((size,), 7, dtype=torch.uint8, device=dev)   # a copy's speed does not depend on values
        dst = torch.empty_like(src)
        copy = lambda: dst.copy_(src)  # noqa: E731
        copy()
        synchronize(dev)
        loops = max(1, (1 << 26) // size if dev.type == "cpu" else 1)   # small copies: many per timing
        bytes_s = max(2 * size * loops / time_loop(copy, loops, dev) for _ in range(trials))
        if bytes_s > best:
            best, source = bytes_s, f"copy of {size / (1 << 20):g} MiB"
    return best, source


def measure_peaks(device, dtype=torch.float32, *, threads: int | None = None, trials: int = 5,
                  matmul_size: int | None = None, copy_bytes: int | None = None, runtime: str = "torch",
                  min_time: float = 0.05) -> Peaks:
    """The peaks of `runtime` in `dtype` (fp32, fp16, bf16 or int8) on `device` (module docstring).
    `min_time`: seconds per timed repeat of a CPU kernel."""
    dev = resolve_device(device)
    precision = precision_name(dtype)
    nbytes = copy_bytes or COPY_BYTES[dev.type]
    tf32 = False
    with fixed_threads(threads) as n_threads, torch.inference_mode():
        if dev.type == "cuda":
            dt = resolve_dtype(precision)
            n = matmul_size or MATMUL_SIZE[dev.type]
            # On CUDA, fp32 convolutions run on TF32 tensor cores when cudnn.allow_tf32 is on (torch's
            # default); the fp32 peak must then be the TF32 one, or the roof would sit below the models.
            tf32 = dt == torch.float32 and torch.backends.cudnn.allow_tf32
            tf32_before = torch.backends.cuda.matmul.allow_tf32
            with torch.cuda.device(dev):
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
                flop_from = f"matmul {n}x{n} {precision}" + (" (TF32)" if tf32 else "")
                bytes_s, bytes_from = _copy_bytes_s(dev, nbytes, trials)
        else:
            n = None
            flop_s, flop_from = _kernel_flop_s(runtime, precision, n_threads, min_time)
            bytes_s, bytes_from = _copy_bytes_s(dev, nbytes, trials)
    return Peaks(flop_s=flop_s, bytes_s=bytes_s, device=str(dev), dtype=precision, threads=n_threads,
                 matmul_size=n, copy_bytes=nbytes, tf32=tf32, runtime=runtime, flop_s_from=flop_from,
                 bytes_s_from=bytes_from)


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
    """Bound for a model of `macs` multiply-accumulates per image and `traffic_bytes` per batch.
    A measured time below the bound is refused (BenchError): the peaks are then no peaks."""
    compute_s = 2 * macs * batch / peaks.flop_s
    memory_s = traffic_bytes / peaks.bytes_s
    bound_s = max(compute_s, memory_s)
    fraction = None
    if measured_s is not None:
        fraction = bound_s / measured_s
        if fraction > 1 + TOLERANCE:
            raise BenchError(f"measured {measured_s:.3g} s per batch is below the roofline bound {bound_s:.3g} s "
                             f"(fraction {fraction:.2f}): peaks {peaks.flop_s / 1e9:.1f} GFLOP/s, "
                             f"{peaks.bytes_s / 1e9:.1f} GB/s are not peaks; use ds.bench.roofline, which raises "
                             "them to what the network reached")
        fraction = min(fraction, 1.0)
    return Bound(macs=macs, traffic_bytes=traffic_bytes, compute_s=compute_s, memory_s=memory_s,
                 bound_s=bound_s, measured_s=measured_s, achieved_fraction=fraction)


def roofline(models: Mapping[str, nn.Module], input_size, batch: int, device,
             dtype=torch.float32, measured_s: Mapping[str, float] | None = None, *,
             peaks: Peaks | None = None, macs: Mapping[str, int] | None = None,
             threads: int | None = None, runtime: str = "torch") -> tuple[Peaks, dict[str, Bound]]:
    """Measure the peaks of `runtime` in `dtype` (unless given) and bound every model's time per batch.

    `measured_s[name]`, seconds per batch from a throughput run, gives the achieved fraction, in
    (0, 1]: peaks below a rate a network reached are raised to it first (Peaks.covering; the
    returned peaks say so). MACs come from `ds.macs` unless passed in `macs`.
    """
    if peaks is None:
        peaks = measure_peaks(device, dtype, threads=threads, runtime=runtime)
    work = {}
    for name, model in models.items():
        if macs is not None and name in macs:
            n_macs = macs[name]
        else:
            import ds
            n_macs = ds.macs(model, input_size)
        work[name] = (n_macs, memory_traffic(model, input_size, batch, precision_name(dtype)))
    measured_s = dict(measured_s or {})
    peaks = peaks.covering({name: (2 * work[name][0] * batch / seconds, work[name][1] / seconds)
                            for name, seconds in measured_s.items() if name in work})
    bounds = {name: time_bound(n_macs, traffic, batch, peaks, measured_s.get(name))
              for name, (n_macs, traffic) in work.items()}
    return peaks, bounds
