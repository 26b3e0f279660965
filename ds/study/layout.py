"""Where the study keeps things: its chapters, notebooks and book sources in the repository, and
every artifact of a run directory. The runner, the book, the steps and the chapters ask here
instead of joining paths themselves.

    <run_dir>/NN_name.ipynb            each executed chapter
    <run_dir>/NN_name.done             a finished chapter: when, and with which parameters (JSON)
    <run_dir>/NN_name.started          the same for a chapter that started and has not finished
    <run_dir>/NN_name/                 each chapter's tables, checkpoints and merged networks
    <run_dir>/base/                    the base network (checkpoint.pt, metrics.csv), chapter 1
    <run_dir>/provenance.json          profile, device, date, git commit of every chapter
    <run_dir>/timings.json, study.log  seconds per chapter; the runner's log
    <run_dir>/study.lock               held by the process running the study in this directory
    <run_dir>/book/                    the run's own book (sources, executed chapters, pages)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ds.provenance import REPO_ROOT
from ds.train import CHECKPOINT, METRICS

NOTEBOOKS = REPO_ROOT / "notebooks"
BOOK = REPO_ROOT / "book"
PROFILES_FILE = REPO_ROOT / "profiles.yaml"
RESULTS_DIR = REPO_ROOT / "data" / "results"          # tables published from runs and benchmarks
CHECKPOINTS_DIR = REPO_ROOT / "data" / "checkpoints"  # small networks published from runs

CHAPTERS = ("01_observation", "02_search", "03_finetune", "04_merge", "05_throughput")
BOOK_CHAPTERS = "chapters"          # where a book holds the executed chapters
RESULTS_PAGE = "results.md"         # the page generated from a run's tables
REPRODUCE_PAGE = "reproduce.md"     # the page generated from profiles.yaml
RECIPE_PAGE = "recipe.md"           # the page generated from the training-recipe sweep
RECOVERY_PAGE = "recovery.md"       # the page generated from the recovery sweep (ds.study.recovery_page)
GPU_PAGES = "gpu"                   # where a book holds the published GPU studies (gpu/<profile>_<gpu>/)
# What a book is made of besides its chapters and generated pages (copied from book/).
BOOK_SOURCES = ("_config.yml", "_toc.yml", "intro.md", "adapt.md", "deviations.md", "images", "_ext")


# Per chapter, the files no later chapter reads: the networks of its own experiments (chapter 1's
# comparison, chapter 2's gate searches; their tables, metrics and curves are kept). Once the
# chapter is finished they serve no resume, so a snapshot of the run leaves them out.
SPENT_WHEN_DONE = {"01_observation": (f"observation/*/*/{CHECKPOINT}",), "02_search": (f"k*/{CHECKPOINT}",)}


def notebook_source(chapter: str, notebooks: Path = NOTEBOOKS) -> Path:
    """The unexecuted chapter notebook in the repository."""
    return Path(notebooks) / f"{chapter}.ipynb"


def adopted_from(base_metrics) -> str | None:
    """The published checkpoint a run adopted as its base (the `source` of its base_metrics.csv, a
    DataFrame here), None for a base the run trained itself."""
    return base_metrics["source"].iloc[-1] if "source" in base_metrics else None


def published_base_curve(checkpoint: str | Path, results_dir: Path = RESULTS_DIR) -> tuple[str, Path]:
    """The profile that trained the published base network `checkpoint`
    (data/checkpoints/<profile>/base.pt) and its training curve, data/results/base_metrics_<profile>.csv;
    FileNotFoundError, naming the command that publishes it, when the curve is missing."""
    profile = Path(checkpoint).parent.name
    curve = Path(results_dir) / f"base_metrics_{profile}.csv"
    if not curve.is_file():
        raise FileNotFoundError(f"{curve} (the training curve of {checkpoint}) is missing: make publish PROFILE={profile}")
    return profile, curve


def relative_to_repo(path: str | Path) -> str:
    """`path` relative to the repository when it lies inside it, else as given (absolute)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class RunLayout:
    """Every path of one run directory."""
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------ the runner's files
    def notebook(self, chapter: str) -> Path:
        return self.root / f"{chapter}.ipynb"

    def done(self, chapter: str) -> Path:
        return self.root / f"{chapter}.done"

    def started(self, chapter: str) -> Path:
        """The record of a chapter that started and has not finished (what it runs with)."""
        return self.root / f"{chapter}.started"

    @property
    def provenance(self) -> Path:
        return self.root / "provenance.json"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def log(self) -> Path:
        return self.root / "study.log"

    @property
    def lock(self) -> Path:
        return self.root / "study.lock"

    @property
    def book(self) -> Path:
        return self.root / "book"

    def spent(self) -> list[Path]:
        """The files of finished chapters that no later chapter reads (SPENT_WHEN_DONE)."""
        return sorted(path for chapter, patterns in SPENT_WHEN_DONE.items() if self.done(chapter).is_file()
                      for pattern in patterns for path in self.chapter_dir(chapter).glob(pattern))

    # ------------------------------------------------------------ the chapters' outputs
    def chapter_dir(self, chapter: str) -> Path:
        return self.root / chapter

    @property
    def base_dir(self) -> Path:
        return self.root / "base"

    @property
    def base_checkpoint(self) -> Path:
        return self.base_dir / CHECKPOINT

    @property
    def base_metrics(self) -> Path:
        return self.base_dir / METRICS

    @property
    def removal_csv(self) -> Path:
        return self.chapter_dir("01_observation") / "removal.csv"

    @property
    def removal_log(self) -> Path:
        return self.chapter_dir("01_observation") / "removal_train.log"

    def observation_dir(self, setting: str, seed: int) -> Path:
        """The comparison's networks of one setting and seed: with_activations/, after_training/,
        recovered/, from_scratch/."""
        return self.chapter_dir("01_observation") / "observation" / f"{setting}-seed{seed}"

    @property
    def observation_csv(self) -> Path:
        return self.chapter_dir("01_observation") / "observation.csv"

    @property
    def observation_published(self) -> Path:
        """The published comparison chapter 1 showed beside its own (full_scale_observation)."""
        return self.chapter_dir("01_observation") / "observation_full_scale.csv"

    def search_dir(self, budget: int, runtime: str | None = None, seed: int | None = None) -> Path:
        """The search at `budget`; with `runtime`, the one whose latency term is that runtime's table;
        with `seed`, a repeat with another seed."""
        name = f"k{budget}" + (f"@{runtime}" if runtime else "") + (f"-seed{seed}" if seed is not None else "")
        return self.chapter_dir("02_search") / name

    def latency_csv(self, runtime: str) -> Path:
        return self.chapter_dir("02_search") / f"latency_{runtime}.csv"

    def candidate_dir(self, pattern: str) -> Path:
        """A candidate pattern finetuned for chapter 2's comparison."""
        return self.chapter_dir("02_search") / "finetune" / pattern

    @property
    def candidates_csv(self) -> Path:
        return self.chapter_dir("02_search") / "candidates.csv"

    @property
    def candidate_speed_csv(self) -> Path:
        return self.chapter_dir("02_search") / "candidate_speed.csv"

    @property
    def patterns_json(self) -> Path:
        return self.chapter_dir("02_search") / "patterns.json"

    def finetune_dir(self, pattern: str, distill: bool) -> Path:
        return self.chapter_dir("03_finetune") / pattern / ("distill" if distill else "plain")

    def finetuned_checkpoint(self, pattern: str, finetune: str) -> Path:
        """The checkpoint of a finetuned network: `finetune` 'candidate' (chapter 2's comparison),
        'plain' or 'distill' (chapter 3)."""
        if finetune == "candidate":
            return self.candidate_dir(pattern) / CHECKPOINT
        return self.finetune_dir(pattern, {"plain": False, "distill": True}[finetune]) / CHECKPOINT

    @property
    def finetune_results(self) -> Path:
        return self.chapter_dir("03_finetune") / "results.csv"

    @property
    def merge_csv(self) -> Path:
        return self.chapter_dir("04_merge") / "merge.csv"

    def merged_network(self, pattern: str, finetune: str) -> Path:
        """A merged network as a network file (ds.save_network: its weights and ds.meta record);
        `finetune` as in `finetuned_checkpoint` (ignored for the base)."""
        kind = "base" if pattern == "base" else f"{pattern}-{finetune}"
        return self.chapter_dir("04_merge") / "networks" / f"{kind}.pt"

    @property
    def int8_csv(self) -> Path:
        """Chapter 4's INT8 accuracy: one row per merged network (and the base) and INT8 runtime."""
        return self.chapter_dir("04_merge") / "int8.csv"

    @property
    def throughput_csv(self) -> Path:
        return self.chapter_dir("05_throughput") / "throughput.csv"

    @property
    def study_csv(self) -> Path:
        """One row per network of the run (chapter 5 writes it last): what publishing copies."""
        return self.chapter_dir("05_throughput") / "study.csv"

    @property
    def time_shares_csv(self) -> Path:
        return self.chapter_dir("05_throughput") / "time_shares.csv"
