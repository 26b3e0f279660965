import json

import pandas as pd
import pytest
import torch

import ds
from ds import gating
from ds.loaders import DeviceLoader
from ds.paths import set_module
from ds.train import ResumeMismatch, TrainConfig, fit
from train_fixtures import TINY_SIZE, fake_data, tiny_model  # noqa: F401 (fixtures)


def test_hard_top_k_obeys_the_budget():
    torch.manual_seed(0)
    for budget in (0, 1, 5, 17):
        gates = gating.GateScores(17, budget)
        with torch.no_grad():
            gates.scores.copy_(torch.randn(17))
        mask = gates.gates()
        assert mask.sum().item() == budget and set(mask.tolist()) <= {0.0, 1.0}
        kept = set(torch.nonzero(mask).flatten().tolist())
        assert kept == set(torch.topk(gates.scores.detach(), budget).indices.tolist())


def test_budget_beyond_the_switchable_blocks_is_refused(tiny_model):
    with pytest.raises(ValueError, match="outside 0..17"):
        gating.add_gates(tiny_model, 18)


def test_straight_through_estimator_gives_every_score_a_gradient(tiny_model):
    gated, gates = gating.add_gates(tiny_model, budget=8)
    gated.train()
    x = torch.randn(4, 3, TINY_SIZE, TINY_SIZE)
    torch.nn.functional.cross_entropy(gated(x), torch.tensor([0, 1, 2, 3])).backward()
    grad = gates.scores.grad
    assert grad is not None and grad.shape == (17,) and (grad != 0).all()   # kept and removed blocks alike


def test_gates_reproduce_the_network_with_and_without_activations(tiny_model):
    tiny_model.eval()
    x = torch.randn(2, 3, TINY_SIZE, TINY_SIZE)
    all_on = gating.add_gates(tiny_model, budget=17)[0].eval()
    assert torch.allclose(all_on(x), tiny_model(x), atol=1e-5)
    all_off = gating.add_gates(tiny_model, budget=0)[0].eval()
    linear = gating.add_gates(tiny_model, budget=0)[0]   # same structure, activations replaced by identities
    for sw in gating.searchable_switches(tiny_model):
        for path in sw.act_paths:
            set_module(linear, path, torch.nn.Identity())
    assert torch.allclose(all_off(x), linear.eval()(x), atol=1e-5)
    assert not torch.allclose(all_off(x), tiny_model(x), atol=1e-3)
    assert not any(p.data_ptr() == q.data_ptr() for p, q in zip(all_on.parameters(), tiny_model.parameters()))


def test_gated_network_has_the_weights_of_the_network_and_no_gate_attributes(tiny_model):
    """The scores live outside the network: no ds_gates.* keys in its weights or parameters."""
    gated, gates = gating.add_gates(tiny_model, budget=5)
    assert gated.state_dict().keys() == tiny_model.state_dict().keys()
    assert len(list(gated.parameters())) == len(list(tiny_model.parameters()))
    assert not any(p is gates.scores for p in gated.parameters())
    assert not [name for name in vars(gated) if name.startswith("ds_") and name != "ds_info"]


def test_latency_term_pushes_blocks_that_save_more_time_towards_removal():
    gates = gating.GateScores(4, budget=2)
    gates.set_latency([1.0, 4.0, 2.0, 0.5], weight=1.0)
    gates.latency_penalty().backward()
    grad = gates.scores.grad
    assert (grad > 0).all() and grad.argmax().item() == 1   # gradient descent lowers block 1's score most
    with torch.no_grad():
        gates.scores -= 10 * grad
    assert gates.hard_mask()[1] == 0 and gates.hard_mask()[3] == 1


def test_search_result_patterns_cover_every_budget(tiny_model):
    n = len(ds.switches(tiny_model))
    result = gating.random_ranking(tiny_model, seed=1)
    assert len(result.patterns) == 18
    for k in range(18):
        p = result.pattern(k)
        assert len(p) == n and p[0] == 1 and p[-1] == 1 and sum(p[1:-1]) == k
    assert result.pattern(3) == [1 if i in (0, n - 1) or i in result.ranking[:3] else 0 for i in range(n)]
    assert all(sum(p) == 2 + 5 for p in gating.random_patterns(tiny_model, 5, count=3))


def test_search_trains_scores_and_writes_outputs(tiny_model, fake_data, tmp_path):
    train = DeviceLoader(fake_data.train_images, fake_data.train_labels, 32, fake_data.mean, fake_data.std, train=True)
    test = DeviceLoader(fake_data.test_images, fake_data.test_labels, 64, fake_data.mean, fake_data.std, train=False)
    cfg = TrainConfig(epochs=1, lr=0.01, warmup_epochs=0, gate_lr=0.05, progress=False)
    result = gating.search(tiny_model, train, test, budget=6, cfg=cfg, out_dir=tmp_path,
                           latency={str(i): float(i) for i in range(1, 18)}, latency_weight=0.1)
    assert any(s != 0 for s in result.scores)
    gates_csv = pd.read_csv(tmp_path / "gates.csv")
    assert list(gates_csv.columns) == ["step"] + [f"block_{i}" for i in range(1, 18)]
    assert len(gates_csv) == len(train) + 1 and gates_csv["step"].tolist() == list(range(len(train) + 1))
    patterns = json.loads((tmp_path / "patterns.json").read_text())
    assert set(patterns) == {f"searched-k{k}" for k in range(18)}
    assert patterns["searched-k6"] == result.pattern(6) and sum(patterns["searched-k6"]) == 8
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "metrics.csv").is_file()
    # resuming with another budget or latency term is refused, naming it
    with pytest.raises(ResumeMismatch, match=r"search budget: saved 6, now 5"):
        gating.search(tiny_model, train, test, budget=5, cfg=cfg, out_dir=tmp_path, resume=True,
                      latency={str(i): float(i) for i in range(1, 18)}, latency_weight=0.1)
    with pytest.raises(ResumeMismatch, match=r"search latency_weight: saved 0.1, now 0.0"):
        gating.search(tiny_model, train, test, budget=6, cfg=cfg, out_dir=tmp_path, resume=True)
    # a plain training run cannot continue a search's checkpoint
    with pytest.raises(ResumeMismatch, match=r"made by: saved 'search', now 'plain training'"):
        fit(tiny_model, train, test, cfg, out_dir=tmp_path, resume=True)


def test_search_refuses_an_ema(tiny_model, fake_data):
    train = DeviceLoader(fake_data.train_images, fake_data.train_labels, 32, fake_data.mean, fake_data.std, train=True)
    with pytest.raises(ValueError, match="ema_decay=None"):
        gating.search(tiny_model, train, None, budget=6, cfg=TrainConfig(epochs=1, ema_decay=0.9, progress=False))


def test_sensitivity_ranking_has_the_same_interface(tiny_model, fake_data):
    test = DeviceLoader(fake_data.test_images[:32], fake_data.test_labels[:32], 32, fake_data.mean, fake_data.std, train=False)
    result = gating.sensitivity_ranking(tiny_model, test)
    assert result.method == "sensitivity" and len(result.scores) == 17
    assert sorted(result.ranking) == list(range(1, 18)) and "base_acc" in result.extra
    assert sum(result.pattern(4)) == 6


def test_a_latency_table_measured_by_ds_bench_feeds_the_search(tiny_model, tmp_path):
    """ds.bench.latency_table (the one measurement) -> JSON file -> the search's latency vector."""
    table = ds.bench.latency_table(tiny_model, TINY_SIZE, batch=2, runtime="torch", threads=1,
                                   repeats=5, warmup=1, min_time=0.001)
    searched = gating.searchable_switches(tiny_model)
    assert set(table) == {str(s.index) for s in searched}
    path = tmp_path / "latency.json"
    path.write_text(json.dumps(table))
    vector = gating.latency_vector(gating.load_latency_table(path), searched)
    assert vector == pytest.approx([table[str(s.index)] for s in searched])


def test_bad_latency_tables_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="latency table .*none.json does not exist"):
        gating.load_latency_table(tmp_path / "none.json")
    (tmp_path / "broken.json").write_text("{1: ")
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        gating.load_latency_table(tmp_path / "broken.json")
    (tmp_path / "number.json").write_text("3.5")
    with pytest.raises(ValueError, match="number.json holds a float"):
        gating.load_latency_table(tmp_path / "number.json")
