"""`python -m ds.train`: train, search or finetune from the command line.

The three stages (CIFAR-10 from $DS_DATA, CIFAR strides for inputs of 64 px or less):
  base:      python -m ds.train --backbone mobilenetv2_140 --dataset cifar10 --epochs 200 --out runs/base
  search:    python -m ds.train --backbone mobilenetv2_140 --dataset cifar10 --epochs 20 --lr 0.01
               --init runs/base/checkpoint.pt --search-budget 8 --out runs/search
               (writes gates.csv and patterns.json)
               (--gate-optimizer, --gate-centre, --gate-init sensitivity, ...: ds.gating.SearchOptions)
  DP search: the same with --search-method dp [--dp-steps 50 --dp-holdout 2000]: per block, a short
               finetune with only it linearized, measured on held-out training images (importance.csv),
               then an exact DP (ds.dpsearch; patterns.json with dp-k<K>, frontier.csv with
               --latency-table); --epochs is not used, each entry being --dp-steps batches
  finetune:  python -m ds.train --backbone mobilenetv2_140 --dataset cifar10 --epochs 100 --lr 0.01
               --pattern runs/search/patterns.json:searched-k8 --init runs/base/checkpoint.pt
               --teacher runs/base/checkpoint.pt --out runs/ds-k8   (self-distillation)
  recovery:  the finetune with --anneal-end E [--anneal-start S]: the removed activations fade out
               between epochs S and E (g: 1 -> 0 per step, x + g (act(x) - x); the block's final ReLU6
               fades in), in merge-ready form, so the network at E is the one ds.merge deploys;
               --progressive K removes K switches at a time over that window, in --removal-order
               (network, reverse, or switch indices such as 0,3,2,...); --recalibrate-bn N recomputes
               BatchNorm statistics on N training batches before the first step; --holdout N evaluates
               every epoch on N held-out training images (holdout_acc), to choose settings on
  DDP:       torchrun --nproc_per_node 8 -m ds.train ...   (same arguments)
--batch-size is the global batch (split over processes); --lr applies to it. --input-size other
than the stored 32 px resizes CIFAR with area interpolation (the study trains at 16 px this way).
Every epoch writes OUT/checkpoint.pt and OUT/metrics.csv. --resume continues a run with the same
arguments (only --threads, --no-progress, --stop-after-epoch, --data-dir and --download may
change); --restart starts over in OUT. Errors are one line; DS_TRACEBACK=1 shows the traceback.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import uuid
from pathlib import Path

import torch
from torch import nn

from ds import data, ddp, dpsearch, gating, loaders
from ds.data import DataError
from ds.errors import DeviceError, PatternError, UnsupportedModelError
from ds.models import create_model
from ds.patterns import resolve_pattern
from ds.switches import switches

from .build import build_model, build_teacher
from .checkpoint import CHECKPOINT, CheckpointError, load_checkpoint
from .config import TrainConfig
from .loop import METRICS, RESUME_KEYS, NonFiniteLoss, fit
from .resume import ResumeMismatch
from .rng import seed_everything

PROG = "python -m ds.train"
# Arguments that change how a run is executed or where its input lives, not its numbers.
MAY_CHANGE_ON_RESUME = ("threads", "no_progress", "stop_after_epoch", "data_dir", "download", "out",
                        "resume", "restart")
RUN_FILES = (CHECKPOINT, METRICS, "gates.csv") + dpsearch.OUTPUT_FILES


class OutputError(RuntimeError):
    """The --out directory cannot be written."""


# ---------------------------------------------------------------- argument types

def _number(kind, low=None, high=None, low_open=False, high_open=False, text=None):
    """An argparse type: `kind` (int or float) within the bounds, finite; else the accepted range."""
    accepted = text or (f"{'an integer' if kind is int else 'a number'}"
                        + (f" {'>' if low_open else '>='} {low}" if low is not None else "")
                        + (f" and {'<' if high_open else '<='} {high}" if high is not None else ""))

    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not {accepted}") from None
        if not math.isfinite(number) or (low is not None and (number < low or (low_open and number == low))) \
                or (high is not None and (number > high or (high_open and number == high))):
            raise argparse.ArgumentTypeError(f"{value} is out of range: accepted {accepted}")
        return number
    parse.__name__ = "int" if kind is int else "float"
    return parse


positive_int = _number(int, 1)
count = _number(int, 0)
positive = _number(float, 0, low_open=True)
non_negative = _number(float, 0)
fraction = _number(float, 0, 1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", required=True, help="timm model name or tv_mobilenet_v2")
    p.add_argument("--dataset", required=True, choices=["cifar10", "cifar100", "imagefolder", "fake"])
    p.add_argument("--data-dir", help="dataset directory (default: $DS_DATA, else data/); required for imagefolder")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR when absent")
    p.add_argument("--input-size", type=positive_int, default=None,
                   help="default: 32 for CIFAR/fake, 224 for imagefolder; CIFAR is resized (area) to it")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=128, help="global batch, split over processes")
    p.add_argument("--lr", type=positive, default=0.1)
    p.add_argument("--weight-decay", type=non_negative, default=5e-4)
    p.add_argument("--warmup-epochs", type=non_negative, default=1.0)
    p.add_argument("--label-smoothing", type=_number(float, 0, 1, high_open=True), default=0.1)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--ema-decay", type=_number(float, 0, 1, low_open=True, high_open=True), default=None)
    p.add_argument("--cutout", type=count, default=0, help="cutout square size in pixels (0: off)")
    p.add_argument("--pattern", help="pattern name (ds.PATTERNS), JSON file (a list, or a dict with one entry / "
                                     "FILE:KEY), or a 0/1 list such as 0,1,1,...")
    p.add_argument("--init", help="checkpoint of the base network to start from (loaded before the pattern)")
    p.add_argument("--teacher", help="checkpoint of the teacher (the original network): enables self-distillation")
    p.add_argument("--distill-alpha", type=fraction, default=0.7)
    p.add_argument("--distill-temperature", type=positive, default=1.0)
    p.add_argument("--search-budget", type=count, help="run a search (--search-method): K blocks keep their activations")
    p.add_argument("--search-method", choices=dpsearch.SEARCH_METHODS,
                   help="with --search-budget: gate (default; ds.gating) or dp (ds.dpsearch)")
    p.add_argument("--dp-steps", type=count,
                   help=f"dp: finetuning batches per block (default {dpsearch.DEFAULT_STEPS}; 0: none)")
    p.add_argument("--dp-holdout", type=positive_int,
                   help=f"dp: training images held out to measure each block on (default {dpsearch.DEFAULT_HOLDOUT})")
    p.add_argument("--gate-lr", type=positive, default=0.01, help="learning rate of the gate scores")
    gate = p.add_argument_group("how the gate search trains its scores (ds.gating.SearchOptions; default: Adam, "
                                "centred, from the sensitivity at scale 3; the first version's search: "
                                "--no-gate-centre --gate-init zeros)")
    gate.add_argument("--gate-optimizer", choices=gating.GATE_OPTIMIZERS,
                      help="adam, or sgd with the weights' momentum (as the reference code)")
    gate.add_argument("--gate-weight-decay", type=non_negative, help="weight decay on the scores")
    gate.add_argument("--gate-centre", action=argparse.BooleanOptionalAction, default=None,
                      help="keep the scores centred (their common drift removed every step)")
    gate.add_argument("--gate-init", choices=gating.GATE_INITS,
                      help="initial scores: zeros, or the standardized one-shot sensitivity on training images")
    gate.add_argument("--gate-init-scale", type=non_negative, help="sensitivity init: scores = scale * z-score")
    gate.add_argument("--gate-init-images", type=positive_int, help="sensitivity init: training images measured on")
    gate.add_argument("--gate-temperature", type=positive, help="the gradient is that of sigmoid(score / T)")
    p.add_argument("--latency-table", help="JSON of time saved per block (see ds.gating.load_latency_table)")
    p.add_argument("--latency-weight", type=non_negative, default=0.0)
    p.add_argument("--anneal-end", type=non_negative, default=0.0,
                   help="epoch by which the removed activations have faded to identity (default 0: removed at once)")
    p.add_argument("--anneal-start", type=non_negative, default=0.0, help="epoch at which they start to fade")
    p.add_argument("--progressive", type=count, default=0,
                   help="remove K switches at a time, groups one after another over the anneal window (0: all)")
    p.add_argument("--removal-order", default="network",
                   help="progressive order: network (input first), reverse, or switch indices such as 0,3,2,...")
    p.add_argument("--recalibrate-bn", type=count, default=0,
                   help="recompute BatchNorm statistics on N training batches before training (0: off)")
    p.add_argument("--holdout", type=positive_int,
                   help="hold out N training images (not trained on) and evaluate on them every epoch")
    p.add_argument("--limit-train", type=positive_int, help="use a random subset of N training images (default: all)")
    p.add_argument("--limit-test", type=positive_int, help="use a random subset of N test images (default: all)")
    p.add_argument("--workers", type=count, default=4, help="DataLoader workers (imagefolder)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda when available")
    p.add_argument("--seed", type=count, default=0)
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--out", required=True, help="output directory")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (same arguments)")
    again.add_argument("--restart", action="store_true", help="start over in OUT, replacing its checkpoint and metrics")
    p.add_argument("--stop-after-epoch", type=positive_int, help="leave after this epoch (resume later with --resume)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step (GPU speed)")
    p.add_argument("--no-progress", action="store_true")
    return p


# ---------------------------------------------------------------- inputs

def parse_pattern(spec: str | None, model: nn.Module) -> list[int] | None:
    """`--pattern` as a 0/1 list: a name in ds.PATTERNS, a JSON file (a list, or a dict of
    patterns such as a search's patterns.json with FILE:KEY choosing one), or an inline list
    ("0,1,1,..." or "011..."); ds.patterns.resolve_pattern reads all of them and checks them."""
    return None if spec is None else resolve_pattern(model, spec, len(switches(model)))


def _data(args, dist: ddp.DistInfo, input_size: int, channels_last: bool):
    """(train loader, test loader, num_classes)."""
    common = dict(device=dist.device, seed=args.seed, rank=dist.rank, world_size=dist.world_size,
                  channels_last=channels_last)
    if args.dataset == "imagefolder":
        if not args.data_dir:
            raise ValueError("--dataset imagefolder needs --data-dir DIR holding train/ and val/")
        train_set, val_set = data.imagefolder_datasets(args.data_dir, input_size)
        num_classes = len(train_set.classes)
        g = torch.Generator().manual_seed(args.seed)
        if args.limit_train:
            train_set = torch.utils.data.Subset(train_set, torch.randperm(len(train_set), generator=g)[:args.limit_train].tolist())
        if args.limit_test:
            val_set = torch.utils.data.Subset(val_set, torch.randperm(len(val_set), generator=g)[:args.limit_test].tolist())
        return (loaders.FolderLoader(train_set, args.batch_size, train=True, workers=args.workers, **common),
                loaders.FolderLoader(val_set, args.batch_size, train=False, workers=args.workers, **common), num_classes)

    def load():   # the same loading, subset and resizing as the study (ds.data.prepare)
        if args.download and args.dataset != "fake":
            data.load_dataset(args.dataset, args.data_dir, download=True)
        return data.prepare(args.dataset, args.data_dir, input_size, args.limit_train, args.limit_test, seed=args.seed)

    if dist.is_main:         # rank 0 decodes and caches first; the others then read the cache
        dataset = load()
    ddp.barrier()
    if not dist.is_main:
        dataset = load()
    return (loaders.DeviceLoader(dataset.train_images, dataset.train_labels, args.batch_size, dataset.mean,
                                 dataset.std, train=True, cutout=args.cutout, **common),
            loaders.DeviceLoader(dataset.test_images, dataset.test_labels, args.batch_size, dataset.mean,
                                 dataset.std, train=False, **common), dataset.num_classes)


def split_holdout(train_loader, holdout: int | None, seed: int):
    """(training loader, held-out loader or None): `holdout` training images set aside
    (ds.dpsearch.holdout_split, a seeded random draw), evaluated without augmentation."""
    if holdout is None:
        return train_loader, None
    if not isinstance(train_loader, loaders.DeviceLoader):
        raise ValueError("--holdout needs an in-memory dataset (cifar10, cifar100, fake), not imagefolder")
    kept, held = dpsearch.holdout_split(len(train_loader.labels), holdout, seed)
    return train_loader.subset(kept), train_loader.subset(held, train=False)


# ---------------------------------------------------------------- the output directory

def check_writable(out: Path) -> None:
    """OutputError naming `out` unless it can be created and written (checked by writing a file)."""
    probe = out / f".ds-write-test-{uuid.uuid4().hex}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OutputError(f"--out {out} cannot be written ({error.strerror or error}); "
                          f"choose a writable directory") from None


def prepare_out(args, out: Path, dist: ddp.DistInfo) -> None:
    """Refuse to overwrite a run, to resume nothing, or to resume with other arguments; --restart
    removes the previous run's files (and says so)."""
    dp = args.search_method == "dp"
    path = out / (dpsearch.IMPORTANCE_JSON if dp else CHECKPOINT)
    if args.resume:
        if not path.is_file():
            raise FileNotFoundError(f"--resume: there is no {path.name} in {out} (looked for {path}); "
                                    f"to start this run fresh, run the same command without --resume")
        saved = dpsearch.ImportanceTable.read(path).settings if dp else load_checkpoint(path, RESUME_KEYS)
        check_same_arguments(args, saved, path)
    elif args.restart:
        if dist.is_main:
            removed = [name for name in RUN_FILES if (out / name).is_file()]
            for name in removed:
                (out / name).unlink()
            print(f"--restart: starting over in {out}" + (f" (removed {', '.join(removed)})" if removed else ""),
                  file=sys.stderr)
        ddp.barrier()
    elif path.is_file():
        raise FileExistsError(f"{path} exists: pass --resume to continue it, --restart to start over "
                              f"(replacing it), or another --out")


def check_same_arguments(args, ckpt: dict, path: Path) -> None:
    """ResumeMismatch listing the arguments that differ from those the checkpoint was made with."""
    saved = (ckpt.get("extra") or {}).get("cli") or (ckpt.get("meta") or {}).get("args")
    if saved is None:   # made by the library (e.g. the study): fit compares the training settings
        return
    if saved.get("device") is None:   # older versions spelled the default device None
        saved = dict(saved, device="auto")
    now = vars(args)
    differences = {f"--{key.replace('_', '-')}": (saved.get(key), now.get(key))
                   for key in sorted(saved.keys() | now.keys())
                   if key not in MAY_CHANGE_ON_RESUME and saved.get(key) != now.get(key)}
    if differences:
        raise ResumeMismatch(path, differences, "Resume with the saved values, or start over with --restart "
                                                "(replaces the checkpoint) or another --out.")


def resume_command(argv: list[str], dist: ddp.DistInfo) -> str:
    """The command that continues this run."""
    args = [a for a in argv if a != "--restart"]
    if "--resume" not in args:
        args.append("--resume")
    launcher = f"torchrun --nproc_per_node {dist.world_size} -m ds.train" if dist.distributed else PROG
    return f"{launcher} {shlex.join(args)}"


# ---------------------------------------------------------------- main

GATE_OPTIONS = {"gate_optimizer": "optimizer", "gate_weight_decay": "weight_decay", "gate_centre": "centre",
                "gate_init": "init", "gate_init_scale": "init_scale", "gate_init_images": "init_images",
                "gate_temperature": "temperature"}   # --gate-* flag -> ds.gating.SearchOptions field


def search_options(args) -> "gating.SearchOptions":
    """The gate search's options: SearchOptions' defaults, with the --gate-* flags given."""
    return gating.SearchOptions(**{field: getattr(args, name) for name, field in GATE_OPTIONS.items()
                                   if getattr(args, name) is not None})



def main(argv: list[str] | None = None) -> int:
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.search_budget is not None and args.pattern:
        parser.error("--search-budget and --pattern exclude each other: search on the base network")
    if args.search_method and args.search_budget is None:
        parser.error("--search-method needs --search-budget K (the blocks that keep their activations)")
    if args.search_method != "dp" and (args.dp_steps is not None or args.dp_holdout is not None):
        parser.error("--dp-steps and --dp-holdout are for --search-method dp")
    gate_flags = [f"--{name.replace('_', '-')}" for name in GATE_OPTIONS if getattr(args, name) is not None]
    if gate_flags and (args.search_budget is None or args.search_method == "dp"):
        parser.error(f"{' '.join(gate_flags)}: options of the gate search (--search-budget K, --search-method gate)")
    if args.search_method == "dp" and args.latency_weight:
        parser.error("--latency-weight is the gate search's: the DP search takes --latency-table alone "
                     "(it writes frontier.csv, the least-drop pattern at every saving)")
    if args.holdout is not None and args.search_budget is not None:
        parser.error("--holdout is for training and finetuning, not a search (the DP search holds out its own "
                     "images: --dp-holdout)")
    out = Path(args.out)
    check_writable(out)
    if args.threads:
        torch.set_num_threads(args.threads)
    dist = ddp.init(args.device)
    try:
        prepare_out(args, out, dist)
        train(args, out, dist)
    except KeyboardInterrupt:
        if dist.is_main:
            saved = (out / CHECKPOINT).is_file()
            hint = (f"continue with: {resume_command(argv, dist)}" if saved
                    else "no epoch was saved; run the same command again to start")
            print(f"\ninterrupted; {hint}", file=sys.stderr)
        return 130
    finally:
        ddp.shutdown()
    return 0


def train(args, out: Path, dist: ddp.DistInfo) -> None:
    """Build data, network and teacher from the arguments, then fit or search."""
    seed_everything(args.seed)   # the same initial weights on every rank and every run
    input_size = args.input_size or (224 if args.dataset == "imagefolder" else 32)
    channels_last = dist.device.type == "cuda"
    torch.backends.cudnn.benchmark = dist.device.type == "cuda"   # fixed input sizes: autotune once
    train_loader, test_loader, num_classes = _data(args, dist, input_size, channels_last)
    train_loader, holdout_loader = split_holdout(train_loader, args.holdout, args.seed)
    pattern = parse_pattern(args.pattern, create_model(args.backbone, num_classes=num_classes, input_size=input_size))
    model = build_model(args.backbone, num_classes, input_size, pattern, args.init)
    teacher = build_teacher(args.teacher, args.backbone, num_classes, input_size) if args.teacher else None
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                      warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, amp=args.amp,
                      channels_last=channels_last, ema_decay=args.ema_decay, distill_alpha=args.distill_alpha,
                      distill_temperature=args.distill_temperature, gate_lr=args.gate_lr, seed=args.seed,
                      progress=not args.no_progress, stop_after_epoch=args.stop_after_epoch, compile=args.compile,
                      anneal_start=args.anneal_start, anneal_end=args.anneal_end, progressive=args.progressive,
                      removal_order=args.removal_order, recalibrate_bn=args.recalibrate_bn)
    extra = {"cli": vars(args)}
    if args.search_budget is None:
        fit(model, train_loader, test_loader, cfg, out_dir=out, teacher=teacher, resume=args.resume, dist=dist,
            extra=extra, holdout_loader=holdout_loader)
        return
    latency = gating.load_latency_table(args.latency_table) if args.latency_table else None
    if args.search_method == "dp":
        if dist.distributed:
            raise ValueError("the DP search runs in one process: start it without torchrun")
        result = dpsearch.search(model, train_loader, cfg, steps=dpsearch.DEFAULT_STEPS if args.dp_steps is None
                                 else args.dp_steps, holdout=args.dp_holdout or dpsearch.DEFAULT_HOLDOUT,
                                 seed=args.seed, latency=latency, teacher=teacher, out_dir=out, resume=args.resume,
                                 progress=not args.no_progress, extra=extra)
        print(f"importance (held-out top-1): base {result.importance.base_top1:.2f}%, finetuned reference "
              f"{result.importance.reference_top1:.2f}%; drop per block: "
              + ", ".join(f"{b}: {c:+.2f}" for b, c in result.costs.items()))
        print(f"pattern for budget {args.search_budget}: {result.pattern(args.search_budget)}")
        return
    result = gating.search(model, train_loader, test_loader, args.search_budget, cfg, out_dir=out, latency=latency,
                           latency_weight=args.latency_weight, teacher=teacher, resume=args.resume, dist=dist,
                           extra=extra, options=search_options(args))
    if dist.is_main:
        print(f"ranking (switch indices, keep first): {result.ranking}")
        print(f"pattern for budget {args.search_budget}: {result.pattern(args.search_budget)}")


# Errors whose message says what to do: one line, no traceback (DS_TRACEBACK=1 shows it).
EXPLAINED = (CheckpointError, NonFiniteLoss, OutputError, DataError, PatternError, UnsupportedModelError,
             DeviceError, FileNotFoundError, FileExistsError, ValueError)


def run(argv: list[str] | None = None) -> int:
    """`main` with explained errors as one line on stderr (exit code 1)."""
    try:
        return main(argv)
    except EXPLAINED as error:
        if os.environ.get("DS_TRACEBACK"):
            raise
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
