"""DDP with 2 CPU processes (gloo) under torchrun, on the synthetic dataset."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from train_fixtures import TINY, TINY_SIZE

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ds.train", "--backbone", TINY, "--dataset", "fake", "--input-size", str(TINY_SIZE),
           "--epochs", "2", "--batch-size", "32", "--lr", "0.02", "--limit-train", "128", "--limit-test", "64",
           "--device", "cpu", "--threads", "1", "--no-progress", "--search-budget", "4", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    # 128 images in global batches of 32 (16 per process): every image once per epoch
    gates = pd.read_csv(tmp_path / "gates.csv")
    assert len(gates) == 2 * 4 + 1
    assert (tmp_path / "patterns.json").is_file()
