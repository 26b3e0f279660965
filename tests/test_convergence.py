"""The section "Finetuning to convergence" (ds.study.convergence) from a small hand-made sweep table,
and the sweep's pattern against the DP search it stands for."""
import sys
from pathlib import Path

import pandas as pd
import pytest

from ds.study import convergence

ROOT = Path(__file__).resolve().parents[1]
ARGS = {"arg_init": "data/checkpoints/cpu-observe/base.pt", "arg_holdout": 2000, "arg_lr": 0.05,
        "arg_warmup_epochs": 0.3, "arg_batch_size": 128, "holdout_n": 2000, "test_n": 10000}


def run(name: str, pattern: str, removed: int, test: list[float], epochs: int) -> list[dict]:
    return [{"config": name, "stage": 1, "pattern_name": pattern, "removed_blocks": removed, "epoch": e, "arg_epochs": epochs,
             "train_acc": t + 1, "holdout_acc": t + 0.5, "holdout_se": 0.8, "test_acc": t, "test_se": 0.38,
             "command": f"python -m ds.train --out runs/convergence/{name}", **ARGS}
            for e, t in enumerate(test, start=1)]


def table() -> pd.DataFrame:
    return pd.DataFrame(run("e-dp-k6", "dp-k6", 11, [70.0, 80.0, 84.5], 3) + run("e-ds-e", "DS-E", 11, [70, 75], 3))


def test_a_curve_stops_improving_where_no_later_epoch_is_separated_from_it():
    se = pd.Series([0.5] * 5)
    assert convergence.plateau(pd.Series([60.0, 75.0, 80.0, 80.5, 81.0]), se) == 3   # 81 - 80 < 2 * 0.71
    assert convergence.plateau(pd.Series([60.0, 70.0, 80.0]), se) == 3               # still rising: the last
    assert convergence.plateau(pd.Series([80.0, 79.0, 80.5]), se) == 1


def test_the_table_says_whether_each_network_meets_its_target_and_which_is_still_running():
    study = convergence.published_chapter3(
        pd.DataFrame({"pattern": ["dp-k6", "dp-k6"], "finetune": ["candidate", "distill"], "top1": [78.1, 83.11]}))
    assert study == {"dp-k6": 83.11}                                # the distilled finetune, not chapter 2's candidate
    rows = convergence.summary(table(), 86.0, study).set_index("network")
    assert rows.loc["dp-k6", "target (points)"] == "2.0: met" and rows.loc["dp-k6", "epochs"] == "3"
    assert rows.loc["dp-k6", "against the base (points)"].startswith("-1.50 ± ")
    assert convergence.against_base(rows.loc["dp-k6"]).startswith("1.50 ± ") and "points below the base" in \
        convergence.against_base(rows.loc["dp-k6"])
    above = convergence.summary(table().assign(test_acc=table()["test_acc"] + 2), 86.0).set_index("network")
    assert convergence.against_base(above.loc["dp-k6"]).endswith("points above the base")
    assert rows.loc["dp-k6", "chapter 3 (%)"] == "83.11" and rows.loc["DS-E", "chapter 3 (%)"] == ""
    assert rows.loc["DS-E", "target (points)"] == "2.0: not reached yet" and rows.loc["DS-E", "epochs"] == "2 of 3 (running)"
    assert rows.loc["DS-E", "stops improving (epoch)"] == "" and rows.loc["dp-k6", "stops improving (epoch)"] == 3
    finished = convergence.summary(table()[table()["epoch"] < 3].assign(arg_epochs=2), 86.0).set_index("network")
    assert finished.loc["DS-E", "target (points)"] == "2.0: missed by 9.00"
    text = "\n".join(convergence.lines(table(), 86.0, study, chapter3_epochs=6))
    assert "for 6 epochs (its budget)" in text and "runs the same recipe for 3 epochs from the same base" in text
    assert "chapter 3 (6 epochs): 83.11%" in text and "python -m ds.train --out runs/convergence/e-ds-e" in text
    assert "python benchmarks/convergence_sweep.py --stage 1\npython -m ds.study pages" in text
    assert "*Paper* (ImageNet" in text and "DS-E -3.10 to -0.87 points, 2.50x" in text and "dp-k6 -" not in text
    fig = convergence.figure(table(), 86.0, study, 6)
    assert fig.get_size_inches()[0] <= 7.5                              # readable at the book's page width
    assert any("chapter 3, 6-epoch schedule (83.11%)" == t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_no_table_says_so_and_a_base_without_its_curve_is_a_clear_error(tmp_path):
    assert "No convergence run is published yet" in "\n".join(convergence.lines(None))
    assert convergence.write(tmp_path, sweep=tmp_path / "none.csv")[2].startswith("No convergence run")
    with pytest.raises(FileNotFoundError, match="make publish PROFILE=cpu-observe"):
        convergence.base_top1("data/checkpoints/cpu-observe/base.pt", tmp_path)
    pd.DataFrame({"epoch": [1, 2], "test_acc": [80.0, 86.04]}).to_csv(tmp_path / "base_metrics_cpu-observe.csv")
    assert convergence.base_top1("data/checkpoints/cpu-observe/base.pt", tmp_path) == 86.04


def test_the_sweeps_dp_patterns_are_what_the_dp_search_picks_from_the_published_importance_table():
    """dp-k6 and dp-k11 of the published cpu run, from chapter 2's importance table (held-out drop after the
    DP's short finetune, per switch, as book/chapters/02_search.ipynb shows it)."""
    from ds import dpsearch
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import convergence_sweep
    drops = [1.78, 3.54, 2.88, 9.24, 3.70, 3.10, 7.00, 5.66, 4.56, 4.02, 7.02, 2.76, 3.06, 4.18, 2.08, 1.68, 1.86]
    for removed, pattern, paper in ((11, convergence_sweep.DP_K6, "DS-E"), (6, convergence_sweep.DP_K11, "DS-A")):
        choice = dpsearch.choose({i + 1: d for i, d in enumerate(drops)}, 19, removed=removed)
        assert ",".join(map(str, choice.pattern)) == pattern
        assert convergence_sweep.removed_blocks(pattern) == removed == convergence_sweep.removed_blocks(paper)


def test_the_results_page_quotes_the_finished_long_finetunes_of_a_run_from_the_same_base(tmp_path):
    sweep = tmp_path / "sweep.csv"
    table().to_csv(sweep, index=False)
    lines = convergence.results_lines("data/checkpoints/cpu-observe/base.pt", 86.0, sweep)
    text = "\n".join(lines)
    assert "the same recipe for 3 epochs from the same base, one seed" in text
    assert "- `dp-k6` (11 blocks removed): 84.50 ± 0.38%, 1.50 ± " in text and "points below the base; target 2.0: met." in text
    assert "DS-E" not in text                                      # still running: no verdict yet
    assert convergence.results_lines("data/checkpoints/cpu/base.pt", 86.0, sweep) == []   # another base
    assert convergence.results_lines(None, 86.0, sweep) == []
    assert convergence.results_lines("data/checkpoints/cpu-observe/base.pt", 86.0, tmp_path / "none.csv") == []


def test_chapter_3_shows_the_sweep_beside_its_own_finetune_of_the_same_pattern_matched_by_bits(tmp_path):
    """Chapter 3's section: a sweep network is matched to the chapter's distilled finetune of the same
    pattern whatever the names; one the chapter did not finetune is named; another base, no table."""
    from types import SimpleNamespace

    from ds.study.finetune import longer_finetune
    from ds.study.layout import RunLayout
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import convergence_sweep
    sweep = tmp_path / "sweep.csv"
    patterns = {"dp-k6": convergence_sweep.DP_K6, "DS-E": "DS-E"}
    table().assign(arg_pattern=table()["pattern_name"].map(patterns)).to_csv(sweep, index=False)
    ch = SimpleNamespace(layout=RunLayout(tmp_path / "run"), backbone="mobilenetv2_035", num_classes=10, input_size=32)
    ch.layout.base_metrics.parent.mkdir(parents=True)
    base = pd.DataFrame({"epoch": [40], "test_acc": [86.0], "source": [ARGS["arg_init"]]})
    base.to_csv(ch.layout.base_metrics, index=False)
    bits = convergence_sweep.DP_K6.replace(",", "")
    results = pd.DataFrame({"pattern": ["best-of-this-run", "best-of-this-run"], "distill": [False, True],
                            "acc": [80.0, 83.11], "pattern_bits": [bits, bits]})
    longer = longer_finetune(ch, str(sweep), results, 86.0, 6)
    assert longer.shorter == {"dp-k6": 83.11}                      # the distilled one, under the sweep's name
    assert "chapter 3 (6 epochs): 83.11%" in longer.text and "for 6 epochs (its budget)" in longer.text
    assert "Not finetuned by this chapter (distilled): `DS-E`" in longer.text
    assert "To rerun it" not in longer.text                        # the page's commands are not the chapter's
    assert (ch.layout.chapter_dir("03_finetune") / "convergence_sweep.csv").is_file()   # the run's record
    base.drop(columns="source").to_csv(ch.layout.base_metrics, index=False)
    other = longer_finetune(ch, str(sweep), results, 86.0, 6)
    assert other.table is None and "this run from a base it trained itself" in other.text
    assert "not set" in longer_finetune(ch, None, results, 86.0, 6).text
    with pytest.raises(FileNotFoundError, match="convergence_sweep .*none.csv does not exist"):
        longer_finetune(ch, str(tmp_path / "none.csv"), results, 86.0, 6)
    pd.DataFrame({"epoch": [1]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match="not a convergence sweep's table"):
        longer_finetune(ch, str(tmp_path / "other.csv"), results, 86.0, 6)
