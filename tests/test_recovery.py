"""Recovery after removal: annealed and progressive removal (ds.train.anneal), BatchNorm
recalibration (ds.train.recalibrate), held-out evaluation, and their options in TrainConfig / the CLI."""
import re

import pandas as pd
import pytest
import torch
from torch import nn

import ds
from ds import train
from ds.data import fake_dataset
from ds.linear import LinearRun, LinearStage
from ds.loaders import DeviceLoader
from ds.paths import get_module
from ds.train.anneal import (AnnealedStage, Blend, RemovalAnneal, gate, is_annealing, removal_windows,
                             removed_switches)
from ds.train.cli import main
from ds.train.cli import run as cli_run
from ds.train.recalibrate import recalibrate_batchnorm
from train_fixtures import TINY, TINY_SIZE, tiny_model  # noqa: F401 (fixture)

DS_E = ds.PATTERNS[TINY]["DS-E"]          # removes the stem's activation and blocks 2, 3, 5..13
REMOVED_E = [0, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13]
COMMON = ["--backbone", TINY, "--dataset", "fake", "--input-size", str(TINY_SIZE), "--batch-size", "32",
          "--lr", "0.02", "--warmup-epochs", "0", "--limit-train", "128", "--limit-test", "64",
          "--no-progress", "--seed", "2", "--pattern", "DS-E"]


def cli(*args):
    assert main(COMMON + [str(a) for a in args]) == 0


def loaders(n_train=128, n_test=64, batch=32):
    d = fake_dataset(n_train, n_test, size=TINY_SIZE, seed=0)
    return (DeviceLoader(d.train_images, d.train_labels, batch, d.mean, d.std, train=True),
            DeviceLoader(d.test_images, d.test_labels, batch, d.mean, d.std, train=False))


def shrunk(model, pattern=DS_E, final_act=True):
    return ds.apply_pattern(model, pattern, final_act=final_act)


def test_windows_groups_and_orders(tiny_model):
    net = shrunk(tiny_model)
    assert removed_switches(net) == REMOVED_E
    assert set(removal_windows(net, 0, 1, 10).values()) == {(0, 10)}
    # 12 switches in groups of 5: three consecutive windows over epochs 0.5 to 2 (10 steps each)
    windows = removal_windows(net, 0.5, 2, 20, group=5, order="reverse")
    assert [windows[s] for s in (13, 9, 7, 3, 0)] == [(10, 20), (10, 20), (20, 30), (20, 30), (30, 40)]
    explicit = removal_windows(net, 0, 3, 4, group=6, order="13,12,11,10,9,8,7,6,5,3,2,0")
    assert explicit[13] == (0, 6) and explicit[0] == (6, 12)
    with pytest.raises(ValueError, match=r"missing \[13\], not removed \[1\]"):
        removal_windows(net, 0, 3, 4, group=1, order="0,1,2,3,5,6,7,8,9,10,11,12")
    with pytest.raises(ValueError, match="less than one step"):
        removal_windows(net, 0, 1, 4, group=1)
    with pytest.raises(ValueError, match="removed activations"):
        removal_windows(tiny_model, 0, 1, 4)
    assert [gate(s, (2, 6)) for s in (0, 2, 3, 6, 9)] == [1.0, 1.0, 0.75, 0.0, 0.0]


def test_blended_activations_sit_where_the_block_had_them(tiny_model):
    tiny_model.eval()
    net = shrunk(tiny_model).eval()
    keys = set(net.state_dict())
    anneal = RemovalAnneal(net, {2: (0, 4), 0: (0, 4)})
    anneal.set_step(1)                                  # g = 0.75
    stage = get_module(net, "blocks.1.0").stages[0]     # switch 2: expand, depthwise, project
    assert isinstance(stage, AnnealedStage)
    assert [type(a) for a in stage.acts] == [Blend, Blend, nn.Identity]
    assert float(stage.acts[0].weight) == 0.75 and not stage.acts[0].act.inplace
    final = get_module(net, "blocks.1.0").final_act     # the post-block ReLU6 fades in
    assert isinstance(final, Blend) and float(final.weight) == 0.25
    assert isinstance(net.bn1.act, Blend) and float(net.bn1.act.weight) == 0.75   # the stem's ReLU6
    assert not isinstance(get_module(net, "blocks.1.1").stages[0], AnnealedStage)  # switch 3: no window
    assert set(net.state_dict()) == keys                # nothing to save: the checkpoint is the plain network
    x = torch.randn(2, 3, TINY_SIZE, TINY_SIZE)
    with pytest.raises(ds.MergeError, match="being annealed"):
        ds.merge(net)
    y = torch.randn(2, 8, 6, 6)                         # a Blend is x + w (act(x) - x)
    assert torch.allclose(final(y), y + 0.25 * (torch.clamp(y, 0, 6) - y))
    anneal.set_step(4)                                  # g = 0: stripped, the network ds.apply_pattern made
    assert anneal.done and not is_annealing(net) and isinstance(net.bn1.act, nn.Identity)
    assert type(get_module(net, "blocks.1.0").stages[0]) is LinearStage
    assert torch.equal(net(x), shrunk(tiny_model).eval()(x))


def test_anneal_at_the_start_is_the_trained_network_in_merge_ready_form(tiny_model):
    """g = 1: the original activations back in merge-ready form. Its hoisted padding puts act(BN(0))
    on the border ring where the block zero-padded; with a BN bias that makes that 0 the two agree."""
    tiny_model.eval()
    with torch.no_grad():
        get_module(tiny_model, "blocks.1.0.bn1").bias.fill_(-20.0)   # switch 2's expand: ReLU6(BN(0)) = 0
    pattern = [0, 1, 0] + [1] * 16                                    # the stem's activation and switch 2
    x = torch.randn(2, 3, TINY_SIZE, TINY_SIZE)
    for final_act in (True, False):
        net = shrunk(tiny_model, pattern, final_act=final_act).eval()
        anneal = RemovalAnneal(net, removal_windows(net, 0, 1, 4))
        anneal.set_step(0)
        assert torch.allclose(net(x), tiny_model(x), atol=1e-5)
        anneal.set_step(4)
        assert not torch.allclose(net(x), tiny_model(x), atol=1e-3)
    # without final_act consecutive removed blocks are one run, annealed stage by stage
    net = shrunk(tiny_model, DS_E, final_act=False)
    RemovalAnneal(net, removal_windows(net, 0, 1, 4)).set_step(0)
    runs = [m for m in net.modules() if isinstance(m, LinearRun)]
    assert any(len(run.stages) > 1 for run in runs)
    assert all(isinstance(stage, AnnealedStage) for run in runs for stage in run.stages)
    assert all(isinstance(run.final_act, nn.Identity) for run in runs)


def test_fit_through_the_anneal_ends_in_the_network_merge_deploys(tiny_model, tmp_path):
    train_loader, test_loader = loaders()
    net = shrunk(tiny_model)
    keys = set(net.state_dict())
    cfg = train.TrainConfig(epochs=2, lr=0.05, warmup_epochs=0, anneal_start=0.25, anneal_end=1.5, progressive=4,
                            removal_order="reverse", progress=False)
    result = train.fit(net, train_loader, test_loader, cfg, out_dir=tmp_path)
    model = result.model.eval()
    assert not is_annealing(model) and set(model.state_dict()) == keys
    merged = ds.merge(model)                            # verifies: raises MergeError above 1e-4 relative
    x = torch.randn(4, 3, TINY_SIZE, TINY_SIZE)
    assert torch.allclose(model(x), merged(x), rtol=1e-4, atol=1e-5)
    # the checkpoint loads as data (weights_only) into the plain shrunk network, same outputs
    ckpt = torch.load(tmp_path / train.CHECKPOINT, weights_only=True)
    assert ckpt["anneal"]["step"] == 8 and [13, 1, 3] in ckpt["anneal"]["windows"]
    loaded = ds.load_network(tmp_path / train.CHECKPOINT)
    assert torch.equal(loaded(x), model(x))


def test_resumed_anneal_is_the_uninterrupted_one(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    options = ["--epochs", 3, "--anneal-start", 0.5, "--anneal-end", 2.5, "--progressive", 6, "--holdout", 32]
    cli(*options, "--out", whole)
    cli(*options, "--out", parts, "--stop-after-epoch", 2)      # stops inside the second group's window
    assert train.load_checkpoint(parts / train.CHECKPOINT)["anneal"]["step"] == 6
    cli(*options, "--out", parts, "--resume")
    a, b = pd.read_csv(whole / "metrics.csv"), pd.read_csv(parts / "metrics.csv")
    columns = ["epoch", "train_loss", "train_acc", "holdout_acc", "test_acc", "lr"]
    pd.testing.assert_frame_equal(a[columns], b[columns])
    wa = train.load_checkpoint(whole / train.CHECKPOINT)["model"]
    wb = train.load_checkpoint(parts / train.CHECKPOINT)["model"]
    assert all(torch.equal(v, wb[k]) for k, v in wa.items())
    with pytest.raises(train.ResumeMismatch, match="--anneal-end: saved 2.5, now 2.0"):
        cli(*options[:-6], "--anneal-end", 2.0, *options[-4:], "--out", parts, "--resume")


def test_holdout_is_held_out_of_training(tmp_path):
    cli("--epochs", 1, "--holdout", 32, "--out", tmp_path, "--teacher", _base(tmp_path), "--anneal-end", 1)
    ckpt = train.load_checkpoint(tmp_path / train.CHECKPOINT)
    assert ckpt["steps_per_epoch"] == 3                 # 96 of the 128 images train, 32 are held out
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert 0 <= row["holdout_acc"] <= 100 and "test_acc" in row


def _base(tmp_path):
    """A base checkpoint (no pattern) to teach from."""
    out = tmp_path.parent / f"{tmp_path.name}-base"
    assert main([a for a in COMMON if a not in ("--pattern", "DS-E")] + ["--epochs", "1", "--out", str(out)]) == 0
    return out / train.CHECKPOINT


def test_recalibration_averages_batches_and_leaves_training_alone(tiny_model):
    train_loader, _ = loaders()
    net = shrunk(tiny_model)
    norm = net.bn1
    batches = [x for x, _ in train_loader][:2]
    with torch.no_grad():                               # the stem's BN input, per batch
        stem = [net.conv_stem(x) for x in batches]
    expected = torch.stack([s.mean((0, 2, 3)) for s in stem]).mean(0)
    rng = torch.get_rng_state()
    net.eval()
    assert recalibrate_batchnorm(net, train_loader, 2) == 2
    assert torch.allclose(norm.running_mean, expected, atol=1e-5) and norm.momentum == 0.1 and not net.training
    assert torch.equal(torch.get_rng_state(), rng)
    # training steps use the batches' own statistics: the same weights with or without it
    weights = []
    for batches_used in (0, 3):
        torch.manual_seed(0)
        model = shrunk(ds.create_model(TINY, num_classes=10, input_size=TINY_SIZE))
        cfg = train.TrainConfig(epochs=1, lr=0.05, warmup_epochs=0, recalibrate_bn=batches_used, progress=False)
        weights.append(train.fit(model, train_loader, None, cfg).model.state_dict())
    assert all(torch.equal(v, weights[1][k]) for k, v in weights[0].items() if "running" not in k
               and "num_batches" not in k)


@pytest.mark.parametrize("settings, match", [
    ({"anneal_end": 3.0}, r"anneal_end <= epochs \(2\)"),
    ({"anneal_start": 1.0, "anneal_end": 1.0}, "anneal_start < anneal_end"),
    ({"anneal_start": 0.5}, "needs anneal_end > 0"),
    ({"progressive": 2}, "needs anneal_end > 0"),
    ({"progressive": -1}, "progressive = -1 is invalid"),
    ({"anneal_end": 1.0, "removal_order": "reverse"}, "used only by progressive"),
    ({"anneal_end": 1.0, "progressive": 1, "removal_order": "deep"}, "not network or reverse"),
    ({"anneal_end": 1.0, "ema_decay": 0.9}, "ema_decay cannot be combined with annealing"),
    ({"recalibrate_bn": 1.5}, "recalibrate_bn = 1.5 is invalid"),
])
def test_bad_recovery_settings_are_explained(settings, match):
    with pytest.raises(ValueError, match=match):
        train.TrainConfig(epochs=2, **settings)


@pytest.mark.parametrize("args, match", [
    (["--anneal-end", "3"], r"anneal_end <= epochs \(1\)"),
    (["--progressive", "2", "--anneal-end", "1", "--removal-order", "0,2"], "must list each removed switch once"),
])
def test_bad_recovery_options_are_one_line(tmp_path, capsys, args, match):
    assert cli_run(COMMON + ["--epochs", "1", "--out", str(tmp_path)] + args) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and re.search(match, error)


def test_anneal_needs_a_shrunk_network(tmp_path, capsys):
    args = [a for a in COMMON if a not in ("--pattern", "DS-E")]
    assert cli_run(args + ["--epochs", "1", "--anneal-end", "1", "--out", str(tmp_path)]) == 1
    assert "needs a network with removed activations" in capsys.readouterr().err
