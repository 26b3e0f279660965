"""How long a study profile takes at a measured training speed, and which of a list of
(backbone, base epochs) choices fits a time budget: the arithmetic that sizes the `gpu` profile
to one command of a lent GPU machine (scripts/gpu_publish.sh).

The only measured input is the training speed, images per second of `ds.train` at 32 px in bf16
and channels_last (benchmarks/train_speed.py). Everything else is counted from the profile: the
images each chapter trains and evaluates (an evaluated image costs EVAL_COST of a trained one),
plus fixed seconds per chapter (papermill start-up, merging, timing). A profile's `workers` runs
chapter 2's candidates and chapter 3's networks side by side (ds.study.workers), at WORKER_GAIN
times the speed in all, each job on its own worker. The fixed costs below are assumptions, each
with where it comes from; the estimate is meant to err long.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ds.paper import PAPER_PATTERNS
from ds.patterns import PATTERNS

from .profiles import profile_chapters

CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000
SEARCHABLE_BLOCKS = 17     # MobileNetV2 of the standard depth: switches 1..17 (stem and head are not searched)

EVAL_COST = 1 / 3          # forward only, against forward and backward (about twice the forward)
DISTILL_COST = 4 / 3       # a distilled step adds the teacher's forward pass
SEARCH_COST = 1.25         # the gate search's step: gates, their optimizer and the sampled pattern (assumed)
CHAPTER_START_S = 20.0     # papermill, a fresh kernel, imports, CUDA init, the cached data onto the device (assumed)
DECODE_S = 20.0            # CIFAR-10 decoded once on a fresh machine (README: about 20 s)
MERGE_S = 3.3              # merge and verify one network: 7 mobilenetv2_140 at 224 px took 23 s on 2 CPU cores
INT8_S = 20.0              # quantize one network for ONNX Runtime and OpenVINO and measure both on 10,000 test
                           # images: about 20 s for mobilenetv2_035 at 32 px on the loaded 2-core VM (2026-12-01)
BENCH_OVERHEAD_S = 1.5     # per network and setting timed: warm-up, cudnn autotuning (assumed)
PROFILE_PASS_S = 0.1       # one profiled CPU pass of chapter 5's time shares: its cell took 31 s for 4 settings x 18
                           # networks x 6 passes at 32 px (cpu run, AVX2-only 2-core VM, 2026-12-07)
GPU_SETTINGS = 2           # chapter 5 on a GPU: torch fp32 NCHW and channels_last, eager
CPU_SETTINGS = 7           # chapter 5 on the CPU: torch NCHW and channels_last, ONNX Runtime, OpenVINO f32 and bf16,
                           # ONNX Runtime and OpenVINO INT8
CPU_INT8_SETTINGS = 2      # of those, the INT8 ones, where each network is first quantized, calibrated and checked
BENCH_INT8_S = 2.0         # quantizing one network for one INT8 setting of chapter 5 on 300 images, checking it on
BENCH_INT8_PIXEL_S = 1.15  # 300 more: these seconds plus these per 32x32 pixels of the input. Measured on the
                           # AVX2-only 2-core VM, 2026-12-07, on dp-k6 of the cpu run: ONNX Runtime 1.4 s and
                           # OpenVINO 5.3 s at 32 px, ONNX Runtime 55.6 s at 224 px (OpenVINO there about 60 s,
                           # what the run's 3020-second timing cell leaves for it)
SPEED_REPEATS, SPEED_MIN_TIME = 5, 0.2   # chapter 2 times its candidates so (ds.study.steps.pattern_speed)
LATENCY_REPEATS = 7        # chapter 2's latency tables (ds.study.steps.latency_tables)
WORKER_GAIN = 1.11         # images/s in all of 2 one-thread workers over one 2-thread process: median of 3 rounds,
                           # 1.07-1.20 (benchmarks/results/workers_speed.csv, mobilenetv2_035, 32 px, 2-core VM,
                           # 2026-12-01); assumed for more workers too

# The gpu profile's choices, best first: the paper's network first and the base trained long
# enough for the 92% target; below 20 epochs the narrower network trained longer comes first;
# under 15 epochs no choice is offered (the base would not reach the target: skip the study).
GPU_CHOICES = (("mobilenetv2_140", 30), ("mobilenetv2_140", 25), ("mobilenetv2_140", 20),
               ("mobilenetv2_100", 25), ("mobilenetv2_100", 20), ("mobilenetv2_140", 15),
               ("mobilenetv2_100", 15))


def removed(budget) -> int:
    """Blocks a search budget removes: a number of blocks kept, or a paper pattern's name."""
    if isinstance(budget, str):
        return sum(1 for keep in PAPER_PATTERNS[budget][1:-1] if not keep)
    return SEARCHABLE_BLOCKS - budget


def candidates_per_budget(profile: dict) -> list[int]:
    """Chapter 2's candidates at each budget: the search, the sensitivity ranking, the random
    patterns, one search per latency runtime, the DP search's (at the budget, and at equal speed
    per runtime) and the paper's patterns that remove as many blocks."""
    paper = [removed(name) for name in PATTERNS.get(profile["backbone"], {})]
    runtimes = len(profile.get("latency_runtimes") or [])
    gate = runtimes if profile.get("latency_gate_search", True) else 0
    dp = (1 + runtimes) if profile.get("dp_steps") else 0   # dp-k<budget>, and one at equal speed per runtime
    return [2 + profile.get("random_patterns", 1) + gate + dp + paper.count(removed(b))
            for b in profile["search_budgets"]]


def finetuned_patterns(profile: dict) -> int:
    """Chapter 3's patterns: 'searched' stands for every search without latency term (best@X is one)."""
    budgets = len(profile["search_budgets"])
    return sum(budgets if name == "searched" else 1 for name in profile["patterns"])


def distill_cost(recipe: dict | None) -> float:
    """What one finetuning step of a recovery recipe costs against a plain one."""
    return DISTILL_COST if (recipe or {}).get("distill") else 1.0


@dataclass
class Work:
    """One chapter's work: images trained and evaluated one after another, the images of each job
    run side by side on `workers` (trained and evaluated, weighed alike), and seconds that do not
    scale with images."""
    trained: float = 0.0
    evaluated: float = 0.0
    fixed_s: float = CHAPTER_START_S
    jobs: list[float] = field(default_factory=list)
    workers: int = 1

    def images(self) -> float:
        """The images one process would train in the time this chapter takes (fixed seconds aside)."""
        return self.trained + EVAL_COST * self.evaluated + side_by_side_images(self.jobs, self.workers)

    def seconds(self, img_s: float) -> float:
        return self.images() / img_s + self.fixed_s


def side_by_side_images(jobs: list[float], workers: int) -> float:
    """How many images one process would train in the time `workers` take for `jobs` (each job's
    images), each job going to the first free worker as ds.study.workers hands them out; a worker
    trains at WORKER_GAIN / workers of one process's speed. One worker, or one job: their sum."""
    if workers <= 1 or len(jobs) <= 1:
        return float(sum(jobs))
    free = [0.0] * min(workers, len(jobs))
    for images in jobs:
        heapq.heappush(free, heapq.heappop(free) + images)
    return max(free) * workers / WORKER_GAIN


def job(trained: float, evaluated: float) -> float:
    """One side-by-side job's images, its evaluations weighed in."""
    return trained + EVAL_COST * evaluated


def chapter_work(profile: dict) -> dict[str, Work]:
    """What each chapter of `profile` trains, evaluates and spends besides (its keys as in
    profiles.yaml); only the chapters the profile runs (its `chapters` key, else all five)."""
    p = dict(profile)
    n = p.get("limit_train") or CIFAR10_TRAIN
    t = p.get("limit_test") or CIFAR10_TEST
    counts = {"01_observation": _observation_work, "02_search": _search_work, "03_finetune": _finetune_work,
              "04_merge": _merge_work, "05_throughput": _throughput_work}
    return {chapter: counts[chapter](p, n, t) for chapter in profile_chapters(p)}


def _candidates(p: dict) -> int:
    """Chapter 2's finetuned candidates in all (0 when it finetunes none)."""
    return sum(candidates_per_budget(p)) if p.get("candidate_epochs", 1) else 0


def _finetune_modes(p: dict) -> list:
    return p.get("finetune_distill", [False, True])


def _observation_work(p: dict, n: int, t: int) -> Work:
    w = Work(fixed_s=CHAPTER_START_S + DECODE_S)
    base = p["base_epochs"]
    if p.get("base_checkpoint"):
        w.evaluated += t
    else:
        w.trained += base * n
        w.evaluated += base * t
    w.trained += SEARCHABLE_BLOCKS * p["observe_train_images"]
    w.evaluated += (2 * SEARCHABLE_BLOCKS + 1) * p["observe_test_images"]
    compare_n = p.get("compare_train_images") or n
    compare_base = p.get("compare_base_epochs") or base
    finetune = p["compare_finetune_epochs"]
    for seed in p.get("compare_seeds") or [0]:
        reuse = p.get("compare_train_images") is None and seed == p.get("seed", 0) and compare_base == base
        w.trained += ((0 if reuse else compare_base) + finetune + compare_base + finetune) * compare_n
        w.evaluated += 3 * t
        if p.get("compare_recovery") is not None:   # the third arm, finetuned with the recovery recipe
            w.trained += finetune * compare_n * distill_cost(p["compare_recovery"])
            w.evaluated += t
    return w


def _search_work(p: dict, n: int, t: int) -> Work:
    w = Work(workers=p.get("workers", 1))
    budgets = len(p["search_budgets"])
    runtimes = len(p.get("latency_runtimes") or [])
    gate = runtimes if p.get("latency_gate_search", True) else 0
    searches = budgets * (1 + gate + (1 if gate else 0))   # + one control search with the runtimes' searches
    w.trained += searches * p["search_epochs"] * n * SEARCH_COST
    w.evaluated += searches * p["search_epochs"] * t
    w.evaluated += (SEARCHABLE_BLOCKS + 1) * p["holdout_images"]
    if p.get("dp_steps"):   # the DP's importance table: the reference and every block finetuned, then measured
        w.trained += (SEARCHABLE_BLOCKS + 1) * p["dp_steps"] * p["batch_size"]
        w.evaluated += (SEARCHABLE_BLOCKS + 2) * p["holdout_images"]
    w.fixed_s += runtimes * SEARCHABLE_BLOCKS * 2 * (LATENCY_REPEATS * p.get("latency_min_time", 0.1) + 0.5)
    candidates = _candidates(p)
    trained_on = n - p["holdout_images"]   # the candidates finetune outside the held-out images
    epochs = p.get("candidate_epochs", 1)
    w.jobs += [job(epochs * trained_on * distill_cost(p.get("recovery")), (epochs + 1) * t + p["holdout_images"])
               for _ in range(candidates)]
    w.fixed_s += (candidates + 1) * (MERGE_S + SPEED_REPEATS * SPEED_MIN_TIME)
    return w


def _finetune_work(p: dict, n: int, t: int) -> Work:
    w = Work(workers=p.get("workers", 1))
    patterns, epochs = finetuned_patterns(p), p["finetune_epochs"]
    w.jobs += [job((DISTILL_COST if d else 1.0) * epochs * n, (epochs + 1) * t)
               for _ in range(patterns) for d in _finetune_modes(p)]
    return w


def _merge_work(p: dict, n: int, t: int) -> Work:
    w = Work()
    networks = 1 + _candidates(p) + len(_finetune_modes(p)) * finetuned_patterns(p)
    w.evaluated += 2 * networks * t
    w.fixed_s += networks * MERGE_S
    if p.get("int8_calibration_images", 300):
        w.fixed_s += networks * INT8_S * t / CIFAR10_TEST
    return w


def bench_int8_seconds(size: int) -> float:
    """Seconds to quantize and check one network for one INT8 setting of chapter 5 at `size` px."""
    return BENCH_INT8_S + BENCH_INT8_PIXEL_S * (size / 32) ** 2


def _throughput_work(p: dict, n: int, t: int) -> Work:
    w = Work()
    candidates = _candidates(p)
    standing = 1 + (candidates if candidates else finetuned_patterns(p))
    devices = p.get("bench_devices", "auto")
    devices = ["cpu", "cuda"] if devices == "auto" else ([devices] if isinstance(devices, str) else devices)
    settings = sum(GPU_SETTINGS if d.startswith("cuda") else CPU_SETTINGS for d in devices)
    int8_settings = sum(0 if d.startswith("cuda") else CPU_INT8_SETTINGS for d in devices)
    inputs = [(p.get("bench_input") or p["input_size"], standing)]   # (size, networks timed there)
    if p.get("bench_large_input"):
        large = 1 + finetuned_patterns(p) if p.get("bench_large_networks") == "finetuned" else standing
        inputs.append((p["bench_large_input"], large))
    per_setting = p.get("bench_repeats", 5) * p.get("bench_min_time", 0.2) + BENCH_OVERHEAD_S
    for size, networks in inputs:
        w.fixed_s += networks * (settings * per_setting + int8_settings * bench_int8_seconds(size))
    shares = p.get("profile_settings")
    shares = CPU_SETTINGS - CPU_INT8_SETTINGS if shares is None else len(shares)   # the notebook's default: the float ones
    w.fixed_s += shares * standing * (p.get("profile_runs", 5) + 1) * PROFILE_PASS_S
    return w


def study_seconds(profile: dict, img_s: float) -> dict[str, float]:
    """Estimated seconds per chapter of `profile` at `img_s` trained images per second."""
    return {chapter: w.seconds(img_s) for chapter, w in chapter_work(profile).items()}


def required_speed(profile: dict, budget_s: float) -> float:
    """The training speed (images per second) at which `profile`'s estimate is `budget_s`
    (infinite when its fixed seconds alone exceed the budget)."""
    work = chapter_work(profile).values()
    images = sum(w.images() for w in work)
    spare = budget_s - sum(w.fixed_s for w in work)
    return images / spare if spare > 0 else float("inf")


@dataclass
class Sizing:
    """The first choice that fits (None: none does), the estimate per chapter, and every choice tried."""
    budget_s: float
    choice: tuple[str, int] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    tried: list[tuple[str, int, float | None]] = field(default_factory=list)   # seconds None: speed not measured

    @property
    def fits(self) -> bool:
        return self.choice is not None

    @property
    def overrides(self) -> dict:
        """The profile keys the choice sets."""
        return {"backbone": self.choice[0], "base_epochs": self.choice[1]} if self.choice else {}

    def describe(self) -> str:
        tried = "; ".join(f"{b} {e} epochs: " + ("speed not measured" if s is None else f"{s:.0f} s")
                          for b, e, s in self.tried)
        if not self.fits:
            return f"no choice fits {self.budget_s:.0f} s ({tried})"
        return (f"{self.choice[0]}, base {self.choice[1]} epochs: about {sum(self.seconds.values()):.0f} s of "
                f"{self.budget_s:.0f} s (" + ", ".join(f"{c} {s:.0f}" for c, s in self.seconds.items()) + ")"
                + (f"; tried {tried}" if tried else ""))


def size_study(profile: dict, img_s: dict[str, float], budget_s: float,
               choices=GPU_CHOICES) -> Sizing:
    """The first of `choices` ((backbone, base epochs), best first) whose estimated study fits in
    `budget_s` seconds at the measured training speed `img_s` ({backbone: images per second}); a
    choice whose backbone was not measured is passed over."""
    sizing = Sizing(budget_s)
    for backbone, epochs in choices:
        speed = img_s.get(backbone)
        if not speed:
            sizing.tried.append((backbone, epochs, None))
            continue
        seconds = study_seconds({**profile, "backbone": backbone, "base_epochs": epochs}, speed)
        sizing.tried.append((backbone, epochs, sum(seconds.values())))
        if sum(seconds.values()) <= budget_s:
            sizing.choice, sizing.seconds = (backbone, epochs), seconds
            break
    return sizing
