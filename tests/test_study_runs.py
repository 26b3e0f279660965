"""The runner on five stand-in chapter notebooks (a few lines each, so a run takes seconds): a
resumed run is the run asked for (stale chapters rerun), one process per run directory, pieces
that always move forward, and the command line's one-line errors."""
import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from ds.study import layout as study_layout
from ds.study import snapshot
from ds.study.layout import CHAPTERS, RunLayout
from ds.study.lock import RunLocked, hold
from ds.study.profiles import ProfileError, load_profile
from ds.study.runner import PiecePaused, run_study

REPO = Path(__file__).resolve().parents[1]


def _stand_in_notebooks(folder: Path) -> Path:
    """Chapters that append '<chapter> <value>' to <run_dir>/ran.txt; chapter 3 declares `x`, the
    others `y`."""
    folder.mkdir()
    for chapter in CHAPTERS:
        name = "x" if chapter == "03_finetune" else "y"
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(f'run_dir = "runs/custom"\nprofile = "custom"\n{name} = 0',
                                              metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(f'import pathlib\npathlib.Path(run_dir).mkdir(exist_ok=True)\n'
                                              f'with open(pathlib.Path(run_dir) / "ran.txt", "a") as f:\n'
                                              f'    f.write("{chapter} " + str({name}) + "\\n")')]
        nbformat.write(nb, folder / f"{chapter}.ipynb")
    return folder


@pytest.fixture
def stand_in(tmp_path):
    notebooks = _stand_in_notebooks(tmp_path / "notebooks")
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("p: {x: 1, y: 1}\np2: {x: 2, y: 1}\npiece: {x: 1, y: 1, piece_minutes: 0.0001}\n")

    def run(profile="p", **kwargs):
        return run_study(profile, profiles_file=profiles, run_root=tmp_path / "runs", book=False,
                         notebooks=notebooks, state_dir=tmp_path / "state", **kwargs)

    def ran(run_dir):
        path = Path(run_dir) / "ran.txt"
        lines = path.read_text().split("\n")[:-1] if path.is_file() else []
        path.unlink(missing_ok=True)
        return lines

    return run, ran, profiles


def test_changed_parameters_rerun_that_chapter_and_those_after_it(stand_in, capsys):
    run, ran, profiles = stand_in
    run_dir = run()
    assert ran(run_dir) == [f"{c} 1" for c in CHAPTERS]
    run()
    assert ran(run_dir) == []                                  # all current: nothing reruns
    profiles.write_text(profiles.read_text().replace("p: {x: 1", "p: {x: 2"))
    capsys.readouterr()
    run()
    assert ran(run_dir) == ["03_finetune 2", "04_merge 1", "05_throughput 1"]
    log = capsys.readouterr().out
    assert "03_finetune: rerunning from scratch: parameters changed since it ran: x 1 -> 2" in log
    assert "04_merge: rerunning from scratch: 03_finetune was rerun after it ran" in log
    assert "01_observation: finished before with these parameters, skipped" in log


def test_a_changed_notebook_reruns_its_chapter(stand_in, tmp_path):
    run, ran, _ = stand_in
    run_dir = run()
    ran(run_dir)
    path = tmp_path / "notebooks" / "05_throughput.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A new paragraph."))
    nbformat.write(nb, path)
    run()
    assert ran(run_dir) == ["05_throughput 1"]


def test_a_done_marker_without_parameters_counts_as_stale(stand_in):
    run, ran, _ = stand_in
    run_dir = run()
    ran(run_dir)
    RunLayout(run_dir).done("02_search").write_text("2026-11-24 04:03:00 UTC\n")   # what the old runner wrote
    run()
    assert ran(run_dir) == ["02_search 1", "03_finetune 1", "04_merge 1", "05_throughput 1"]


def test_an_unfinished_chapter_resumes_only_with_the_parameters_it_started_with(stand_in):
    run, ran, profiles = stand_in
    run_dir = run()
    ran(run_dir)
    layout = RunLayout(run_dir)
    done = json.loads(layout.done("03_finetune").read_text())
    for x, kept in ((1, True), (5, False)):   # interrupted with the same parameters, then with others
        layout.done("03_finetune").unlink()
        layout.started("03_finetune").write_text(json.dumps(dict(done, parameters={"x": x})))
        (layout.chapter_dir("03_finetune")).mkdir(exist_ok=True)
        (layout.chapter_dir("03_finetune") / "checkpoint.pt").write_text("partial work")
        run()
        assert (layout.chapter_dir("03_finetune") / "checkpoint.pt").exists() == kept
        assert not layout.started("03_finetune").exists() and layout.done("03_finetune").exists()


def test_a_run_moved_as_a_snapshot_resumes_where_it_stopped(stand_in, tmp_path, capsys):
    run, ran, _ = stand_in
    run_dir = run()
    ran(run_dir)
    layout = RunLayout(run_dir)
    layout.done("04_merge").unlink()                     # stopped inside chapter 4, with a checkpoint
    layout.done("05_throughput").unlink()
    layout.chapter_dir("04_merge").mkdir(exist_ok=True)
    (layout.chapter_dir("04_merge") / "checkpoint.pt").write_text("partial work")
    snapshot.save(layout, "p", tmp_path / "state")
    shutil.rmtree(run_dir)                               # a fresh clone on another machine
    capsys.readouterr()
    run()
    assert "restored the run from" in capsys.readouterr().out
    assert ran(run_dir) == ["04_merge 1", "05_throughput 1"]
    assert (layout.chapter_dir("04_merge") / "checkpoint.pt").read_text() == "partial work"
    run()                                                # a run that holds chapters is never overwritten
    assert ran(run_dir) == [] and "is not restored: this run directory holds chapters" in capsys.readouterr().out


def test_a_second_process_on_the_same_run_directory_fails_at_once(stand_in, tmp_path):
    run, _, _ = stand_in
    run_dir = tmp_path / "runs" / "p"
    run_dir.mkdir(parents=True)
    with hold(RunLayout(run_dir).lock):
        with pytest.raises(RunLocked, match=rf"in use by process {os.getpid()} \(lock file .*study.lock\)"):
            run()
    run()   # released


@pytest.mark.parametrize("value", [0, -1, "ten", True])
def test_piece_minutes_that_cannot_work_are_rejected(tmp_path, value):
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"p: {{piece_minutes: {json.dumps(value)}}}\n")
    with pytest.raises(ProfileError, match="piece_minutes must be a positive number"):
        load_profile("p", profiles)


def test_every_piece_moves_the_run_forward_however_short(stand_in):
    run, ran, _ = stand_in
    finished = []
    for _ in range(len(CHAPTERS)):       # a piece far shorter than a chapter: one chapter per piece
        try:
            run("piece")
        except PiecePaused as err:
            assert "time slice ended before" in str(err)
        finished += ran(Path(stand_in[2]).parent / "runs" / "piece")
    assert finished == [f"{c} 1" for c in CHAPTERS]
    run("piece")                         # all current now: nothing to do, no pause


def test_a_profile_of_the_first_chapters_runs_those_and_publishes_without_a_book(stand_in, tmp_path, capsys):
    from ds.study.runner import StaleRun, publish, rebuild_book
    run, ran, profiles = stand_in
    profiles.write_text(profiles.read_text() + "first: {x: 1, y: 1, chapters: [01_observation]}\n")
    run("first")
    assert ran(tmp_path / "runs" / "first") == ["01_observation 1"]
    with pytest.raises(ProfileError, match="not part of profile 'first'"):
        run("first", chapters=["02_search"])
    with pytest.raises(StaleRun, match="has no book"):
        rebuild_book("first", profiles_file=profiles, run_root=tmp_path / "runs")
    book = tmp_path / "book"
    snapshot.save(RunLayout(tmp_path / "runs" / "first"), "first", tmp_path / "state")
    capsys.readouterr()
    assert publish("first", profiles_file=profiles, run_root=tmp_path / "runs", book_dir=book,
                   notebooks=Path(tmp_path / "notebooks"), results_dir=tmp_path / "results",
                   checkpoints_dir=tmp_path / "checkpoints", state_dir=tmp_path / "state") is None
    assert not book.exists()      # its tables only (this stand-in writes none); the book is untouched
    assert "the run is published: delete its snapshot, git rm" in capsys.readouterr().out


@pytest.mark.parametrize("chapters", [["02_search"], ["01_observation", "03_finetune"], "01_observation"])
def test_chapters_that_are_not_the_first_ones_are_rejected(tmp_path, chapters):
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(f"p: {{chapters: {json.dumps(chapters)}}}\n")
    with pytest.raises(ProfileError, match="chapters must be the first chapters in order"):
        load_profile("p", profiles)


def test_the_study_package_has_no_import_cycles():
    """Every import between ds.study's modules, function-level ones included, goes one way."""
    package = Path(study_layout.__file__).parent
    graph = {}
    for path in package.glob("*.py"):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                edges |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ds.study."):
                edges.add(node.module.split(".")[2])
        graph[path.stem] = {e.split(".")[0] for e in edges} - {path.stem}

    def reaches(start, target, seen=()):
        return any(n == target or (n not in seen and reaches(n, target, seen + (n,))) for n in graph.get(start, ()))
    cycles = sorted(m for m in graph if reaches(m, m))
    assert not cycles, f"modules of ds.study in an import cycle: {cycles}"


# ---------------------------------------------------------------- the command line

def _default_sigint():
    """In the child: Ctrl-C as in a terminal. A shell without job control starts background jobs
    with SIGINT ignored, and Python keeps an ignored SIGINT ignored, so a test run from such a
    job would never see the interrupt it sends."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(*args, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "ds.study", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint, **kwargs)


def test_an_unwritable_run_root_is_one_line_naming_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = _cli("run", "--profile", "tiny", "--run-root", str(blocker / "runs"), "--no-book")
    out, err = done.communicate(timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("[study] error: cannot write") and str(blocker) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_run_directory_is_one_line_naming_it(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    run_dir.chmod(0o555)
    try:
        done = _cli("run", "--profile", "tiny", "--run-root", str(tmp_path / "runs"), "--no-book")
        out, err = done.communicate(timeout=120)
    finally:
        run_dir.chmod(0o755)
    assert done.returncode == 1 and "Traceback" not in err
    assert err.startswith("[study] error: cannot write") and str(run_dir) in err


@pytest.mark.slow
def test_ctrl_c_is_one_line_with_the_resume_hint(tmp_path):
    process = _cli("run", "--profile", "tiny", "--run-root", str(tmp_path), "--no-book", start_new_session=True)
    log = tmp_path / "tiny" / "study.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and "01_observation: running" in log.read_text()):
        time.sleep(0.5)
    time.sleep(3)                              # inside the chapter's kernel
    os.killpg(process.pid, signal.SIGINT)      # what Ctrl-C in a terminal does: the whole process group
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "[study] interrupted" in err and "run the same command again" in err
