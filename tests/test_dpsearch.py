"""The DP search: the dynamic program against brute force, the importance table on a tiny network,
and the CLI's --search-method."""
import itertools
import json
import random
from fractions import Fraction

import pandas as pd
import pytest
import torch

import ds
from ds import dpsearch, gating
from ds.loaders import DeviceLoader
from ds.train import ResumeMismatch, TrainConfig
from ds.train.cli import main
from train_fixtures import TINY, TINY_SIZE, fake_data, tiny_model  # noqa: F401 (fixtures)


# ---------------------------------------------------------------- brute force

def brute_force(costs, num_switches, removed=None, savings=None, latency_budget=None, base_latency=None):
    """Every subset of the blocks, exactly, with the documented order: least cost, larger saving,
    then the pattern that keeps the earlier blocks. None when no subset is feasible."""
    blocks = sorted(costs)
    best = None
    for bits in itertools.product((1, 0), repeat=len(blocks)):
        gone = [b for b, bit in zip(blocks, bits) if not bit]
        if removed is not None and len(gone) != removed:
            continue
        cost = sum((Fraction(costs[b]) for b in gone), Fraction(0))
        saved = sum((Fraction(savings[b]) for b in gone), Fraction(0)) if savings else Fraction(0)
        if latency_budget is not None and Fraction(base_latency) - saved > Fraction(latency_budget):
            continue
        key = (-cost, saved, bits)
        if best is None or key > best[0]:
            pattern = [1] * num_switches
            for b, bit in zip(blocks, bits):
                pattern[b] = bit
            best = (key, tuple(pattern))
    return None if best is None else best[1]


def random_tables(rng, n, ties):
    """Blocks 1..n of n + 2 switches (stem 0 and head n + 1 not removable); with `ties`, small
    integers (many exact ties), else real numbers of mixed sign."""
    blocks = range(1, n + 1)
    if ties:
        costs = {b: rng.choice([0, 1, 1, 2, 3]) for b in blocks}
        savings = {b: rng.choice([0.5, 1.0, 1.5]) for b in blocks}
    else:
        costs = {b: rng.uniform(-0.5, 6.0) for b in blocks}
        savings = {b: rng.uniform(-1e-4, 3e-3) for b in blocks}
    return costs, savings


@pytest.mark.parametrize("ties", [False, True])
def test_dp_at_a_number_of_removed_blocks_equals_brute_force(ties):
    rng = random.Random(21)
    for _ in range(8):
        n = rng.randint(1, 9)
        costs, savings = random_tables(rng, n, ties)
        per_count = dpsearch.best_per_count(costs, n + 2, savings)
        for removed in range(n + 1):
            expected = brute_force(costs, n + 2, removed, savings)
            choice = dpsearch.choose(costs, n + 2, removed=removed, savings=savings)
            assert choice.pattern == expected and per_count[removed] == choice
            assert choice.pattern[0] == 1 and choice.pattern[-1] == 1 and len(choice.removed) == removed
            # without a latency table the ties fall to the pattern alone
            assert dpsearch.choose(costs, n + 2, removed=removed).pattern == brute_force(costs, n + 2, removed)


@pytest.mark.parametrize("ties", [False, True])
def test_dp_at_a_latency_budget_equals_brute_force(ties):
    rng = random.Random(2021)
    for _ in range(8):
        n = rng.randint(1, 9)
        costs, savings = random_tables(rng, n, ties)
        base = 0.02
        reachable = sorted({float(Fraction(base) - sum((Fraction(savings[b]) for b in gone), Fraction(0)))
                            for r in range(n + 1) for gone in itertools.combinations(sorted(costs), r)})
        budgets = rng.sample(reachable, min(6, len(reachable))) + [base, base + 1.0]
        budgets += [rng.uniform(reachable[0], base) for _ in range(4)]
        for budget in budgets:
            expected = brute_force(costs, n + 2, None, savings, budget, base)
            if expected is None:   # a reachable time rounded to a float may lie just below the exact one
                with pytest.raises(ValueError, match="is infeasible"):
                    dpsearch.choose(costs, n + 2, savings=savings, latency_budget=budget, base_latency=base)
                continue
            choice = dpsearch.choose(costs, n + 2, savings=savings, latency_budget=budget, base_latency=base)
            assert choice.pattern == expected
            assert choice.latency <= budget or Fraction(base) - Fraction(choice.saved) <= Fraction(budget)
            # and with both constraints at once
            removed = len(choice.removed)
            both = dpsearch.choose(costs, n + 2, removed=removed, savings=savings, latency_budget=budget,
                                   base_latency=base)
            assert both.pattern == brute_force(costs, n + 2, removed, savings, budget, base)


def test_latencies_are_added_exactly():
    """In floats 1e16 + 1.0 - 1e16 is 0.0; the DP adds exactly, so removing all three blocks saves
    1.0 and meets the budget, at the least cost."""
    costs = {1: 10.0, 2: 0.0, 3: -20.0}
    savings = {1: 1e16, 2: 1.0, 3: -1e16}
    choice = dpsearch.choose(costs, 5, savings=savings, latency_budget=0.0, base_latency=1.0)
    assert choice.removed == (1, 2, 3) and choice.cost == -10.0 and choice.latency == 0.0
    assert choice.pattern == brute_force(costs, 5, None, savings, 0.0, 1.0)
    # a budget met with equality counts as met
    dyadic = {1: 0.25, 2: 0.5, 3: 0.125}
    assert dpsearch.choose({1: 1.0, 2: 1.0, 3: 5.0}, 5, savings=dyadic, latency_budget=0.25,
                           base_latency=1.0).removed == (1, 2)


def test_frontier_answers_every_budget():
    rng = random.Random(5)
    costs = {b: rng.uniform(-0.5, 6.0) for b in range(1, 9)}
    savings = {b: rng.randint(-2, 50) / 1024 for b in range(1, 9)}   # dyadic: every sum is exact in floats
    front = dpsearch.frontier(costs, savings, 10)
    assert [c.saved for c in front] == sorted(c.saved for c in front)
    assert all(a.cost < b.cost and a.saved < b.saved for a, b in zip(front, front[1:]))
    for point in front:   # each point is the answer for the budget it just meets
        assert dpsearch.choose(costs, 10, savings=savings, latency_budget=-point.saved, base_latency=0.0).pattern \
            == point.pattern == brute_force(costs, 10, None, savings, -point.saved, 0.0)
    # and nothing off the front beats a point of it in both cost and saving
    for r in range(9):
        for gone in itertools.combinations(range(1, 9), r):
            cost, saved = sum(costs[b] for b in gone), sum(savings[b] for b in gone)
            assert not any(cost < p.cost - 1e-12 and saved > p.saved for p in front)


def test_infeasible_constraints_are_clear_errors():
    costs = {1: 1.0, 2: 2.0}
    savings = {1: 0.001, 2: 0.002}
    with pytest.raises(ValueError, match=r"latency budget 0.005 s is infeasible: the fastest pattern takes "
                                         r"0.007 s by the latency table \(base 0.01 s\)"):
        dpsearch.choose(costs, 4, savings=savings, latency_budget=0.005, base_latency=0.01)
    with pytest.raises(ValueError, match="fastest pattern with 1 blocks removed takes 0.008 s"):
        dpsearch.choose(costs, 4, removed=1, savings=savings, latency_budget=0.0075, base_latency=0.01)
    with pytest.raises(ValueError, match=r"cannot remove 3 blocks: the table has 2 removable blocks, so choose 0..2"):
        dpsearch.choose(costs, 4, removed=3)
    with pytest.raises(ValueError, match="needs a constraint"):
        dpsearch.choose(costs, 4)
    with pytest.raises(ValueError, match="needs savings .* and base_latency"):
        dpsearch.choose(costs, 4, latency_budget=1.0)
    with pytest.raises(ValueError, match="latency table has no entry for block\\(s\\) 2"):
        dpsearch.choose(costs, 4, removed=1, savings={1: 0.1})
    with pytest.raises(ValueError, match="has nan for switch 2"):
        dpsearch.choose({1: 1.0, 2: float("nan")}, 4, removed=1)
    with pytest.raises(ValueError, match="switch 7, outside 0..3"):
        dpsearch.choose({7: 1.0}, 4, removed=1)


# ---------------------------------------------------------------- on a network

def test_only_switchable_blocks_can_be_removed(tiny_model):
    searched = [s.index for s in gating.searchable_switches(tiny_model)]
    costs = {i: float(i % 5) for i in searched}
    result = dpsearch.plan(tiny_model, costs)
    assert result.searched == list(range(1, 18))
    for k in range(18):
        pattern = result.pattern(k)
        assert pattern[0] == 1 and pattern[18] == 1 and sum(pattern[1:18]) == k
    assert result.patterns["dp-k5"] == result.pattern(5) and len(result.patterns) == 18
    with pytest.raises(ValueError, match=r"not searchable blocks: 0 \(stem conv_stem"):
        dpsearch.plan(tiny_model, {**costs, 0: 1.0})
    with pytest.raises(ValueError, match=r"no entry for searchable block\(s\) 3"):
        dpsearch.plan(tiny_model, {i: c for i, c in costs.items() if i != 3})
    with pytest.raises(ValueError, match="budget 18 is outside 0..17"):
        result.pattern(18)


def loaders_for(fake_data):
    return DeviceLoader(fake_data.train_images, fake_data.train_labels, 16, fake_data.mean, fake_data.std,
                        train=True, seed=1)


def test_holdout_split_is_seeded_and_disjoint():
    tune, held = dpsearch.holdout_split(100, 30, seed=4)
    assert len(held) == 30 and len(tune) == 70 and not set(tune) & set(held)
    assert sorted(set(tune) | set(held)) == list(range(100))
    assert (dpsearch.holdout_split(100, 30, seed=4)[1] == held).all()
    assert (dpsearch.holdout_split(100, 30, seed=5)[1] != held).any()
    with pytest.raises(ValueError, match="cannot hold out 100 of 100 training images"):
        dpsearch.holdout_split(100, 100, seed=0)


def test_importance_table_on_a_tiny_network(tiny_model, fake_data, tmp_path):
    train = loaders_for(fake_data)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    cfg = dpsearch.entry_config(lr=0.02)
    table = dpsearch.importance_table(tiny_model, train, cfg, steps=2, holdout=48, seed=0, out_dir=tmp_path,
                                      progress=False)
    frame = pd.read_csv(tmp_path / dpsearch.IMPORTANCE_CSV)
    assert list(frame.columns) == list(dpsearch.COLUMNS)
    assert frame["entry"].tolist() == ["base", "reference"] + ["block"] * 17
    assert frame["block"].dropna().astype(int).tolist() == list(range(1, 18))
    assert (frame["holdout_images"] == 48).all()
    assert frame["finetune_images"].tolist() == [0] + [2 * 16] * 18
    assert frame["drop"].tolist() == pytest.approx((table.reference_top1 - frame["top1"]).tolist())
    assert all(tiny_model.state_dict()[k].equal(v) for k, v in before.items())   # the base is not modified
    # the DP on it; with a latency table measured by ds.bench, the frontier too
    latency = ds.bench.latency_table(tiny_model, TINY_SIZE, batch=2, runtime="torch", threads=1,
                                     repeats=5, warmup=1, min_time=0.001)
    result = dpsearch.plan(tiny_model, table, latency)
    result.write(tmp_path)
    patterns = json.loads((tmp_path / "patterns.json").read_text())
    assert set(patterns) == {f"dp-k{k}" for k in range(18)}
    front = pd.read_csv(tmp_path / dpsearch.FRONTIER_CSV)
    assert front["saved_s"].is_monotonic_increasing and front["drop"].is_monotonic_increasing
    assert front["removed"].iloc[0] == 0 or front["drop"].iloc[0] < 0


def test_importance_table_resumes_and_refuses_other_settings(tiny_model, fake_data, tmp_path):
    train = loaders_for(fake_data)
    cfg = dpsearch.entry_config()
    kwargs = dict(steps=1, holdout=32, seed=0, out_dir=tmp_path, progress=False)
    whole = dpsearch.importance_table(tiny_model, train, cfg, **kwargs)
    record = json.loads((tmp_path / dpsearch.IMPORTANCE_JSON).read_text())
    record["rows"] = record["rows"][:5]   # as if interrupted after five entries
    (tmp_path / dpsearch.IMPORTANCE_JSON).write_text(json.dumps(record))
    with pytest.raises(FileExistsError, match="pass resume=True"):
        dpsearch.importance_table(tiny_model, train, cfg, **kwargs)
    resumed = dpsearch.importance_table(tiny_model, train, cfg, resume=True, **kwargs)
    # every entry starts from the same weights, RNG state and batches: measured again, each agrees
    assert [r["top1"] for r in resumed.rows] == [r["top1"] for r in whole.rows]
    assert [r["seconds"] for r in resumed.rows[:5]] == [r["seconds"] for r in whole.rows[:5]]   # kept, not redone
    with pytest.raises(ResumeMismatch, match=r"steps: saved 1, now 2"):
        dpsearch.importance_table(tiny_model, train, cfg, resume=True, **dict(kwargs, steps=2))
    other = ds.create_model(TINY, num_classes=10, input_size=TINY_SIZE)
    other.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        next(other.parameters())[0] += 1.0   # other base weights
    with pytest.raises(ResumeMismatch, match="base_sha256"):
        dpsearch.importance_table(other, train, cfg, resume=True, **kwargs)


def test_importance_table_refuses_what_it_cannot_do(tiny_model, fake_data):
    train = loaders_for(fake_data)
    with pytest.raises(ValueError, match="keep no EMA"):
        dpsearch.importance_table(tiny_model, train, TrainConfig(epochs=1, ema_decay=0.9), progress=False)
    with pytest.raises(ValueError, match="cannot hold out 128 of 128"):
        dpsearch.importance_table(tiny_model, train, steps=1, holdout=128, progress=False)
    with pytest.raises(ValueError, match="unknown search method 'greedy': choose gate or dp"):
        dpsearch.check_method("greedy")


# ---------------------------------------------------------------- the CLI

COMMON = ["--backbone", TINY, "--dataset", "fake", "--input-size", str(TINY_SIZE), "--batch-size", "16",
          "--lr", "0.02", "--warmup-epochs", "0", "--limit-train", "96", "--limit-test", "32", "--no-progress"]


def test_search_method_dp_from_the_command_line(tmp_path, capsys):
    args = COMMON + ["--out", str(tmp_path), "--search-budget", "12", "--search-method", "dp",
                     "--dp-steps", "1", "--dp-holdout", "32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    patterns = json.loads((tmp_path / "patterns.json").read_text())
    assert f"pattern for budget 12: {patterns['dp-k12']}" in out and sum(patterns["dp-k12"]) == 14
    table = dpsearch.ImportanceTable.read(tmp_path)
    assert len(table.rows) == 19 and table.settings["steps"] == 1 and table.settings["holdout"] == 32
    with pytest.raises(FileExistsError, match="--resume to continue it"):
        main(args)
    assert main(args + ["--resume"]) == 0   # finished: nothing to measure again
    with pytest.raises(ResumeMismatch, match="--dp-steps: saved 1, now 2"):
        main(args[:-3] + ["2", "--dp-holdout", "32", "--resume"])
    # a DP pattern feeds the finetuning stage as FILE:NAME
    assert main(COMMON + ["--epochs", "1", "--out", str(tmp_path / "ft"),
                          "--pattern", f"{tmp_path / 'patterns.json'}:dp-k12"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--search-budget", "3", "--search-method", "greedy"], "argument --search-method: invalid choice: 'greedy'"),
    (["--search-method", "dp"], "--search-method needs --search-budget"),
    (["--search-budget", "3", "--dp-steps", "5"], "--dp-steps and --dp-holdout are for --search-method dp"),
    (["--search-budget", "3", "--search-method", "dp", "--latency-weight", "1"],
     "--latency-weight is the gate search's"),
    (["--search-budget", "3", "--search-method", "dp", "--dp-steps", "-1"], "argument --dp-steps: -1 is out of range"),
])
def test_bad_search_options_are_one_line_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        main(COMMON + ["--out", str(tmp_path / "out")] + args)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
