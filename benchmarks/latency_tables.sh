#!/usr/bin/env bash
# Latency tables for the gate search (issue 12, item 3), one per runtime, all for
# mobilenetv2_140 at 224 px, batch 16, 1 thread, random weights:
#   bash benchmarks/latency_tables.sh    (from the repository root; PYTHONPATH=. for a checkout)
# Each writes benchmarks/results/latency_<runtime>.json ({switch index: seconds per batch saved
# by merging that block alone}) and a .provenance.json beside it (command, date, load average).
# benchmarks/latency_compare.py then ranks the blocks per runtime.
set -euo pipefail
PY=${PYTHON:-python}
common=(--model mobilenetv2_140 --device cpu --input 224 --batch 16 --threads 1 --repeats 5 --warmup 1 --min-time 0.2)
$PY -m ds.bench "${common[@]}" --runtimes torch --layouts nchw --latency-table benchmarks/results/latency_torch_nchw.json
$PY -m ds.bench "${common[@]}" --runtimes torch --layouts channels_last --latency-table benchmarks/results/latency_torch_channels_last.json
$PY -m ds.bench "${common[@]}" --runtimes onnxruntime --latency-table benchmarks/results/latency_onnxruntime.json
$PY -m ds.bench "${common[@]}" --runtimes openvino --latency-table benchmarks/results/latency_openvino.json
