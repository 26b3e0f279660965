"""What a benchmark run leaves behind: the CSV rows, a provenance sidecar, a printed table."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from ds.paper import PAPER_MODEL, PAPER_V100_REPORTED_SPEEDUP
from ds.provenance import git_commit, machine, utc_now, versions

COLUMNS = ["model", "pattern", "runtime", "runtime_version", "device", "device_name", "torch",
           "dtype", "layout", "mode", "quantization", "batch", "input", "threads", "macs", "params",
           "img_s_median", "img_s_min", "img_s_max", "speedup_same_runtime",
           "speedup_over_best_base", "best_base", "bound_s", "achieved_fraction", "load_average"]


def setting_rows(model_name, results, bounds, macs, params, base: str,
                 load_average: float | None = None) -> list[dict]:
    """One CSV row per pattern of one setting; speed-up against `base` of the same setting
    (same runtime, dtype, layout, mode, threads, batch). The speed-up over the best base of
    the whole run is filled in later (ds.bench.compare.add_best_base)."""
    base_img_s = results[base].img_s_median
    rows = []
    for pattern, r in results.items():
        rows.append(dict(
            model=model_name, pattern=pattern, runtime=r.runtime, runtime_version=r.runtime_version,
            device=r.device.split(":")[0], device_name=r.device_name, torch=torch.__version__,
            dtype=r.dtype, layout=r.layout, mode=r.mode, quantization=r.quantization, batch=r.batch,
            input=r.input_size[0] if r.input_size[0] == r.input_size[1]
            else f"{r.input_size[0]}x{r.input_size[1]}", threads=r.threads,
            macs=macs[pattern], params=params[pattern],
            img_s_median=r.img_s_median, img_s_min=r.img_s_min, img_s_max=r.img_s_max,
            speedup_same_runtime=r.img_s_median / base_img_s, speedup_over_best_base=None,
            best_base=None, bound_s=bounds[pattern].bound_s,
            achieved_fraction=bounds[pattern].achieved_fraction, load_average=load_average))
    return rows


def to_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def format_table(frame: pd.DataFrame) -> str:
    """The paper's table layout, one block per setting, our speed-ups beside the paper's."""
    blocks = []
    keys = ["device_name", "runtime", "runtime_version", "dtype", "layout", "mode", "batch",
            "input", "threads"]
    for key, group in frame.groupby(keys, sort=False):
        setting = dict(zip(keys, key))
        model = group["model"].iloc[0]
        show_paper = model == PAPER_MODEL
        title = (f"{model} on {setting['device_name']} ({setting['threads']} threads), "
                 f"{setting['runtime']} {setting['runtime_version']} {setting['dtype']} "
                 f"{setting['layout']} {setting['mode']}, batch {setting['batch']}, input "
                 f"{setting['input']}; load average {group['load_average'].iloc[0]:.2f}; best base: "
                 f"{group['best_base'].iloc[0]}")
        # tables written before INT8 settings existed have no quantization column
        quantization = group["quantization"].iloc[0] if "quantization" in group else None
        if isinstance(quantization, str) and quantization:
            title += f"\nquantization: {quantization}"
        header = ["model", "MMACs", "img/s median [min, max]", "speed-up", "over best base"]
        if show_paper:
            header.append("paper V100 speed-up (reported)")
        header += ["bound ms", "achieved"]
        lines = [header]
        for _, row in group.iterrows():
            line = [row["pattern"], f"{row['macs'] / 1e6:.1f}",
                    f"{row['img_s_median']:.1f} [{row['img_s_min']:.1f}, {row['img_s_max']:.1f}]",
                    f"{row['speedup_same_runtime']:.2f}x", f"{row['speedup_over_best_base']:.2f}x"]
            if show_paper:
                paper = PAPER_V100_REPORTED_SPEEDUP.get(row["pattern"])
                line.append("-" if paper is None else f"{paper:.2f}x")
            line += [f"{row['bound_s'] * 1e3:.2f}", f"{row['achieved_fraction']:.1%}"]
            lines.append(line)
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
        fmt = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        text = [title, fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        text += [fmt(line) for line in lines[1:]]
        blocks.append("\n".join(text))
    return "\n\n".join(blocks)


def provenance(command: str, **extra) -> dict:
    """Who, where and when: versions, host, date, command, git state (pass `git=` as taken
    when the run started), CPU load."""
    extra.setdefault("git", git_commit())
    return {"command": command, "date_utc": utc_now(), **versions(), **machine(), **extra}


def write_sidecar(csv_path: Path, record: dict) -> Path:
    path = Path(csv_path).with_suffix(".json")
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path
