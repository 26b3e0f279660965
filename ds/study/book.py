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

from ds.paper import PAPER_TOP1, PAPER_V100_REPORTED_SPEEDUP

from . import convergence, headline
from .diagram import block_merge_svg
from .layout import (BOOK, BOOK_CHAPTERS, BOOK_SOURCES, CHAPTERS, GPU_PAGES, NOTEBOOKS, RECIPE_PAGE, RECOVERY_PAGE,
                     REPO_ROOT, REPRODUCE_PAGE, RESULTS_DIR, RESULTS_PAGE, RunLayout, notebook_source,
                     published_base_curve, relative_to_repo, adopted_from)
from .profiles import chapter_parameters, load_profile, profile_chapters, read_profiles
from .finetune import distill_reading
from .int8 import int8_summary
from .observation import beside_published, observation_reading
from .search import candidate_reading, candidate_table
from .throughput import published_tables, throughput_reading
from .uncertainty import difference, test_se

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
    and the repository's absolute path disappears (from sources, outputs and metadata alike), as
    does that of the checkout that executed it (papermill's `input_path` names its notebooks/
    folder; a run made in another worktree and copied here is published from this one)."""
    import nbformat  # optional dependency (the `study` extra); ds.study imports without it
    nb = nbformat.read(notebook_path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if any(t in tags for t in HIDDEN_TAGS) and "remove-cell" not in tags:
            tags.append("remove-cell")
    text = nbformat.writes(nb)
    if layout is not None:
        record = nb.metadata.get("papermill", {})
        output = record.get("output_path")
        for path in filter(None, {record.get("parameters", {}).get("run_dir"), str(layout.root),
                                  output and str(Path(output).parent)}):
            if Path(path).is_absolute():
                text = text.replace(path, run_label(layout))
        executed_in = Path(record.get("input_path") or "").parent
        roots = {str(REPO_ROOT)} | ({str(executed_in.parent)} if executed_in.is_absolute()
                                    and executed_in.name == NOTEBOOKS.name else set())
        for root in sorted(roots, key=len, reverse=True):
            text = text.replace(root + "/", "").replace(root, ".")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def assemble(layout: RunLayout, target: Path, sources: Path = BOOK) -> Path:
    """Write a complete book for the run into `target`: the book's sources from `sources`, the
    run's executed chapters (parameter cells hidden, paths relative) and its results page."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    published_gpu = (GPU_PAGES,) if (Path(sources) / GPU_PAGES).is_dir() else ()   # the table of contents lists them
    for name in BOOK_SOURCES + (REPRODUCE_PAGE, RECIPE_PAGE, RECOVERY_PAGE) + published_gpu:
        source = Path(sources) / name
        if source.is_dir():
            shutil.copytree(source, target / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    for chapter in CHAPTERS:
        hide_parameter_cells(layout.notebook(chapter), target / BOOK_CHAPTERS / f"{chapter}.ipynb", layout)
    (target / RESULTS_PAGE).write_text(results_page(layout, figure_dir=target))
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
    html = rebuild(book_dir, lambda stage: assemble(layout, stage, sources=book_dir), log,
                   leave_out=(BOOK_CHAPTERS, RESULTS_PAGE))
    if log:
        log.info(f"published {layout.root} into {book_dir}")
    return html


def rebuild(book_dir: Path, change, log: logging.Logger | None = None, leave_out=()) -> Path:
    """Copy `book_dir` (without its build and `leave_out`) beside it, let `change(copy)` write
    into the copy, build it and swap it in: a failure leaves `book_dir` as it was. The path of the
    new index.html."""
    book_dir = Path(book_dir).resolve()
    stage = Path(tempfile.mkdtemp(prefix=f".{book_dir.name}-publish-", dir=book_dir.parent))
    old = stage.with_name(stage.name + "-old")
    try:
        shutil.copytree(book_dir, stage, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("_build", "__pycache__", *leave_out))
        change(stage)
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

def run_provenance(layout: RunLayout) -> dict:
    """The run's provenance.json (per chapter: profile, device, date, commit, torch, host); {} when
    it has none."""
    return json.loads(layout.provenance.read_text()) if layout.provenance.is_file() else {}


def _provenance(layout: RunLayout) -> str:
    record = run_provenance(layout)
    if not record:
        return "unknown provenance"
    profiles = sorted({r["profile"] for r in record.values()})
    devices = sorted({r["device"] for r in record.values()})
    dates = sorted(r["date_utc"] for r in record.values())
    commits = sorted({r.get("commit") or "unknown" for r in record.values()})
    return (f"profile **{', '.join(profiles)}**, commit {', '.join(commits)}, {'; '.join(devices)}, "
            f"chapter starts (the last, when resumed) {dates[0]} to {dates[-1]}" + _features_note(record))


def _features_note(record: dict) -> str:
    """'' when every chapter recorded the same CPU instruction sets; else which chapters ran with which
    (a VM may keep its model name on hosts of another generation, and INT8 and bf16 results depend on
    them), the chapters without a record named as such."""
    groups: dict[str, list[str]] = {}
    for chapter, entry in record.items():
        features = entry.get("cpu_features")
        key = "not recorded" if features is None else (" ".join(features) or "none of those ds records")
        groups.setdefault(key, []).append(chapter)
    if len(groups) < 2:
        return ""
    return ("; **the chapters ran on CPUs with different instruction sets**: " + "; ".join(
        f"{key} ({', '.join(chapters)})" for key, chapters in groups.items()))


# What the paper claims, beside each answer (its ImageNet results for MobileNetV2-1.4; ds.paper).
PAPER_CLAIMS = {
    "kept": "on ImageNet, after 180 finetuning epochs, top-1 against the base and V100 speed-up: "
            + "; ".join(f"{name} {headline.paper_result(name)}" for name in headline.TARGETS),
    "observation": "activations removed after training, then finetuned, beat the same linear network "
                   "trained from scratch",
    "search": "the searched patterns beat hand-picked ones at the same number of removed blocks",
    "distill": "self-distillation from the original network improves the finetuned accuracy",
    "merge": "merged networks compute the same function (the public code never merged real weights)",
    "throughput": f"DS-A to DS-F run {min(PAPER_V100_REPORTED_SPEEDUP[p] for p in PAPER_TOP1):.2f}x to "
                  f"{max(PAPER_V100_REPORTED_SPEEDUP[p] for p in PAPER_TOP1):.2f}x faster than the base on a V100 "
                  f"(PyTorch, fp32, batch 128)",
}


def _answers(layout: RunLayout) -> list[str]:
    """The run's answer to each of the paper's questions, with its number and uncertainty, the
    paper's claim beside it; a question the run did not reach says so."""
    lines = []

    def answer(title: str, claim: str, body: str | None) -> None:
        lines.extend([f"### {title}", "", f"*Paper:* {PAPER_CLAIMS[claim]}.", "",
                      body or "This run has no answer: the chapter did not produce its table.", ""])

    observation = pd.read_csv(layout.observation_csv) if layout.observation_csv.is_file() else None
    if observation is not None and layout.observation_published.is_file():   # the full-scale run, published
        observation = beside_published(observation, pd.read_csv(layout.observation_published))
    answer("1. Are activations needed after training? (chapter 1)", "observation",
           observation_reading(observation) if observation is not None and
           {"after_training", "from_scratch"} <= set(observation["arm"]) else None)
    search = None
    if layout.candidates_csv.is_file() and layout.candidate_speed_csv.is_file():
        base_top1 = pd.read_csv(layout.base_metrics)["test_acc"].iloc[-1]
        search = candidate_reading(candidate_table(pd.read_csv(layout.candidates_csv, dtype={"pattern_bits": str}),
                                                   pd.read_csv(layout.candidate_speed_csv), base_top1))
    answer("2. Does the search find better patterns? (chapter 2)", "search", search)
    distill = distill_reading(pd.read_csv(layout.finetune_results)) if layout.finetune_results.is_file() else None
    answer("3. Does self-distillation help? (chapter 3)", "distill", distill)
    merge = None
    if layout.merge_csv.is_file():
        table = pd.read_csv(layout.merge_csv)
        same = int((table["acc_merged"] == table["acc_unmerged"]).sum())
        merge = (f"{len(table)} networks merged (the base and every finetuned network); merged top-1 equals "
                 f"unmerged top-1 on the whole test set for **{same} of {len(table)}**; largest relative output "
                 f"error {table['max_rel'].max():.1e}, largest absolute {table['max_abs'].max():.1e} (float32).")
    answer("4. Is the merge exact? (chapter 4)", "merge", merge)
    speed = None
    if layout.throughput_csv.is_file():
        speed = throughput_reading(pd.read_csv(layout.throughput_csv))
        int8 = int8_summary(pd.read_csv(layout.int8_csv)) if layout.int8_csv.is_file() else None
        speed += f"\n\n{int8}" if int8 else ""
    answer("5. How much faster are the merged networks? (chapter 5)", "throughput", speed)
    return lines


RESULTS_FIGURE = "images/results_accuracy_speed.png"   # the results page's figure, inside the book


def _kept_lines(layout: RunLayout, figure_dir: Path | None, base_source: str | None = None,
                sweep: Path = convergence.SWEEP) -> list[str]:
    """The first answer: how much accuracy the shrunk networks keep, at what speed (ds.study.headline),
    and, for a run from a published base (`base_source`, its checkpoint), what the convergence
    sweep's longer finetunes from it keep."""
    lines = ["## How much accuracy the shrunk networks keep, at what speed", ""]
    if not (layout.study_csv.is_file() and layout.finetune_results.is_file()):
        return lines + ["This run has no answer: chapters 3 and 5 did not produce their tables.", ""]
    study = pd.read_csv(layout.study_csv)
    base_top1 = float(study.loc[study["source"] == "base", "top1_merged"].iloc[0])
    test_images = int(pd.read_csv(layout.finetune_results)["test_images"].iloc[0])
    counts = headline.paper_counts(study)
    longer = convergence.results_lines(base_source, base_top1, sweep)
    lines += [f"*Paper:* {PAPER_CLAIMS['kept']}.", "",
              headline.kept_reading(study, base_top1, test_images, counts), "", *longer,
              f"Every network chapter 3 finetuned, merged, on the {test_images:,} test images (+- one standard "
              f"error; against the base: the standard error of the difference, one seed each), its INT8 top-1, "
              f"and its speed-up over the fastest way to run the base (INT8 included) in the setting where it "
              f"runs fastest:", "",
              _markdown_table(headline.kept_table(study, base_top1, test_images, counts)), ""]
    if figure_dir is not None and headline.write_figure(study, base_top1, Path(figure_dir) / RESULTS_FIGURE):
        lines += [f"![Accuracy against speed-up of every network of the run]({RESULTS_FIGURE})", "",
                  "Every network of the run (grey: chapter 2's candidates after one epoch; blue and green: chapter "
                  "3's), each in its fastest CPU setting; the dashed line is the base network. The paper's bars "
                  "are its ImageNet top-1 changes added to this base, at its V100 speed-ups: a different dataset "
                  "and a different machine, shown for scale, not as a like-for-like comparison.", ""]
    return lines


def results_page(layout: RunLayout, results_dir: Path = RESULTS_DIR, title: str = "Results summary",
                 figure_dir: Path | None = None, sweep: Path = convergence.SWEEP) -> str:
    """The results summary page, every number read from the run directory: how much accuracy the
    shrunk networks keep at what speed (its figure written under `figure_dir`, the book being
    assembled, when given), the answers to the paper's questions, then what the GPU runs published
    in `results_dir` say (or that there is none), then the base network and one row per network of
    the run."""
    lines = [f"# {title}", "",
             f"Generated by `python -m ds.study` from the run directory `{run_label(layout)}` "
             f"({_provenance(layout)}). Nothing on this page is typed by hand.", ""]
    base_source = None
    if layout.base_metrics.is_file():
        base = pd.read_csv(layout.base_metrics)
        lines += [base_line(base), ""]
        base_source = adopted_from(base)
    lines += (_kept_lines(layout, figure_dir, base_source, sweep) + ["## The answers", ""] + _answers(layout)
              + gpu_section(results_dir))
    if layout.study_csv.is_file():
        study = pd.read_csv(layout.study_csv)
        shown = study.drop(columns=[c for c in ("seed",) if c in study]).assign(macs=study["macs"] / 1e6)
        lines += ["## Every network of the run", "",
                  "One row per network (`study.csv`, published as `data/results/study_<profile>.csv`): where its "
                  "pattern comes from, how it was finetuned (`candidate`: chapter 2's comparison; `plain` and "
                  "`distill`: chapter 3), test top-1 before and after merging, MMACs merged, and the throughput "
                  "in the setting where it runs fastest, as a speed-up over the fastest way to run the base.", "",
                  _markdown_table(shown.rename(columns={"macs": "MMACs"})), ""]
    lines += ["See the chapters for how each number was measured, and *Known deviations* for what differs from "
              "the paper's setting."]
    return "\n".join(lines) + "\n"


def base_line(base: pd.DataFrame) -> str:
    """The results page's line on the base network, from the run's base metrics: its curve, or the
    one evaluation row of a base adopted from a published checkpoint (`base_checkpoint`)."""
    top1 = f"Base network: test top-1 **{base['test_acc'].iloc[-1]:.2f}%**"
    if "source" in base:
        return (f"{top1}, adopted from `{base['source'].iloc[-1]}` (the profile's `base_checkpoint`: this run "
                f"did not train it; the *training recipe* page shows the run that did).")
    train = f", training accuracy {base['train_acc'].iloc[-1]:.2f}% on augmented batches" if "train_acc" in base else ""
    return f"{top1} after {len(base)} epoch(s){train}."


GPU_HEADING = "## On a GPU"


def _gpu_tables(results_dir: Path) -> dict[Path, pd.DataFrame]:
    """The published throughput tables measured on a GPU ({path: table})."""
    return {Path(p): t for p, t in published_tables(results_dir).items() if (t["device"] == "cuda").any()}


def _gpu_studies(results_dir: Path) -> dict[Path, dict]:
    """The published studies whose chapters ran on a GPU ({study csv: its provenance record})."""
    found = {}
    for path in sorted(Path(results_dir).glob("study_*.csv")):
        side = path.with_name(path.name + ".provenance.json")
        record = json.loads(side.read_text()) if side.is_file() else {}
        if any("CUDA" in str(c.get("device", "")) for c in record.get("chapters", {}).values()):
            found[path] = record
    return found


def _setting(row) -> str:
    return f"{row['runtime']} {row['dtype']} {row['layout']} {row['mode']}"


def _gpu_table_lines(path: Path, table: pd.DataFrame) -> list[str]:
    """One GPU throughput table: the paper's setting with the paper's V100 speed-ups beside, and
    each network in its fastest setting against the fastest base (batch 128, 224 px)."""
    side = path.with_suffix(".json")
    record = json.loads(side.read_text()) if side.is_file() else {}
    smi = (record.get("gpu") or {}).get("nvidia_smi")
    smi = smi[0] if isinstance(smi, list) and smi else {}
    table = table[(table["device"] == "cuda") & (table["batch"] == 128) & (table["input"].astype(str) == "224")]
    name = table["device_name"].iloc[0] if len(table) else "GPU"
    where = ", ".join(filter(None, [
        f"driver {smi['driver_version']}" if smi.get("driver_version") else None,
        f"torch {table['torch'].iloc[0]}" if len(table) else None,
        f"CUDA {(record.get('gpu') or {}).get('cuda')}" if (record.get("gpu") or {}).get("cuda") else None,
        f"commit {(record.get('git') or {}).get('short')}" if (record.get("git") or {}).get("short") else None,
        record.get("date_utc")]))
    lines = [f"**{name}** (`{relative_to_repo(path)}`: {table['model'].iloc[0] if len(table) else ''} at 224 px, "
             f"random weights, batch 128; {where}).", ""]
    paper = table[(table["dtype"] == "fp32") & (table["layout"] == "nchw") & (table["mode"] == "eager")]
    if paper.empty or table[table["pattern"] == "base"].empty:
        return lines + ["This table has no rows in the paper's setting (fp32, NCHW, eager, batch 128).", ""]
    best = table.loc[table.groupby("pattern", sort=False)["img_s_median"].idxmax()].set_index("pattern")
    base = best.loc["base"]
    merged = paper[paper["pattern"] != "base"]
    over = best.drop(index="base")["speedup_over_best_base"]
    lines += [f"In the paper's setting (torch fp32 NCHW eager) the merged networks run "
              f"**{merged['speedup_same_runtime'].min():.2f}x to {merged['speedup_same_runtime'].max():.2f}x** "
              f"faster than the base (the paper: {min(PAPER_V100_REPORTED_SPEEDUP[p] for p in PAPER_TOP1):.2f}x to "
              f"{max(PAPER_V100_REPORTED_SPEEDUP[p] for p in PAPER_TOP1):.2f}x on a V100). The fastest way to run the "
              f"base is **{_setting(base)}** at {base['img_s_median']:.1f} img/s; each merged network in its fastest "
              f"setting runs {over.min():.2f}x to {over.max():.2f}x that.", ""]
    rows = pd.DataFrame({
        "pattern": paper["pattern"].values,
        "img/s, paper's setting": paper["img_s_median"].values,
        "speed-up, paper's setting": paper["speedup_same_runtime"].values,
        "paper V100 (reported)": [PAPER_V100_REPORTED_SPEEDUP.get(p) for p in paper["pattern"]],
        "fastest setting": [_setting(best.loc[p]) for p in paper["pattern"]],
        "img/s, fastest setting": [best.loc[p, "img_s_median"] for p in paper["pattern"]],
        "over the fastest base": [best.loc[p, "speedup_over_best_base"] for p in paper["pattern"]]})
    return lines + [_markdown_table(rows), ""]


def _gpu_study_lines(path: Path, record: dict) -> list[str]:
    """One published GPU study: its base, chapter 3's networks, the merge check and the speed-ups."""
    study = pd.read_csv(path)
    label = path.stem[len("study_"):]
    device = sorted({c.get("device") for c in record.get("chapters", {}).values() if c.get("device")})
    base = study[study["source"] == "base"].iloc[0]
    finetuned = study[study["finetune"].isin(["plain", "distill"])]
    merged = study[study["source"] != "base"]
    fastest = merged.loc[merged["speedup"].idxmax()] if len(merged) else None
    parts = [f"the base reaches {base['top1']:.2f}% top-1"]
    parts += [f"{r['pattern']} ({r['finetune']}, {r['removed_blocks']} blocks removed) {r['top1']:.2f}% "
              f"({r['top1'] - base['top1']:+.2f} points)" for _, r in finetuned.iterrows()]
    parts.append(f"merged top-1 equals unmerged top-1 for {int((study['top1'] == study['top1_merged']).sum())} of "
                 f"{len(study)} networks")
    if fastest is not None:
        parts.append(f"the fastest merged network, {fastest['pattern']}, runs {fastest['speedup']:.2f}x the fastest "
                     f"base ({fastest['setting']})")
    return [f"**The GPU study `{label}`** on {', '.join(device) or 'a GPU'}, `{relative_to_repo(path)}` (its pages: "
            f"{{doc}}`results and chapters </{GPU_PAGES}/{label}/results>`): " + "; ".join(parts) + ".", ""]


def gpu_section(results_dir: Path = RESULTS_DIR) -> list[str]:
    """The results page's GPU section, from what GPU runs published in `results_dir`: each GPU
    table with the paper's speed-ups beside, each GPU study; or, plainly, that there is none."""
    lines = [GPU_HEADING, "", f"*Paper:* {PAPER_CLAIMS['throughput']}.", ""]
    tables, studies = _gpu_tables(results_dir), _gpu_studies(results_dir)
    if not tables and not studies:
        return lines + ["**No GPU run exists yet.** No throughput table measured on a GPU and no study run on one "
                        "is published in `data/results/`: every number above is from the CPU. "
                        "`scripts/gpu_publish.sh` makes them on a lent GPU machine and `scripts/gpu_publish.sh "
                        "--publish` publishes them here (README, *GPU results*).", ""]
    for path, table in tables.items():
        lines += _gpu_table_lines(path, table)
    for path, record in studies.items():
        lines += _gpu_study_lines(path, record)
    if not studies:
        lines += ["No study has run on a GPU yet (the `gpu` profile: README, *GPU results*).", ""]
    return lines


def with_gpu_section(page: str, results_dir: Path = RESULTS_DIR) -> str:
    """A results page (`results_page`'s text) with its GPU section made anew from `results_dir`;
    a page without one gets it before its table of networks."""
    section = "\n".join(gpu_section(results_dir)) + "\n"
    start = page.find(GPU_HEADING + "\n")
    if start < 0:
        start = end = page.find("## Every network of the run")
        if start < 0:
            start = end = len(page)
    else:
        following = page.find("\n## ", start + len(GPU_HEADING))
        end = len(page) if following < 0 else following + 1
    return page[:start] + section + page[end:]


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
             "```bash", "make study                       # profile quick: about 15 to 20 minutes on 2 CPU cores",
             "make study PROFILE=cpu-observe   # chapter 1 at full scale and the base network cpu adopts",
             "make publish PROFILE=cpu-observe # its base and table into data/ (no book of its own)",
             "make study PROFILE=cpu           # the published study: all of CIFAR-10 on 2 CPU cores",
             "make study PROFILE=gpu           # the GPU study: all of CIFAR-10 on one GPU, in pieces of at most 9 minutes",
             "```", "",
             "Each profile's description below says how long it takes and where the time goes.", "",
             "On a lent GPU machine, `scripts/gpu_publish.sh` runs the GPU throughput tables first and then the `gpu` "
             "profile, sized to the time left from the training speed it measured (README, *GPU results*).", "",
             "`make study` creates the virtual environment when it is missing, runs "
             "`python -m ds.study run --profile $(PROFILE)` (the five chapters below, in order, with papermill, "
             "into `runs/<profile>/`), then builds that run's own book in `runs/<profile>/book/` with "
             "`jupyter-book build -W -n --keep-going` and prints its path. A run never writes into the "
             "repository's `book/`: `make publish PROFILE=cpu` (`python -m ds.study publish --profile cpu`) "
             "copies a complete run into it and builds it, and refuses a run with a missing or stale chapter "
             "or a profile marked `publish: false` (`quick`, `tiny`).", "",
             "A finished chapter leaves `runs/<profile>/NN_name.done` with the parameters it ran with; a rerun "
             "skips it while they and its notebook are unchanged, reruns it from scratch (and the chapters after "
             "it) when they changed, and resumes unfinished chapters from their checkpoints. "
             "`--restart --chapters NN_name` runs a chapter again. One process at a time may run in a run "
             "directory (`study.lock`).", "",
             "Set `DS_DATA` to the directory that holds `cifar10-jpeg.tar.xz` (or torchvision's CIFAR-10).", "",
             "## What a run leaves in `runs/<profile>/`", "",
             "- `NN_name.ipynb`: each executed chapter, with its figures, tables and, on failure, the traceback;",
             "- `base/`: the base network (`checkpoint.pt`, `metrics.csv`), trained in chapter 1;",
             "- `01_observation/removal.csv`, `observation.csv` (one row per arm and seed) and `observation/` (its "
             "networks); `02_search/k<budget>/` (checkpoint, `gates.csv`), `patterns.json`, `candidates.csv` and "
             "`finetune/<pattern>/` (every candidate finetuned alike), `candidate_speed.csv`; "
             "`03_finetune/<pattern>/{plain,distill}/` and `results.csv`; `04_merge/merge.csv` and "
             "`04_merge/networks/` (the merged networks, which chapter 5 times); `05_throughput/throughput.csv`, "
             "`time_shares.csv` and `study.csv` (one row per network; publishing copies it and `observation.csv` "
             "to `data/results/<table>_<profile>.csv`);",
             "- `provenance.json` (profile, device, date, commit of each chapter), `timings.json`, `study.log`, "
             "a `NN_name.done` record per finished chapter, and `book/`, the run's own book.", "",
             "## Time-limited machines", "",
             "A profile with `piece_minutes` (the `gpu` profile: 9) makes each invocation a *piece*: training "
             "stops at an epoch boundary before the piece would run over (once the piece has done some work, so "
             "every piece moves the run forward), the command exits with code 3 and says it paused, and the same "
             "command continues from the checkpoints. Ctrl-C stops a run the same way: rerun to resume. Within any profile, an interrupted "
             "run (a killed job, a lost machine) continues the same way.", "",
             "To run one chapter by hand, use the papermill commands below from the repository root "
             "(chapters read the outputs of the chapters before them from the run directory). "
             "They are generated from `profiles.yaml`, so they match the profiles exactly.", ""]
    for name, profile in profiles.items():
        lines += [f"## Profile `{name}`", "", profile.get("description", "").strip(), ""]
        for chapter in profile_chapters(load_profile(name, profiles_file)):
            lines += [f"{chapter}:", "", "```bash", papermill_command(chapter, name, profiles_file), "```", ""]
    lines += ["## Adding a profile", "",
              "Add an entry to `profiles.yaml` (it may start from another with `extends: quick`) and run "
              "`make study PROFILE=<name>`; no code changes. A key no chapter declares is an error that lists "
              "the valid ones."]
    return "\n".join(lines) + "\n"


RECIPE_SWEEP = REPO_ROOT / "benchmarks" / "results" / "recipe_sweep.csv"
TARGET_TOP1 = 85.0   # the base network's target on the recipe page (%)


def _shortfall(test_acc: pd.Series) -> str:
    """How far a curve (test top-1 per epoch) ends below the target, and what its last epoch changed."""
    return (f"{TARGET_TOP1 - test_acc.iloc[-1]:.2f} points short of the 85% target; its last epoch changed top-1 by "
            f"{test_acc.iloc[-1] - test_acc.iloc[-2]:+.2f} points")


def recipe_page(sweep: pd.DataFrame, profile_base: pd.DataFrame | None = None, profile: str = "cpu",
                trained_by: str | None = None) -> str:
    """The training recipe page, from the sweep's table (benchmarks/recipe_sweep.py) and, once a
    run of `profile` is published, its base network's curve: what was tried, the curves, and
    what the profile trains with. `trained_by`: the profile whose run trained the base when
    `profile` adopts it (its `base_checkpoint`); `profile_base` is then that run's curve."""
    last = sweep.sort_values("epoch").groupby("config", sort=False).tail(1).set_index("config").loc[
        sweep["config"].unique()]
    constant = ("arg_backbone", "arg_dataset", "arg_threads", "arg_input_size", "arg_seed", "arg_epochs")
    args = [c for c in sweep.columns if c.startswith("arg_") and c not in constant]
    table = last[["stage", "epoch"] + args + ["train_acc", "test_acc"]].reset_index().rename(
        columns={c: c[4:].replace("_", " ") for c in args} | {"epoch": "epochs", "train_acc": "train acc (%)",
                                                              "test_acc": "test top-1 (%)"})
    long = last[last["epoch"] == last["epoch"].max()]
    best = long.sort_values("test_acc").iloc[-1]
    curve = sweep[sweep["config"] == best.name].sort_values("epoch")["test_acc"]
    return "\n".join([
        "# The training recipe", "",
        "How the `cpu` profile trains its base network: mobilenetv2_035 with CIFAR strides on all of CIFAR-10 at "
        "32 px, 2 CPU cores. Generated by `python -m ds.study pages` from `benchmarks/results/recipe_sweep.csv`, "
        "which `python benchmarks/recipe_sweep.py --stage N` writes (one `python -m ds.train` command per "
        "configuration, stored with its curve and the load average).", "",
        "Every configuration uses SGD with Nesterov momentum, a per-step cosine schedule after a linear warm-up, "
        "weight decay on weights only (not on BN parameters and biases), random crop (4 px padding) and flip. "
        "Stage 1 compares variations on a 4-epoch proxy (each schedule warms up and decays to zero within the "
        "4 epochs); stage 2 trains the leader for the epochs the profile can afford, and stage 3, where it has run, "
        "for longer than the profile can afford, to see whether more epochs would reach the target.", "",
        "```{figure} images/recipe_curves.png", ":name: recipe-curves", "",
        "Test top-1 after every epoch, per configuration (dashed: 4-epoch proxies).", "```", "",
        _markdown_table(table), "",
        f"**Result.** The longest run, `{best.name}`, reaches **{best['test_acc']:.2f}%** test top-1 after "
        f"{int(best['epoch'])} epochs (training accuracy {best['train_acc']:.1f}% on augmented batches), "
        + ("meeting the 85% target." if curve.iloc[-1] >= TARGET_TOP1
           else _shortfall(curve) + ".")
        + " One seed per configuration: the test set's "
        "standard error at 70-85% top-1 is 0.36-0.46 points, so differences of about a point between the "
        "4-epoch proxies are not separated.", "",
        "The commands, per configuration:", "",
        "```bash", *[c for c in sweep.groupby("config", sort=False)["command"].first()], "```", "",
        f"## The `{profile}` profile's base network", "",
        "The sweep above ran with timm's classifier initialization; since then `ds.create_model` draws the "
        "classifier from N(0, 0.01), which trains faster on short schedules "
        "(`benchmarks/classifier_init.py`, `benchmarks/results/classifier_init.csv`). The profile's base "
        "network is trained with it.", "",
        *_profile_base_lines(profile_base, profile, best, trained_by or profile)])


def _profile_base_lines(curve: pd.DataFrame | None, profile: str, sweep_best: pd.Series,
                        trained_by: str) -> list[str]:
    """The published base network's curve and, when it misses the target, why."""
    if curve is None:
        return [f"No run of the `{profile}` profile is published yet (`data/results/base_metrics_{profile}.csv` "
                f"is written by `make publish PROFILE={profile}`).", ""]
    final = curve.iloc[-1]
    verdict = ("It meets the 85% target." if final["test_acc"] >= TARGET_TOP1 else
               f"It falls {_shortfall(curve['test_acc'])}.")
    adopted = ([] if trained_by == profile else
               [f"The `{profile}` profile does not train its base network: it adopts the one the `{trained_by}` "
                f"profile's published run trained (`data/checkpoints/{trained_by}/base.pt`, its `base_checkpoint`).",
                ""])
    return [*adopted,
            f"The published `{trained_by}` run trains the base network with stage 1's leading learning rate (0.4) "
            f"for {len(curve)} epochs: **{final['test_acc']:.2f}%** test top-1 (training accuracy "
            f"{final['train_acc']:.1f}% on augmented batches; the test set's standard error "
            f"{test_se(final['test_acc'], 10_000):.2f} points). {verdict} Per epoch "
            f"(`data/results/base_metrics_{trained_by}.csv`):", "",
            _markdown_table(curve[["epoch", "train_acc", "test_acc", "seconds"]].rename(columns={
                "train_acc": "train acc (%)", "test_acc": "test top-1 (%)", "seconds": "seconds"})), "",
            *([] if final["test_acc"] >= TARGET_TOP1 else [_why_short(curve, sweep_best), ""])]


def _why_short(curve: pd.DataFrame, sweep_best: pd.Series) -> str:
    """Why the published base misses the target, from its curve and the sweep's best long run (a
    longer schedule than the profile's, once the sweep has one)."""
    final = curve.iloc[-1]
    gap = difference(pd.Series([sweep_best["test_acc"]]), pd.Series([final["test_acc"]]), 10_000)
    apart, noise = gap.value, 2 * gap.se
    per_epoch = curve["seconds"].median()
    within = "within" if gap.verdict == "not separated" else "beyond"
    text = (f"**Why not 85%.** The network does not overfit: its training accuracy on augmented batches ends only "
            f"{final['train_acc'] - final['test_acc']:.1f} points above its test top-1, so the lever to try is more "
            f"training or a wider network rather than more regularization. Neither fits: the base already takes "
            f"{curve['seconds'].sum() / 60:.0f} minutes of the profile's 150 ({per_epoch:.0f} s per epoch on "
            f"these 2 cores), and the other chapters need the rest. ")
    epochs = int(sweep_best["epoch"])
    if epochs <= len(curve):
        return text + (f"Within what fits, length and rate did not decide it: this {len(curve)}-epoch run and the "
                       f"sweep's {epochs}-epoch run `{sweep_best.name}` differ by {-apart:+.2f} points, {within} the "
                       f"test set's noise (two standard errors of a difference: {noise:.1f} points). Whether a longer "
                       f"schedule passes 85% on this network is not measured here.")
    return text + (f"A longer schedule was measured: the sweep's {epochs}-epoch run `{sweep_best.name}` reaches "
                   f"{sweep_best['test_acc']:.2f}%, {apart:+.2f} points over this run ({within} the test set's noise "
                   f"of {noise:.1f} points), "
                   + ("meeting" if sweep_best["test_acc"] >= TARGET_TOP1 else "still short of")
                   + f" the target; its base alone would take about {epochs * per_epoch / 60:.0f} minutes here.")


def recipe_inputs(sweep: Path = RECIPE_SWEEP, results_dir: Path = RESULTS_DIR,
                  profile: str = "cpu") -> tuple[pd.DataFrame, pd.DataFrame | None, str, str]:
    """What the recipe page is made of: the sweep's table, the published base curve of `profile`
    (None until a run of it is published), the profile and the profile whose run trained that base.
    A run that adopted its base (`base_checkpoint`) publishes one evaluation row naming the
    checkpoint (data/checkpoints/<profile>/base.pt); the curve is then that profile's."""
    table = pd.read_csv(sweep, keep_default_na=False, na_values={"test_acc": [""]})
    published = Path(results_dir) / f"base_metrics_{profile}.csv"
    if not published.is_file():
        return table, None, profile, profile
    curve = pd.read_csv(published)
    if "source" not in curve:
        return table, curve, profile, profile
    trained_by, trained = published_base_curve(curve["source"].iloc[0], results_dir)
    return table, pd.read_csv(trained), profile, trained_by


def write_static_pages(book_dir: Path = BOOK, profiles_file=None, sweep: Path = RECIPE_SWEEP,
                       results_dir: Path = RESULTS_DIR) -> None:
    """Pages generated from the repository (not from a run): Reproduce, the training recipe (from
    the recipe sweep's table), Recovering accuracy (from the recovery sweep's, ds.study.recovery_page)
    and the intro's diagram. Only `python -m ds.study pages` writes them; a run never does."""
    from . import recovery_page
    from .figures import recipe_curves
    (book_dir / REPRODUCE_PAGE).write_text(reproduce_page(profiles_file))
    (book_dir / "images").mkdir(exist_ok=True)
    (book_dir / "images" / "block_merge.svg").write_text(block_merge_svg())
    inputs = recipe_inputs(sweep, results_dir)
    (book_dir / RECIPE_PAGE).write_text(recipe_page(*inputs))
    fig = recipe_curves(inputs[0])
    fig.savefig(book_dir / "images" / "recipe_curves.png", dpi=110)
    recovery_page.write(book_dir, profiles_file=profiles_file)
