"""ds.study.sizing: the estimate of a study profile at a measured training speed, and the choice
of backbone and base epochs that fits a time budget (the `gpu` profile's sizing)."""
import pytest

from ds.study import sizing
from ds.study.layout import CHAPTERS
from ds.study.profiles import load_profile

GPU = load_profile("gpu")


def test_the_gpu_profile_trains_on_all_of_cifar10_at_32px():
    assert GPU["limit_train"] is None and GPU["limit_test"] is None and GPU["input_size"] == 32
    assert (GPU["backbone"], GPU["base_epochs"]) == sizing.GPU_CHOICES[0]   # the profile holds the first choice


def test_the_work_is_counted_from_the_profile():
    work = sizing.chapter_work(GPU)
    assert set(work) == set(CHAPTERS)
    chapter1 = sizing.chapter_work({**GPU, "base_epochs": 10})["01_observation"]
    assert work["01_observation"].trained - chapter1.trained == 20 * sizing.CIFAR10_TRAIN   # 30 vs 10 base epochs
    assert sizing.removed("DS-A") == 6 and sizing.removed("DS-E") == 11 and sizing.removed(11) == 6
    assert sizing.candidates_per_budget(GPU) == [5]   # searched, DP, sensitivity, one random, DS-A
    assert sizing.finetuned_patterns(GPU) == 1
    assert all(w.fixed_s >= sizing.CHAPTER_START_S for w in work.values())


def test_the_estimate_shrinks_with_speed_and_meets_the_budget_at_the_required_speed():
    slow, fast = (sum(sizing.study_seconds(GPU, v).values()) for v in (5000, 10000))
    assert fast < slow
    speed = sizing.required_speed(GPU, 500)
    assert sum(sizing.study_seconds(GPU, speed).values()) == pytest.approx(500)
    assert sizing.required_speed(GPU, 10) == float("inf")   # the fixed seconds alone exceed it


def test_the_first_choice_that_fits_is_taken():
    need = {c: sizing.required_speed({**GPU, "backbone": c[0], "base_epochs": c[1]}, 500) for c in sizing.GPU_CHOICES}
    speeds = {"mobilenetv2_140": need[("mobilenetv2_140", 20)] * 1.01, "mobilenetv2_100": 1e9}
    chosen = sizing.size_study(GPU, speeds, 500)
    assert chosen.fits and chosen.choice == ("mobilenetv2_140", 20)
    assert chosen.overrides == {"backbone": "mobilenetv2_140", "base_epochs": 20}
    assert [t[:2] for t in chosen.tried] == list(sizing.GPU_CHOICES[:3])
    assert sum(chosen.seconds.values()) <= 500 and "mobilenetv2_140, base 20 epochs" in chosen.describe()
    slower = sizing.size_study(GPU, {"mobilenetv2_140": need[("mobilenetv2_140", 20)] * 0.99,
                                     "mobilenetv2_100": need[("mobilenetv2_100", 25)] * 1.01}, 500)
    assert slower.choice == ("mobilenetv2_100", 25)


def test_nothing_fits_below_the_last_choices_speed_and_an_unmeasured_backbone_is_passed_over():
    last = sizing.GPU_CHOICES[-1]
    need = sizing.required_speed({**GPU, "backbone": last[0], "base_epochs": last[1]}, 500)
    none = sizing.size_study(GPU, {"mobilenetv2_140": need * 0.99, "mobilenetv2_100": need * 0.99}, 500)
    assert not none.fits and none.overrides == {} and none.describe().startswith("no choice fits 500 s")
    only_140 = sizing.size_study(GPU, {"mobilenetv2_140": 1e9}, 500, (("mobilenetv2_100", 25), ("mobilenetv2_140", 30)))
    assert only_140.choice == ("mobilenetv2_140", 30) and only_140.tried[0] == ("mobilenetv2_100", 25, None)
    assert "speed not measured" in only_140.describe()


def test_side_by_side_jobs_take_the_busiest_workers_time_at_the_measured_gain():
    assert sizing.side_by_side_images([10, 20, 30], workers=1) == 60
    assert sizing.side_by_side_images([40], workers=2) == 40                     # one job: one process
    assert sizing.side_by_side_images([10] * 4, workers=2) == pytest.approx(20 * 2 / sizing.WORKER_GAIN)
    assert sizing.side_by_side_images([10] * 3, workers=2) == pytest.approx(20 * 2 / sizing.WORKER_GAIN)   # 2 + 1
    assert sizing.side_by_side_images([30, 10, 10, 10], workers=2) == pytest.approx(30 * 2 / sizing.WORKER_GAIN)


def test_workers_shorten_chapters_2_and_3_only():
    cpu = load_profile("cpu")
    one, two = (sizing.study_seconds({**cpu, "workers": w}, 500) for w in (1, 2))
    for chapter in CHAPTERS:
        if chapter in ("02_search", "03_finetune"):
            assert two[chapter] < one[chapter]
        else:
            assert two[chapter] == one[chapter]


def test_a_profile_of_the_first_chapters_is_counted_for_those_chapters_only():
    observe = load_profile("cpu-observe")   # chapter 1 only: no search keys to count
    work = sizing.chapter_work(observe)
    assert list(work) == ["01_observation"]
    base = observe["base_epochs"] * sizing.CIFAR10_TRAIN
    from_scratch = (observe["base_epochs"] + observe["compare_finetune_epochs"]) * sizing.CIFAR10_TRAIN
    assert work["01_observation"].trained > base + from_scratch   # plus the two finetuned arms and the removal probe
    assert sizing.chapter_work(load_profile("cpu"))["01_observation"].trained < base   # cpu adopts that base


def test_chapter_5_counts_int8_quantization_by_input_size_and_the_networks_timed_at_the_large_input():
    cpu = load_profile("cpu")
    assert sizing.bench_int8_seconds(224) > 10 * sizing.bench_int8_seconds(32)
    every = {**cpu, "bench_large_networks": "all"}
    chapter5 = {name: sizing.chapter_work(p)["05_throughput"].fixed_s for name, p in
                (("all", every), ("finetuned", cpu), ("small", {**every, "bench_large_input": None}))}
    standing = 1 + sum(sizing.candidates_per_budget(cpu))
    finetuned = 1 + sizing.finetuned_patterns(cpu)
    per_network = (sizing.CPU_SETTINGS * (cpu["bench_repeats"] * cpu["bench_min_time"] + sizing.BENCH_OVERHEAD_S)
                   + sizing.CPU_INT8_SETTINGS * sizing.bench_int8_seconds(224))
    assert chapter5["all"] - chapter5["small"] == pytest.approx(standing * per_network)
    assert chapter5["finetuned"] - chapter5["small"] == pytest.approx(finetuned * per_network)
    assert (standing, finetuned) == (18, 5)
