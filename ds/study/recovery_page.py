"""The book's page "Recovering accuracy", generated from the recovery sweep's table.

`benchmarks/recovery_sweep.py` finetunes the network `ds.apply_pattern` makes from the published
base network in several ways at equal budget on a cheap proxy and writes
benchmarks/results/recovery_sweep.csv: one row per configuration and epoch, stage 0 (epoch 0) the
networks the methods start from, untrained. This module turns that table into book/recovery.md:
the proxy, one ranked table per pattern, whether the winner is separated from the runner-up, what
stage 0 shows, the commands, and the recipe the study adopts (from profiles.yaml). Every number on
the page comes from the table; a pattern, stage or epoch the sweep has not reached yet is said to
be missing rather than left out silently. `python -m ds.study pages` writes it (`write`).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from .layout import BOOK, REPO_ROOT
from .profiles import load_profile, read_profiles
from .recovery import check, describe

RECOVERY_SWEEP = REPO_ROOT / "benchmarks" / "results" / "recovery_sweep.csv"
FIGURE = "images/recovery_curves.png"
PAGE = "recovery.md"
REGENERATE = "python -m ds.study pages"
CLASSES = {"cifar10": 10, "cifar100": 100}          # chance level of a dataset's top-1
RECIPE_KEYS = ("recovery", "compare_recovery")       # profile keys naming the recovery recipe, preferred first
START = re.compile(r"^(?P<letter>[a-z])-(?P<kind>removed|anneal-g1|removed-bn(?P<batches>\d+))$")


# ---------------------------------------------------------------- reading the sweep

def read_sweep(path: Path = RECOVERY_SWEEP) -> pd.DataFrame:
    """The sweep's table; an empty frame with the key columns when it does not exist yet."""
    if not Path(path).is_file():
        return pd.DataFrame(columns=["config", "stage", "epoch", "holdout_acc", "holdout_se", "test_acc", "test_se"])
    return pd.read_csv(path)


def adopted_recipe(profiles_file=None) -> tuple[str, dict, list[str]] | None:
    """The recovery recipe profiles.yaml names: (key, recipe, profiles naming it), the first of
    RECIPE_KEYS any profile sets; None when no profile sets one."""
    profiles = {name: load_profile(name, profiles_file) for name in read_profiles(profiles_file)}
    for key in RECIPE_KEYS:
        named = [(name, p[key]) for name, p in profiles.items() if p.get(key)]
        if named:
            recipe = named[0][1]
            return key, recipe, [name for name, value in named if value == recipe]
    return None


def inputs(sweep: Path = RECOVERY_SWEEP, profiles_file=None) -> tuple[pd.DataFrame, tuple | None]:
    """What the page is made of: the sweep's table and the adopted recipe."""
    return read_sweep(sweep), adopted_recipe(profiles_file)


def starts(table: pd.DataFrame) -> pd.DataFrame:
    """Stage 0's rows (no training), indexed by configuration name."""
    return table[table["stage"] == 0].set_index("config")


def trained(table: pd.DataFrame) -> pd.DataFrame:
    """The finetuned configurations' rows (stage 1 on)."""
    return table[table["stage"] > 0]


def letter(pattern: str) -> str:
    """The sweep's prefix of a pattern's configurations: 'DS-E' -> 'e'."""
    return pattern.split("-")[-1].lower()


def patterns(table: pd.DataFrame) -> list[str]:
    """The patterns the table has rows of (finetuned or stage 0), in the order they appear."""
    found = list(dict.fromkeys(trained(table).get("arg_pattern", pd.Series(dtype=str)).dropna()))
    for name in starts(table).index:
        match = START.match(name)
        if match and f"DS-{match['letter'].upper()}" not in found:
            found.append(f"DS-{match['letter'].upper()}")
    return found


def _given(row: pd.Series, column: str):
    """A row's value of an optional column, None when absent or empty."""
    value = row.get(column)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or value == "" else value


# ---------------------------------------------------------------- one configuration

def settings(row: pd.Series) -> dict:
    """A configuration's recovery settings, in the terms of a profile's `recovery`."""
    return {"lr": float(row["arg_lr"]), "warmup_epochs": float(row["arg_warmup_epochs"]),
            "distill": _given(row, "arg_teacher") is not None,
            "anneal_end": _given(row, "arg_anneal_end"), "progressive": _given(row, "arg_progressive")}


def words(row: pd.Series) -> str:
    """A configuration in words: how the activations go, the learning rate, distillation."""
    s = settings(row)
    if s["anneal_end"] is None:
        removal = "removed at once"
    elif s["progressive"] is None:
        removal = f"annealed away together over epochs 0-{s['anneal_end']:g}"
    else:
        removal = f"annealed away {int(s['progressive'])} switches at a time over epochs 0-{s['anneal_end']:g}"
    warmup = "no warm-up" if not s["warmup_epochs"] else f"{s['warmup_epochs']:g} epochs of warm-up"
    return f"{removal}; lr {s['lr']:g}, {warmup}" + ("; distilled from the base" if s["distill"] else "")


def start_name(row: pd.Series) -> str:
    """The stage-0 network a configuration starts from: removed at once, or annealed at g = 1."""
    kind = "removed" if _given(row, "arg_anneal_end") is None else "anneal-g1"
    return f"{letter(row['arg_pattern'])}-{kind}"


def summary(table: pd.DataFrame, pattern: str) -> pd.DataFrame:
    """One row per finetuned configuration of `pattern`: its words, start, held-out curve, last
    epoch's held-out and test top-1 with standard errors, whether it finished its epochs, and its
    rank by held-out top-1 among the finished ones (NaN for the unfinished)."""
    rows, begin = [], starts(table)
    runs = trained(table)
    for name, curve in runs[runs["arg_pattern"] == pattern].groupby("config", sort=False):
        curve = curve.sort_values("epoch")
        last = curve.iloc[-1]
        start = begin.loc[start_name(last)] if start_name(last) in begin.index else None
        rows.append({"config": name, "words": words(last), "settings": settings(last), "start": start_name(last),
                     "start_holdout": None if start is None else start["holdout_acc"],
                     "start_test": None if start is None else start["test_acc"],
                     "curve": list(curve["holdout_acc"]), "epoch": int(last["epoch"]),
                     "epochs": int(last["arg_epochs"]), "finished": int(last["epoch"]) >= int(last["arg_epochs"]),
                     "holdout": last["holdout_acc"], "holdout_se": last["holdout_se"],
                     "test": last["test_acc"], "test_se": last["test_se"]})
    frame = pd.DataFrame(rows, columns=["config", "words", "settings", "start", "start_holdout", "start_test", "curve",
                                        "epoch", "epochs", "finished", "holdout", "holdout_se", "test", "test_se"])
    frame["rank"] = frame["holdout"].where(frame["finished"].astype(bool)).rank(ascending=False, method="min")
    return frame.sort_values(["rank", "holdout"], ascending=[True, False], na_position="last").reset_index(drop=True)


# ---------------------------------------------------------------- the page's parts

def _pm(value: float, se: float) -> str:
    return f"{value:.2f} ± {se:.2f}"


def _pattern_title(pattern: str) -> str:
    return f"{pattern}'s pattern"


def proxy_lines(table: pd.DataFrame) -> list[str]:
    """What was compared and on what proxy, from the arguments the runs recorded."""
    runs = trained(table)
    if not len(runs):
        return ["No configuration has been finetuned yet: the sweep's table has no stage 1 or 2 rows.", ""]
    a = runs.iloc[0]
    train = int(a["arg_limit_train"]) - int(a["arg_holdout"])
    compared = ", ".join(f"`{p}`" for p in patterns(table))
    lines = [f"Every configuration starts from the published base network (`{a['arg_init']}`, {a['arg_backbone']} on "
             f"{a['arg_dataset']} at {int(a['arg_input_size'])} px), removes the activations of a pattern "
             f"({compared}) and finetunes the shrunk network for {int(a['arg_epochs'])} epochs at batch "
             f"{int(a['arg_batch_size'])} on a cheap proxy: {int(a['arg_limit_train']):,} random training images, of "
             f"which {int(a['arg_holdout']):,} are held out and never trained on, so {train:,} train; top-1 is measured "
             f"after every epoch on the held-out images and on {int(a['arg_limit_test']):,} random test images. "
             f"One seed ({int(a['arg_seed'])}) per configuration. The commands below name the base by its path; "
             f"each run used the file that path held when it ran (`finished_utc` in the table; "
             f"`git log -- {a['arg_init']}` lists the file's versions)."]
    base = starts(table).loc["base"] if "base" in starts(table).index else None
    if base is not None:
        lines[0] += (f" The base network itself scores {_pm(base['holdout_acc'], base['holdout_se'])}% on the "
                     f"held-out images and {_pm(base['test_acc'], base['test_se'])}% on the test images.")
    lines += ["", f"Compared: {_methods(table)}.", "",
              "**How to read it.** Choices are made on the held-out training images. The base network was trained "
              "on them, so held-out top-1 is biased upward"
              + (f" (the base: {base['holdout_acc']:.2f}% held-out against {base['test_acc']:.2f}% test)"
                 if base is not None else "")
              + ": it is used to rank, and the test column gives the numbers. Each top-1 comes with its "
              "binomial standard error sqrt(p (100 - p) / n); two configurations are *separated* when their "
              "held-out top-1 differ by more than two standard errors of the difference, "
              "sqrt(se1² + se2²). The *start* column is the network a method begins from, before any training "
              "(stage 0, below).", ""]
    return lines


def _methods(table: pd.DataFrame) -> str:
    """The methods the table holds, in words."""
    runs = trained(table)
    found = [s for s in (settings(row) for _, row in runs.drop_duplicates("config").iterrows())]
    methods = []
    if any(s["anneal_end"] is None for s in found):
        methods.append("removing the activations at once")
    if any(s["anneal_end"] is not None and s["progressive"] is None for s in found):
        methods.append("annealing them away together")
    if any(s["progressive"] is not None for s in found):
        methods.append("annealing them away a few switches at a time (progressive)")
    if any(s["distill"] for s in found):
        methods.append("self-distillation from the base network")
    if any(START.match(n) and START.match(n)["batches"] for n in starts(table).index):
        methods.append("BatchNorm recalibration (stage 0: it changes where finetuning starts, not the finetuning "
                       "steps)")
    rates = sorted({(s["lr"], s["warmup_epochs"]) for s in found})
    if len(rates) > 1:
        methods.append("learning-rate recipes: " + " against ".join(
            f"lr {lr:g} with " + ("no warm-up" if not w else f"{w:g} epochs of warm-up") for lr, w in rates))
    return "; ".join(methods)


def table_lines(frame: pd.DataFrame) -> list[str]:
    """The pattern's ranked table (markdown)."""
    epochs = int(frame["epochs"].max())
    lines = [f"| rank | configuration | start, held-out / test | held-out per epoch | held-out, epoch {epochs} | "
             f"test, epoch {epochs} |", "|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        start = ("not measured" if r["start_holdout"] is None or pd.isna(r["start_holdout"])
                 else f"{r['start_holdout']:.2f} / {r['start_test']:.2f}")
        rank = "–" if pd.isna(r["rank"]) else str(int(r["rank"]))
        if r["finished"]:
            last = [_pm(r["holdout"], r["holdout_se"]), _pm(r["test"], r["test_se"])]
        else:
            last = [f"running (epoch {r['epoch']} of {r['epochs']})", "–"]
        lines.append(f"| {rank} | {r['words']} (`{r['config']}`) | {start} | "
                     f"{', '.join(f'{v:.1f}' for v in r['curve'])} | {last[0]} | {last[1]} |")
    return lines


def verdict(frame: pd.DataFrame, pattern: str) -> str:
    """Which configuration wins at `pattern` and whether the runner-up is separated from it."""
    done = frame[frame["finished"].astype(bool)]
    title = _pattern_title(pattern)
    if not len(done):
        return f"No configuration of {title} has finished its epochs yet: no winner."
    first = done.iloc[0]
    text = (f"**Winner at {title}: `{first['config']}`** ({first['words']}), {_pm(first['holdout'], first['holdout_se'])}"
            f"% held-out, **{_pm(first['test'], first['test_se'])}% test** after {first['epochs']} epochs.")
    if len(done) == 1:
        return text + " It is the only finished configuration of this pattern, so nothing is ranked against it."
    second = done.iloc[1]
    gap, se = first["holdout"] - second["holdout"], math.hypot(first["holdout_se"], second["holdout_se"])
    if separated(first, second):
        text += (f" It is separated from the runner-up `{second['config']}` ({second['holdout']:.2f}% held-out): "
                 f"{gap:+.2f} points, more than two standard errors of the difference ({2 * se:.2f}).")
    else:
        text += (f" It is **not separated** from the runner-up `{second['config']}` ({second['holdout']:.2f}% "
                 f"held-out): {gap:+.2f} points, within two standard errors of the difference ({2 * se:.2f}); "
                 f"on this proxy the two are a tie.")
    return text + (_field(done, first) if len(done) > 2 else "")


def separated(a: pd.Series, b: pd.Series) -> bool:
    """Whether summary row `a` is ahead of `b` by more than two standard errors of the difference
    of their held-out top-1, sqrt(se_a^2 + se_b^2)."""
    return a["holdout"] - b["holdout"] > 2 * math.hypot(a["holdout_se"], b["holdout_se"])


def _field(done: pd.DataFrame, first: pd.Series) -> str:
    """Which other finished configurations are within two standard errors of the winner."""
    tied, behind = [], []
    for _, r in done.iloc[1:].iterrows():
        (behind if separated(first, r) else tied).append(f"`{r['config']}`")
    parts = []
    if tied:
        parts.append(f"within two standard errors of the winner: {', '.join(tied)}")
    if behind:
        parts.append(f"separated below it: {', '.join(behind)}")
    return " Of the " + str(len(done)) + " finished configurations, " + "; ".join(parts) + "."


def pattern_lines(table: pd.DataFrame, pattern: str) -> list[str]:
    """A pattern's section: its table and the verdict, or that nothing has been finetuned yet."""
    frame = summary(table, pattern)
    lines = [f"## {_pattern_title(pattern)}", ""]
    if not len(frame):
        return lines + [f"No configuration of {_pattern_title(pattern)} has been finetuned yet "
                        f"(only its stage-0 networks are measured).", ""]
    running = frame[~frame["finished"].astype(bool)]
    still = ("" if not len(running) else " Still running, not ranked: " + ", ".join(
        f"`{r['config']}` (epoch {r['epoch']} of {r['epochs']})" for _, r in running.iterrows()) + ".")
    return lines + table_lines(frame) + ["", verdict(frame, pattern) + still, ""]


def stage0_lines(table: pd.DataFrame) -> list[str]:
    """What stage 0 shows, per pattern: removal at once, BatchNorm recalibration, annealing at g = 1."""
    begin = starts(table)
    lines = ["## Right after removal (stage 0)", ""]
    if "base" not in begin.index:
        return lines + ["Stage 0 has not been measured yet (`python benchmarks/recovery_sweep.py --stage 0`).", ""]
    base = begin.loc["base"]
    lines += [f"Stage 0 trains nothing: it measures the networks the methods start from (test top-1, the base "
              f"{base['test_acc']:.2f}%).", ""]
    for pattern in patterns(table):
        lines.append(f"- **{_pattern_title(pattern)}**: " + _stage0_sentence(table, pattern, base))
    return lines + ["", "BatchNorm recalibration changes only where finetuning starts: a BatchNorm in training mode "
                        "normalizes with each batch's own statistics, so the finetuning steps are the same with or "
                        "without it (`ds.train.recalibrate`).", ""]


def _dataset(table: pd.DataFrame) -> str | None:
    """The dataset the runs recorded, None when no run recorded one."""
    named = table["arg_dataset"].dropna() if "arg_dataset" in table else pd.Series(dtype=str)
    return str(named.iloc[0]) if len(named) else None


def _stage0_sentence(table: pd.DataFrame, pattern: str, base: pd.Series) -> str:
    """Stage 0 of one pattern in words, from whichever of its stage-0 rows exist."""
    begin, prefix = starts(table), letter(pattern)
    removed = begin.loc[f"{prefix}-removed"] if f"{prefix}-removed" in begin.index else None
    parts = []
    if removed is not None:
        chance = CLASSES.get(_dataset(table))
        near = (f", near chance ({100 / chance:g}% on {chance} classes)" if chance and removed["test_acc"] < 200 / chance
                else "")
        parts.append(f"removing the activations at once drops the base from {base['test_acc']:.2f}% to "
                     f"{removed['test_acc']:.2f}%{near}")
    recalibrated = [n for n in begin.index if n.startswith(f"{prefix}-removed-bn")]
    for name in recalibrated:
        row, batches = begin.loc[name], START.match(name)["batches"]
        share = ("" if removed is None else
                 f", {100 * (row['test_acc'] - removed['test_acc']) / (base['test_acc'] - removed['test_acc']):.0f}% "
                 f"of the drop back")
        parts.append(f"recalibrating its BatchNorm statistics on {batches} training batches recovers part of it: "
                     f"{row['test_acc']:.2f}%{share}")
    if f"{prefix}-anneal-g1" in begin.index:
        row = begin.loc[f"{prefix}-anneal-g1"]
        parts.append(f"annealing starts at g = 1, the base's activations in merge-ready form (each removed block's "
                     f"zero padding hoisted onto its first conv): {row['test_acc']:.2f}%, "
                     f"{base['test_acc'] - row['test_acc']:.2f} points below the base, the cost of moving the padding "
                     f"(nothing else differs)")
    return ("; ".join(parts) + ".") if parts else "no stage-0 network measured yet."


def adoption_lines(table: pd.DataFrame, adopted: tuple | None) -> list[str]:
    """The recipe the study adopts (profiles.yaml) and where the sweep ranks it, per pattern."""
    lines = ["## The recipe the study adopts", ""]
    if adopted is None:
        return lines + ["No profile of profiles.yaml names a recovery recipe yet (`recovery` or "
                        "`compare_recovery`): the chapters finetune with lr 0.02 and no warm-up.", ""]
    key, recipe, profiles = adopted
    wanted = check(recipe)
    flow = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in recipe.items())
    text = (f"The study adopts `{key}: {{{flow}}}` (profiles.yaml, "
            f"{'profile' if len(profiles) == 1 else 'profiles'} {', '.join(f'`{p}`' for p in profiles)}): "
            f"{describe(wanted)}.")
    for pattern in patterns(table):
        text += " " + _placement(summary(table, pattern), pattern, wanted)
    return lines + [text, ""]


def _placement(frame: pd.DataFrame, pattern: str, recipe: dict) -> str:
    """Where the adopted recipe ranks at `pattern`, from the table."""
    want = {"lr": recipe["lr"], "warmup_epochs": recipe["warmup_epochs"], "distill": recipe["distill"],
            "anneal_end": recipe.get("anneal_end"), "progressive": recipe.get("progressive")}
    title = _pattern_title(pattern)
    for _, r in frame.iterrows():
        if r["settings"] == want:
            if not r["finished"]:
                return f"At {title} it is `{r['config']}`, still running."
            return f"At {title} it is `{r['config']}`: {_place(frame, r)}."
    return f"At {title} the sweep has not run it yet."


def _place(frame: pd.DataFrame, row: pd.Series) -> str:
    """A finished configuration's place at its pattern in words: first (and whether separated from
    the next), or its rank and whether the winner is separated from it."""
    done = frame[frame["finished"].astype(bool)]
    at = f"{row['holdout']:.2f}% held-out, {row['test']:.2f}% test"
    if len(done) == 1:
        return f"the only finished configuration ({at})"
    if row["rank"] == 1:
        other = done[done["config"] != row["config"]].iloc[0]
        how = (f"separated from the runner-up `{other['config']}`" if separated(row, other) else
               f"but not separated from the runner-up `{other['config']}`")
        return f"first of {len(done)} by held-out top-1 ({at}), {how}"
    first = done.iloc[0]
    how = "separated below" if separated(first, row) else "not separated from"
    return f"ranked {int(row['rank'])} of {len(done)} by held-out top-1 ({at}), {how} the winner `{first['config']}`"


def command_lines(table: pd.DataFrame) -> list[str]:
    """The sweep's command lines, per stage, and the `python -m ds.train` command of each configuration."""
    stages = sorted(int(s) for s in table["stage"].unique())
    lines = ["## Reproduce", "",
             f"Generated by `{REGENERATE}` from `benchmarks/results/recovery_sweep.csv`, which "
             f"`benchmarks/recovery_sweep.py` writes (with `benchmarks/results/recovery_sweep.png`); a stage runs "
             f"what is missing of it, resumes an interrupted run, and collects:", "",
             "```bash", *[f"python benchmarks/recovery_sweep.py --stage {s}" for s in stages],
             "python -m ds.study pages                             # then this page", "```", ""]
    runs = trained(table)
    if len(runs) and "command" in runs:
        lines += ["Each finetuned configuration is one command:", "",
                  "```bash", *runs.groupby("config", sort=False)["command"].first(), "```", ""]
    return lines


# ---------------------------------------------------------------- the page, the figure

def curves(table: pd.DataFrame) -> pd.DataFrame:
    """Held-out top-1 per epoch of every finetuned configuration, its stage-0 start at epoch 0:
    columns pattern, config, epoch, holdout_acc, finished."""
    begin, rows = starts(table), []
    for name, curve in trained(table).groupby("config", sort=False):
        last = curve.sort_values("epoch").iloc[-1]
        finished = int(last["epoch"]) >= int(last["arg_epochs"])
        if start_name(last) in begin.index:
            rows.append((last["arg_pattern"], name, 0, begin.loc[start_name(last)]["holdout_acc"], finished))
        rows += [(last["arg_pattern"], name, int(r["epoch"]), r["holdout_acc"], finished)
                 for _, r in curve.sort_values("epoch").iterrows()]
    return pd.DataFrame(rows, columns=["pattern", "config", "epoch", "holdout_acc", "finished"])


def page(table: pd.DataFrame, adopted: tuple | None = None, convergence: list[str] | None = None) -> str:
    """The page "Recovering accuracy" (markdown) from the sweep's table and the adopted recipe;
    `convergence`: the section on finetuning to convergence (ds.study.convergence), before the
    commands."""
    lines = ["# Recovering accuracy", "",
             "Removing a trained network's activations drops it to near chance; how it is finetuned afterwards "
             "decides how much accuracy comes back. This page compares ways to finetune right after removal at "
             f"equal budget, from `benchmarks/results/recovery_sweep.csv` (generated by `{REGENERATE}`).", "",
             *proxy_lines(table)]
    if len(trained(table)):
        lines += ["```{figure} " + FIGURE, ":name: recovery-curves", "",
                  "Held-out top-1 after every epoch, one panel per pattern; epoch 0 is the network the method starts "
                  "from (stage 0), dashed grey the base network. Legend: each configuration's last held-out top-1.",
                  "```", ""]
    for pattern in patterns(table):
        lines += pattern_lines(table, pattern)
    lines += stage0_lines(table) + adoption_lines(table, adopted) + (convergence or []) + command_lines(table)
    return "\n".join(lines).rstrip("\n") + "\n"


def base_holdout(table: pd.DataFrame) -> float | None:
    """The base network's held-out top-1 (stage 0), None when not measured."""
    begin = starts(table)
    return float(begin.loc["base", "holdout_acc"]) if "base" in begin.index else None


def text(book_dir: Path = BOOK, sweep: Path = RECOVERY_SWEEP, profiles_file=None) -> str:
    """The page's markdown, with the convergence section (ds.study.convergence), whose figure is
    written under `book_dir`."""
    from . import convergence
    chapter3_epochs = (load_profile("cpu", profiles_file).get("finetune_epochs")
                       if "cpu" in read_profiles(profiles_file) else None)
    return page(*inputs(sweep, profiles_file), convergence.write(book_dir, chapter3_epochs=chapter3_epochs))


def write(book_dir: Path = BOOK, sweep: Path = RECOVERY_SWEEP, profiles_file=None) -> None:
    """Write book_dir/recovery.md and its figures."""
    from .figures import recovery_curves
    (Path(book_dir) / PAGE).write_text(text(book_dir, sweep, profiles_file), encoding="utf-8")
    table = read_sweep(sweep)
    if len(trained(table)):
        (Path(book_dir) / "images").mkdir(exist_ok=True)
        fig = recovery_curves(curves(table), base_holdout(table))
        fig.savefig(Path(book_dir) / FIGURE, dpi=110)
