"""Training speed of ds.train.fit: images/s for mobilenetv2_140 on CIFAR-10 (32 px, CIFAR strides).

Runs the real training path (DeviceLoader + fit) for a few epochs and prints images/s and
seconds per epoch of each; the first epoch includes warm-up (cudnn autotuning, allocator), so the
speed reported is the best later epoch. The goal on an H100/H200: one full CIFAR-10 epoch (50k
images) in under 10 s. `--backbone a,b` measures several networks in turn on the same data;
`--out FILE.json` writes the measurements (scripts/gpu_publish.sh sizes the `gpu` study profile
from them).

    python benchmarks/train_speed.py --device cpu --limit-train 1024 --threads 2
    python benchmarks/train_speed.py --device cuda --batch-size 256          # full epochs
    python benchmarks/train_speed.py --device cuda --backbone mobilenetv2_140,mobilenetv2_100 \
        --epochs 2 --limit-train 25000 --amp bf16 --channels-last 1 --out train_speed.json
Uses $DS_DATA's CIFAR-10 when present, else the synthetic set of the same size.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # this checkout's ds, not an installed one
import ds  # noqa: E402
from ds import data  # noqa: E402
from ds.loaders import DeviceLoader  # noqa: E402
from ds.errors import DeviceError  # noqa: E402
from ds.provenance import describe_device, resolve_device, utc_now  # noqa: E402
from ds.train import TrainConfig, fit  # noqa: E402


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="mobilenetv2_140", help="a timm model name, or a comma list")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--limit-train", type=int, default=None, help="images per epoch (default: all 50k)")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--channels-last", type=int, default=None, help="1/0 (default: on GPU only)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--out", help="write the measurements to this JSON file")
    args = p.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except DeviceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    try:
        dataset, source = data.load_cifar10(), "CIFAR-10 (JPEG copy)"
    except data.DataNotFound:   # only a missing CIFAR-10 falls back; a broken one raises
        dataset, source = data.fake_dataset(50000, 16), "synthetic (DS_DATA has no CIFAR-10)"
    if args.limit_train:
        dataset = dataset.limit(args.limit_train)
    channels_last = bool(args.channels_last) if args.channels_last is not None else device.type == "cuda"
    loader = DeviceLoader(dataset.train_images, dataset.train_labels, args.batch_size, dataset.mean, dataset.std,
                          train=True, device=device, channels_last=channels_last)
    cfg = TrainConfig(epochs=args.epochs, lr=0.1, warmup_epochs=0, amp=args.amp, channels_last=channels_last,
                      progress=False, compile=args.compile)
    name = describe_device(device)
    record = {"command": "python benchmarks/train_speed.py " + shlex.join(argv), "date_utc": utc_now(),
              "device": name, "torch": torch.__version__, "data": source, "images_per_epoch": loader.num_samples,
              "batch_size": args.batch_size, "amp": args.amp, "channels_last": channels_last, "input_size": 32,
              "compile": args.compile, "backbones": {}}
    for backbone in [b.strip() for b in args.backbone.split(",") if b.strip()]:
        torch.manual_seed(0)
        model = ds.create_model(backbone, num_classes=10, input_size=32)
        print(f"{backbone} on {source}: {loader.num_samples} images/epoch, batch {args.batch_size}, "
              f"device {name}, amp {args.amp}, channels_last {channels_last}, torch {torch.__version__}")
        start = time.perf_counter()
        metrics = fit(model, loader, None, cfg).metrics
        for row in metrics.itertuples():
            print(f"epoch {row.epoch}: {row.seconds:7.2f} s  {row.images_per_s:9.1f} images/s")
        best = metrics["images_per_s"].iloc[1:].max() if len(metrics) > 1 else metrics["images_per_s"].iloc[0]
        wall = time.perf_counter() - start
        print(f"best warm epoch: {best:.1f} images/s -> {50000 / best:.1f} s per 50k-image epoch "
              f"(wall {wall:.1f} s)")
        record["backbones"][backbone] = {"images_per_s": float(best), "seconds_per_50k": 50000 / float(best),
                                         "wall_s": wall, "epochs": metrics[["epoch", "seconds", "images_per_s"]]
                                         .to_dict(orient="records")}
        if args.out:   # after every network: what was measured survives a stop during the next one
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
