"""Chapter 4's INT8 step (ds.study.int8) and how chapter 5 carries its accuracy (ds.study.throughput)."""
import numpy as np
import pandas as pd
import pytest
import torch

from ds.data import fake_dataset
from ds.study import int8
from ds.study.chapter import Chapter, loaders
from ds.study.int8 import (Int8Error, calibration_set, change_se, check_count, int8_reading, int8_summary,
                           much_worse_than_base)
from ds.study.throughput import row_top1, throughput_reading, top1_at_setting, with_int8_columns


def _row(pattern, runtime, float_top1, int8_top1, agreement, finetune="distill", rms=0.08, n=10_000):
    return dict(pattern=pattern, finetune="base" if pattern == "base" else finetune, runtime=runtime,
                calibration_images=300, calibration_seed=0, test_images=n, top1_float=float_top1,
                top1_int8=int8_top1, top1_change=int8_top1 - float_top1, agreement=agreement, rel_rms_error=rms)


def _good():
    return pd.DataFrame([_row("base", "onnxruntime", 84.0, 83.8, 0.985), _row("DS-E", "onnxruntime", 82.0, 81.9, 0.99),
                         _row("base", "openvino", 84.0, 84.1, 0.99), _row("DS-E", "openvino", 82.0, 82.2, 0.98)])


def test_the_reading_counts_the_networks_meeting_both_targets_with_the_standard_error():
    text = int8_reading(_good())
    assert "all 10,000 test images, calibrated on 300 training images (seed 0)" in text
    assert "standard error of 0.37 points" in text          # sqrt(84 * 16 / 10000)
    assert "**onnxruntime**: INT8 top-1 within 0.5 points of float for **2 of 2** networks" in text
    assert "agreement at least 97% for **2 of 2**" in text and "Missing a target" not in text
    assert "No merged network quantizes much worse than the base" in text and "threshold" not in text
    assert int8_summary(_good()).endswith("onnxruntime: 2 of 2, openvino: 2 of 2.")


def test_the_reading_names_the_networks_that_miss_a_target_or_quantize_much_worse_than_the_base():
    table = pd.concat([_good(), pd.DataFrame([_row("DS-A", "onnxruntime", 83.0, 81.0, 0.95, rms=0.31)])],
                      ignore_index=True)
    text = int8_reading(table)
    assert "for **2 of 3** networks (largest change -2.00 points, DS-A (distill))" in text
    assert "agreement at least 97% for **2 of 3** (lowest 95.0%, DS-A (distill))" in text
    assert "Missing a target: DS-A (distill) 83.00% -> 81.00% (-2.00 ± 0.22), agreement 95.0%." in text
    assert "**Quantizes much worse than the base**" in text and "DS-A (distill) in onnxruntime, -2.00 ± 0.22 points" in text
    assert "Beyond ds.export's threshold" in text and "DS-A (distill) in onnxruntime (0.31)" in text
    assert "onnxruntime: 2 of 3" in int8_summary(table)
    assert list(much_worse_than_base(table)["pattern"]) == ["DS-A"]


def test_the_reading_says_where_agreement_is_missed_and_whether_it_follows_the_float_error():
    rows = [_row("base", rt, 86.0, 85.9, 0.988, finetune="base") for rt in ("onnxruntime", "openvino")]
    for name, top1, agreement in (("DS-E", 74.7, 0.962), ("DS-D", 76.2, 0.964), ("DS-A", 79.5, 0.974),
                                  ("dp-k11", 85.1, 0.986)):
        rows += [_row(name, rt, top1, top1 - 0.2, agreement, finetune="candidate") for rt in ("onnxruntime", "openvino")]
    text = int8.agreement_reading(pd.DataFrame(rows))
    assert text.startswith("**Where agreement is missed.** Every network below 97% has float top-1 of at most 76.20%; "
                           "all 3 networks more accurate than that meet it in every runtime.")
    assert "rises with the float network's error (Pearson r = 1.00 in onnxruntime (5 networks), r = 1.00 in openvino" in text
    assert text in int8_reading(pd.DataFrame(rows))
    assert int8.agreement_reading(_good()) is None and "Where agreement is missed" not in int8_reading(_good())
    unrelated = [dict(r, agreement=a) for r, a in zip(rows, (0.96, 0.96, 0.99, 0.99, 0.96, 0.96, 0.99, 0.99, 0.96, 0.96))]
    assert "does not clearly follow the float network's error" in int8.agreement_reading(pd.DataFrame(unrelated))


def test_a_base_that_gains_in_int8_or_a_loss_within_the_noise_is_not_much_worse():
    table = pd.DataFrame([_row("base", "onnxruntime", 9.4, 14.1, 0.86, n=64),       # a gain: counts as no loss
                          _row("DS-E", "onnxruntime", 7.8, 7.8, 1.0, n=64),
                          _row("DS-A", "onnxruntime", 12.5, 10.9, 0.95, n=64)])    # -1.6 ± 2.7: noise
    assert much_worse_than_base(table).empty
    assert "No merged network quantizes much worse than the base" in int8_reading(table)


def test_an_int8_gain_beyond_the_target_also_misses_it_and_no_table_says_so():
    table = pd.DataFrame([_row("base", "onnxruntime", 80.0, 80.9, 0.98)])
    assert "for **0 of 1** networks" in int8_reading(table)
    assert "not measured" in int8_reading(pd.DataFrame()) and int8_summary(pd.DataFrame()) is None


def test_the_change_standard_error_is_bounded_by_the_disagreement():
    assert change_se(1.0, 10_000) == 0.0
    assert change_se(0.96, 10_000) == pytest.approx(100 * (0.04 / 10_000) ** 0.5)


@pytest.mark.parametrize("count", [-1, 2.5, True, "300", None])
def test_a_bad_calibration_count_is_one_line_naming_the_fix(count):
    with pytest.raises(Int8Error, match=r"int8_calibration_images must be a whole number >= 0 \(0 skips INT8\)") as e:
        check_count(count)
    assert "\n" not in str(e.value)


def test_calibration_uses_seeded_training_images_and_all_of_them_when_the_run_has_fewer():
    data = fake_dataset(40, 8, size=8, seed=0)
    few = calibration_set(data, 300, seed=1)
    assert few.images.shape == (40, 3, 8, 8) and few.identity["split"] == "train" and few.identity["count"] == 40
    some, again = calibration_set(data, 10, seed=1), calibration_set(data, 10, seed=1)
    assert np.array_equal(some.images, again.images) and np.array_equal(some.images, few.images[:10])
    assert calibration_set(data, 10, seed=2).identity["indices_sha256"] != some.identity["indices_sha256"]
    with pytest.raises(Int8Error, match="INT8 is off"):
        calibration_set(data, 0, seed=1)


# ---------------------------------------------------------------- chapter 5 carries the INT8 accuracy

def _throughput():
    rows = []
    for pattern, speed in (("base", 1.0), ("DS-E", 1.5)):
        for runtime, dtype, img_s in (("onnxruntime", "fp32", 100.0), ("onnxruntime", "int8", 180.0),
                                      ("openvino", "int8", 150.0)):
            rows.append(dict(device="cpu", device_name="a CPU", input=32, batch=64, threads=2, pattern=pattern,
                             runtime=runtime, dtype=dtype, layout="nchw",
                             setting=runtime + (" int8" if dtype == "int8" else ""), img_s_median=img_s * speed,
                             speedup_same_runtime=speed, speedup_over_best_base=img_s * speed / 180.0))
    return pd.DataFrame(rows)


def _merge():
    return pd.DataFrame([dict(pattern="base", finetune="base", acc_merged=84.0),
                         dict(pattern="DS-E", finetune="plain", acc_merged=81.0),
                         dict(pattern="DS-E", finetune="distill", acc_merged=82.0)])


def _int8():   # onnxruntime only: chapter 4 had no NNCF
    return pd.DataFrame([_row("base", "onnxruntime", 84.0, 83.5, 0.98),
                         _row("DS-E", "onnxruntime", 81.0, 80.0, 0.97, finetune="plain"),
                         _row("DS-E", "onnxruntime", 82.0, 81.7, 0.975)])


def test_an_int8_row_carries_the_int8_top1_of_the_network_that_stands_for_its_pattern():
    table = _throughput()
    top1 = row_top1(table, _merge(), _int8())
    by = dict(zip(zip(table["pattern"], table["setting"]), top1))
    assert by[("base", "onnxruntime")] == 84.0 and by[("DS-E", "onnxruntime")] == 82.0   # float: merged top-1
    assert by[("base", "onnxruntime int8")] == 83.5 and by[("DS-E", "onnxruntime int8")] == 81.7   # the distilled one
    assert np.isnan(by[("DS-E", "openvino int8")])        # not quantized for openvino in chapter 4
    assert row_top1(table, _merge(), None)[table["dtype"] == "int8"].isna().all()


def test_the_study_table_gains_the_int8_columns_and_the_top1_where_each_network_runs_fastest():
    study = pd.DataFrame({"pattern": ["base", "DS-E", "DS-E"], "finetune": ["base", "plain", "distill"],
                          "top1_merged": [84.0, 81.0, 82.0]})
    study = with_int8_columns(study, _int8())
    assert list(study["top1_int8_onnxruntime"]) == [83.5, 80.0, 81.7]
    assert list(study["agreement_int8_onnxruntime"]) == [0.98, 0.97, 0.975] and "top1_int8_openvino" not in study
    speed = pd.DataFrame({"pattern": ["base", "DS-E"], "dtype": ["int8", "fp32"],
                          "runtime": ["onnxruntime", "onnxruntime"]}).set_index("pattern")
    assert list(top1_at_setting(study, speed)) == [83.5, 81.0, 82.0]
    assert with_int8_columns(study[["pattern", "finetune"]], None).columns.tolist() == ["pattern", "finetune"]


def test_the_throughput_reading_includes_the_int8_base_and_gives_the_float_comparison_beside():
    table = _throughput().assign(top1=lambda t: row_top1(t, _merge(), _int8()))
    text = throughput_reading(table)
    assert "the fastest way to run the base network is **onnxruntime int8** at 180.0 img/s (top-1 83.50%)" in text
    assert "**DS-E** in onnxruntime int8, runs at 270.0 img/s (top-1 81.70%): **1.50x** over that best base" in text
    assert "In float settings alone, the fastest base is onnxruntime at 100.0 img/s" in text
    assert "In float settings alone" not in throughput_reading(table[table["dtype"] == "fp32"])


# ---------------------------------------------------------------- the step, on a small run

def _chapter(tmp_path, size=16):
    data = fake_dataset(48, 40, size=size, seed=0)
    ch = Chapter("04_merge", tmp_path, "test", torch.device("cpu"), 0, "now", backbone="mobilenetv2_035",
                 input_size=size, data=data)
    ch.train_loader, ch.test_loader = loaders(data, 16, ch.device)
    return ch


def test_the_step_writes_a_row_per_network_and_runtime_and_resumes(tiny_merged, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(int8, "int8_runtimes", lambda: (["onnxruntime"], ["openvino int8 not measured: test"]))
    ch = _chapter(tmp_path)
    networks = {("base", "base"): tiny_merged["base"], ("DS-F", "distill"): tiny_merged["DS-F"]}
    table, notes = int8.int8_accuracy(ch, networks, calibration_images=300)
    assert notes == ["openvino int8 not measured: test"] and len(table) == 2
    assert set(table["calibration_images"]) == {48} and set(table["test_images"]) == {40}   # all the run has
    assert table["agreement"].between(0, 1).all() and (table["top1_change"] == table["top1_int8"] - table["top1_float"]).all()
    assert pd.read_csv(ch.layout.int8_csv)[["pattern", "runtime"]].values.tolist() == [["base", "onnxruntime"],
                                                                                        ["DS-F", "onnxruntime"]]
    monkeypatch.setattr(int8, "quantize", lambda *a, **k: pytest.fail("a measured row was measured again"))
    again, _ = int8.int8_accuracy(ch, networks, calibration_images=300)
    assert len(again) == 2
    off, notes = int8.int8_accuracy(ch, networks, calibration_images=0)
    assert off.empty and "int8_calibration_images is 0" in notes[0]


def test_chapter_5_calibrates_its_int8_settings_as_chapter_4_did():
    from ds.study.throughput import bench_int8_images
    assert bench_int8_images(None, 16) is None          # no chapter 4 table: ds.bench's default
    table = pd.DataFrame([dict(_row("base", "onnxruntime", 84.0, 83.8, 0.985), calibration_images=6,
                               calibration_seed=3, calibration_dataset="fake")])
    images = bench_int8_images(table, 16)                # a synthetic run's INT8 is timed on CIFAR-10 images
    assert images.calibration.identity["count"] == images.check.identity["count"] == 6
    assert images.calibration.identity["seed"] == 3 and images.calibration.identity["dataset"] == "cifar10"
    assert images.calibration.images.shape == (6, 3, 16, 16)


def test_the_reading_says_when_the_saturation_fix_ran_and_in_which_runtime():
    from ds.export.quantize import image_set, settings_label
    images = image_set(np.zeros((2, 3, 4, 4), np.float32), "noise")
    table = _good()
    for fix in (False, True):
        table["quantization"] = [settings_label(rt, images, fix) for rt in table["runtime"]]
        note = int8.saturation_note(table)
        assert bool(note) == fix and (note in int8_reading(table)) and (note in int8_summary(table))
    assert note.startswith("Quantized with the saturation fix in onnxruntime and openvino: the CPU that ran")
    table["quantization"] = [settings_label(rt, images, rt == "openvino") for rt in table["runtime"]]
    assert int8.saturation_note(table).startswith("Quantized with the saturation fix in openvino:")
    assert int8.saturation_note(_good()) == ""                       # an older table without the column
