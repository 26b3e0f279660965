"""How far INT8 files stray from their float networks, well and badly calibrated: the basis of
ds.export.quantize.INT8_MAX_ERROR.

    PYTHONPATH=. python benchmarks/int8_error.py > benchmarks/int8_error.txt

Each network is quantized by ds.export.quantize for ONNX Runtime (QDQ, per-channel) and OpenVINO
(NNCF), calibrated on CIFAR-10 training images (seeded), and compared with its float network on
the next images of the same permutation (never test images). "ok" is the calibration ds uses;
"x50" and "x0.02" calibrate on the same images scaled by 50 (ranges far too wide: coarse steps)
and by 1/50 (ranges far too narrow: clipping): what a calibration set normalized unlike the
training input does. Networks: the published cpu study's trained base and merged searched network
(32 px; searched-k11 when benchmarks/int8_error.txt was measured), random-weight merged networks
(seed 0) at 32 px and 224 px, and the tests' setting: random-weight mobilenetv2_035 at 16 px on
ds.data's synthetic images (dataset "fake").
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

import ds
from ds.export import merged_network
from ds.export.quantize import ImageSet, Int8Images, calibration_images, quantize
from ds.provenance import cpu_name, utc_now

torch.set_num_threads(1)
CHECKPOINTS = Path("data/checkpoints/cpu")


def merged_name() -> str:
    """The file name of the merged searched network the cpu run published (<pattern>-merged.pt)."""
    found = sorted(p.name for p in CHECKPOINTS.glob("*-merged.pt"))
    if len(found) != 1:
        raise SystemExit(f"expected one *-merged.pt in {CHECKPOINTS}, found {found or 'none'}: publish the cpu run "
                         f"(make publish PROFILE=cpu)")
    return found[0]


def published(name: str):
    """A published network file; one in an older format is converted into a temporary copy first."""
    from ds.networks import load_network
    from ds.train.checkpoint import CheckpointError
    path = CHECKPOINTS / name
    try:
        return load_network(path)
    except CheckpointError:
        from ds.convert import convert
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            convert(path, copy)
            return load_network(copy)


def random_network(backbone: str, pattern: str, size: int):
    torch.manual_seed(0)
    model = ds.create_model(backbone, num_classes=10, input_size=size).eval()
    return model if pattern == "base" else ds.apply_pattern(model, pattern)


def scaled(images: Int8Images, factor: float) -> Int8Images:
    calib = images.calibration
    return Int8Images(ImageSet(calib.images * factor, dict(calib.identity, scaled_by=factor)), images.check)


NETWORKS = [  # (name, builder, input size, dataset, calibration images, check images, broken variants)
    ("cpu base (trained)", lambda: published("base.pt"), 32, "cifar10", 300, 300, True),
    ("cpu merged searched network (trained)", lambda: published(merged_name()), 32, "cifar10",
     300, 300, True),
    ("mobilenetv2_035 base (random)", lambda: random_network("mobilenetv2_035", "base", 32), 32, "cifar10",
     300, 300, False),
    ("mobilenetv2_035 DS-E (random)", lambda: random_network("mobilenetv2_035", "DS-E", 32), 32, "cifar10",
     300, 300, False),
    ("mobilenetv2_035 DS-F (random)", lambda: random_network("mobilenetv2_035", "DS-F", 32), 32, "cifar10",
     300, 300, False),
    ("mobilenetv2_140 base (random)", lambda: random_network("mobilenetv2_140", "base", 224), 224, "cifar10",
     100, 100, False),
    ("mobilenetv2_140 DS-F (random)", lambda: random_network("mobilenetv2_140", "DS-F", 224), 224, "cifar10",
     100, 100, False),
    ("mobilenetv2_035 base (random; tests)", lambda: random_network("mobilenetv2_035", "base", 16), 16, "fake",
     64, 64, True),
    ("mobilenetv2_035 DS-E (random; tests)", lambda: random_network("mobilenetv2_035", "DS-E", 16), 16, "fake",
     64, 64, True),
    ("mobilenetv2_035 DS-F (random; tests)", lambda: random_network("mobilenetv2_035", "DS-F", 16), 16, "fake",
     64, 64, True),
]

print(f"# {utc_now()}, {cpu_name()}, torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")
print("network,input,dataset,calibration,runtime,calibration_images,check_images,top1_agreement,rel_rms_error,"
      "max_rel,seconds")
for title, build, size, dataset, n_calib, n_check, broken in NETWORKS:
    merged = merged_network(build(), size)
    images = calibration_images(size, n_calib, dataset=dataset, check_count=n_check)
    variants = {"ok": images}
    if broken:
        variants.update({"x50": scaled(images, 50.0), "x0.02": scaled(images, 0.02)})
    for variant, chosen in variants.items():
        for runtime, suffix in (("onnxruntime", ".onnx"), ("openvino", ".xml")):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                q = quantize(merged, runtime, Path(tmp) / f"int8{suffix}", chosen, input_size=size,
                             max_error=float("inf"))
                c = q.check
                print(f"{title},{size},{dataset},{variant},{runtime},{n_calib},{c['images']},{c['top1_agreement']:.4f},"
                      f"{c['rel_rms_error']:.4f},{c['max_rel']:.4f},{time.perf_counter() - start:.1f}", flush=True)
print(f"# done {utc_now()}, load average {os.getloadavg()[0]:.2f}", file=sys.stdout)
