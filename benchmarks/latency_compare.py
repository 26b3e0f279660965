"""Do the runtimes agree on which blocks are worth merging, and do the tables predict the patterns?
(issue 12, item 3)

    PYTHONPATH=. python benchmarks/latency_compare.py > benchmarks/results/latency_compare.txt

Reads the tables benchmarks/latency_tables.sh wrote and prints, per runtime, each block's
saving and rank, the blocks each would remove first on latency alone (8 and 12 of them), the
rank correlation between runtimes, and, for the paper's DS-A..F, the time per batch the table
predicts each pattern saves (the sum over its removed blocks) beside the saving measured on the
whole networks right after the tables (benchmarks/results/latency_check.csv).
"""
import json
from pathlib import Path

import pandas as pd

import ds
from ds.bench.latency import compare_tables, predicted_saving

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MEASURED = RESULTS / "latency_check.csv"   # the whole networks, timed right after the tables
# table name -> the rows of the whole-network table measured the same way
SETTINGS = {"torch_nchw": ("torch", "nchw"), "torch_channels_last": ("torch", "channels_last"),
            "onnxruntime": ("onnxruntime", "nchw"), "openvino": ("openvino", "nchw")}

tables = {}
for name in SETTINGS:
    path = RESULTS / f"latency_{name}.json"
    if path.is_file():
        tables[name] = json.loads(path.read_text())
        side = json.loads(path.with_suffix(".provenance.json").read_text())
        print(f"# {name}: {side['setting']}, {side['date_utc']}, commit {side['git']['short']}, load "
              f"average before {side['load_average_before'][0]:.2f} after {side['load_average_after'][0]:.2f}")
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

measured = pd.read_csv(MEASURED)
measured = measured[(measured["dtype"] == "fp32") & (measured["threads"] == 1) & (measured["batch"] == 16)]
rows = []
for name, table in tables.items():
    runtime, layout = SETTINGS[name]
    setting = measured[(measured["runtime"] == runtime) & (measured["layout"] == layout)].set_index("pattern")
    if setting.empty:
        continue
    ms = 1e3 * 16 / setting["img_s_median"]
    for pattern, bits in ds.PATTERNS["mobilenetv2_140"].items():
        # the tables cover the searchable blocks; a pattern's stem or head switch is left out
        bits = [b if str(i) in table else 1 for i, b in enumerate(bits)]
        if pattern in ms.index:
            rows.append({"runtime": name, "pattern": pattern, "base_ms": ms["base"],
                         "measured_saving_ms": ms["base"] - ms[pattern],
                         "predicted_saving_ms": 1e3 * predicted_saving(table, bits)})
check = pd.DataFrame(rows)
check["predicted / measured"] = check["predicted_saving_ms"] / check["measured_saving_ms"]
print(f"\nsaving per batch of 16 predicted by the table (sum over the removed searchable blocks; the stem "
      f"switch some patterns also remove is not in the tables) against the saving measured on the whole "
      f"networks ({MEASURED.relative_to(ROOT)}, timed right after the tables):")
print(check.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
