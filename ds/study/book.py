"""The Jupyter Book: a run's own book (the book's sources, the run's executed chapters with their
parameter cells hidden, the pages generated from its tables), its build (`jupyter-book build -W -n
--keep-going`), and the publish of a complete run into the tracked book/.

A run only ever writes inside its run directory. book/ changes through `publish` alone, which
assembles and builds the new book beside it and swaps it in, so a failure leaves book/ as it was.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from .diagram import block_merge_svg
from .layout import (BOOK, BOOK_CHAPTERS, BOOK_SOURCES, CHAPTERS, REPO_ROOT, REPRODUCE_PAGE, RESULTS_PAGE,
                     RunLayout, notebook_source, relative_to_repo)
from .profiles import chapter_parameters, load_profile, read_profiles
from .steps import best_setting_per_pattern

HIDDEN_TAGS = ("parameters", "injected-parameters")


class NotPublishable(RuntimeError):
    """The run cannot be published: profile marked publish: false, or a missing or stale chapter."""


def run_label(layout: RunLayout) -> str:
    """How published files name a run directory: relative to the repository, never absolute."""
    relative = relative_to_repo(layout.root)
    return relative if not Path(relative).is_absolute() else f"runs/{layout.root.name}"


def hide_parameter_cells(notebook_path: Path, target: Path, layout: RunLayout | None = None) -> None:
    """Copy an executed notebook, tagging its parameter cells (ours and papermill's) remove-cell.

    With `layout`, machine paths are made relative: the run directory becomes `run_label(layout)`
    and the repository's absolute path disappears (from sources, outputs and metadata alike)."""
    import nbformat  # optional dependency (the `study` extra); ds.study imports without it
    nb = nbformat.read(notebook_path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if any(t in tags for t in HIDDEN_TAGS) and "remove-cell" not in tags:
            tags.append("remove-cell")
    text = nbformat.writes(nb)
    if layout is not None:
        ran_in = nb.metadata.get("papermill", {}).get("parameters", {}).get("run_dir")
        for path in filter(None, {ran_in, str(layout.root)}):
            if Path(path).is_absolute():
                text = text.replace(path, run_label(layout))
        text = text.replace(str(REPO_ROOT) + "/", "").replace(str(REPO_ROOT), ".")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def assemble(layout: RunLayout, target: Path, sources: Path = BOOK) -> Path:
    """Write a complete book for the run into `target`: the book's sources from `sources`, the
    run's executed chapters (parameter cells hidden, paths relative) and its results page."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in BOOK_SOURCES + (REPRODUCE_PAGE,):
        source = Path(sources) / name
        if source.is_dir():
            shutil.copytree(source, target / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    for chapter in CHAPTERS:
        hide_parameter_cells(layout.notebook(chapter), target / BOOK_CHAPTERS / f"{chapter}.ipynb", layout)
    (target / RESULTS_PAGE).write_text(results_page(layout))
    return target


def build_run_book(layout: RunLayout, log: logging.Logger | None = None) -> Path:
    """The run's own book, assembled in <run_dir>/book and built; the path of its index.html."""
    shutil.rmtree(layout.book, ignore_errors=True)
    assemble(layout, layout.book)
    return build_book(layout.book, log)


def publish(layout: RunLayout, book_dir: Path = BOOK, log: logging.Logger | None = None) -> Path:
    """Replace `book_dir`'s chapters and results page by the run's and build it: assembled and
    built in a temporary directory beside it, then swapped in. The caller checks that the run is
    publishable (`ds.study.runner.publish`). The path of the new index.html."""
    book_dir = Path(book_dir).resolve()
    stage = Path(tempfile.mkdtemp(prefix=f".{book_dir.name}-publish-", dir=book_dir.parent))
    old = stage.with_name(stage.name + "-old")
    try:
        shutil.copytree(book_dir, stage, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("_build", BOOK_CHAPTERS, RESULTS_PAGE, "__pycache__"))
        assemble(layout, stage, sources=book_dir)
        build_book(stage, log)
        book_dir.rename(old)
        try:
            stage.rename(book_dir)
        except OSError:
            old.rename(book_dir)
            raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    if log:
        log.info(f"published {layout.root} into {book_dir}")
    return book_dir / "_build" / "html" / "index.html"


def jupyter_book_command() -> list[str]:
    local = Path(sys.executable).with_name("jupyter-book")
    return [str(local) if local.exists() else "jupyter-book"]


def build_book(book_dir: Path, log: logging.Logger | None = None) -> Path:
    """Build the book with warnings as errors; the path of its index.html."""
    command = jupyter_book_command() + ["build", str(book_dir), "-W", "-n", "--keep-going"]
    if log:
        log.info("building the book: " + " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True)
    if log:
        for line in (done.stdout + done.stderr).splitlines():
            log.debug(line)
    if done.returncode:
        raise RuntimeError(f"jupyter-book build failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return Path(book_dir) / "_build" / "html" / "index.html"


# ---------------------------------------------------------------- generated pages

def _provenance(layout: RunLayout) -> str:
    if not layout.provenance.is_file():
        return "unknown provenance"
    record = json.loads(layout.provenance.read_text())
    profiles = sorted({r["profile"] for r in record.values()})
    devices = sorted({r["device"] for r in record.values()})
    dates = sorted(r["date_utc"] for r in record.values())
    commits = sorted({r.get("commit") or "unknown" for r in record.values()})
    return (f"profile **{', '.join(profiles)}**, commit {', '.join(commits)}, {'; '.join(devices)}, "
            f"chapters run {dates[0]} to {dates[-1]}")


def results_table(layout: RunLayout) -> pd.DataFrame:
    """One row per finetuned network: accuracy with and without distillation, merged accuracy,
    MACs, parameters and speed-up (from the run's CSVs)."""
    finetune = pd.read_csv(layout.finetune_results)
    table = finetune.pivot_table(index=["pattern", "removed_blocks"], columns="distill", values="acc").reset_index()
    table = table.rename(columns={False: "top-1 finetuned (%)", True: "top-1 distilled (%)"})
    table.columns.name = None
    if layout.merge_csv.is_file():
        merge = pd.read_csv(layout.merge_csv)
        merge = merge[merge["distill"]] if merge["distill"].any() else merge
        merged = merge[["pattern", "acc_merged", "macs_merged", "params_merged", "max_abs"]].assign(
            macs_merged=merge["macs_merged"] / 1e6, params_merged=merge["params_merged"] / 1e6)
        table = table.merge(merged, on="pattern", how="left")
    if layout.throughput_csv.is_file():
        best = best_setting_per_pattern(pd.read_csv(layout.throughput_csv))
        for device, group in best.groupby("device"):
            speed = group[["pattern", "speedup_over_best_base", "setting"]].rename(columns={
                "speedup_over_best_base": f"speed-up over the fastest base, {device}",
                "setting": f"fastest runtime, {device}"})
            table = table.merge(speed, on="pattern", how="left")
    return table.rename(columns={"removed_blocks": "removed blocks", "acc_merged": "top-1 merged (%)",
                                 "macs_merged": "MMACs merged", "params_merged": "M params merged",
                                 "max_abs": "max abs merge error"})


def results_page(layout: RunLayout) -> str:
    """The results summary page, every number read from the run directory."""
    lines = ["# Results summary", "",
             f"Generated by `python -m ds.study` from the run directory `{run_label(layout)}` "
             f"({_provenance(layout)}). Nothing on this page is typed by hand.", ""]
    if layout.base_metrics.is_file():
        base = pd.read_csv(layout.base_metrics)
        lines += [f"Base network: test top-1 {base['test_acc'].iloc[-1]:.2f}% after {len(base)} epoch(s).", ""]
    if layout.merge_csv.is_file():
        row = pd.read_csv(layout.merge_csv).iloc[0]
        lines += [f"Its BN-folded form: {row['macs_merged'] / 1e6:.2f} MMACs, {row['params_merged'] / 1e6:.3f} M "
                  f"parameters.", ""]
    if layout.comparison_csv.is_file():
        lines += ["The observation (chapter 1): one shrunk network, obtained from the trained base versus trained "
                  "from scratch.", "", _markdown_table(pd.read_csv(layout.comparison_csv)), ""]
    try:
        table = results_table(layout)
    except FileNotFoundError:
        lines += ["The run has no finetuned networks yet (chapter 3 has not finished)."]
        return "\n".join(lines) + "\n"
    lines += ["Per pattern: blocks whose activations were removed, test top-1 after finetuning without and "
              "with self-distillation, top-1 of the merged (distilled) network, its MACs and parameters, "
              "the largest absolute difference between merged and unmerged outputs, and on each device its "
              "measured throughput in the runtime where it runs fastest, as a speed-up over the fastest way "
              "to run the (BN-folded) base network there.", "",
              _markdown_table(table), "",
              "See the chapters for how each column was measured, and *Known deviations* for what differs "
              "from the paper's setting."]
    return "\n".join(lines) + "\n"


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.1e}" if 0 < abs(value) < 1e-2 else f"{value:.2f}"
        return str(value)
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule] + rows)


def papermill_command(chapter: str, profile_name: str, profiles_file=None) -> str:
    """The exact papermill command that runs one chapter of one profile (from the repository root)."""
    profile = load_profile(profile_name, profiles_file)
    run = RunLayout(Path("runs") / profile_name)
    parameters = chapter_parameters(profile, run.root)[chapter]
    return (f"papermill -k python3 {relative_to_repo(notebook_source(chapter))} {run.notebook(chapter)} \\\n"
            f"    -y '{json.dumps(parameters)}'")


def reproduce_page(profiles_file=None) -> str:
    """The Reproduce page: the runner command and, per profile, each chapter's papermill command."""
    profiles = read_profiles(profiles_file)
    lines = ["# Reproduce", "",
             "Everything in this book comes from one command, run in a clone of the repository:", "",
             "```bash", "make study                 # profile quick: about 20 minutes on 2 CPU cores",
             "make study PROFILE=full    # the GPU reproduction (one H100)", "```", "",
             "`make study` creates the virtual environment when it is missing, runs "
             "`python -m ds.study run --profile $(PROFILE)` (the five chapters below, in order, with papermill, "
             "into `runs/<profile>/`), then builds that run's own book in `runs/<profile>/book/` with "
             "`jupyter-book build -W -n --keep-going` and prints its path. A run never writes into the "
             "repository's `book/`: `make publish PROFILE=quick` (`python -m ds.study publish --profile quick`) "
             "copies a complete run into it and builds it, and refuses a run with a missing or stale chapter "
             "or a profile marked `publish: false` (`tiny`).", "",
             "A finished chapter leaves `runs/<profile>/NN_name.done` with the parameters it ran with; a rerun "
             "skips it while they and its notebook are unchanged, reruns it from scratch (and the chapters after "
             "it) when they changed, and resumes unfinished chapters from their checkpoints. "
             "`--restart --chapters NN_name` runs a chapter again. One process at a time may run in a run "
             "directory (`study.lock`).", "",
             "Set `DS_DATA` to the directory that holds `cifar10-jpeg.tar.xz` (or torchvision's CIFAR-10).", "",
             "## What a run leaves in `runs/<profile>/`", "",
             "- `NN_name.ipynb`: each executed chapter, with its figures, tables and, on failure, the traceback;",
             "- `base/`: the base network (`checkpoint.pt`, `metrics.csv`), trained in chapter 1;",
             "- `01_observation/removal.csv`, `comparison.csv`; `02_search/k<budget>/` (checkpoint, `gates.csv`) "
             "and `patterns.json`; `03_finetune/<pattern>/{plain,distill}/` and `results.csv`; "
             "`04_merge/merge.csv` and `04_merge/networks/` (the merged networks, which chapter 5 times); "
             "`05_throughput/throughput.csv`;",
             "- `provenance.json` (profile, device, date, commit of each chapter), `timings.json`, `study.log`, "
             "a `NN_name.done` record per finished chapter, and `book/`, the run's own book.", "",
             "## Time-limited machines", "",
             "A profile with `piece_minutes` (the `full` profile: 9) makes each invocation a *piece*: training "
             "stops at an epoch boundary before the piece would run over (once the piece has done some work, so "
             "every piece moves the run forward), the command exits with code 3 and says it paused, and the same "
             "command continues from the checkpoints. Ctrl-C stops a run the same way: rerun to resume. Within any profile, an interrupted "
             "run (a killed job, a lost machine) continues the same way.", "",
             "To run one chapter by hand, use the papermill commands below from the repository root "
             "(chapters read the outputs of the chapters before them from the run directory). "
             "They are generated from `profiles.yaml`, so they match the profiles exactly.", ""]
    for name, profile in profiles.items():
        lines += [f"## Profile `{name}`", "", profile.get("description", "").strip(), ""]
        for chapter in CHAPTERS:
            lines += [f"{chapter}:", "", "```bash", papermill_command(chapter, name, profiles_file), "```", ""]
    lines += ["## Adding a profile", "",
              "Add an entry to `profiles.yaml` (it may start from another with `extends: quick`) and run "
              "`make study PROFILE=<name>`; no code changes. A key no chapter declares is an error that lists "
              "the valid ones."]
    return "\n".join(lines) + "\n"


def write_static_pages(book_dir: Path = BOOK, profiles_file=None) -> None:
    """Pages generated from the repository (not from a run): Reproduce and the intro's diagram.
    Only `python -m ds.study pages` writes them; a run never does."""
    (book_dir / REPRODUCE_PAGE).write_text(reproduce_page(profiles_file))
    (book_dir / "images").mkdir(exist_ok=True)
    (book_dir / "images" / "block_merge.svg").write_text(block_merge_svg())
