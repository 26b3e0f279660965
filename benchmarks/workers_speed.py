"""Is it faster to train two networks at a time, one thread each, than one after another with two
threads? The measurement behind a profile's `workers` (ds.study.workers) and ds.study.sizing's
WORKER_GAIN.

Each round times, one after the other, (a) one `benchmarks/train_speed.py` process with all
`--threads`, and (b) `--workers` such processes at once with threads // workers each, and records
images/s in all (each process's best warm epoch, summed). Rounds alternate the two so that a change
in the machine's load hits both; the gain is the median over rounds of (b) over (a).

    python benchmarks/workers_speed.py --threads 2 --workers 2 --rounds 3 \\
        --out benchmarks/results/workers_speed.csv
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def speeds(processes: int, threads: int, args, folder: Path) -> list[float]:
    """images/s of each of `processes` train_speed.py runs started at once with `threads` threads."""
    outs = [folder / f"p{processes}-{i}-{time.monotonic_ns()}.json" for i in range(processes)]
    command = [sys.executable, str(HERE / "train_speed.py"), "--device", "cpu", "--backbone", args.backbone,
               "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--limit-train",
               str(args.limit_train), "--threads", str(threads)]
    running = [subprocess.Popen(command + ["--out", str(out)], stdout=subprocess.DEVNULL) for out in outs]
    if any(p.wait() != 0 for p in running):
        raise SystemExit(f"error: a train_speed.py run failed: {' '.join(command)}")
    return [json.loads(out.read_text())["backbones"][args.backbone]["images_per_s"] for out in outs]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", default="mobilenetv2_035")
    p.add_argument("--threads", type=int, default=2, help="threads in all (one process has all of them)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3, help="per run; the first is warm-up")
    p.add_argument("--limit-train", type=int, default=3840, help="images per epoch")
    p.add_argument("--out", help="CSV of every round")
    args = p.parse_args(argv)
    if args.workers < 2 or args.threads < args.workers:
        p.error("--workers must be 2 or more and --threads at least --workers (one thread per worker)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(1, args.rounds + 1):
            for processes in ((1, args.workers) if round_ % 2 else (args.workers, 1)):
                load = os.getloadavg()[0]
                got = speeds(processes, args.threads // processes, args, Path(tmp))
                rows.append({"round": round_, "processes": processes, "threads_each": args.threads // processes,
                             "images_per_s": sum(got), "each": " ".join(f"{v:.1f}" for v in got),
                             "load_before": round(load, 2)})
                print(f"round {round_}: {processes} process(es) x {args.threads // processes} thread(s): "
                      f"{sum(got):.1f} images/s ({rows[-1]['each']}), load {load:.2f}", flush=True)
    table = pd.DataFrame(rows)
    one = table[table["processes"] == 1].set_index("round")["images_per_s"]
    many = table[table["processes"] == args.workers].set_index("round")["images_per_s"]
    gains = (many / one).tolist()
    print(f"gain of {args.workers} workers: median {statistics.median(gains):.2f} "
          f"(min {min(gains):.2f}, max {max(gains):.2f}) over {len(gains)} rounds")
    if args.out:
        table.assign(backbone=args.backbone, batch_size=args.batch_size, limit_train=args.limit_train,
                     date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     command="python benchmarks/workers_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
                     ).to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
