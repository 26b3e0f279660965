"""ds.study.workers: a chapter's independent finetunes side by side give what one process gives."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

import ds
from ds import data
from ds.meta import info
from ds.patterns import resolve_pattern
from ds.switches import switches
from ds.study import chapter, workers
from ds.train import METRICS, save_checkpoint


def _scaled_square(shared, x):   # module level: a spawned worker imports it
    return shared * x * x


def _fails_on_two(shared, x):
    if x == 2:
        raise ValueError("job 2 failed")
    return x


def test_every_job_comes_back_once_from_the_workers():
    assert dict(workers.side_by_side(_scaled_square, 10, [1, 2, 3], workers=2, threads=2)) == {1: 10, 2: 40, 3: 90}


def test_one_worker_runs_the_jobs_here_in_their_order():
    assert list(workers.side_by_side(_scaled_square, 1, [3, 1, 2])) == [(3, 9), (1, 1), (2, 4)]


def test_a_failing_job_raises_its_own_error():
    with pytest.raises(ValueError, match="job 2 failed"):
        list(workers.side_by_side(_fails_on_two, None, [1, 2, 3], workers=2, threads=2))


@pytest.mark.parametrize("count", [0, -1, 1.5, "2"])
def test_a_worker_count_that_cannot_work_is_one_clear_error(count, tmp_path):
    with pytest.raises(ValueError, match="whole number of processes"):
        list(workers.side_by_side(_scaled_square, 1, [1], workers=count))
    with pytest.raises(ValueError, match="workers"):
        chapter.start("02_search", run_dir=tmp_path, device="cpu", workers=count)


def _from_base(tmp_path, train_images: int, holdout: bool):
    """A random-weight mobilenetv2_035 base checkpoint at 16 px, what its finetunes share, and
    the patterns of DS-E and DS-A for it."""
    torch.manual_seed(0)
    base = ds.create_model("mobilenetv2_035", num_classes=10, input_size=16)
    save_checkpoint({"model": base.state_dict(), "meta": info(base).as_dict(), "epoch": 0}, tmp_path / "base.pt")
    train_loader, test_loader = chapter.loaders(data.fake_dataset(train_images, 32, size=16), 32, torch.device("cpu"))
    shared = chapter.FromBase("mobilenetv2_035", 10, 16, tmp_path / "base.pt", torch.device("cpu"),
                              train_loader, test_loader, holdout_loader=test_loader if holdout else None)
    return shared, {name: tuple(resolve_pattern(base, name, len(switches(base)))) for name in ("DS-E", "DS-A")}


def test_a_finetune_in_a_worker_trains_exactly_what_this_process_trains(tmp_path):
    shared, patterns = _from_base(tmp_path, 96, holdout=True)
    recipe = {"lr": 0.05, "warmup_epochs": 0.3, "distill": True}

    def jobs(where):
        return [chapter.Finetune(name, p, recipe, 2, 0, tmp_path / where / name) for name, p in patterns.items()]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as each worker: the same summation order, so the same numbers
    try:
        here = {job.name: result for job, result in workers.side_by_side(chapter.finetune_from_base, shared,
                                                                          jobs("here"))}
    finally:
        torch.set_num_threads(threads)
    there = {job.name: result for job, result in workers.side_by_side(chapter.finetune_from_base, shared,
                                                                       jobs("there"), workers=2, threads=2)}
    assert set(there) == set(patterns)
    for name in patterns:
        for key in ("top1_removed", "top1", "holdout_top1"):
            assert there[name][key] == here[name][key], (name, key)
        pd.testing.assert_frame_equal(there[name]["metrics"].drop(columns=["seconds", "images_per_s"]),
                                      here[name]["metrics"].drop(columns=["seconds", "images_per_s"]))
        assert len(pd.read_csv(tmp_path / "there" / name / METRICS)) == 2   # its checkpoints are where it says


def test_a_finished_finetune_resumes_without_training_again(tmp_path):
    shared, patterns = _from_base(tmp_path, 64, holdout=False)
    job = chapter.Finetune("DS-E", patterns["DS-E"], {"lr": 0.02}, 1, 0, tmp_path / "DS-E")
    first = chapter.finetune_from_base(shared, job)
    stamp = (tmp_path / "DS-E" / METRICS).stat().st_mtime_ns
    again = chapter.finetune_from_base(shared, job)
    assert again["top1"] == first["top1"] and "holdout_top1" not in again
    assert (tmp_path / "DS-E" / METRICS).stat().st_mtime_ns == stamp
