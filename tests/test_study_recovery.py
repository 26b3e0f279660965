"""The study's recovery recipe (ds.study.recovery): one profile key that every chapter finetuning a
shrunk network turns into the same TrainConfig, with clear errors for what cannot work."""
import pytest

from ds.study import recovery


def test_the_recipe_becomes_the_train_config_of_every_finetune():
    recipe = recovery.check({"lr": 0.05, "warmup_epochs": 0.3, "distill": True})
    cfg = recovery.config(recipe, epochs=4, seed=3)
    assert (cfg.epochs, cfg.seed, cfg.lr, cfg.warmup_epochs) == (4, 3, 0.05, 0.3)
    assert recovery.distills(recipe) and not recovery.distills(None)
    assert recovery.config(recipe, 2, lr=0.01).lr == 0.01          # an override wins
    assert recovery.describe(recipe) == ("lr 0.05, 0.3 epochs of warm-up, distilled from the base at alpha 0.7 "
                                         "and temperature 1")


def test_no_recipe_is_the_plain_finetune():
    cfg = recovery.config(None, epochs=1)
    assert (cfg.lr, cfg.warmup_epochs) == (0.02, 0.0)
    assert recovery.describe(None) == "lr 0.02, no warm-up, no distillation"
    assert recovery.describe({"lr": 0.1, "warmup_epochs": 1, "anneal_end": 1.5}) == \
        "lr 0.1, 1 epoch of warm-up, activations annealed away (together) over epochs 0-1.5, no distillation"


@pytest.mark.parametrize("recipe, message", [
    ({"lr": 0.05, "epochs": 3}, "recovery sets epochs, which is not a recovery setting; accepted: distill, lr"),
    ({"distill": "yes"}, "distill must be true or false"),
    ({"lr": -1}, "TrainConfig.lr = -1 is invalid"),
    ([0.05], "recovery must be a mapping"),
])
def test_a_recipe_that_cannot_work_is_one_clear_error(recipe, message):
    with pytest.raises(ValueError, match=message):
        recovery.check(recipe)
