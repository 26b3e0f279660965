"""The book's page "Recovering accuracy" (ds.study.recovery_page), from a small hand-made sweep table
and from the published one."""
import pandas as pd

from ds.study import recovery_page
from ds.study.layout import BOOK

ARGS = {"arg_backbone": "mobilenetv2_035", "arg_dataset": "cifar10", "arg_input_size": 32, "arg_seed": 0,
        "arg_init": "data/checkpoints/cpu/base.pt", "arg_limit_train": 1200, "arg_holdout": 200, "arg_limit_test": 300,
        "arg_batch_size": 64, "arg_epochs": 2, "arg_warmup_epochs": 0.0, "arg_anneal_end": None,
        "arg_progressive": None, "arg_teacher": None}


def stage0(name: str, holdout: float, test: float) -> dict:
    """A stage-0 row: a network measured before any training."""
    return {"config": name, "stage": 0, "epoch": 0, "holdout_acc": holdout, "holdout_se": 1.0, "test_acc": test,
            "test_se": 1.0}


def run(name: str, pattern: str, holdout: list[float], se: float = 1.0, **args) -> list[dict]:
    """A finetuned configuration's rows, one per epoch done (fewer than arg_epochs: still running)."""
    settings = {**ARGS, "arg_pattern": pattern, "arg_lr": 0.02, **args}
    return [{"config": name, "stage": 1, "epoch": epoch, "holdout_acc": h, "holdout_se": se, "test_acc": h - 2,
             "test_se": se, "command": f"python -m ds.train --out runs/recovery/{name}", **settings}
            for epoch, h in enumerate(holdout, start=1)]


def sweep() -> pd.DataFrame:
    """DS-E: a winner 5 points ahead (separated); DS-A: two within noise and one still running."""
    rows = [stage0("base", 90.0, 85.0), stage0("e-removed", 9.0, 9.5), stage0("e-removed-bn60", 30.0, 28.5),
            stage0("e-anneal-g1", 88.0, 83.0), stage0("a-removed", 10.0, 11.0)]
    rows += run("e-abrupt", "DS-E", [60.0, 70.0])
    rows += run("e-abrupt-lr0.05-w0.3", "DS-E", [66.0, 75.0], arg_lr=0.05, arg_warmup_epochs=0.3,
                arg_teacher="data/checkpoints/cpu/base.pt")
    rows += run("e-anneal", "DS-E", [55.0, 69.0], arg_anneal_end=1.5)
    rows += run("a-abrupt", "DS-A", [75.0, 80.0])
    rows += run("a-abrupt-lr0.05-w0.3", "DS-A", [76.0, 81.0], arg_lr=0.05, arg_warmup_epochs=0.3)
    rows += run("a-lr0.05-w0.3-distill", "DS-A", [77.0], arg_lr=0.05, arg_warmup_epochs=0.3,
                arg_teacher="data/checkpoints/cpu/base.pt")
    return pd.DataFrame(rows)


ADOPTED = ("recovery", {"lr": 0.05, "warmup_epochs": 0.3, "distill": True}, ["cpu"])


def test_the_page_names_each_patterns_winner_and_whether_it_is_separated():
    page = recovery_page.page(sweep(), ADOPTED)
    assert "**Winner at DS-E's pattern: `e-abrupt-lr0.05-w0.3`**" in page
    assert "It is separated from the runner-up `e-abrupt` (70.00% held-out): +5.00 points" in page
    assert "**Winner at DS-A's pattern: `a-abrupt-lr0.05-w0.3`**" in page
    assert "**not separated** from the runner-up `a-abrupt` (80.00% held-out): +1.00 points" in page
    assert "| 1 | removed at once; lr 0.05, 0.3 epochs of warm-up; distilled from the base" in page
    assert "| 3 | annealed away together over epochs 0-1.5; lr 0.02, no warm-up (`e-anneal`) | 88.00 / 83.00 |" in page
    assert "75.00 ± 1.00" in page and "73.00 ± 1.00" in page          # held-out and test at the last epoch


def test_a_running_configuration_is_shown_but_not_ranked_and_the_adopted_recipe_is_placed():
    page = recovery_page.page(sweep(), ADOPTED)
    assert "| – | removed at once; lr 0.05, 0.3 epochs of warm-up; distilled from the base (`a-lr0.05-w0.3-distill`)" \
           " | 10.00 / 11.00 | 77.0 | running (epoch 1 of 2) | – |" in page
    assert "Still running, not ranked: `a-lr0.05-w0.3-distill` (epoch 1 of 2)." in page
    assert "The study adopts `recovery: {lr: 0.05, warmup_epochs: 0.3, distill: true}` (profiles.yaml, profile `cpu`)" \
        in page
    assert "At DS-E's pattern it is `e-abrupt-lr0.05-w0.3`: first of 3 by held-out top-1" in page
    assert "At DS-A's pattern it is `a-lr0.05-w0.3-distill`, still running." in page


def test_stage_0_is_read_from_whichever_of_its_rows_exist():
    page = recovery_page.page(sweep(), ADOPTED)
    assert "drops the base from 85.00% to 9.50%, near chance (10% on 10 classes)" in page
    assert "on 60 training batches recovers part of it: 28.50%, 25% of the drop back" in page
    assert "annealing starts at g = 1" in page and "83.00%, 2.00 points below the base" in page
    assert "- **DS-A's pattern**: removing the activations at once drops the base from 85.00% to 11.00%" in page
    assert "python benchmarks/recovery_sweep.py --stage 0\npython benchmarks/recovery_sweep.py --stage 1\n" in page


def test_missing_stages_and_patterns_are_said_to_be_missing():
    table = sweep()
    only_stage0 = recovery_page.page(table[table["stage"] == 0], None)
    assert "No configuration has been finetuned yet" in only_stage0 and "{figure}" not in only_stage0
    assert "No configuration of DS-A's pattern has been finetuned yet" in only_stage0
    assert "No profile of profiles.yaml names a recovery recipe yet" in only_stage0
    no_stage0 = recovery_page.page(table[table["stage"] > 0], ADOPTED)
    assert "Stage 0 has not been measured yet" in no_stage0 and "| not measured |" in no_stage0
    running = table[(table["stage"] == 0) | (table["config"] == "a-lr0.05-w0.3-distill")]
    assert "No configuration of DS-A's pattern has finished its epochs yet: no winner." in \
        recovery_page.page(running, ADOPTED)
    assert recovery_page.page(recovery_page.read_sweep(BOOK / "no-such-sweep.csv")).startswith("# Recovering accuracy")


def test_the_curves_have_one_panel_per_pattern_starting_at_stage_0():
    from ds.study.figures import recovery_curves
    curves = recovery_page.curves(sweep())
    assert list(curves[curves["config"] == "e-anneal"]["holdout_acc"]) == [88.0, 55.0, 69.0]
    fig = recovery_curves(curves, 90.0)
    assert [ax.get_title() for ax in fig.axes] == ["DS-E's pattern", "DS-A's pattern"]
    assert fig.get_size_inches()[0] <= 7.5                              # readable at the book's page width


def test_the_published_page_is_generated_from_the_published_sweep(tmp_path):
    published = BOOK / recovery_page.PAGE
    assert (published.read_text(encoding="utf-8") if published.is_file() else None) == \
        recovery_page.text(tmp_path), f"book/{recovery_page.PAGE} is stale: run {recovery_page.REGENERATE}"
    assert "- file: recovery\n" in (BOOK / "_toc.yml").read_text()
