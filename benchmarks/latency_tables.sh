#!/usr/bin/env bash
# Latency tables for the gate search (issue 12, item 3), one per runtime, all for
# mobilenetv2_140 at 224 px, batch 16, 1 thread, random weights:
#   bash benchmarks/latency_tables.sh    (from the repository root; PYTHONPATH=. for a checkout)
# Each writes benchmarks/results/latency_<runtime>.json ({switch index: seconds per batch saved
# by merging that block}: the block and its merged form timed alone, interleaved, see
# ds.bench.latency) and a .provenance.json beside it (command, date, load average, every block's
# timings). The last command times the whole networks (base, DS-A..F) in the same four settings
# right after, so that benchmarks/latency_compare.py can check the tables' predicted savings
# against measured ones; it then ranks the blocks per runtime.
set -euo pipefail
PY=${PYTHON:-python}
common=(--model mobilenetv2_140 --device cpu --input 224 --batch 16 --threads 1 --repeats 7 --warmup 2 --min-time 0.3)
$PY -m ds.bench "${common[@]}" --runtimes torch --layouts nchw --latency-table benchmarks/results/latency_torch_nchw.json
$PY -m ds.bench "${common[@]}" --runtimes torch --layouts channels_last --latency-table benchmarks/results/latency_torch_channels_last.json
$PY -m ds.bench "${common[@]}" --runtimes onnxruntime --latency-table benchmarks/results/latency_onnxruntime.json
$PY -m ds.bench "${common[@]}" --runtimes openvino --latency-table benchmarks/results/latency_openvino.json
$PY -m ds.bench "${common[@]}" --patterns paper --runtimes torch,onnxruntime,openvino --layouts nchw,channels_last --out benchmarks/results/latency_check.csv
