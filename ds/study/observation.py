"""Chapter 1, the observation: the base network, what removing activations costs, and the paper's core
comparison (removed after training vs trained linear from scratch).

Each step takes the chapter's context (`study.setup`) and its parameters, writes its table to the
run directory (row by row where a row is expensive, so an interrupted chapter resumes) and returns
it for the notebook to show."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import pandas as pd
import torch

import ds
from ds import gating
from ds.meta import info as net_info
from ds.patterns import resolve_pattern
from ds.train import TrainConfig, build_model, evaluate, fit, load_checkpoint, save_checkpoint

from . import recovery as recipes
from .chapter import (Chapter, all_ones, append_row, epoch_log, load_base, load_model, loaders, read_published,
                      read_rows, removed_blocks, train)
from .uncertainty import difference


def train_base(ch: Chapter, epochs: int, lr: float, base_checkpoint: str | None = None) -> pd.DataFrame:
    """Train the base network into <run_dir>/base (resuming), or adopt `base_checkpoint`; its metrics."""
    layout = ch.layout
    if base_checkpoint:
        if layout.base_checkpoint.is_file():
            return pd.read_csv(layout.base_metrics)
        model = build_model(ch.backbone, ch.num_classes, ch.input_size, init=base_checkpoint).to(ch.device)
        test = evaluate(model, ch.test_loader)
        layout.base_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint({"model": model.state_dict(), "meta": net_info(model).as_dict(), "epoch": -1}, layout.base_checkpoint)
        metrics = pd.DataFrame([{"epoch": 0, "test_loss": test["loss"], "test_acc": test["acc"],
                                 "source": str(base_checkpoint)}])
        metrics.to_csv(layout.base_metrics, index=False)
        return metrics
    model = build_model(ch.backbone, ch.num_classes, ch.input_size)
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=ch.seed)
    return train(model, ch.train_loader, ch.test_loader, cfg, layout.base_dir, meta=net_info(model),
                 piece=ch.piece).metrics


def block_removal(ch: Chapter, train_images: int, test_images: int, lr: float,
                  batch_size: int) -> tuple[pd.DataFrame, float]:
    """For each removable block alone: test top-1 right after removing its activations and after
    one short finetuning epoch, on subsets of `train_images` / `test_images` (removal.csv, row by
    row). Returns the table and the base network's top-1 on the same test subset."""
    observe = ch.data.limit(train_images, test_images, seed=ch.seed)
    train_loader, test_loader = loaders(observe, batch_size, ch.device, ch.seed)
    path = ch.layout.removal_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = read_rows(path)
    finished = {r["switch"] for r in rows}
    base_ckpt = ch.layout.base_checkpoint
    base = load_model(ch.backbone, ch.num_classes, ch.input_size, base_ckpt)
    last = 0.0
    for sw in gating.searchable_switches(base):
        if sw.index in finished:
            continue
        ch.piece.check(1.3 * last + 5, f"block {sw.index}'s removal experiment (the last took {last:.0f} s)")
        started = time.perf_counter()
        pattern = all_ones(base)
        pattern[sw.index] = 0
        shrunk = build_model(ch.backbone, ch.num_classes, ch.input_size, pattern, init=base_ckpt).to(ch.device)
        removed = evaluate(shrunk, test_loader)["acc"]
        with epoch_log(ch.layout.removal_log):
            fit(shrunk, train_loader, None, TrainConfig(epochs=1, lr=lr, warmup_epochs=0, seed=ch.seed, progress=False))
        finetuned = evaluate(shrunk, test_loader)["acc"]
        append_row(path, rows, {"switch": sw.index, "block": sw.path, "stride": sw.stride, "skip": sw.skip,
                             "channels": f"{sw.in_channels}>{sw.out_channels}",
                             "acc_removed": removed, "acc_finetuned": finetuned})
        ch.piece.record_progress()
        last = time.perf_counter() - started
    base_acc = evaluate(load_base(ch), test_loader)["acc"]
    return pd.DataFrame(rows), base_acc


ARMS = ("with_activations", "after_training", "recovered", "from_scratch")
ARM_NAMES = {"after_training": "after training", "recovered": "after training, best recovery",
             "from_scratch": "from scratch"}


@dataclass
class Observation:
    """Chapter 1's comparison: one row per arm and seed (observation.csv), the pattern, and how
    many of the blocks it makes linear."""
    table: pd.DataFrame
    pattern: list[int]
    linear_blocks: int
    removable_blocks: int

    def summary(self) -> pd.DataFrame:
        """Per setting and arm: seeds, mean, standard deviation, min and max of top-1."""
        grouped = self.table.groupby(["setting", "arm"], sort=False)["top1"]
        return grouped.agg(seeds="count", mean="mean", sd="std", min="min", max="max").reset_index()

    def reading(self) -> str:
        return observation_reading(self.table)


def observation_reading(table: pd.DataFrame) -> str:
    """What chapter 1's comparison (observation.csv) says, per setting, with its uncertainty: the
    paper's two arms, then (where the setting has it) the arm finetuned with the best recovery
    recipe against training from scratch."""
    lines = []
    for setting, rows in table.groupby("setting", sort=False):
        test_images = int(rows["test_images"].iloc[0])
        arm = rows.groupby("arm")["top1"]
        d = difference(arm.get_group("after_training"), arm.get_group("from_scratch"), test_images,
                       "after_training", "from_scratch")
        epochs = rows.loc[rows["arm"] == "from_scratch", "epochs"].iloc[0]
        verdict = {"after_training better": "**The observation holds here**: removing the activations after "
                                            "training beats training the linear network from scratch.",
                   "from_scratch better": "**The observation does not hold here**: the linear network "
                                          "trained from scratch is better.",
                   "not separated": "**The two arms are not separated**: the difference is within two "
                                    "standard errors, so this run neither confirms nor refutes the "
                                    "observation."}[d.verdict]
        lines.append(
            f"- **{setting}** ({epochs} epochs in all per arm; "
            f"{d.seeds_a if d.seeds_a == d.seeds_b else f'{d.seeds_a} and {d.seeds_b}'} seed(s) per arm): "
            f"{_compared(d, test_images)} {verdict}")
        if "recovered" in set(rows["arm"]):
            r = difference(arm.get_group("recovered"), arm.get_group("from_scratch"), test_images, "recovered",
                           "from_scratch")
            recipe = rows.loc[rows["arm"] == "recovered", "recipe"].iloc[0] if "recipe" in rows else "the best recipe"
            lines.append(f"  - with the best recovery recipe ({recipe}): {_compared(r, test_images)} "
                         + {"recovered better": "Removed after training and finetuned this way, the network beats "
                                                "the one trained linear from scratch.",
                            "from_scratch better": "Even finetuned this way, the network trained linear from "
                                                   "scratch is better.",
                            "not separated": "Not separated from training linear from scratch."}[r.verdict])
    return "\n".join(lines)


def _compared(d, test_images: int) -> str:
    """'after training 80.1%, from scratch 78.0%, difference +2.1 points +- 0.6 (...).'"""
    spread = (f"the seed spread gives {d.seed_se:.2f}" if d.seeds_a > 1 and d.seeds_b > 1
              else "with one seed per arm the seed spread is unknown")
    return (f"{ARM_NAMES[d.a]} {d.mean_a:.2f}%, {ARM_NAMES[d.b]} {d.mean_b:.2f}%, difference **{d.value:+.2f} "
            f"points** +- {d.se:.2f} (one standard error; {spread}, the test set's {test_images} images "
            f"{d.test_se:.2f}).")


def with_published(observation: Observation, published: str | None, out) -> Observation:
    """`observation` with the rows of a published comparison (`published`: e.g. the full-scale one
    another profile ran, data/results/observation_<profile>.csv) before its own; the published table
    is copied to `out` (the run's record of what it showed). None: unchanged."""
    if not published:
        return observation
    table = read_published("full_scale_observation", published, {"setting", "arm", "seed", "top1", "epochs", "test_images"},
                           "an observation table", "publish the profile that makes it (make publish PROFILE=...)")
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return dataclasses.replace(observation, table=beside_published(observation.table, table))


def beside_published(own: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """A published comparison's rows, then the run's own rows of every other setting."""
    return pd.concat([published, own[~own["setting"].isin(set(published["setting"]))]], ignore_index=True)


def _setting(images: int, input_size: int) -> str:
    """How observation.csv names a setting: training images and input size, e.g. 10k-32px."""
    return f"{images // 1000}k-{input_size}px" if images % 1000 == 0 else f"{images}-{input_size}px"


def _run_base_trained_as(ch: Chapter, epochs: int, lr: float, warmup_epochs: float) -> bool:
    """Whether the run's base network was trained here for `epochs` at `lr` with that warm-up (not
    adopted)."""
    if not ch.layout.base_checkpoint.is_file():
        return False
    saved = load_checkpoint(ch.layout.base_checkpoint)
    config = saved.get("config") or {}
    return (config.get("epochs") == epochs and config.get("lr") == lr and config.get("warmup_epochs") == warmup_epochs
            and saved.get("epoch") == epochs - 1)


def observation(ch: Chapter, pattern, train_images: int | None, seeds: list[int], base_epochs: int,
                finetune_epochs: int, base_lr: float, finetune_lr: float, warmup_epochs: float = 1.0,
                recovery: dict | None = None) -> Observation:
    """The paper's core comparison, per seed (observation.csv, row by row): a network trained with
    its activations for `base_epochs` on `train_images` training images (None: the chapter's own),
    then stripped of the activations `pattern` removes and finetuned for `finetune_epochs`
    (after_training), against the stripped network trained from scratch for as many epochs in all
    (from_scratch). Each seed draws its own initialization, data order and augmentation; the
    training images are the same for every seed. Every top-1 is on the chapter's whole test set.
    The trainings from scratch warm up for `warmup_epochs` (on a few thousand images an epoch is a
    few dozen steps). Where the setting is the run's own (same images, seed, epochs and learning
    rate), the run's base is reused. With `recovery` (a recipe, `ds.study.recovery`), a third arm
    (recovered) finetunes the stripped network as the after_training arm does, for as many epochs,
    with that recipe instead of plain SGD at `finetune_lr` (distilling from the seed's network
    trained with activations when the recipe distills).

    `pattern` is a name of ds.PATTERNS or a 0/1 list, one entry per switch."""
    recovery = recipes.check(recovery) if recovery is not None else None
    model = build_model(ch.backbone, ch.num_classes, ch.input_size)
    bits = resolve_pattern(model, pattern, len(ds.switches(model)))
    name = pattern if isinstance(pattern, str) else "".join(map(str, bits))
    data = ch.data if train_images is None else ch.data.limit(train_images, None, seed=ch.seed)
    setting = _setting(len(data.train_labels), ch.input_size)
    path = ch.layout.observation_csv
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = read_rows(path)
    done = {(r["arm"], r["seed"]) for r in rows}
    epochs = {"with_activations": base_epochs, "after_training": base_epochs + finetune_epochs,
              "recovered": base_epochs + finetune_epochs, "from_scratch": base_epochs + finetune_epochs}
    arms = [a for a in ARMS if a != "recovered" or recovery is not None]
    recipe = {"after_training": recipes.describe({"lr": finetune_lr}),
              "recovered": recipes.describe(recovery) if recovery is not None else "",
              "from_scratch": f"lr {base_lr:g}, {recipes.warmup_words(warmup_epochs)}", "with_activations": ""}

    def record(arm: str, seed: int, net) -> None:
        append_row(path, rows, {"pattern": "base" if arm == "with_activations" else name, "arm": arm,
                             "setting": setting, "seed": seed, "epochs": epochs[arm],
                             "top1": evaluate(net.to(ch.device), ch.test_loader)["acc"],
                             "test_images": len(ch.data.test_labels), "recipe": recipe[arm]})
        ch.piece.record_progress()

    for seed in seeds:
        if all((arm, seed) in done for arm in arms):
            continue
        train_loader, _ = loaders(data, ch.train_loader.batch_size, ch.device, seed)
        out = ch.layout.observation_dir(setting, seed)
        reuse = train_images is None and seed == ch.seed and _run_base_trained_as(ch, base_epochs, base_lr,
                                                                                  warmup_epochs)
        base_ckpt = ch.layout.base_checkpoint if reuse else out / "with_activations" / "checkpoint.pt"
        if not reuse:
            torch.manual_seed(seed)
            with_acts = build_model(ch.backbone, ch.num_classes, ch.input_size)
            train(with_acts, train_loader, None, TrainConfig(epochs=base_epochs, lr=base_lr, seed=seed,
                                                             warmup_epochs=warmup_epochs),
                  out / "with_activations", meta=net_info(with_acts), piece=ch.piece)
        if ("with_activations", seed) not in done:
            record("with_activations", seed, load_model(ch.backbone, ch.num_classes, ch.input_size, base_ckpt))
        if ("after_training", seed) not in done:
            after = build_model(ch.backbone, ch.num_classes, ch.input_size, bits, init=base_ckpt)
            train(after, train_loader, None, TrainConfig(epochs=finetune_epochs, lr=finetune_lr, warmup_epochs=0,
                                                         seed=seed), out / "after_training",
                  meta=net_info(after), piece=ch.piece)
            record("after_training", seed, after.eval())
        if recovery is not None and ("recovered", seed) not in done:
            recovered = build_model(ch.backbone, ch.num_classes, ch.input_size, bits, init=base_ckpt)
            teacher = (load_model(ch.backbone, ch.num_classes, ch.input_size, base_ckpt).to(ch.device)
                       if recipes.distills(recovery) else None)
            train(recovered, train_loader, None, recipes.config(recovery, finetune_epochs, seed), out / "recovered",
                  teacher=teacher, meta=net_info(recovered), piece=ch.piece)
            record("recovered", seed, recovered.eval())
        if ("from_scratch", seed) not in done:
            torch.manual_seed(seed)
            scratch = build_model(ch.backbone, ch.num_classes, ch.input_size, bits)
            train(scratch, train_loader, None, TrainConfig(epochs=epochs["from_scratch"], lr=base_lr, seed=seed,
                                                           warmup_epochs=warmup_epochs),
                  out / "from_scratch", meta=net_info(scratch), piece=ch.piece)
            record("from_scratch", seed, scratch.eval())
    return Observation(pd.DataFrame(rows), bits, removed_blocks(model, bits), len(gating.searchable_switches(model)))
