"""INT8 on a CPU without VNNI: the published cpu networks quantized with and without the saturation
fix of ds.export.quantize, on all 10,000 CIFAR-10 test images.

    python benchmarks/int8_saturation.py            # writes benchmarks/results/int8_saturation.csv

On x86 CPUs without VNNI, the u8 x s8 int8 kernels of ONNX Runtime and OpenVINO add pairs of
products in 16 bits, which saturate; with the fix (ORT: 7-bit weights, reduce_range; NNCF: its
overflow fix on every layer) they cannot. Each network is quantized both ways for both runtimes,
calibrated as chapter 4 does (300 seeded CIFAR-10 training images, never test images), and run on
every test image beside its float ONNX file: top-1 float and INT8, agreement, relative RMS error of
the logits. Each row names the machine, whether its CPU is saturation-prone (what `auto` picks
there), the date and the load average. On a VNNI CPU both ways should agree with float alike.
"""
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ds  # noqa: E402
from ds.data import prepare  # noqa: E402
from ds.export import to_onnx  # noqa: E402
from ds.export.quantize import calibration_images, saturation_prone  # noqa: E402
from ds.provenance import cpu_name, utc_now  # noqa: E402
from ds.study.chapter import loaders  # noqa: E402
from ds.study.int8 import float_logits, int8_row, test_arrays  # noqa: E402

CHECKPOINTS = ROOT / "data" / "checkpoints" / "cpu"
OUT = ROOT / "benchmarks" / "results" / "int8_saturation.csv"
THREADS = 2
SHOWN = ("pattern", "runtime", "saturation_fix", "top1_float", "top1_int8", "agreement", "rel_rms_error")


def networks() -> dict:
    """The published cpu base (BN folded, as chapter 4 quantizes it) and merged searched network."""
    found = {"base": ds.merge(ds.load_network(CHECKPOINTS / "base.pt"), input_size=32)}
    for path in sorted(CHECKPOINTS.glob("*-merged.pt")):
        found[path.name.removesuffix("-merged.pt")] = ds.load_network(path)
    return found


def main() -> int:
    torch.set_num_threads(THREADS)
    test = test_arrays(loaders(prepare("cifar10", None, 32), 250, torch.device("cpu"))[1])
    calibration = calibration_images(32, 300, check_count=1).calibration
    machine = {"cpu": cpu_name(), "cpu_saturation_prone": saturation_prone(), "threads": THREADS}
    rows = []
    for name, model in networks().items():
        with tempfile.TemporaryDirectory(prefix="ds-saturation-") as tmp:
            float_path = to_onnx(model, Path(tmp) / "float.onnx", 32)
            expected = float_logits(model, float_path, test[0], THREADS)
            for runtime in ("onnxruntime", "openvino"):
                for fix in (False, True):   # chapter 4's row (ds.study.int8), quantized both ways
                    row = int8_row(model, float_path, name, "published", runtime, calibration, test, expected,
                                   THREADS, saturation_fix=fix)
                    rows.append({**row, "saturation_fix": fix, **machine, "date_utc": utc_now(),
                                 "load_average": os.getloadavg()[0]})
                    print({k: rows[-1][k] for k in SHOWN}, flush=True)
    pd.DataFrame(rows).to_csv(OUT, index=False, float_format="%.4f")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
