"""The five chapters under papermill on the `tiny` profile, the runner's resume and failure
handling, the run's own book built with `jupyter-book build -W -n --keep-going`, and publishing."""
import importlib.util
import json
import shutil

import nbformat
import pandas as pd
import pytest
import torch

import ds
from ds.study.book import NotPublishable
from ds.train import load_checkpoint
from ds.study.layout import BOOK, CHAPTERS, REPO_ROOT, RunLayout
from ds.study.runner import ChapterFailed, publish, run_study

pytestmark = pytest.mark.slow


def _outputs(path, mime):
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if mime in o.get("data", {})]


def test_every_chapter_runs_and_writes_its_outputs(tiny_study):
    for chapter in CHAPTERS:
        assert (tiny_study / f"{chapter}.done").is_file()
        assert _outputs(tiny_study / f"{chapter}.ipynb", "image/png"), f"{chapter} made no figure"
    assert (tiny_study / "base" / "checkpoint.pt").is_file()
    assert len(pd.read_csv(tiny_study / "01_observation" / "removal.csv")) == 17   # mobilenetv2 blocks
    patterns = json.loads((tiny_study / "02_search" / "patterns.json").read_text())
    assert {"searched-k8", "searched-k8@torch", "searched-k8@onnxruntime"} <= set(patterns)
    latency = pd.read_csv(tiny_study / "02_search" / "latency_onnxruntime.csv")
    assert len(latency) == 17 and (latency["runtime"] == "onnxruntime").all()
    merge = pd.read_csv(tiny_study / "04_merge" / "merge.csv")
    assert (merge["max_rel"] < 1e-4).all()
    assert (merge["acc_merged"] == merge["acc_unmerged"]).all()
    assert set(pd.read_csv(tiny_study / "05_throughput" / "throughput.csv")["device"]) >= {"cpu"}
    shares = pd.read_csv(tiny_study / "05_throughput" / "time_shares.csv")
    assert {"torch NCHW", "onnxruntime"} <= set(shares["setting"]) and "base" in set(shares["pattern"])
    kinds = shares[["depthwise_share", "pointwise_share", "dense_kxk_share", "other_share"]]
    assert kinds.sum(axis=1).tolist() == pytest.approx([1.0] * len(shares))
    base = shares[shares["pattern"] == "base"]
    assert (base["dense_kxk_share"] < base["depthwise_share"] + base["pointwise_share"]).all()
    layout = RunLayout(tiny_study)
    assert layout.merged_network("base", "base").is_file()          # chapter 4 saved what chapter 5 timed
    assert all(layout.merged_network(row.pattern, row.finetune).is_file() for row in merge.itertuples())
    candidates = pd.read_csv(layout.candidates_csv)                  # chapter 2 finetuned every candidate at k=8
    assert {"searched", "sensitivity", "random", "paper"} <= set(candidates["source"])
    assert (candidates["removed_blocks"] == 17 - 8).all()
    assert set(candidates["pattern"]) | {"base"} <= set(merge["pattern"])   # and chapter 4 merged them all
    observation = pd.read_csv(layout.observation_csv)
    assert sorted(observation["arm"]) == ["after_training", "from_scratch", "recovered", "with_activations"]
    assert observation.loc[observation["arm"] == "recovered", "recipe"].str.startswith("lr 0.05, 0.3 epochs").all()
    finetuned = pd.read_csv(layout.finetune_results)                 # chapter 3: best@k8 chosen on held-out top-1
    assert "by held-out top-1" in finetuned["chosen_as"].iloc[0] and (finetuned["epochs"] == 1).all()
    assert candidates["holdout_top1"].between(0, 100).all() and (candidates["holdout_images"] == 32).all()
    study = pd.read_csv(layout.study_csv)
    assert len(study) == len(merge) and study["img_s"].notna().all() and study["img_s_24px"].notna().all()
    _check_int8(layout, merge, study)
    provenance = json.loads((tiny_study / "provenance.json").read_text())
    assert set(provenance) == set(CHAPTERS) and {p["profile"] for p in provenance.values()} == {"tiny"}
    assert all(isinstance(p["cpu_features"], list) for p in provenance.values())   # what INT8 and bf16 ran on


def _check_int8(layout, merge, study):
    """Chapter 4 quantized every merged network and measured it on every test image; chapter 5 timed
    the INT8 settings and carries chapter 4's INT8 top-1 into its rows and into study.csv."""
    int8 = pd.read_csv(layout.int8_csv)
    runtimes = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("nncf") else [])
    assert {"pattern", "finetune", "runtime", "quantization", "calibration_images", "test_images", "top1_float",
            "top1_int8", "top1_change", "agreement", "rel_rms_error"} <= set(int8.columns)
    assert sorted(int8["runtime"].unique()) == runtimes and len(int8) == len(merge) * len(runtimes)
    for runtime in runtimes:
        measured = int8[int8["runtime"] == runtime]
        assert sorted(zip(measured["pattern"], measured["finetune"])) == sorted(zip(merge["pattern"], merge["finetune"]))
    assert int8["agreement"].between(0, 1).all() and int8["top1_int8"].between(0, 100).all()
    assert (int8["calibration_images"] == 128).all() and (int8["test_images"] == 64).all()   # tiny: all it has
    assert (int8["top1_float"] - merge.set_index(["pattern", "finetune"]).loc[
        list(zip(int8["pattern"], int8["finetune"])), "acc_merged"].values).abs().max() < 100 / 64 + 1e-9
    for runtime in runtimes:
        assert study[f"top1_int8_{runtime}"].notna().all() and study[f"agreement_int8_{runtime}"].between(0, 1).all()
    assert study["top1_at_setting"].notna().all()
    throughput = pd.read_csv(layout.throughput_csv)
    quantized = throughput[throughput["dtype"] == "int8"]
    assert sorted(quantized["runtime"].unique()) == runtimes and quantized["quantization"].str.len().gt(0).all()
    assert quantized["top1"].notna().all()
    bases = throughput[throughput["pattern"] == "base"]   # the fastest base is the fastest of all, INT8 included
    assert (bases["speedup_over_best_base"] <= 1 + 1e-9).all()


def test_the_book_builds_with_warnings_as_errors(tiny_study):
    html = tiny_study / "book" / "_build" / "html"
    for page in ["index", "intro", "results", "reproduce", "adapt", "deviations"] + [f"chapters/{c}" for c in CHAPTERS]:
        assert (html / f"{page}.html").is_file(), page
    chapter = (html / "chapters" / "01_observation.html").read_text()
    assert "Produced by profile" in chapter and "observe_train_images =" not in chapter   # parameters hidden


def test_a_rerun_skips_finished_chapters(tiny_study, capsys):
    run_study("tiny", run_root=tiny_study.parent, book=False)
    assert capsys.readouterr().out.count("finished before with these parameters, skipped") == len(CHAPTERS)


def test_a_failing_chapter_stops_the_run_and_names_itself(tmp_path):
    from ds.study.profiles import PROFILES_FILE
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES_FILE.read_text() + "\nbroken: {extends: tiny, backbone: no_such_model}\n")
    with pytest.raises(ChapterFailed, match="chapter 01_observation failed: .*no_such_model"):
        run_study("broken", profiles_file=profiles, run_root=tmp_path, book=False)
    assert not (tmp_path / "broken" / "01_observation.done").exists()
    assert not (tmp_path / "broken" / "02_search.ipynb").exists()   # the run stopped there
    assert "01_observation" in (tmp_path / "broken" / "study.log").read_text()


def test_a_new_backbone_runs_by_changing_parameters_only(tmp_path):
    """The worked example of the book's "Adapt" page: efficientnet_lite0 through all five chapters."""
    from ds.study.profiles import PROFILES_FILE, load_profile
    lite0 = load_profile("lite0")
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES_FILE.read_text() + "\nlite0-tiny: {extends: tiny, backbone: efficientnet_lite0, "
                        f"compare_pattern: {lite0['compare_pattern']}, patterns: [searched]}}\n")
    run_dir = run_study("lite0-tiny", profiles_file=profiles, run_root=tmp_path, book=False)
    assert all((run_dir / f"{chapter}.done").is_file() for chapter in CHAPTERS)
    assert len(pd.read_csv(run_dir / "01_observation" / "removal.csv")) == 16   # lite0's blocks
    merge = pd.read_csv(run_dir / "04_merge" / "merge.csv")
    assert (merge["max_rel"] < 1e-4).all() and (merge["acc_merged"] == merge["acc_unmerged"]).all()


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and "_build" not in p.parts}


def test_a_run_writes_nothing_into_the_tracked_book(tiny_study):
    results = (tiny_study / "book" / "results.md").read_text()
    assert "profile **tiny**" in results and "commit" in results
    first = results.index("## How much accuracy the shrunk networks keep, at what speed")
    assert first < results.index("## The answers") and "| network | finetune | removed blocks |" in results
    assert "(images/results_accuracy_speed.png)" in results
    assert (tiny_study / "book" / "images" / "results_accuracy_speed.png").stat().st_size > 10_000
    assert (tiny_study / "book" / "chapters" / "05_throughput.ipynb").is_file()
    # the run's book was assembled from book/ but book/ holds the published run, not this one
    assert (BOOK / "results.md").read_text() != results


def test_publish_refuses_a_profile_marked_not_for_publishing(tiny_study, tmp_path):
    book = tmp_path / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns("_build"))
    before = _files(book)
    with pytest.raises(NotPublishable, match="publish: false"):
        publish("tiny", run_root=tiny_study.parent, book_dir=book)
    assert _files(book) == before


def test_publish_refuses_a_run_with_a_missing_or_stale_chapter(tiny_study, tmp_path):
    from ds.study.profiles import PROFILES_FILE
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES_FILE.read_text() + "\npub: {extends: tiny, publish: true}\n"
                        "pub2: {extends: tiny, publish: true, finetune_epochs: 2}\n")
    book = tmp_path / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns("_build"))
    before = _files(book)
    for name in ("pub", "pub2"):
        shutil.copytree(tiny_study, tmp_path / "runs" / name, ignore=shutil.ignore_patterns("book", "study.lock"))
    (tmp_path / "runs" / "pub" / "05_throughput.done").unlink()
    with pytest.raises(NotPublishable, match="05_throughput \\(not finished\\)"):
        publish("pub", profiles_file=profiles, run_root=tmp_path / "runs", book_dir=book)
    with pytest.raises(NotPublishable, match="03_finetune \\(parameters changed since it ran: finetune_epochs 1 -> 2"):
        publish("pub2", profiles_file=profiles, run_root=tmp_path / "runs", book_dir=book)
    assert _files(book) == before


def test_publish_swaps_in_a_built_book_that_names_its_run_and_holds_no_machine_path(tiny_study, tmp_path):
    from ds.study.profiles import PROFILES_FILE
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES_FILE.read_text() + "\npub: {extends: tiny, publish: true}\n")
    shutil.copytree(tiny_study, tmp_path / "runs" / "pub", ignore=shutil.ignore_patterns("book", "study.lock"))
    book = tmp_path / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns("_build"))
    html = publish("pub", profiles_file=profiles, run_root=tmp_path / "runs", book_dir=book,
                   results_dir=tmp_path / "results", checkpoints_dir=tmp_path / "checkpoints")
    assert html == book / "_build" / "html" / "index.html" and html.is_file()
    study = pd.read_csv(tmp_path / "results" / "study_pub.csv")     # the run's tables, with their provenance
    assert {"pattern", "source", "removed_blocks", "distilled", "seed", "top1", "top1_merged", "macs", "img_s",
            "speedup"} <= set(study.columns) and "base" in set(study["source"])
    observation = pd.read_csv(tmp_path / "results" / "observation_pub.csv")
    assert {"after_training", "from_scratch"} <= set(observation["arm"])
    record = json.loads((tmp_path / "results" / "study_pub.csv.provenance.json").read_text())
    assert record["chapters"]["05_throughput"]["profile"] == "tiny"
    base = load_checkpoint(tmp_path / "checkpoints" / "pub" / "base.pt")
    assert set(base) == {"model", "meta", "epoch"}                   # weights, not the optimizer's state
    merged = list((tmp_path / "checkpoints" / "pub").glob("*-merged.pt"))
    assert len(merged) == 1 and ds.meta.info(ds.load_network(merged[0])).merged   # sha256 checked on load
    assert json.loads((merged[0].parent / (merged[0].name + ".provenance.json")).read_text())["sha256"]
    assert (book / "_build" / "html" / "chapters" / "04_merge.html").is_file()
    results = (book / "results.md").read_text()
    assert "profile **tiny**" in results and "commit" in results and "chapter starts" in results
    offenders = [str(p) for p in book.rglob("*") if p.is_file() and "_build" not in p.parts
                 and (str(REPO_ROOT).encode() in p.read_bytes() or str(tmp_path).encode() in p.read_bytes())]
    assert not offenders, f"published files holding a machine path: {offenders}"
    assert not list(tmp_path.glob(".book-publish-*"))        # the staging directory is gone


def test_a_run_adopts_the_published_base_network(tmp_path):
    """A reader reruns the study from the committed base (data/checkpoints/cpu/base.pt): chapter 1
    evaluates it and keeps it as the run's base (what chapters 2-5 load) instead of training one."""
    from ds import data as ds_data
    from ds.study.layout import CHECKPOINTS_DIR
    from ds.study.profiles import PROFILES_FILE
    published = CHECKPOINTS_DIR / "cpu" / "base.pt"
    assert published.is_file(), "the cpu run's base network is published with the repository"
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES_FILE.read_text() + f"\nfrom-base: {{extends: tiny, input_size: 32, "
                        f"base_checkpoint: '{published}'}}\n")
    run_dir = run_study("from-base", profiles_file=profiles, run_root=tmp_path, book=False,
                        chapters=["01_observation"])
    metrics = pd.read_csv(run_dir / "base" / "metrics.csv")
    assert metrics["source"].iloc[0] == str(published) and len(metrics) == 1
    if ds_data.prepare("auto", None, 32, 1, 1).name == "cifar10":   # the published 84.28% on 10,000 images
        assert metrics["test_acc"].iloc[0] > 70
