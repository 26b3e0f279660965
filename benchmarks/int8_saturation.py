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
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ds  # noqa: E402
from ds.data import prepare  # noqa: E402
from ds.export import to_onnx  # noqa: E402
from ds.export.quantize import (EXTENSION, Int8Images, calibration_images, output_error, quantize,  # noqa: E402
                                saturation_prone)
from ds.provenance import cpu_name, utc_now  # noqa: E402
from ds.study.chapter import loaders  # noqa: E402
from ds.study.int8 import float_logits, int8_logits, test_arrays, top1  # noqa: E402

CHECKPOINTS = ROOT / "data" / "checkpoints" / "cpu"
OUT = ROOT / "benchmarks" / "results" / "int8_saturation.csv"
THREADS = 2


def networks() -> dict:
    """The published cpu base (BN folded, as chapter 4 quantizes it) and merged searched network."""
    found = {"base": ds.merge(ds.load_network(CHECKPOINTS / "base.pt"), input_size=32)}
    for path in sorted(CHECKPOINTS.glob("*-merged.pt")):
        found[path.name.removesuffix("-merged.pt")] = ds.load_network(path)
    return found


def main() -> int:
    torch.set_num_threads(THREADS)
    test = test_arrays(loaders(prepare("cifar10", None, 32), 250, torch.device("cpu"))[1])
    calibration = Int8Images(calibration_images(32, 300, check_count=1).calibration, None)
    rows = []
    for name, model in networks().items():
        with tempfile.TemporaryDirectory(prefix="ds-saturation-") as tmp:
            float_path = to_onnx(model, Path(tmp) / "float.onnx", 32)
            expected = float_logits(model, float_path, test[0], THREADS)
            for runtime in ("onnxruntime", "openvino"):
                for fix in (False, True):
                    start = time.perf_counter()
                    q = quantize(model, runtime, Path(tmp) / f"q{fix}{EXTENSION[runtime]}", calibration,
                                 float_path=float_path, saturation_fix=fix)
                    actual = int8_logits(q.path, runtime, test[0], THREADS)
                    errors = output_error(actual, expected)
                    rows.append({"network": name, "runtime": runtime, "saturation_fix": fix, "quantization": q.label,
                                 "test_images": len(test[1]), "top1_float": top1(expected, test[1]),
                                 "top1_int8": top1(actual, test[1]), "agreement": errors["top1_agreement"],
                                 "rel_rms_error": errors["rel_rms_error"], "seconds": time.perf_counter() - start,
                                 "cpu": cpu_name(), "cpu_saturation_prone": saturation_prone(), "threads": THREADS,
                                 "date_utc": utc_now(), "load_average": os.getloadavg()[0]})
                    print({k: rows[-1][k] for k in ("network", "runtime", "saturation_fix", "top1_float", "top1_int8",
                                                   "agreement", "rel_rms_error")}, flush=True)
    frame = pd.DataFrame(rows)
    frame["top1_change"] = frame["top1_int8"] - frame["top1_float"]
    frame.to_csv(OUT, index=False, float_format="%.4f")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
