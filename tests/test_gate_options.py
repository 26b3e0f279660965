"""How the gate search trains its scores: ds.gating.SearchOptions, its CLI flags, resume."""
import pytest
import torch

from ds import gating
from ds.loaders import DeviceLoader
from ds.train import ResumeMismatch, TrainConfig
from ds.train.cli import main
from train_fixtures import TINY, TINY_SIZE, fake_data, tiny_model  # noqa: F401 (fixtures)

CFG = TrainConfig(epochs=1, lr=0.01, warmup_epochs=0, gate_lr=0.05, progress=False)


def loader(data, **kw):
    return DeviceLoader(data.train_images, data.train_labels, 32, data.mean, data.std, train=True, **kw)


@pytest.mark.parametrize("field, value, accepted", [
    ("optimizer", "rmsprop", "adam or sgd"), ("init", "random", "zeros or sensitivity"),
    ("centre", 1, "True or False"), ("weight_decay", -1.0, ">= 0"), ("temperature", 0.0, "> 0"),
    ("init_scale", float("nan"), ">= 0"), ("init_images", 0, "an int >= 1"),
])
def test_bad_options_are_one_line_errors(field, value, accepted):
    with pytest.raises(ValueError, match=rf"SearchOptions.{field} = .* is invalid: accepted .*{accepted}") as error:
        gating.SearchOptions(**{field: value})
    assert "\n" not in str(error.value)


def test_initial_scores_standardize_the_drops():
    drops = [4.0, 0.0, 2.0, 2.0]
    scores = gating.initial_scores(drops, gating.SearchOptions(init="sensitivity", init_scale=2.0))
    assert scores.mean().abs() < 1e-6 and scores.std(unbiased=False).item() == pytest.approx(2.0)
    assert scores.argmax().item() == 0 and scores.argmin().item() == 1
    assert gating.initial_scores([1.0, 1.0], gating.SearchOptions(init="sensitivity")).tolist() == [0.0, 0.0]
    assert gating.initial_scores(drops, gating.SearchOptions(init="zeros")).tolist() == [0.0] * 4


def test_temperature_scales_the_straight_through_gradient():
    for temperature in (1.0, 4.0):
        gates = gating.GateScores(3, budget=1, temperature=temperature)
        with torch.no_grad():
            gates.scores.copy_(torch.tensor([1.0, -0.5, 0.2]))
        assert gates.gates().tolist() == [1.0, 0.0, 0.0]   # the forward is the hard top-k at any temperature
        gates.gates().sum().backward()
        s = torch.sigmoid(gates.scores.detach() / temperature)
        assert torch.allclose(gates.scores.grad, s * (1 - s) / temperature)


def test_centring_removes_the_common_drift_and_keeps_the_top_k():
    gates = gating.GateScores(4, budget=2)
    hooks = gating.GateSearch(gates, [1, 2, 3, 4], 0.1, gating.SearchOptions(centre=True))
    with torch.no_grad():
        gates.scores.copy_(torch.tensor([3.0, 1.0, 2.0, 6.0]))
    mask = gates.hard_mask()
    gates.scores.grad = torch.tensor([-1.0, -2.0, -3.0, -6.0])   # every score pushed up (removing hurts)
    hooks.before_step()
    assert torch.allclose(gates.scores.grad, torch.tensor([2.0, 1.0, 0.0, -3.0]))   # relative to the mean
    hooks.after_step()
    assert gates.scores.mean().abs() < 1e-6 and torch.equal(gates.hard_mask(), mask)


def test_the_optimizer_follows_the_options():
    def optimizer(**kw):
        return gating.GateSearch(gating.GateScores(3, 1), [1, 2, 3], 0.05, gating.SearchOptions(**kw),
                                 momentum=0.8, nesterov=True).optimizer

    sgd = optimizer(optimizer="sgd", weight_decay=5e-4)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.8 and sgd.defaults["weight_decay"] == 5e-4 and sgd.defaults["nesterov"]
    assert type(optimizer(optimizer="adam")) is torch.optim.Adam
    assert isinstance(optimizer(optimizer="adam", weight_decay=0.01), torch.optim.AdamW)


def test_centred_search_keeps_scores_at_mean_zero_and_legacy_drifts(tiny_model, fake_data):
    centred = gating.search(tiny_model, loader(fake_data), None, 6, CFG, options=gating.SearchOptions(centre=True))
    legacy = gating.search(tiny_model, loader(fake_data), None, 6, CFG, options=gating.LEGACY)
    rows = centred.trajectory.drop(columns="step")
    assert (rows.mean(axis=1).abs() < 1e-5).all() and rows.iloc[-1].std() > 0
    assert abs(legacy.trajectory.drop(columns="step").iloc[-1].mean()) > 1e-3   # the first version's drift


def test_sensitivity_init_starts_from_the_measured_ranking(tiny_model, fake_data):
    train = loader(fake_data)
    options = gating.SearchOptions(init="sensitivity", init_images=64)
    measured = gating.sensitivity_init(tiny_model, train, 64, seed=CFG.seed)
    result = gating.search(tiny_model, train, None, 6, CFG, options=options)
    start = result.trajectory.drop(columns="step").iloc[0].tolist()
    assert start == pytest.approx(gating.initial_scores(measured.scores, options).tolist(), abs=1e-6)
    given = gating.search(tiny_model, train, None, 6, CFG, options=options, init_scores=measured)
    assert given.scores == pytest.approx(result.scores, abs=1e-5)   # the same drops, given or measured


def test_bad_initial_scores_are_refused(tiny_model, fake_data):
    train = loader(fake_data)
    with pytest.raises(ValueError, match="need options.init 'sensitivity', not 'zeros'"):
        gating.search(tiny_model, train, None, 6, CFG, options=gating.SearchOptions(init="zeros"),
                      init_scores=[0.0] * 17)
    with pytest.raises(ValueError, match=r"one finite number per searched block \(17\), got 3"):
        gating.search(tiny_model, train, None, 6, CFG, options=gating.SearchOptions(init="sensitivity"),
                      init_scores=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="ds.loaders.DeviceLoader"):
        gating.sensitivity_init(tiny_model, [(torch.zeros(1), torch.zeros(1))], 8, seed=0)


def test_a_resume_with_other_options_is_refused(tiny_model, fake_data, tmp_path):
    train = loader(fake_data)
    gating.search(tiny_model, train, None, 6, CFG, out_dir=tmp_path, options=gating.SearchOptions(centre=True))
    with pytest.raises(ResumeMismatch, match=r"search options: saved .*'centre': True.*now .*'centre': False"):
        gating.search(tiny_model, train, None, 6, CFG, out_dir=tmp_path, resume=True,
                      options=gating.SearchOptions(centre=False, optimizer="sgd"))
    # the first version's checkpoints hold no options: they resume as LEGACY
    gating.search(tiny_model, train, None, 6, CFG, out_dir=tmp_path / "legacy", options=gating.LEGACY)
    gating.search(tiny_model, train, None, 6, CFG, out_dir=tmp_path / "legacy", resume=True, options=gating.LEGACY)


COMMON = ["--backbone", TINY, "--dataset", "fake", "--input-size", str(TINY_SIZE), "--batch-size", "32",
          "--lr", "0.02", "--warmup-epochs", "0", "--limit-train", "96", "--limit-test", "32", "--no-progress",
          "--epochs", "1"]


def test_gate_flags_reach_the_search(tmp_path, monkeypatch):
    seen = {}
    search = gating.search

    def spy(*args, **kwargs):
        seen["options"] = kwargs["options"]
        return search(*args, **kwargs)

    monkeypatch.setattr(gating, "search", spy)
    assert main(COMMON + ["--out", str(tmp_path), "--search-budget", "6", "--gate-optimizer", "sgd",
                          "--gate-weight-decay", "5e-4", "--no-gate-centre", "--gate-init", "sensitivity",
                          "--gate-init-images", "32", "--gate-init-scale", "0.5", "--gate-temperature", "2"]) == 0
    assert seen["options"] == gating.SearchOptions(optimizer="sgd", weight_decay=5e-4, centre=False,
                                                   init="sensitivity", init_images=32, init_scale=0.5,
                                                   temperature=2.0)
    assert main(COMMON + ["--out", str(tmp_path / "default"), "--search-budget", "6"]) == 0
    assert seen["options"] == gating.SearchOptions()


@pytest.mark.parametrize("args, message", [
    (["--gate-centre"], "--gate-centre: options of the gate search"),
    (["--search-budget", "3", "--search-method", "dp", "--gate-init", "zeros"], "--gate-init: options of the gate"),
    (["--search-budget", "3", "--gate-init", "random"], "argument --gate-init: invalid choice: 'random'"),
    (["--search-budget", "3", "--gate-temperature", "0"], "argument --gate-temperature: 0 is out of range"),
])
def test_bad_gate_flags_are_one_line_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(COMMON + ["--out", str(tmp_path / "out")] + args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
