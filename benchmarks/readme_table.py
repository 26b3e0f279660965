"""The README's CPU table, printed from the published CSV (speed-up over the fastest base per runtime setting).

    PYTHONPATH=. python benchmarks/readme_table.py [data/results/throughput_mbv2_140_cpu.csv]
"""
import json
import sys
from pathlib import Path

import pandas as pd

from ds.bench.compare import setting_labels

path = Path(sys.argv[1] if len(sys.argv) > 1 else "data/results/throughput_mbv2_140_cpu.csv")
table = pd.read_csv(path)
table["setting"] = setting_labels(table)
side = json.loads(path.with_suffix(".json").read_text())
best = table[table["pattern"] == "base"].sort_values("img_s_median").iloc[-1]
patterns = list(dict.fromkeys(table["pattern"]))
print(f"<!-- {path}: {side['date_utc']}, commit {side['git']['short']}, {side['cpu']} "
      f"({', '.join(side.get('cpu_features', []))}), load average {side['load_average_before'][0]:.1f} "
      f"before, {side['load_average_after'][0]:.1f} after; fastest base {best['setting']} "
      f"{best['img_s_median']:.1f} img/s -->")
print("| runtime | base img/s | " + " | ".join(patterns) + " |")
print("|---" * (len(patterns) + 2) + "|")
for setting, group in table.groupby("setting", sort=False):
    rows = group.set_index("pattern")
    print(f"| {setting} | {rows.loc['base', 'img_s_median']:.1f} | "
          + " | ".join(f"{rows.loc[p, 'speedup_over_best_base']:.2f}" for p in patterns) + " |")
same = table[table["pattern"] != "base"].groupby("setting", sort=False)["speedup_same_runtime"]
print("\nwithin each runtime: " + "; ".join(f"{s} {lo:.1f} to {hi:.1f}x" for s, (lo, hi)
                                           in same.agg(["min", "max"]).iterrows()))
