"""Do the runtimes agree on which blocks are worth merging? (issue 12, item 3)

    PYTHONPATH=. python benchmarks/latency_compare.py > benchmarks/results/latency_compare.txt

Reads the tables benchmarks/latency_tables.sh wrote and prints, per runtime, each block's
saving and rank, the blocks each would remove first on latency alone (8 and 12 of them), and
the rank correlation between runtimes.
"""
import json
from pathlib import Path

from ds.bench.latency import compare_tables

RESULTS = Path(__file__).parent / "results"
tables = {}
for name in ("torch_nchw", "torch_channels_last", "onnxruntime", "openvino"):
    path = RESULTS / f"latency_{name}.json"
    if path.is_file():
        tables[name] = json.loads(path.read_text())
        side = json.loads(path.with_suffix(".provenance.json").read_text())
        print(f"# {name}: {side['setting']}, {side['date_utc']}, load average before "
              f"{side['load_average_before'][0]:.2f} after {side['load_average_after'][0]:.2f}")
for remove in (8, 12):
    frame, chosen = compare_tables(tables, remove)
    print(f"\nremove the {remove} blocks that save most, per runtime:")
    for label, blocks in chosen.items():
        print(f"  {label:>20}: {blocks}")
print("\nsaving per block (ms per batch of 16) and rank:")
print(frame.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
ranks = frame[[c for c in frame.columns if c.endswith("_rank")]]
print("\nSpearman rank correlation between runtimes:")
print(ranks.corr(method="spearman").round(2).to_string())
