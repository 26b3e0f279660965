"""Bad input to training gets a clear error, and no error loses finished work."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from ds import train
from ds.data import fake_dataset
from ds.loaders import DeviceLoader
from ds.meta import info
from ds.train.cli import main
from train_fixtures import TINY, TINY_SIZE, tiny_model  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--backbone", TINY, "--dataset", "fake", "--input-size", str(TINY_SIZE), "--batch-size", "32",
          "--lr", "0.02", "--limit-train", "64", "--limit-test", "32", "--no-progress"]


def _default_sigint():
    """In the child: Ctrl-C as in a terminal. A shell without job control starts background jobs
    with SIGINT ignored, and Python keeps an ignored SIGINT ignored, so a test run from such a
    job would never see the interrupt it sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_subprocess(*args, **popen):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("DS_TRACEBACK", None)
    return subprocess.Popen([sys.executable, "-m", "ds.train", *map(str, args)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint, **popen)


# ---------------------------------------------------------------- arguments

@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "argument --epochs: 0 is out of range: accepted an integer >= 1"),
    (["--batch-size", "0"], "argument --batch-size: 0 is out of range: accepted an integer >= 1"),
    (["--limit-train", "0"], "argument --limit-train: 0 is out of range: accepted an integer >= 1"),
    (["--lr", "nan"], "argument --lr: nan is out of range: accepted a number > 0"),
    (["--lr", "-0.1"], "argument --lr: -0.1 is out of range: accepted a number > 0"),
    (["--lr", "fast"], "argument --lr: 'fast' is not a number > 0"),
    (["--ema-decay", "1"], "argument --ema-decay: 1 is out of range: accepted a number > 0 and < 1"),
    (["--search-budget", "3", "--pattern", "DS-A"], "--search-budget and --pattern exclude each other"),
    (["--resume", "--restart"], "argument --restart: not allowed with argument --resume"),
])
def test_bad_values_are_refused_with_the_accepted_range(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(COMMON + ["--out", str(tmp_path / "out")] + args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_train_config_refuses_bad_values():
    with pytest.raises(ValueError, match=r"TrainConfig.lr = nan is invalid: accepted a finite number in \(0"):
        train.TrainConfig(lr=float("nan"))
    with pytest.raises(ValueError, match=r"TrainConfig.epochs = 0 is invalid: accepted an int >= 1"):
        train.TrainConfig(epochs=0)


def test_unwritable_out_is_one_line_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = cli_subprocess(*COMMON, "--epochs", 1, "--out", blocker / "run")
    stdout, stderr = done.communicate(timeout=120)
    assert done.returncode == 1, stderr
    assert stderr.strip().splitlines() == [f"python -m ds.train: error: --out {blocker / 'run'} cannot be written "
                                           f"(Not a directory); choose a writable directory"]
    assert "epoch=" not in stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(Exception, match=f"--out {tmp_path / 'ro'} cannot be written"):
        main(COMMON + ["--epochs", "1", "--out", str(tmp_path / "ro")])


def test_ctrl_c_prints_the_resume_command_and_exits_130(tmp_path):
    out = tmp_path / "run"
    proc = cli_subprocess(*COMMON, "--epochs", 1000, "--threads", 1, "--out", out)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (out / "checkpoint.pt").is_file(), proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr
    assert lines[0].startswith("interrupted; continue with: python -m ds.train --backbone mobilenetv2_035")
    assert lines[0].endswith(f"--out {out} --resume")
    assert train.load_checkpoint(out / "checkpoint.pt")["epoch"] >= 0   # the saved epoch is intact


# ---------------------------------------------------------------- a diverging run

class PoisonedLoader:
    """Batches of a DeviceLoader; from epoch `poisoned_epoch` on, batch 2 holds NaN."""

    def __init__(self, loader, poisoned_epoch):
        self.loader, self.poisoned_epoch, self.epoch = loader, poisoned_epoch, 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for step, (x, y) in enumerate(self.loader):
            yield (x * float("nan") if self.epoch >= self.poisoned_epoch and step == 1 else x), y


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_model, tmp_path):
    d = fake_dataset(96, 32, size=TINY_SIZE)
    loader = PoisonedLoader(DeviceLoader(d.train_images, d.train_labels, 32, d.mean, d.std, train=True), 1)
    cfg = train.TrainConfig(epochs=3, lr=0.01, progress=False)
    with pytest.raises(train.NonFiniteLoss, match=rf"epoch 2, step 2 of 3; the last good checkpoint, "
                                                   rf"{tmp_path / 'checkpoint.pt'} \(epoch 1\), is kept"):
        train.fit(tiny_model, loader, None, cfg, out_dir=tmp_path)
    ckpt = train.load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 0 and len(pd.read_csv(tmp_path / "metrics.csv")) == 1
    train.model_state(ckpt)   # finite weights: no CorruptCheckpoint


def test_non_finite_loss_in_the_first_epoch_says_nothing_was_saved(tiny_model, tmp_path):
    d = fake_dataset(96, 32, size=TINY_SIZE)
    loader = PoisonedLoader(DeviceLoader(d.train_images, d.train_labels, 32, d.mean, d.std, train=True), 0)
    with pytest.raises(train.NonFiniteLoss, match="epoch 1, step 2 of 3; no checkpoint was written yet"):
        train.fit(tiny_model, loader, None, train.TrainConfig(epochs=2, progress=False), out_dir=tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()


# ---------------------------------------------------------------- broken checkpoints

@pytest.fixture
def saved(tiny_model, tmp_path):
    path = tmp_path / "good.pt"
    train.save_checkpoint({"model": tiny_model.state_dict(), "meta": info(tiny_model).as_dict(), "epoch": 0}, path)
    return path


def test_truncated_or_foreign_files_name_the_file(saved, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    a_list = tmp_path / "list.pt"
    torch.save([1, 2, 3], a_list)
    for path, problem in ((truncated, "cannot be read as a checkpoint"), (text, "cannot be read as a checkpoint"),
                          (a_list, "holds a list, not a checkpoint")):
        with pytest.raises(train.CorruptCheckpoint, match=rf"{path}.*{problem}"):
            train.model_state(path)
    no_model = tmp_path / "no-model.pt"
    torch.save({"weights": [1.0], "epoch": 3}, no_model)
    with pytest.raises(train.CorruptCheckpoint, match=rf"{no_model} is neither a ds checkpoint"):
        train.model_state(no_model)


def test_resuming_a_checkpoint_without_training_state_names_the_missing_keys(tiny_model, saved, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(saved.read_bytes())   # weights only, as the study adopts a base network
    d = fake_dataset(64, 32, size=TINY_SIZE)
    loader = DeviceLoader(d.train_images, d.train_labels, 32, d.mean, d.std, train=True)
    with pytest.raises(train.CorruptCheckpoint, match=rf"{out / 'checkpoint.pt'} lacks 'optimizer', 'scheduler'"):
        train.fit(tiny_model, loader, None, train.TrainConfig(epochs=1, progress=False), out_dir=out, resume=True)


@pytest.mark.parametrize("value, problem", [(float("nan"), "NaN or infinite"), (-1.0, "negative running variances")])
def test_broken_batchnorm_statistics_name_the_layer(tiny_model, tmp_path, value, problem):
    state = tiny_model.state_dict()
    state["blocks.2.1.bn2.running_var"][3] = value
    path = tmp_path / "broken.pt"
    train.save_checkpoint({"model": state, "meta": info(tiny_model).as_dict()}, path)
    with pytest.raises(train.CorruptCheckpoint, match=rf"{path} is broken: .*blocks\.2\.1\.bn2.*{problem}"):
        train.model_state(path)
    with pytest.raises(train.CorruptCheckpoint, match=rf"is broken: .*blocks\.2\.1\.bn2.*{problem}"):
        train.load_weights(tiny_model, state, str(path))


def test_checkpoints_of_older_versions_still_load(tiny_model, tmp_path):
    """A "meta" dict with keys NetInfo lacks, and gate scores inside the network's weights."""
    state = dict(tiny_model.state_dict(), **{"ds_gates.scores": torch.zeros(17)})
    meta = dict(info(tiny_model).as_dict(), search_budget=4, args={"epochs": 3})
    path = tmp_path / "old.pt"
    train.save_checkpoint({"model": state, "meta": meta, "epoch": 2}, path)
    teacher = train.build_teacher(path, TINY, 10, TINY_SIZE)
    assert info(teacher).backbone == TINY
    assert "ds_gates.scores" not in train.model_state(path)[0]


def test_the_training_library_does_not_import_the_search():
    code = "import sys, ds.train; assert 'ds.gating' not in sys.modules, 'ds.train imports ds.gating'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
