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
# Caveat on the committed tables (2026-11-25): the two torch tables were measured while five
# jobs shared the 2 cores (load average 3 falling to 0.4 during the channels_last run, which was
# also paused for ~5 min while the CPU table was measured); several of their "savings" exceed a
# third of the whole pass, so they are noise, not block costs. The onnxruntime and openvino
# tables were measured at load ~1; remeasure all four on a quiet machine before drawing
# conclusions (benchmarks/results/latency_compare.txt shows the rank correlations).
