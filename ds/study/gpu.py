"""Publishing what a GPU run made (scripts/gpu_publish.sh --publish, on the CPU machine) beside the
CPU results, never instead of them:

    data/results/throughput_<model>_<gpu>.csv   every GPU throughput table in one CSV (column
                                                `table`: paper, fast, sweep-paper, sweep-fast,
                                                compile), the paper's V100 speed-ups beside
    data/results/throughput_<model>_<gpu>.json  its provenance: the GPU (nvidia-smi), each table's
                                                ds.bench sidecar, the training speed, the commands
    data/results/study_<profile>_<gpu>.csv      the study's tables, when it ran (as ds.study.results
    data/results/observation_<profile>_<gpu>.csv  publishes a CPU run's, each with its provenance;
    data/results/base_metrics_<profile>_<gpu>.csv its networks do not come back from the GPU machine)
    book/gpu/<profile>_<gpu>/                   the study's results page and executed chapters, a
                                                part of their own in the book's table of contents
    book/results.md                             its GPU section, made anew from data/results/

then the book is built (beside book/, swapped in when the build passes).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import yaml

from ds.bench.compare import add_best_base
from ds.bench.report import write_sidecar
from ds.paper import PAPER_MODEL, PAPER_V100_REPORTED_SPEEDUP
from ds.provenance import git_commit, utc_now

from . import book
from .layout import BOOK, CHAPTERS, GPU_PAGES, RESULTS_DIR, RESULTS_PAGE, RunLayout
from .results import publish_file

TOC = "_toc.yml"


class GpuPublishError(RuntimeError):
    """What a GPU run returned cannot be published as it is; the message says why."""


def gpu_label(machine: dict) -> str:
    """The GPU's short name for file names, from the machine record: 'NVIDIA H200' -> 'h200'."""
    gpu = machine.get("gpu") or {}
    smi = gpu.get("nvidia_smi") if isinstance(gpu.get("nvidia_smi"), list) else []
    names = [g.get("name") for g in gpu.get("gpus", [])] + [g.get("name") for g in smi]
    name = next((n for n in names if n), None)
    if not name:
        raise GpuPublishError("the machine record names no GPU (a dry run, or the machine step did not run): "
                              "give the GPU's short name with --gpu NAME")
    model = re.search(r"\b([a-z]{1,2}\d{2,4}[a-z]?)\b", name.lower())
    return model.group(1) if model else re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def model_label(model: str) -> str:
    """How published file names shorten a backbone: mobilenetv2_140 -> mbv2_140."""
    return model.replace("mobilenetv2_", "mbv2_")


def throughput_table(tables: dict[str, Path]) -> pd.DataFrame:
    """The ds.bench tables ({step name: CSV}) as one table: a `table` column first, the speed-up
    over the fastest base made anew across all of them (same device, threads, batch and input),
    and the paper's reported V100 speed-up beside each network of the paper's model."""
    frames = [pd.read_csv(path).assign(table=name) for name, path in tables.items()]
    if not frames:
        raise GpuPublishError("the state holds no throughput table: the GPU steps did not finish one")
    frame = add_best_base(pd.concat(frames, ignore_index=True))
    frame["paper_v100_speedup"] = [PAPER_V100_REPORTED_SPEEDUP.get(p) if m == PAPER_MODEL else None
                                   for m, p in zip(frame["model"], frame["pattern"])]
    return frame[["table"] + [c for c in frame.columns if c != "table"]]


def _study_pages(layout: RunLayout, target: Path, title: str, results_dir: Path) -> list[Path]:
    """The study's results page and executed chapters (parameter cells hidden) into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for chapter in CHAPTERS:
        book.hide_parameter_cells(layout.notebook(chapter), target / f"{chapter}.ipynb", layout)
        written.append(target / f"{chapter}.ipynb")
    (target / RESULTS_PAGE).write_text(book.results_page(layout, results_dir, title=title))
    return [target / RESULTS_PAGE] + written


def _with_toc_part(toc: dict, caption: str, folder: str) -> dict:
    """The book's table of contents with a part for the study's pages (replacing one for the same folder)."""
    files = [f"{folder}/{Path(RESULTS_PAGE).stem}"] + [f"{folder}/{chapter}" for chapter in CHAPTERS]
    parts = [p for p in toc.get("parts", []) if not any(c.get("file", "").startswith(folder + "/")
                                                         for c in p.get("chapters", []))]
    return dict(toc, parts=parts + [{"caption": caption, "chapters": [{"file": f} for f in files]}])


def publish(tables: dict[str, Path], machine: dict, train_speed: dict | None, progress: dict,
            study_dir: Path | None, profile: str, *, gpu: str | None = None, study_profiles: Path | None = None,
            results_dir: Path = RESULTS_DIR, book_dir: Path = BOOK,
            build: bool = True) -> list[Path]:
    """Publish a GPU run: `tables` ({step: ds.bench CSV}), the `machine` record, the measured
    `train_speed` and the commands' `progress` (scripts/gpu_publish.py's records) and, when
    `study_dir` is given, the finished study run there (the profile file it ran with:
    `study_profiles`). Tables measured on no GPU (a dry run) need `gpu` named. The paths written."""
    frame = throughput_table(tables)
    if gpu is None and not (frame["device"] == "cuda").any():
        raise GpuPublishError("these tables were measured on the CPU (a dry run?): give --gpu NAME to publish them")
    label = gpu or gpu_label(machine)
    results_dir, book_dir = Path(results_dir), Path(book_dir)
    csv = results_dir / f"throughput_{model_label(frame['model'].iloc[0])}_{label}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(csv, index=False)
    sidecars = {name: json.loads(p.with_suffix(".json").read_text()) for name, p in tables.items()
                if p.with_suffix(".json").is_file()}
    record = {"what": "the GPU throughput tables of scripts/gpu_publish.sh, one CSV; speedup_over_best_base made "
                      "anew across every table (ds.bench.compare.add_best_base), paper_v100_speedup is the paper's "
                      "reported V100 speed-up (ds.paper), for comparison only",
              "published_utc": utc_now(), "published_from": git_commit(), "gpu": machine.get("gpu"),
              "machine": {k: v for k, v in machine.items() if k != "gpu"}, "tables": sidecars,
              "train_speed": train_speed, "gpu_publish": {"commands": progress.get("commands"),
                                                          "steps": progress.get("steps")}}
    # the GPU section reads the date, commit and versions of the run from here
    record.update({k: v for k, v in next(iter(sidecars.values()), {}).items() if k in ("date_utc", "git")})
    written = [csv, write_sidecar(csv, record)]
    pages, caption = [], None
    if study_dir is not None:
        layout = RunLayout(study_dir)
        missing = [c for c in CHAPTERS if not layout.done(c).is_file()]
        if missing:
            raise GpuPublishError(f"the study in {study_dir} is not finished ({', '.join(missing)} missing): "
                                  f"its tables are published, its pages are not")
        name = f"{profile}_{label}"
        for source, table, what in ((layout.study_csv, "study", "one row per network (chapter 5)"),
                                    (layout.observation_csv, "observation", "one row per arm and seed of the "
                                                                            "observation (chapter 1)"),
                                    (layout.base_metrics, "base_metrics", "the base network's training curve, "
                                                                          "one row per epoch (chapter 1)")):
            if source.is_file():
                written.append(publish_file(source, results_dir / f"{table}_{name}.csv", layout, what))
        if study_profiles is not None and Path(study_profiles).is_file():
            ran = yaml.safe_load(Path(study_profiles).read_text()).get(profile, {})
            target = results_dir / f"study_{name}.csv.profile.yaml"
            target.write_text(yaml.safe_dump({profile: ran}, sort_keys=False))
            written.append(target)
        devices = sorted({r["device"] for r in book.run_provenance(layout).values()})
        caption = f"The {profile} study on {', '.join(devices)}"
        pages.append((layout, f"{GPU_PAGES}/{name}"))

    in_book: list[Path] = []   # written into the book, relative to it

    def change(folder: Path) -> None:
        for layout, where in pages:
            in_book.extend(p.relative_to(folder) for p in _study_pages(layout, folder / where, caption, results_dir))
            toc = yaml.safe_load((folder / TOC).read_text())
            (folder / TOC).write_text(yaml.safe_dump(_with_toc_part(toc, caption, where), sort_keys=False))
            in_book.append(Path(TOC))
        results = folder / RESULTS_PAGE
        results.write_text(book.with_gpu_section(results.read_text(), results_dir))
        in_book.append(Path(RESULTS_PAGE))

    if build:
        written.append(book.rebuild(book_dir, change))
    else:
        change(book_dir)
    return written + [book_dir / p for p in in_book]
