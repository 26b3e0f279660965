"""What each merge option buys per runtime (issue 12, item 4), and where the time goes.

    PYTHONPATH=. python benchmarks/merge_options.py options   # merge options, batch 16, 1 thread
    PYTHONPATH=. python benchmarks/merge_options.py batch     # batch 1/16/64 at 1 and 2 threads
    PYTHONPATH=. python benchmarks/merge_options.py profile   # depthwise / 1x1 / k x k / other
    PYTHONPATH=. python benchmarks/merge_options.py compile   # torch.compile against eager and ORT

mobilenetv2_140 at 224 px, random weights (seed 0), every network merged and verified by
ds.merge. Merge options: "paper" (final_act=True, expansion-1 block kept as
dw + pw), "noact" (final_act=False: consecutive removed blocks merge into one conv), "dws"
(merge_depthwise_separable=True) and "noact+dws". A network whose merge fails ds.merge's
float32 check is reported and left out. Output: benchmarks/results/merge_<phase>.csv, whose
first lines (#) hold the command, the date, the git commit and the load average.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch

import ds
from ds.bench import Setting, measure_settings
from ds.bench.profile import time_shares
from ds.provenance import git_commit, utc_now

MODEL, SIZE = "mobilenetv2_140", 224
OPTIONS = {"paper": (True, False), "noact": (False, False), "dws": (True, True),
           "noact+dws": (False, True)}
OUT = Path(__file__).parent / "results"


# "dws" changes a pattern only where it removes the expansion-1 block (switch 1: DS-B, DS-D,
# DS-F); DS-C/dws is the same network as DS-C/paper and serves as a noise control. "noact"
# changes a pattern where removed blocks are consecutive. DS-F/noact (blocks 2-17 removed, so
# one conv for all of them) is left out: its merge at 224 px did not finish here (the process
# grew past 8 GB and was killed).
CANDIDATES = [("DS-A", "paper"), ("DS-A", "noact"), ("DS-B", "paper"), ("DS-B", "dws"),
              ("DS-B", "noact"), ("DS-C", "paper"), ("DS-C", "dws"), ("DS-E", "paper"),
              ("DS-E", "noact"), ("DS-F", "paper"), ("DS-F", "dws")]


def networks(pairs) -> dict:
    torch.manual_seed(0)
    model = ds.create_model(MODEL, input_size=SIZE).eval()
    nets = {"base": ds.merge(ds.apply_pattern(model, [1] * len(ds.switches(model))), input_size=SIZE)}
    for pattern, option in pairs:
            final_act, dws = OPTIONS[option]
            try:
                nets[f"{pattern}/{option}"] = ds.merge(
                    ds.apply_pattern(model, pattern, final_act=final_act), input_size=SIZE,
                    merge_depthwise_separable=dws)
            except ds.MergeError as e:
                print(f"left out {pattern}/{option}: {e}", file=sys.stderr)
    return nets


def write(frame: pd.DataFrame, name: str, started: str) -> None:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"merge_{name}.csv"
    import os
    header = (f"# PYTHONPATH=. python benchmarks/merge_options.py {name}\n# started {started}, "
              f"finished {utc_now()}, git {git_commit()}, load average at the end {os.getloadavg()}\n")
    path.write_text(header + frame.to_csv(index=False))
    print(f"wrote {path}", file=sys.stderr)


def ways(runtimes, threads, batches):
    table = {"torch-nchw": ("torch", "nchw", "eager"), "torch-cl": ("torch", "channels_last", "eager"),
             "onnxruntime": ("onnxruntime", "nchw", "ort_enable_all"),
             "openvino": ("openvino", "nchw", "latency")}
    return [Setting(table[r][0], "fp32", table[r][1], table[r][2], t, b)
            for r in runtimes for t in threads for b in batches]


def main(phase: str) -> None:
    started = utc_now()
    protocol = dict(repeats=5, warmup=1, min_time=0.2)
    if phase == "options":
        nets = networks(CANDIDATES)
        frame, _ = measure_settings(nets, SIZE, ways(["torch-cl", "onnxruntime", "openvino"], [1], [16]),
                                    "cpu", MODEL, **protocol)
    elif phase == "batch":
        nets = networks([("DS-A", "paper"), ("DS-F", "paper")])
        frame, _ = measure_settings(nets, SIZE, ways(["onnxruntime", "openvino"], [1, 2], [1, 16, 64]),
                                    "cpu", MODEL, **protocol)
    elif phase == "compile":  # does torch.compile (inductor, CPU) help inference here?
        nets = networks([("DS-A", "paper"), ("DS-F", "paper")])
        settings = [Setting("torch", "fp32", "channels_last", mode, 1, 16) for mode in ("eager", "compile")]
        settings.append(Setting("onnxruntime", "fp32", "nchw", "ort_enable_all", 1, 16))
        frame, _ = measure_settings(nets, SIZE, settings, "cpu", MODEL, **protocol)
    elif phase == "profile":
        nets = networks([("DS-A", "paper"), ("DS-E", "paper"), ("DS-F", "paper")])
        rows = []
        for runtime, layout in (("torch", True), ("onnxruntime", False), ("openvino", False)):
            for name, net in nets.items():
                shares = time_shares(net, SIZE, 16, runtime, threads=1, channels_last=layout, runs=3)
                rows.append(dict(runtime=runtime + ("-channels_last" if layout else ""), network=name,
                                 batch=16, threads=1, **shares))
                print(rows[-1], file=sys.stderr)
        frame = pd.DataFrame(rows)
        for kind in ("depthwise", "pointwise", "dense_kxk", "other"):
            frame[f"{kind}_share"] = frame[kind] / frame["total"]
    else:
        raise SystemExit(f"unknown phase {phase!r}: options, batch, profile or compile")
    write(frame, phase, started)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "options")
