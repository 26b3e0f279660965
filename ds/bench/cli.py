"""python -m ds.bench: time a model's BN-folded base and its merged DS variants, all derived
from one randomly initialized model and each verified, in every requested setting (the product
of --dtypes, --layouts, --modes, --threads and --batch), interleaved, with roofline bounds.

The project's tables:
    CPU:  python -m ds.bench --model mobilenetv2_140 --patterns paper --device cpu --batch 32 \\
              --input 224 --layouts nchw,channels_last --threads 1,2 --repeats 11 --min-time 1 \\
              --out data/results/throughput_mbv2_140_cpu.csv
    GPU:  python -m ds.bench --model mobilenetv2_140 --patterns paper --device cuda --batch 128 \\
              --input 224 --dtypes fp32,fp16 --layouts nchw,channels_last --modes eager,cudagraph \\
              --out data/results/throughput_mbv2_140_h100.csv
    sweep: python -m ds.bench --model mobilenetv2_140 --patterns paper:DS-A,DS-F --device cuda \\
              --batch 1,8,32,128,256 --input 224 --dtypes fp32,fp16 --layouts nchw,channels_last \\
              --modes eager,cudagraph --out data/results/batch_sweep_mbv2_140_h100.csv
"""
from __future__ import annotations

import argparse
import itertools
import os
import shlex
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from ds.errors import DeviceError, UnsupportedModelError
from ds.provenance import cpu_name, device_name, git_commit, resolve_device

from .report import format_table, provenance, setting_rows, to_frame, write_sidecar
from .roofline import measure_peaks, roofline
from .settings import (BenchError, all_cores, check_mode, dtype_name, layout_name, resolve_dtype,
                       resolve_layout)
from .timing import resolve_mode


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ds.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="timm model name, e.g. mobilenetv2_140")
    p.add_argument("--patterns", default="paper",
                   help="'paper' (the paper's DS-A..F), 'paper:DS-A,DS-F' (some of them) or a "
                        "JSON file {name: [0/1, ...]}; the all-ones base is always measured")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--batch", default="128", help="batch size, or a comma list for a batch sweep")
    p.add_argument("--input", type=int, default=224, help="input resolution (square)")
    p.add_argument("--out", required=True, help="CSV to write; a .json provenance sidecar goes beside it")
    p.add_argument("--dtypes", default="fp32", help="comma list of fp32, fp16, bf16")
    p.add_argument("--layouts", default="nchw", help="comma list of nchw, channels_last")
    p.add_argument("--modes", default="eager", help="comma list of eager, cudagraph, compile")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode for --modes compile (default, reduce-overhead, max-autotune, ...)")
    p.add_argument("--threads", default=None,
                   help="comma list of CPU thread counts, each its own setting (default: all cores)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per model (>= 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed forward passes per model")
    p.add_argument("--min-time", type=float, default=0.5,
                   help="seconds each timed repeat should last (sets iterations per repeat)")
    p.add_argument("--iters", type=int, default=None, help="fixed iterations per repeat (overrides --min-time)")
    p.add_argument("--merge-depthwise-separable", action="store_true",
                   help="also merge the expansion-1 block's dw+pw pair into one dense conv "
                        "(off, as in the paper: it costs ~6.5x the MACs)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seeds the model's init and the input batch")
    return p.parse_args(argv)


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def int_list(option: str, text: str | None, default: list[int]) -> list[int]:
    try:
        values = [int(t) for t in comma_list(text)] if text else default
    except ValueError:
        raise BenchError(f"{option} {text!r}: give whole numbers like 1,2") from None
    if not values or min(values) < 1:
        raise BenchError(f"{option} needs at least one entry, each >= 1")
    return values


def settings_from(args, device: torch.device) -> list[tuple[torch.dtype, bool, str, int, int]]:
    """(dtype, channels_last, mode, threads, batch) for every combination asked for, checked,
    modes resolved for the device; combinations that fall back to one already listed run once."""
    dtypes = [resolve_dtype(d) for d in comma_list(args.dtypes)]
    layouts = [resolve_layout(l) for l in comma_list(args.layouts)]
    modes = [check_mode(m) for m in comma_list(args.modes)]
    threads = int_list("--threads", args.threads, [all_cores()])
    batches = int_list("--batch", args.batch, [])
    if not (dtypes and layouts and modes):
        raise BenchError("--dtypes, --layouts and --modes each need at least one entry")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        resolved = [resolve_mode(m, device) for m in modes]
    return list(dict.fromkeys(itertools.product(dtypes, layouts, resolved, threads, batches)))


def run(args, command: str) -> "pandas.DataFrame":
    import ds  # the foundation: create_model, switches, apply_pattern, merge, verify, macs, params
    from tqdm.auto import tqdm

    from .timing import measure
    from .variants import BASE, build_variants, load_patterns

    device = resolve_device(args.device)
    settings = settings_from(args, device)
    patterns = load_patterns(args.patterns, args.model)
    load_before = os.getloadavg()
    git_state = git_commit()  # the code that runs, not the code at the end

    torch.manual_seed(args.seed)
    print(f"building {args.model} and {len(patterns)} variants, merging and verifying ...", file=sys.stderr)
    model = ds.create_model(args.model, num_classes=args.num_classes, input_size=args.input)
    n_switches = len(ds.switches(model))
    models, errors = build_variants(model, patterns, args.input, args.merge_depthwise_separable)
    macs = {name: int(ds.macs(m, args.input)) for name, m in models.items()}
    params = {name: int(ds.params(m)) for name, m in models.items()}
    for name in models:
        print(f"  {name:>8}: {macs[name] / 1e6:8.1f} MMACs, {params[name] / 1e6:6.2f} M params, "
              f"merge max rel error {errors[name]['max_rel']:.2e}", file=sys.stderr)

    # Peaks are a best-case figure that a busy machine can only lower: measured before and
    # after every setting of a (dtype, threads) pair, the best kept, and bounds computed last.
    peaks, measured, loads = {}, [], []
    bar = tqdm(total=len(settings) * len(models) * args.repeats, unit="repeat", file=sys.stderr,
               disable=None)  # no bar when stderr is not a terminal; the lines below remain
    for dtype, channels_last, mode, threads, batch in settings:
        label = (f"{dtype_name(dtype)} {layout_name(channels_last)} {mode}, {threads} threads, "
                 f"batch {batch}")
        bar.set_description(label)
        bar.write(f"measuring {len(models)} models, {label}, input {args.input}, "
                  f"{args.repeats} interleaved repeats", file=sys.stderr)
        load_start = os.getloadavg()
        key = (dtype, threads)
        if key not in peaks:
            peaks[key] = measure_peaks(device, dtype, threads=threads)
        results = measure(models, args.input, batch, device, dtype, channels_last, mode,
                          repeats=args.repeats, warmup=args.warmup, min_time=args.min_time,
                          iters=args.iters, threads=threads, compile_mode=args.compile_mode,
                          seed=args.seed,
                          on_repeat=lambda name: (bar.set_postfix_str(name), bar.update()))
        bar.set_postfix_str("device peaks")
        peaks[key] = peaks[key].best(measure_peaks(device, dtype, threads=threads))
        measured.append((key, results))
        loads.append(dict(setting=label, load_average_start=load_start,
                          load_average_end=os.getloadavg()))
    bar.close()

    rows = []
    for key, results in measured:
        batch = next(iter(results.values())).batch
        _, bounds = roofline(models, args.input, batch, device, key[0],
                             {n: r.seconds_per_batch for n, r in results.items()},
                             peaks=peaks[key], macs=macs)
        rows += setting_rows(args.model, results, bounds, macs, params, base=BASE)

    frame = to_frame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    sidecar = write_sidecar(out, provenance(
        command, git=git_state,
        device=str(device), device_name=device_name(device),
        cpu_name=cpu_name(), threads=sorted(set(int(t) for t in frame["threads"])),
        load_average_before=load_before, load_average_after=os.getloadavg(),
        load_average_per_setting=loads,
        protocol=dict(repeats=args.repeats, warmup=args.warmup, min_time_s=args.min_time,
                      iters=args.iters, seed=args.seed, compile_mode=args.compile_mode,
                      merge_depthwise_separable=args.merge_depthwise_separable,
                      interleaved="round-robin, rotating start", input="torch.randn, seeded"),
        patterns={name: "".join(map(str, p))
                  for name, p in {BASE: [1] * n_switches, **patterns}.items()},
        verification={n: {k: float(v) for k, v in e.items()} for n, e in errors.items()},
        peaks=[asdict(p) for p in peaks.values()],
    ))
    print(format_table(frame))
    print(f"\nwrote {out} and {sidecar}")
    return frame


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    command = "python -m ds.bench " + shlex.join(argv)
    try:
        run(args, command)
    except (BenchError, DeviceError, UnsupportedModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
