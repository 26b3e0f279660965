"""The five chapters under papermill on the `tiny` profile, the runner's resume and failure
handling, and the book built from them with `jupyter-book build -W -n --keep-going`."""
import json

import nbformat
import pandas as pd
import pytest

from ds.study.runner import CHAPTERS, ChapterFailed, run_study

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
    assert json.loads((tiny_study / "02_search" / "patterns.json").read_text())
    merge = pd.read_csv(tiny_study / "04_merge" / "merge.csv")
    assert (merge["max_rel"] < 1e-4).all()
    assert (merge["acc_merged"] == merge["acc_unmerged"]).all()
    assert set(pd.read_csv(tiny_study / "05_throughput" / "throughput.csv")["device"]) >= {"cpu"}
    provenance = json.loads((tiny_study / "provenance.json").read_text())
    assert set(provenance) == set(CHAPTERS) and {p["profile"] for p in provenance.values()} == {"tiny"}


def test_the_book_builds_with_warnings_as_errors(tiny_study):
    html = tiny_study / "book" / "_build" / "html"
    for page in ["index", "intro", "results", "reproduce", "adapt", "deviations"] + [f"chapters/{c}" for c in CHAPTERS]:
        assert (html / f"{page}.html").is_file(), page
    chapter = (html / "chapters" / "01_observation.html").read_text()
    assert "Produced by profile" in chapter and "observe_train_images =" not in chapter   # parameters hidden


def test_a_rerun_skips_finished_chapters(tiny_study, capsys):
    run_study("tiny", run_root=tiny_study.parent, book=False)
    assert capsys.readouterr().out.count("finished before, skipped") == len(CHAPTERS)


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
