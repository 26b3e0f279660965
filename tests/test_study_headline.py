"""The results page's first answer (ds.study.headline): accuracy kept against speed, from a run's
study.csv, with the uncertainty of each number and the paper's beside."""
import pandas as pd

from ds.study import headline


def _study():
    rows = [("base", "base", "base", 0, 85.0, 1.0, 1.0), ("DS-A", "paper", "distill", 6, 84.5, 1.3, 1.5),
            ("dp-k11", "dp", "distill", 6, 84.8, 1.4, 1.6), ("DS-E", "paper", "distill", 11, 81.0, 1.6, 1.9),
            ("random-k6-1", "random", "candidate", 11, 70.0, 1.5, 1.8)]
    table = pd.DataFrame(rows, columns=["pattern", "source", "finetune", "removed_blocks", "top1_merged", "speedup",
                                        "speedup_224px"])
    return table.assign(setting="openvino int8", setting_224px="openvino int8", top1_int8_openvino=table["top1_merged"] - 0.1)


def test_every_chapter_3_network_gets_its_drop_target_int8_speed_and_the_papers_pattern():
    study = _study()
    counts = headline.paper_counts(study)
    assert counts == {"DS-A": 6, "DS-E": 11}
    table = headline.kept_table(study, 85.0, 10_000, counts)
    assert list(table["network"]) == ["DS-A", "dp-k11", "DS-E"]          # chapter 3's, not the candidates
    dp = table.set_index("network").loc["dp-k11"]
    assert dp["against the base (points)"] == "-0.20 +- 0.51" and dp["target"] == "within 1: met"
    assert dp["INT8 top-1"] == "84.70% (openvino)" and dp["speed-up 224px"] == "1.60x (openvino int8)"
    assert dp["paper (same count)"].startswith("DS-A: -0.65 to +0.35 points, 1.80x")
    assert table.set_index("network").loc["DS-E", "target"] == "within 2: missed by 2.00"


def test_the_reading_names_the_best_network_per_target_and_says_a_miss_plainly():
    study = _study()
    text = headline.kept_reading(study, 85.0, 10_000, headline.paper_counts(study))
    assert "`dp-k11` (distill), keeps 84.80% of the base's 85.00%: 0.20 points below it +- 0.51, within the " \
           "target of 1 point(s); 1.40x (openvino int8)" in text
    assert "**the target is missed by 2.00 points**" in text and "DS-E on ImageNet: -3.10 to -0.87 points" in text
    assert "no network of this run" in headline.kept_reading(study[study["removed_blocks"] < 11], 85.0, 10_000,
                                                             {"DS-A": 6})


def test_the_figure_has_a_panel_per_timed_input_and_none_without_timings(tmp_path):
    study = _study()
    assert headline.write_figure(study, 85.0, tmp_path / "a.png").stat().st_size > 10_000
    assert headline.write_figure(study.drop(columns=["speedup", "speedup_224px"]), 85.0, tmp_path / "b.png") is None


def test_every_label_of_a_panel_lies_inside_it():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    headline._panel(ax, _study()[lambda s: s["source"] != "base"], "speedup", 85.0)
    fig.canvas.draw()
    frame = ax.get_window_extent()
    labels = [t for t in ax.texts if t.get_text()]
    assert {"DS-F", "dp-k11"} <= {t.get_text() for t in labels}        # the paper's rightmost bar, a network
    for label in labels:
        box = label.get_window_extent()
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1, f"{label.get_text()} sticks out of its panel"
    plt.close(fig)
