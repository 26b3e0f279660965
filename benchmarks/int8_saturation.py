"""INT8 on a CPU without VNNI: the published cpu networks quantized with and without the saturation
fix of ds.export.quantize, and with ONNX Runtime's other remedy, on all 10,000 CIFAR-10 test images.

    python benchmarks/int8_saturation.py            # writes benchmarks/results/int8_saturation.csv

On x86 CPUs without VNNI, the u8 x s8 int8 kernels of ONNX Runtime and OpenVINO add pairs of
products in 16 bits, which saturate; with the fix (ORT: 7-bit weights, reduce_range; NNCF: its
overflow fix on every layer) they cannot. ONNX Runtime offers one more way out: uint8 weights at
their full range, run by its u8 x u8 kernels (`uint8_weights`), which ds does not choose. Each
network is quantized every way, calibrated as chapter 4 does (300 seeded CIFAR-10 training images,
never test images), and run on every test image beside its float ONNX file: top-1 float and INT8,
agreement, relative RMS error of the logits. Then the float file and every INT8 file are timed
interleaved on one batch of 250 test images (median, min and max img/s of 15 rounds, `THREADS`
threads), since a remedy that costs the speed INT8 is for is no remedy. Each row names the machine,
whether its CPU is saturation-prone (what `auto` picks there), the date and the load average. On a
VNNI CPU every way should agree with float alike.
"""
import os
import statistics
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
from ds.export import INPUT_NAME, onnxruntime_session, to_onnx  # noqa: E402
from ds.export.quantize import (EXTENSION, calibration_images, int8_runner, output_error,  # noqa: E402
                                quantize_file, quantize_onnx, saturation_prone, settings_label)
from ds.provenance import cpu_name, utc_now  # noqa: E402
from ds.study.chapter import loaders  # noqa: E402
from ds.study.int8 import float_logits, int8_logits, test_arrays, top1  # noqa: E402

CHECKPOINTS = ROOT / "data" / "checkpoints" / "cpu"
OUT = ROOT / "benchmarks" / "results" / "int8_saturation.csv"
THREADS = 2
ROUNDS = 15
# (runtime, way, saturation_fix, uint8_weights): every way each network is quantized
WAYS = (("onnxruntime", "s8 weights", False, False), ("onnxruntime", "s8 weights, 7-bit (fix)", True, False),
        ("onnxruntime", "u8 weights (u8 x u8)", False, True),
        ("openvino", "overflow fix on the first layer", False, False),
        ("openvino", "overflow fix on every layer (fix)", True, False))
SHOWN = ("pattern", "runtime", "way", "top1_float", "top1_int8", "agreement", "rel_rms_error", "img_s_median",
         "img_s_float_median")


def networks() -> dict:
    """The published cpu base (BN folded, as chapter 4 quantizes it) and merged searched network."""
    found = {"base": ds.merge(ds.load_network(CHECKPOINTS / "base.pt"), input_size=32)}
    for path in sorted(CHECKPOINTS.glob("*-merged.pt")):
        found[path.name.removesuffix("-merged.pt")] = ds.load_network(path)
    return found


def int8_file(float_path, runtime: str, out, calibration, fix: bool, uint8_weights: bool) -> Path:
    """The INT8 file of one way (ds.export.quantize's, unchecked: this benchmark measures the error)."""
    if uint8_weights:
        return quantize_onnx(float_path, out, calibration, uint8_weights=True)
    return quantize_file(float_path, runtime, out, calibration, fix)


def label(runtime: str, calibration, fix: bool, uint8_weights: bool) -> str:
    if uint8_weights:
        return f"ORT QDQ static, per-channel u8 weights (u8 x u8 kernels), u8 activations, MinMax; {calibration.label}"
    return settings_label(runtime, calibration, fix)


def speeds(runners: dict, batch) -> dict:
    """{name: (median, min, max) img/s}: every runner timed on `batch`, interleaved, ROUNDS rounds."""
    seconds = {name: [] for name in runners}
    for run in runners.values():
        run(batch)   # warm-up
    for _ in range(ROUNDS):
        for name, run in runners.items():
            start = time.perf_counter()
            run(batch)
            seconds[name].append(time.perf_counter() - start)
    n = len(batch)
    return {name: (n / statistics.median(s), n / max(s), n / min(s)) for name, s in seconds.items()}


def main() -> int:
    torch.set_num_threads(THREADS)
    test = test_arrays(loaders(prepare("cifar10", None, 32), 250, torch.device("cpu"))[1])
    batches, labels = test
    calibration = calibration_images(32, 300, check_count=1).calibration
    machine = {"cpu": cpu_name(), "cpu_saturation_prone": saturation_prone(), "threads": THREADS}
    rows = []
    for name, model in networks().items():
        with tempfile.TemporaryDirectory(prefix="ds-saturation-") as tmp:
            float_path = to_onnx(model, Path(tmp) / "float.onnx", 32)
            expected = float_logits(model, float_path, batches, THREADS)
            float_session = onnxruntime_session(float_path, THREADS)
            runners, found = {"float": lambda x: float_session.run(None, {INPUT_NAME: x})}, []
            for i, (runtime, way, fix, uint8_weights) in enumerate(WAYS):
                path = int8_file(float_path, runtime, Path(tmp) / f"{i}{EXTENSION[runtime]}", calibration, fix,
                                 uint8_weights)
                actual = int8_logits(path, runtime, batches, THREADS)
                errors = output_error(actual, expected)
                found.append({"pattern": name, "runtime": runtime, "way": way,
                              "quantization": label(runtime, calibration, fix, uint8_weights),
                              "saturation_fix": fix, "uint8_weights": uint8_weights, "test_images": len(labels),
                              "top1_float": top1(expected, labels), "top1_int8": top1(actual, labels),
                              "top1_change": top1(actual, labels) - top1(expected, labels),
                              "agreement": errors["top1_agreement"], "rel_rms_error": errors["rel_rms_error"]})
                runners[i] = int8_runner(path, runtime, THREADS)
            load = os.getloadavg()[0]
            timed = speeds(runners, batches[0])
            for i, row in enumerate(found):
                rows.append({**row, "img_s_median": timed[i][0], "img_s_min": timed[i][1], "img_s_max": timed[i][2],
                             "img_s_float_median": timed["float"][0], "speedup_over_float": timed[i][0] / timed["float"][0],
                             "timed_batch": len(batches[0]), "rounds": ROUNDS, **machine, "date_utc": utc_now(),
                             "load_average": load})
                print({k: rows[-1][k] for k in SHOWN}, flush=True)
    pd.DataFrame(rows).to_csv(OUT, index=False, float_format="%.4f")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
