"""What the training sweeps (recipe_sweep.py, recovery_sweep.py) share: one `python -m ds.train` run
per configuration in runs/<sweep>/<name>/, resumed when it was interrupted, with the command it ran,
when it finished, its wall time and the load average before and after in <name>/sweep.txt."""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def command(runs: Path, name: str, arguments: dict, resume: bool) -> list[str]:
    """The ds.train command of configuration `name`: `--key value` per argument (`--key` for True,
    nothing for None), its output directory and, when `resume`, --resume."""
    args = [sys.executable, "-m", "ds.train"]
    for key, value in arguments.items():
        if value is True:
            args.append(f"--{key}")
        elif value is not None:
            args += [f"--{key}", str(value)]
    args += ["--out", str((runs / name).relative_to(ROOT)), "--no-progress"]
    if resume:
        args.append("--resume")
    return args


def shown(cmd: list[str]) -> str:
    """A command as the sweeps record it: `python -m ds.train ...`, paths relative to the repository."""
    return shlex.join(["python"] + cmd[1:]).replace(f"{ROOT}/", "")


def finished(runs: Path, name: str, epochs: int) -> bool:
    metrics = runs / name / "metrics.csv"
    return metrics.is_file() and len(pd.read_csv(metrics)) >= epochs


def run(runs: Path, name: str, arguments: dict) -> None:
    """Train configuration `name` (resuming its checkpoint if there is one) and write its sweep.txt."""
    cmd = command(runs, name, arguments, (runs / name / "checkpoint.pt").is_file())
    text = shown(cmd)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {text}", flush=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    load_before = os.getloadavg()
    started = time.time()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    (runs / name / "sweep.txt").write_text(
        f"command: {text}\nfinished_utc: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
        f"wall_s: {time.time() - started:.0f}\nload_before: {load_before[0]:.2f}\n"
        f"load_after: {os.getloadavg()[0]:.2f}\n")


def keep_published(results: Path, collected: pd.DataFrame) -> pd.DataFrame:
    """`collected` (the rows of the configurations whose runs are here) with the published rows of
    every other configuration: runs/ does not survive a move to a new machine, and a sweep's table
    must not lose the configurations a previous machine ran."""
    if not results.is_file():
        return collected
    published = pd.read_csv(results)
    kept = published[~published["config"].isin(set(collected["config"]))]
    return pd.concat([kept, collected], ignore_index=True)


def curve(runs: Path, name: str, stage: int, arguments: dict) -> pd.DataFrame | None:
    """Configuration `name`'s training curve (its metrics.csv) with the sweep's record beside every
    epoch: config, stage, the arguments as arg_* columns, when it finished, the load around it and
    its command; None when it has not run on this machine."""
    metrics = runs / name / "metrics.csv"
    if not metrics.is_file():
        return None
    table = pd.read_csv(metrics)
    record = runs / name / "sweep.txt"
    info = dict(line.split(": ", 1) for line in record.read_text().splitlines()) if record.is_file() else {}
    for key, value in arguments.items():   # arg_lr beside the curve's lr (the epoch's last)
        table[f"arg_{key.replace('-', '_')}"] = value
    table.insert(0, "config", name)
    table.insert(1, "stage", stage)
    table["finished_utc"] = info.get("finished_utc", "")
    table["load_before"] = info.get("load_before", "")
    table["load_after"] = info.get("load_after", "")
    table["command"] = info.get("command", shown(command(runs, name, arguments, False))).replace(f"{ROOT}/", "")
    return table


def run_missing(runs: Path, configs: dict, arguments, only, collect) -> None:
    """Train every configuration of `configs` (those in `only`, when given) not finished yet, each
    with `arguments(settings)`, and `collect()` after each one."""
    for name, settings in configs.items():
        if (only and name not in only) or finished(runs, name, arguments(settings)["epochs"]):
            continue
        run(runs, name, arguments(settings))
        collect()


def main(description: str, runs: Path, stages: dict[int, dict], arguments, collect, stage0=None) -> None:
    """A sweep's command line: --stage N runs the missing configurations of stage N (--only some
    of them), then collects; --collect only rewrites the results. `stage0`, when given, is a stage 0
    that trains nothing (run as it is, then collected)."""
    p = argparse.ArgumentParser(description=description)
    choices = ([0] if stage0 else []) + sorted(stages)
    p.add_argument("--stage", type=int, choices=choices, help="run the missing configurations of this stage")
    p.add_argument("--only", nargs="+", help="configuration names to run (of --stage)")
    p.add_argument("--collect", action="store_true", help="only rewrite the results table")
    a = p.parse_args()
    if a.stage is None and not a.collect:
        p.error("give --stage N to run configurations, or --collect")
    if a.stage == 0 and stage0:
        stage0()
    elif a.stage is not None:
        configs = stages[a.stage]
        unknown = sorted(set(a.only or []) - set(configs))
        if unknown:
            p.error(f"unknown configuration(s) {unknown}; stage {a.stage} has {sorted(configs)}")
        run_missing(runs, configs, arguments, a.only, collect)
    collect()
