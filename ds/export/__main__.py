"""python -m ds.export: a network file (or a random-weight network) -> merged -> ONNX + OpenVINO IR.

    python -m ds.export --checkpoint runs/finetune-k8/checkpoint.pt --out exported/
    python -m ds.export --checkpoint data/checkpoints/cpu/dp-k11-merged.pt --out exported/
    python -m ds.export --model mobilenetv2_035 --pattern DS-E --input 32 --out exported/
    python -m ds.export --checkpoint data/checkpoints/cpu/base.pt --int8 --out exported/   (+ INT8 files)

Each file is checked in its runtime against the torch network it came from (max relative
error printed); a mismatch beyond the tolerance is an error (exit code 2). --int8 also writes
NAME.int8.onnx (ONNX Runtime static QDQ) and NAME.int8.xml/.bin (OpenVINO, NNCF), calibrated on
seeded training images and checked against the float network (ds.export.quantize).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import ds
from ds.errors import PatternError, UnsupportedModelError
from ds.networks import load_network
from ds.train import CheckpointError

from . import FORMATS, ExportError, export
from .quantize import CALIBRATION_DATASET, CALIBRATION_IMAGES, CALIBRATION_SEED, export_int8


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ds.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a network file ds wrote: a checkpoint.pt of python -m ds.train (base or "
                                             "shrunk), or a base or merged network of the study (data/checkpoints/)")
    source.add_argument("--model", help="a backbone name: export a random-weight network (for tests and timing)")
    p.add_argument("--pattern", help="with --model: a pattern name (DS-E) or 0/1 list (1,0,1,...); default: the base")
    p.add_argument("--no-final-act", action="store_true",
                   help="with --model --pattern: drop the ReLU6 after removed blocks (consecutive ones merge into one conv)")
    p.add_argument("--num-classes", type=int, default=1000, help="with --model (default 1000)")
    p.add_argument("--input", type=int, help="input resolution; default: the checkpoint's (needed with --model)")
    p.add_argument("--seed", type=int, default=0, help="with --model: seeds the random weights")
    p.add_argument("--out", required=True, help="directory for NAME.onnx, NAME.xml/.bin and NAME.json")
    p.add_argument("--name", default="model", help="file name stem (default: model)")
    p.add_argument("--formats", default=",".join(FORMATS), help="comma list of onnx, openvino")
    p.add_argument("--merge-depthwise-separable", action="store_true",
                   help="also merge the expansion-1 block's dw+pw pair into one dense conv")
    p.add_argument("--int8", action="store_true",
                   help="also write the INT8 files (NAME.int8.onnx, NAME.int8.xml), each checked against the "
                        "float network")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES,
                   help=f"with --int8: training images to calibrate on (default {CALIBRATION_IMAGES}; as many "
                        "more, the next of the same permutation, for the check)")
    p.add_argument("--calibration-seed", type=int, default=CALIBRATION_SEED,
                   help=f"with --int8: seeds the permutation of the training split (default {CALIBRATION_SEED})")
    p.add_argument("--int8-saturation-fix", choices=("auto", "on", "off"), default="auto",
                   help="with --int8: 7-bit weights (ONNX Runtime) and NNCF's overflow fix on every layer, which "
                        "CPUs without VNNI need; auto (default): when this CPU lacks VNNI. 'on' or 'off' to make "
                        "files for a CPU of the other kind")
    p.add_argument("--calibration-dataset", default=CALIBRATION_DATASET,
                   help="with --int8: cifar10 (default; ships in the repository), cifar100 or fake")
    return p.parse_args(argv)


def build(args):
    if args.checkpoint:
        if args.pattern or args.no_final_act:
            raise ExportError("--pattern and --no-final-act go with --model; a checkpoint carries its own pattern")
        if not Path(args.checkpoint).is_file():
            raise ExportError(f"--checkpoint {args.checkpoint}: no such file; pass a network file ds wrote "
                              f"(a checkpoint.pt of ds.train, or a file in data/checkpoints/)")
        return load_network(args.checkpoint)
    if args.input is None:
        raise ExportError("--model needs --input (the resolution to build and export at)")
    torch.manual_seed(args.seed)
    model = ds.create_model(args.model, num_classes=args.num_classes, input_size=args.input)
    if args.pattern:
        pattern = args.pattern if "," not in args.pattern else [int(b) for b in args.pattern.split(",")]
        try:
            model = ds.apply_pattern(model, pattern, final_act=not args.no_final_act)
        except ds.PatternError as e:
            raise ExportError(f"--pattern {args.pattern}: {e}") from None
    elif args.no_final_act:
        raise ExportError("--no-final-act needs --pattern")
    return model.eval()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model = build(args)
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        options = dict(name=args.name, formats=formats, merge_depthwise_separable=args.merge_depthwise_separable)
        if args.int8:
            result = export_int8(model, args.out, args.input, calibration_count=args.calibration_images,
                                 calibration_seed=args.calibration_seed,
                                 calibration_dataset=args.calibration_dataset,
                                 saturation_fix={"auto": None, "on": True, "off": False}[args.int8_saturation_fix],
                                 **options)
        else:
            result = export(model, args.out, args.input, **options)
    except (ExportError, UnsupportedModelError, PatternError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for fmt, path in result.files.items():
        print(f"wrote {path}" + (f" (+ {path.with_suffix('.bin')})" if fmt.startswith("openvino") else ""))
    for where, e in result.checks.items():
        if where.endswith("/int8"):
            print(f"checked {where} against the float network on {e['check_images']}: top-1 agreement "
                  f"{e['top1_agreement']:.1%}, relative RMS error {e['rel_rms_error']:.3f} (limit {e['max_error']:g})")
            continue
        print(f"checked {where}: max relative error {e['max_rel']:.2e} (max abs {e['max_abs']:.2e}, "
              f"tolerance {e['tolerance']:g})")
    print(f"wrote {result.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
