"""python -m ds.bench: time a model's BN-folded base and its merged DS variants, all derived
from one randomly initialized model and each verified, in every requested setting (the product
of --runtimes, --dtypes, --layouts, --modes, --threads and --batch), interleaved, with roofline
bounds. Every row has the speed-up over the base in the same setting and over the fastest base
of the whole run (same threads and batch, any runtime).

The project's tables:
    CPU:  python -m ds.bench --model mobilenetv2_140 --patterns paper --device cpu --batch 16 \\
              --input 224 --runtimes torch,onnxruntime,openvino,openvino:bf16,onnxruntime:int8,openvino:int8 \\
              --layouts nchw,channels_last --threads 1 --repeats 5 --min-time 1 \\
              --out data/results/throughput_mbv2_140_cpu.csv \\
              --time-shares data/results/time_shares_mbv2_140_cpu.csv
    GPU:  python -m ds.bench --model mobilenetv2_140 --patterns paper --device cuda --batch 128 \\
              --input 224 --dtypes fp32,fp16 --layouts nchw,channels_last --modes eager,cudagraph \\
              --out data/results/throughput_mbv2_140_h100.csv
    sweep: python -m ds.bench --model mobilenetv2_140 --patterns paper:DS-A,DS-F --device cuda \\
              --batch 1,8,32,128,256 --input 224 --dtypes fp32,fp16 --layouts nchw,channels_last \\
              --modes eager,cudagraph --out data/results/batch_sweep_mbv2_140_h100.csv
    INT8 beside them (each network quantized, calibrated on 300 seeded CIFAR-10 training images,
    checked against the float network; ds.export.quantize): add openvino:int8,onnxruntime:int8
    to --runtimes
    latency table for the gate search, in the runtime the pattern will run on:
          python -m ds.bench --model mobilenetv2_140 --runtimes onnxruntime --threads 1 \\
              --batch 16 --input 224 --latency-table latency_ort.json
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

import ds

from ds.errors import DeviceError, UnsupportedModelError
from ds.export import ExportError
from ds.export.quantize import CALIBRATION_IMAGES, calibration_images
from ds.provenance import cpu_name, device_name, git_commit, resolve_device

from .compare import expand_settings, measure_settings
from .latency import block_latencies, table_from
from .profile import time_share_table
from .report import format_table, provenance, write_sidecar
from .settings import INT8, BenchError, all_cores
from .variants import BASE, build_variants, load_patterns


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
    p.add_argument("--out", help="CSV to write; a .json provenance sidecar goes beside it "
                                 "(required unless --latency-table is given)")
    p.add_argument("--runtimes", default="torch",
                   help="comma list of torch, onnxruntime, openvino; NAME:DTYPE pins a runtime's "
                        "dtype (openvino:bf16) instead of --dtypes; onnxruntime:int8 and openvino:int8 "
                        "time the network quantized (ds.export.quantize)")
    p.add_argument("--calibration-images", type=int, default=None,
                   help="int8: training images to calibrate on (default 300; as many more, the next of the "
                        "same seeded permutation, check each file against the float network)")
    p.add_argument("--calibration-dataset", default=None,
                   help="int8: the training split they come from: cifar10 (default), cifar100 or fake")
    p.add_argument("--latency-table", metavar="JSON",
                   help="measure the seconds per batch each searchable block saves when merged "
                        "(the block and its merged form timed alone, interleaved) in the (single) "
                        "setting given, and write {switch index: seconds} for python -m ds.train "
                        "--latency-table; with --out the patterns are timed as well")
    p.add_argument("--time-shares", metavar="CSV",
                   help="also profile every network in every CPU setting with the runtime's own "
                        "profiler: ms per batch in depthwise, 1x1 and dense k x k convs and the rest "
                        "(one thread count and batch; a .json sidecar goes beside it)")
    p.add_argument("--dtypes", default="fp32", help="comma list of fp32, fp16, bf16 (int8: onnxruntime, openvino)")
    p.add_argument("--layouts", default="nchw", help="comma list of nchw, channels_last (torch only)")
    p.add_argument("--modes", default="eager", help="comma list of eager, cudagraph, compile (torch only)")
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


def settings_from(args, device: torch.device):
    """(settings, notes): every combination asked for that runs here, checked; a note for each
    one that cannot (recorded in the sidecar and printed, never silently dropped)."""
    threads = int_list("--threads", args.threads, [all_cores()])
    batches = int_list("--batch", args.batch, [])
    return expand_settings(args.runtimes, comma_list(args.dtypes), comma_list(args.layouts),
                           comma_list(args.modes), threads, batches, device)


def check_writable(path: Path, option: str) -> None:
    """Fail now, before any measurement, if `path` cannot be written (issue 11)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "a"):
            pass
        if not existed:
            path.unlink()
    except OSError as e:
        raise BenchError(f"{option} {path}: cannot write there ({e.strerror or e}); choose a "
                         "writable path") from None


def outputs(args) -> list[tuple[Path, str]]:
    """Every file the run will write, with the option that named it."""
    if args.out is None and args.latency_table is None and args.time_shares is None:
        raise BenchError("give --out CSV (a throughput table), --latency-table JSON or --time-shares CSV")
    files = []
    if args.out is not None:
        out = Path(args.out)
        if out.suffix.lower() != ".csv":
            raise BenchError(f"--out {out}: name a .csv file (its .json sidecar goes beside it)")
        files += [(out, "--out"), (out.with_suffix(".json"), "--out (its sidecar)")]
    if args.time_shares is not None:
        shares = Path(args.time_shares)
        if shares.suffix.lower() != ".csv":
            raise BenchError(f"--time-shares {shares}: name a .csv file (its .json sidecar goes beside it)")
        files += [(shares, "--time-shares"), (shares.with_suffix(".json"), "--time-shares (its sidecar)")]
    if args.latency_table is not None:
        table = Path(args.latency_table)
        if table.suffix.lower() != ".json":
            raise BenchError(f"--latency-table {table}: name a .json file")
        files += [(table, "--latency-table"), (table.with_suffix(".provenance.json"),
                                               "--latency-table (its sidecar)")]
    return files


def run(args, command: str) -> pd.DataFrame:
    for path, option in outputs(args):  # before anything is measured
        check_writable(path, option)
    device = resolve_device(args.device)
    settings, notes = settings_from(args, device)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not settings:
        raise BenchError("nothing to measure: every setting asked for is unsupported here (see the notes)")
    if args.latency_table and len(settings) != 1:
        raise BenchError(f"--latency-table measures one setting; the options give {len(settings)} "
                         f"({'; '.join(s.label for s in settings[:3])}, ...): give one runtime, "
                         "dtype, layout, mode, thread count and batch")
    if args.latency_table and settings[0].dtype == INT8:
        raise BenchError("--latency-table times blocks alone in float; int8 is not available there: give a float "
                         "setting (e.g. --runtimes onnxruntime or openvino:bf16)")
    if args.time_shares is not None and device.type != "cpu":
        raise BenchError("--time-shares profiles CPU runtimes: use --device cpu")
    if args.time_shares is not None and len({(s.threads, s.batch) for s in settings}) != 1:
        raise BenchError("--time-shares profiles one thread count and one batch: give one of each")
    images = int8_images(args, settings)
    load_before = os.getloadavg()
    git_state = git_commit()  # the code that runs, not the code at the end

    torch.manual_seed(args.seed)
    model = ds.create_model(args.model, num_classes=args.num_classes, input_size=args.input)
    written, frame = [], None
    if args.latency_table is not None:
        written += write_latency_table(args, model, settings[0], device, command, git_state, notes)
    if args.out is not None or args.time_shares is not None:
        models, errors, patterns = variants(args, model)
        if args.out is not None:
            frame = throughput(args, models, errors, patterns, settings, device, command, git_state, notes,
                               load_before, images)
            written += [Path(args.out), Path(args.out).with_suffix(".json")]
        if args.time_shares is not None:
            written += write_time_shares(args, models, settings, command, git_state, notes, images)
    print(f"\nwrote {', '.join(map(str, written))}")
    return frame


def int8_images(args, settings):
    """The calibration and check images of the int8 settings (None without any), built once for all."""
    if not any(s.dtype == INT8 for s in settings):
        if args.calibration_images is not None or args.calibration_dataset is not None:
            raise BenchError("--calibration-images and --calibration-dataset go with int8 settings: add "
                             "onnxruntime:int8 or openvino:int8 to --runtimes")
        return None
    count = CALIBRATION_IMAGES if args.calibration_images is None else args.calibration_images
    if count < 1:
        raise BenchError(f"--calibration-images {count}: give a whole number >= 1")
    print(f"int8: {count} calibration and {count} check images ...", file=sys.stderr)
    return calibration_images(args.input, count, seed=args.seed, dataset=args.calibration_dataset or "cifar10")


def protocol(args) -> dict:
    return dict(repeats=args.repeats, warmup=args.warmup, min_time_s=args.min_time, iters=args.iters,
                seed=args.seed, compile_mode=args.compile_mode,
                merge_depthwise_separable=args.merge_depthwise_separable,
                interleaved="round-robin, rotating start", input="torch.randn, seeded")


def write_latency_table(args, model, setting, device, command: str, git_state: dict,
                        notes: list[str]) -> list[Path]:
    """Measure every searchable block alone in `setting` (ds.bench.latency.block_latencies); write
    the table ({switch index: seconds saved per batch}) and its provenance, with every block's
    timings, beside it."""
    load_before = os.getloadavg()
    print(f"timing {args.model}'s searchable blocks alone and merged, {setting.label}, input "
          f"{args.input}, {args.repeats} interleaved repeats ...", file=sys.stderr)
    blocks = block_latencies(model, args.input, setting.batch, setting.runtime, setting.threads, device,
                             setting.dtype, setting.layout, setting.mode, args.merge_depthwise_separable,
                             repeats=args.repeats, warmup=args.warmup, min_time=args.min_time,
                             iters=args.iters, seed=args.seed)
    table_path = Path(args.latency_table)
    table_path.write_text(json.dumps(table_from(blocks), indent=2) + "\n")
    info = provenance(command, git=git_state, device=str(device), device_name=device_name(device),
                      cpu_name=cpu_name(), setting=setting.label,
                      runtimes={setting.runtime: str(blocks["runtime_version"].iloc[0])},
                      settings_not_measured=notes, load_average_before=load_before,
                      load_average_after=os.getloadavg(), protocol=protocol(args),
                      meaning="seconds per batch saved by merging that block: the block as the base "
                              "runs it (BN folded) minus its merged form, each timed alone on the "
                              "input shape it receives in the network, interleaved",
                      blocks=blocks.to_dict(orient="records"))
    side = table_path.with_suffix(".provenance.json")
    side.write_text(json.dumps(info, indent=2, default=str) + "\n")
    shown = blocks[["block", "path", "input", "block_ms_median", "merged_ms_median", "saved_ms"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return [table_path, side]


def variants(args, model):
    """({name: merged network}, their merge errors, {name: pattern}): the base and the --patterns."""
    patterns = load_patterns(args.patterns, args.model)
    print(f"building {args.model} and {len(patterns)} variants, merging and verifying ...", file=sys.stderr)
    models, errors = build_variants(model, patterns, args.input, args.merge_depthwise_separable)
    return models, errors, {BASE: [1] * len(ds.switches(model)), **patterns}


def write_time_shares(args, models, settings, command: str, git_state: dict, notes: list[str],
                      images=None) -> list[Path]:
    """Where each network's time goes in every CPU setting asked for (ds.bench.profile), and a sidecar."""
    profiled = [s for s in settings if s.runtime != "torch" or s.mode == "eager"]
    names = list(dict.fromkeys(s.short for s in profiled))
    skipped = [f"{s.label}: only eager torch is profiled" for s in settings if s not in profiled]
    load_before = os.getloadavg()
    print(f"profiling {len(models)} networks in {', '.join(names)} ...", file=sys.stderr)
    table, not_measured = time_share_table(models, args.input, settings[0].batch, names,
                                           threads=settings[0].threads, seed=args.seed, images=images)
    path = Path(args.time_shares)
    table.to_csv(path, index=False)
    info = provenance(command, git=git_state, device="cpu", cpu_name=cpu_name(), threads=settings[0].threads,
                      batch=settings[0].batch, input=args.input, settings_not_measured=notes + skipped + not_measured,
                      load_average_before=load_before, load_average_after=os.getloadavg(),
                      meaning="ms per batch in each kind of layer, from each runtime's own profiler "
                              "(ds.bench.profile.time_shares); shares of the four kinds' sum; int8_ms: the "
                              "time in layers that ran in 8 bits, int8_convs of convs: the convolutions "
                              "that did (OpenVINO exec types *_I8/_U8, ONNX Runtime QLinear* kernels)",
                      **({"int8_images": images.record()} if images is not None else {}))
    side = write_sidecar(path, info)
    shown = ["setting", "pattern", "total_ms"] + [c for c in table.columns if c.endswith("_share")]
    print(table[shown + ["int8_convs", "convs"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return [path, side]


def throughput(args, models, errors, patterns, settings, device, command: str, git_state: dict,
               notes: list[str], load_before, images=None) -> pd.DataFrame:
    """The base and the --patterns, merged and verified, timed in every setting; the CSV and its sidecar."""
    macs = {name: int(ds.macs(m, args.input)) for name, m in models.items()}
    params = {name: int(ds.params(m)) for name, m in models.items()}
    for name in models:
        print(f"  {name:>8}: {macs[name] / 1e6:8.1f} MMACs, {params[name] / 1e6:6.2f} M params, "
              f"merge max rel error {errors[name]['max_rel']:.2e}", file=sys.stderr)

    bar = tqdm(total=len(settings) * len(models) * args.repeats, unit="repeat", file=sys.stderr,
               disable=None)  # no bar when stderr is not a terminal; the lines below remain
    frame, record = measure_settings(
        models, args.input, settings, device, args.model, repeats=args.repeats, warmup=args.warmup,
        min_time=args.min_time, iters=args.iters, seed=args.seed, compile_mode=args.compile_mode,
        macs=macs, params=params, base=BASE, images=images,
        on_repeat=lambda name: (bar.set_postfix_str(name), bar.update()),
        log=lambda text: bar.write(text, file=sys.stderr))
    bar.close()

    info = provenance(
        command, git=git_state,
        device=str(device), device_name=device_name(device),
        cpu_name=cpu_name(), threads=sorted(set(int(t) for t in frame["threads"])),
        runtimes={f"{r}": v for r, v in zip(frame["runtime"], frame["runtime_version"])},
        settings_not_measured=notes,
        load_average_before=load_before, load_average_after=os.getloadavg(),
        protocol=dict(protocol(args),
                      best_base="fastest base row with the same device, threads, batch and input",
                      drift="networks are interleaved within a setting, settings run one after "
                            "another: speedup_same_runtime cancels drift, speedup_over_best_base "
                            "compares settings measured minutes apart (see load_average per row)"),
        patterns={name: "".join(map(str, p))
                  for name, p in patterns.items()},
        verification={n: {k: float(v) for k, v in e.items()} for n, e in errors.items()},
        **record,
    )
    out = Path(args.out)
    frame.to_csv(out, index=False)
    write_sidecar(out, info)
    print(format_table(frame))
    return frame


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    command = "python -m ds.bench " + shlex.join(argv)
    try:
        run(args, command)
    except (BenchError, DeviceError, UnsupportedModelError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
