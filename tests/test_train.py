import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import ds
from ds import train
from ds.data import DataError, fake_dataset
from ds.loaders import DeviceLoader
from ds.meta import info
from ds.paths import get_module
from ds.train.cli import main
from train_fixtures import TINY, TINY_SIZE, tiny_model  # noqa: F401 (fixture)

COMMON = ["--backbone", TINY, "--dataset", "fake", "--input-size", str(TINY_SIZE), "--batch-size", "32",
          "--lr", "0.02", "--warmup-epochs", "0.5", "--limit-train", "128", "--limit-test", "64",
          "--no-progress", "--seed", "3"]
COMPARED = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr"]


def run(*args):
    assert main(COMMON + [str(a) for a in args]) == 0


def test_resume_gives_the_metrics_of_an_uninterrupted_run(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run("--epochs", 2, "--ema-decay", 0.9, "--out", whole)
    run("--epochs", 2, "--ema-decay", 0.9, "--out", parts, "--stop-after-epoch", 1)
    assert len(pd.read_csv(parts / "metrics.csv")) == 1
    run("--epochs", 2, "--ema-decay", 0.9, "--out", parts, "--resume")
    a, b = pd.read_csv(whole / "metrics.csv"), pd.read_csv(parts / "metrics.csv")
    pd.testing.assert_frame_equal(a[COMPARED + ["ema_test_acc"]], b[COMPARED + ["ema_test_acc"]])
    ckpt = train.load_checkpoint(parts / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and {"model", "optimizer", "scheduler", "scaler", "ema", "rng", "meta"} <= set(ckpt)
    assert ckpt["meta"] == info(train.build_model(TINY, 10, TINY_SIZE)).as_dict()
    assert ckpt["extra"]["cli"]["epochs"] == 2 and "search" not in ckpt and ckpt["hooks"] is None
    whole_state = train.load_checkpoint(whole / "checkpoint.pt")["model"]
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in whole_state.items())


def test_existing_output_needs_resume_and_a_matching_network(tmp_path):
    run("--epochs", 1, "--out", tmp_path)
    with pytest.raises(FileExistsError, match="--resume"):
        run("--epochs", 1, "--out", tmp_path)
    with pytest.raises(train.ResumeMismatch, match=r"--pattern: saved None, now 'DS-A'"):
        run("--epochs", 1, "--out", tmp_path, "--resume", "--pattern", "DS-A")


def test_finetune_shrunk_network_from_base_with_self_distillation(tmp_path):
    run("--epochs", 1, "--out", tmp_path / "base")
    base_ckpt = tmp_path / "base" / "checkpoint.pt"
    base_state, _ = train.model_state(base_ckpt)
    # --init loads the base weights before shrinking: the shrunk blocks reuse them under new names
    shrunk = train.build_model(TINY, 10, TINY_SIZE, ds.PATTERNS[TINY]["DS-A"], str(base_ckpt))
    run_2 = get_module(shrunk, "blocks.1.0")   # switch 2 is removed by DS-A
    assert torch.equal(run_2.stages[0].convs[0].weight, base_state["blocks.1.0.conv_pw.weight"])
    again = train.build_model(TINY, 10, TINY_SIZE, ds.PATTERNS[TINY]["DS-A"])
    train.load_base_weights(again, str(base_ckpt))
    assert all(torch.equal(v, shrunk.state_dict()[k]) for k, v in again.state_dict().items())

    run("--epochs", 1, "--out", tmp_path / "ft", "--pattern", "DS-A", "--init", base_ckpt, "--teacher", base_ckpt)
    ckpt = train.load_checkpoint(tmp_path / "ft" / "checkpoint.pt")
    assert ckpt["meta"]["pattern"] == list(ds.PATTERNS[TINY]["DS-A"])
    assert math.isfinite(pd.read_csv(tmp_path / "ft" / "metrics.csv")["train_loss"][0])
    # a shrunk checkpoint can teach, too: its meta rebuilds the shrunk network
    teacher = train.build_teacher(tmp_path / "ft" / "checkpoint.pt", TINY, 10, TINY_SIZE)
    assert not teacher.training


def test_search_cli_writes_gates_and_patterns(tmp_path):
    run("--epochs", 1, "--out", tmp_path, "--search-budget", 5, "--gate-lr", 0.05)
    assert {"checkpoint.pt", "metrics.csv", "gates.csv", "patterns.json"} <= {p.name for p in tmp_path.iterdir()}
    # a searched pattern feeds the finetuning stage as FILE:NAME
    run("--epochs", 1, "--out", tmp_path / "ft", "--pattern", f"{tmp_path / 'patterns.json'}:searched-k5",
        "--init", tmp_path / "checkpoint.pt")
    patterns = json.loads((tmp_path / "patterns.json").read_text())
    assert train.load_checkpoint(tmp_path / "ft" / "checkpoint.pt")["meta"]["pattern"] == patterns["searched-k5"]


@pytest.mark.parametrize("args, error, match", [
    (["--search-budget", 18], ValueError, "outside 0..17"),
    (["--pattern", "DS-Z"], ds.PatternError, "unknown pattern name 'DS-Z'"),
    (["--pattern", "0,1,1"], ds.PatternError, "has 19 switches"),
    (["--pattern", "0,1,2"], ds.PatternError, "pattern has 3 entries but mobilenetv2_035 has 19 switches"),
    (["--init", "missing.pt"], FileNotFoundError, "missing.pt"),
])
def test_bad_input_is_explained(tmp_path, args, error, match):
    with pytest.raises(error, match=match):
        run("--epochs", 1, "--out", tmp_path, *args)


def test_missing_dataset_names_ds_data(tmp_path, monkeypatch):
    monkeypatch.setenv("DS_DATA", str(tmp_path / "none"))
    with pytest.raises(DataError, match="DS_DATA"):
        main(["--backbone", TINY, "--dataset", "cifar10", "--epochs", "1", "--out", str(tmp_path / "o")])


def test_schedule_and_weight_decay_groups(tiny_model):
    f = train.warmup_cosine(total_steps=10, warmup_steps=2)
    assert [round(f(s), 3) for s in (0, 1, 2, 6)] == [0.5, 1.0, 1.0, 0.5] and f(10) == pytest.approx(0)
    decay, no_decay = train.param_groups(tiny_model, 1e-4)
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0 and len(decay["params"]) + len(no_decay["params"]) == len(list(tiny_model.parameters()))


@pytest.mark.skipif(not (os.environ.get("DS_DATA") and Path(os.environ["DS_DATA"], "cifar10-jpeg.tar.xz").is_file()),
                    reason="DS_DATA does not hold cifar10-jpeg.tar.xz")
def test_short_real_cifar10_run(tmp_path):
    assert main(["--backbone", TINY, "--dataset", "cifar10", "--input-size", "32", "--epochs", "1",
                       "--batch-size", "64", "--lr", "0.05", "--limit-train", "512", "--limit-test", "256",
                       "--no-progress", "--out", str(tmp_path)]) == 0
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert math.isfinite(row["train_loss"]) and 0 <= row["test_acc"] <= 100 and row["images_per_s"] > 0


def test_imagefolder_cli(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "img" / split / cls).mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "img" / split / cls / f"{i}.png")
    assert main(["--backbone", TINY, "--dataset", "imagefolder", "--data-dir", str(tmp_path / "img"),
                       "--input-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                       "--no-progress", "--out", str(tmp_path / "out")]) == 0
    row = pd.read_csv(tmp_path / "out" / "metrics.csv").iloc[0]
    assert row["epoch"] == 1 and math.isfinite(row["test_loss"])


def test_fit_api_with_bf16_autocast_and_ema(tiny_model, tmp_path):
    d = fake_dataset(64, 32, size=TINY_SIZE)
    loader = DeviceLoader(d.train_images, d.train_labels, 32, d.mean, d.std, train=True)
    test = DeviceLoader(d.test_images, d.test_labels, 32, d.mean, d.std, train=False)
    cfg = train.TrainConfig(epochs=2, lr=0.01, warmup_epochs=1, amp="bf16", ema_decay=0.5, progress=False)
    result = train.fit(tiny_model, loader, test, cfg, out_dir=tmp_path)
    assert list(result.metrics["epoch"]) == [1, 2] and result.ema is not None
    # the lr column is the lr of each epoch's last step: end of warm-up, then the end of the cosine
    assert result.metrics["lr"].tolist() == pytest.approx([0.01, 0.005])
    assert train.evaluate(result.model, test)["n"] == 32


def test_resumed_search_gives_the_same_score_trajectory(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run("--epochs", 2, "--search-budget", 6, "--out", whole)
    run("--epochs", 2, "--search-budget", 6, "--out", parts, "--stop-after-epoch", 1)
    run("--epochs", 2, "--search-budget", 6, "--out", parts, "--resume")
    pd.testing.assert_frame_equal(pd.read_csv(whole / "gates.csv"), pd.read_csv(parts / "gates.csv"))
    assert json.loads((whole / "patterns.json").read_text()) == json.loads((parts / "patterns.json").read_text())
    with pytest.raises(train.ResumeMismatch, match="--search-budget: saved 6, now 5"):
        run("--epochs", 2, "--search-budget", 5, "--out", parts, "--resume")
    # the scores live in the search's own checkpoint entry, not in the network's weights
    ckpt = train.load_checkpoint(parts / "checkpoint.pt")
    assert ckpt["hooks"] == "search" and ckpt["search"]["settings"]["budget"] == 6
    assert not any("gate" in key for key in ckpt["model"])


@pytest.mark.skipif(not (os.environ.get("DS_DATA") and Path(os.environ["DS_DATA"], "cifar10-jpeg.tar.xz").is_file()),
                    reason="DS_DATA does not hold cifar10-jpeg.tar.xz")
def test_cli_trains_cifar10_at_16_px_like_the_study(tmp_path):
    """--input-size 16 resizes CIFAR-10 as the study's profiles do (ds.data.prepare), same subset."""
    assert main(["--backbone", TINY, "--dataset", "cifar10", "--input-size", "16", "--epochs", "1",
                 "--batch-size", "32", "--limit-train", "64", "--limit-test", "32", "--no-progress", "--threads", "1",
                 "--out", str(tmp_path)]) == 0
    ckpt = train.load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["meta"]["input_size"] == 16 and ckpt["steps_per_epoch"] == 2
    assert pd.read_csv(tmp_path / "metrics.csv")["epoch"].tolist() == [1]
