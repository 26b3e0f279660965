"""A resumed run is the run that was asked for: changed settings are refused, naming them."""
import dataclasses

import pandas as pd
import pytest

from ds import train
from ds.data import fake_dataset
from ds.loaders import DeviceLoader
from ds.train.cli import main
from train_fixtures import TINY, TINY_SIZE, tiny_model  # noqa: F401 (fixture)

COMMON = ["--backbone", TINY, "--dataset", "fake", "--input-size", str(TINY_SIZE), "--lr", "0.02",
          "--no-progress", "--seed", "1", "--epochs", "2", "--batch-size", "32", "--limit-train", "64",
          "--limit-test", "32"]


def cli(*args):
    return main(COMMON + [str(a) for a in args])


@pytest.fixture(scope="module")
def half_run(tmp_path_factory):
    """A CLI run stopped after epoch 1 of 2."""
    out = tmp_path_factory.mktemp("half")
    assert cli("--out", out, "--stop-after-epoch", 1) == 0
    return out


@pytest.mark.parametrize("change, listed", [
    (["--lr", "0.05"], "--lr: saved 0.02, now 0.05"),
    (["--epochs", "3"], "--epochs: saved 2, now 3"),
    (["--batch-size", "16"], "--batch-size: saved 32, now 16"),
    (["--limit-train", "96"], "--limit-train: saved 64, now 96"),
])
def test_resume_with_changed_settings_is_refused(half_run, change, listed):
    argv = COMMON + ["--out", str(half_run), "--resume"] + change   # the later value wins in argparse
    with pytest.raises(train.ResumeMismatch, match=listed) as error:
        main(argv)
    assert "--restart" in str(error.value)
    assert len(pd.read_csv(half_run / "metrics.csv")) == 1   # nothing was trained


def test_resume_without_a_checkpoint_names_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"no checkpoint.pt in {tmp_path / 'new'}.*without --resume"):
        cli("--out", tmp_path / "new", "--resume")


def test_restart_starts_over_and_says_so(tmp_path, capsys):
    assert cli("--out", tmp_path, "--epochs", 1, "--lr", 0.05) == 0
    assert cli("--out", tmp_path, "--restart", "--epochs", 1) == 0
    assert f"--restart: starting over in {tmp_path} (removed checkpoint.pt, metrics.csv)" in capsys.readouterr().err
    assert train.load_checkpoint(tmp_path / "checkpoint.pt")["config"]["lr"] == 0.02
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 1


def test_resume_may_change_threads_and_progress(tmp_path):
    assert cli("--out", tmp_path, "--stop-after-epoch", 1) == 0
    argv = [a for a in COMMON if a != "--no-progress"]
    assert main(argv + ["--out", str(tmp_path), "--resume", "--threads", "1"]) == 0
    assert pd.read_csv(tmp_path / "metrics.csv")["epoch"].tolist() == [1, 2]


def test_fit_resume_compares_the_configuration(tiny_model, tmp_path):
    d = fake_dataset(64, 32, size=TINY_SIZE)
    loader = DeviceLoader(d.train_images, d.train_labels, 32, d.mean, d.std, train=True)
    cfg = train.TrainConfig(epochs=2, lr=0.01, progress=False, stop_after_epoch=1)
    train.fit(tiny_model, loader, None, cfg, out_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume=False would overwrite it"):
        train.fit(tiny_model, loader, None, cfg, out_dir=tmp_path)
    with pytest.raises(train.ResumeMismatch, match=r"lr: saved 0.01, now 0.02.*warmup_epochs: saved 1.0, now 0"):
        train.fit(tiny_model, loader, None, dataclasses.replace(cfg, lr=0.02, warmup_epochs=0), out_dir=tmp_path,
                  resume=True)
    smaller = DeviceLoader(d.train_images, d.train_labels, 16, d.mean, d.std, train=True)
    with pytest.raises(train.ResumeMismatch, match=r"training steps per epoch .*: saved 2, now 4"):
        train.fit(tiny_model, smaller, None, cfg, out_dir=tmp_path, resume=True)
    # progress and stop_after_epoch may change (the study resumes piece by piece this way)
    result = train.fit(tiny_model, loader, None, dataclasses.replace(cfg, stop_after_epoch=None, progress=True),
                       out_dir=tmp_path, resume=True)
    assert result.metrics["epoch"].tolist() == [1, 2]
