"""ds.study.snapshot: a run directory packed for git and unpacked elsewhere, as data only, checked
file by file against its manifest."""
import io
import json
import tarfile
from pathlib import Path

import pytest

from ds.study import snapshot
from ds.study.layout import RunLayout
from ds.study.snapshot import SnapshotError


def _run(tmp_path) -> RunLayout:
    layout = RunLayout(tmp_path / "runs" / "p")
    (layout.root / "base").mkdir(parents=True)
    (layout.root / "base" / "checkpoint.pt").write_bytes(bytes(range(256)) * 40)
    (layout.root / "01_observation.started").write_text('{"parameters": {}}\n')
    (layout.root / "study.lock").write_text("1234\n")
    (layout.root / "book").mkdir()
    (layout.root / "book" / "index.html").write_text("<html/>")
    return layout


def test_a_snapshot_restores_every_file_but_the_lock_and_the_book(tmp_path):
    layout = _run(tmp_path)
    path = snapshot.save(layout, "p", tmp_path / "state")
    assert path == tmp_path / "state" / "p.tar.gz"
    manifest = snapshot.read_manifest(path)
    assert manifest["profile"] == "p" and sorted(manifest["files"]) == ["01_observation.started", "base/checkpoint.pt"]
    assert "2 files" in snapshot.describe(manifest)
    fresh = RunLayout(tmp_path / "elsewhere" / "p")
    assert snapshot.restore(fresh, "p", tmp_path / "state")["profile"] == "p"
    assert (fresh.root / "base" / "checkpoint.pt").read_bytes() == (layout.root / "base" / "checkpoint.pt").read_bytes()
    assert not (fresh.root / "study.lock").exists() and not (fresh.root / "book").exists()


def test_no_snapshot_restores_nothing_and_a_run_with_chapters_is_never_overwritten(tmp_path):
    layout = _run(tmp_path)
    assert snapshot.restore(layout, "p", tmp_path / "state") is None
    snapshot.save(layout, "p", tmp_path / "state")
    with pytest.raises(SnapshotError, match="already holds chapters.*move .* away"):
        snapshot.restore(layout, "p", tmp_path / "state")


def test_a_restore_cut_short_leaves_no_chapter_record_and_is_done_again(tmp_path, monkeypatch):
    layout = _run(tmp_path)
    snapshot.save(layout, "p", tmp_path / "state")
    fresh = RunLayout(tmp_path / "elsewhere" / "p")
    write = Path.write_bytes

    def full_disk(path, data):
        if path.name == "checkpoint.pt":
            raise OSError(28, "No space left on device")
        return write(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError):
        snapshot.restore(fresh, "p", tmp_path / "state")
    assert not snapshot.holds_chapters(fresh)
    monkeypatch.setattr(Path, "write_bytes", write)
    assert snapshot.restore(fresh, "p", tmp_path / "state") is not None and snapshot.holds_chapters(fresh)


def test_a_damaged_or_foreign_snapshot_is_an_error_naming_the_fix(tmp_path):
    layout = _run(tmp_path)
    path = snapshot.save(layout, "p", tmp_path / "state")
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members["base/checkpoint.pt"] = b"edited"
    _write(path, members)
    with pytest.raises(SnapshotError, match=r"base/checkpoint.pt does not match its manifest.*git checkout"):
        snapshot.restore(RunLayout(tmp_path / "new" / "p"), "p", tmp_path / "state")
    _write(path, {"../escape.txt": b"x"})
    with pytest.raises(SnapshotError, match="not a plain file inside the run directory"):
        snapshot.restore(RunLayout(tmp_path / "new" / "p"), "p", tmp_path / "state")
    assert not (tmp_path / "new" / "escape.txt").exists()
    path.write_bytes(b"not a tar")
    with pytest.raises(SnapshotError, match="cannot be read"):
        snapshot.restore(RunLayout(tmp_path / "new" / "p"), "p", tmp_path / "state")
    manifest = {"profile": "other", "files": {}}
    _write(path, {snapshot.MANIFEST: json.dumps(manifest).encode()})
    with pytest.raises(SnapshotError, match="is of profile 'other', not 'p'"):
        snapshot.restore(RunLayout(tmp_path / "new" / "p"), "p", tmp_path / "state")


def test_a_finished_chapter_s_own_networks_are_left_out_and_listed(tmp_path):
    layout = _run(tmp_path)
    compare = layout.observation_dir("50k-32px", 0) / "after_training"
    search, candidate = layout.search_dir(6), layout.candidate_dir("searched-k6")
    for folder in (compare, search, candidate):
        folder.mkdir(parents=True)
        (folder / "checkpoint.pt").write_bytes(b"weights")
        (folder / "metrics.csv").write_text("epoch\n0\n")
    (layout.root / "01_observation.started").rename(layout.done("01_observation"))
    (layout.root / "02_search.started").write_text("{}\n")
    manifest = snapshot.read_manifest(snapshot.save(layout, "p", tmp_path / "state"))
    spent = "01_observation/observation/50k-32px-seed0/after_training/checkpoint.pt"
    assert manifest["left_out"] == [spent] and spent not in manifest["files"]
    assert {"02_search/k6/checkpoint.pt", "01_observation/observation/50k-32px-seed0/after_training/metrics.csv",
            "base/checkpoint.pt"} <= set(manifest["files"])
    assert "1 spent checkpoint of finished chapters left out" in snapshot.describe(manifest)
    (layout.root / "02_search.started").rename(layout.done("02_search"))   # chapter 4 merges the candidates
    manifest = snapshot.read_manifest(snapshot.save(layout, "p", tmp_path / "state"))
    assert manifest["left_out"] == [spent, "02_search/k6/checkpoint.pt"]
    assert "02_search/finetune/searched-k6/checkpoint.pt" in manifest["files"]


def test_a_finished_training_goes_in_without_its_optimizer_state_and_an_unfinished_one_whole(tmp_path):
    import torch
    from ds.train.checkpoint import load_checkpoint, save_checkpoint
    layout = _run(tmp_path)
    weights = {"w": torch.arange(4.0)}
    optimizer = {"state": {0: {"momentum_buffer": torch.ones(4)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    for name, epoch in (("done", 1), ("running", 0)):   # of 2 epochs: epoch is the last one finished
        save_checkpoint({"model": weights, "optimizer": optimizer, "config": {"epochs": 2}, "epoch": epoch},
                        layout.root / name / "checkpoint.pt")
    path = snapshot.save(layout, "p", tmp_path / "state")
    manifest = snapshot.read_manifest(path)
    assert manifest["slimmed"] == ["done/checkpoint.pt"]
    assert "1 finished training without optimizer state" in snapshot.describe(manifest)
    fresh = RunLayout(tmp_path / "elsewhere" / "p")
    snapshot.restore(fresh, "p", tmp_path / "state")
    done = load_checkpoint(fresh.root / "done" / "checkpoint.pt")
    assert done["optimizer"] == {"state": {}, "param_groups": optimizer["param_groups"]}
    assert torch.equal(done["model"]["w"], weights["w"]) and done["epoch"] == 1
    assert (fresh.root / "running" / "checkpoint.pt").read_bytes() == (layout.root / "running" / "checkpoint.pt").read_bytes()
    assert (fresh.root / "base" / "checkpoint.pt").read_bytes() == (layout.root / "base" / "checkpoint.pt").read_bytes()


def test_a_run_too_large_for_git_is_refused(tmp_path, monkeypatch):
    layout = _run(tmp_path)
    monkeypatch.setattr(snapshot, "MAX_BYTES", 1000)
    with pytest.raises(SnapshotError, match=r"over the .* MiB a committed snapshot may hold \(largest: base/checkpoint.pt"):
        snapshot.save(layout, "p", tmp_path / "state")
    assert not (tmp_path / "state" / "p.tar.gz").exists()


def test_the_command_line_names_a_missing_run(tmp_path, capsys):
    from ds.study.__main__ import main
    assert main(["snapshot", "--profile", "quick", "--run-root", str(tmp_path)]) == 1
    assert "no run directory" in capsys.readouterr().err


def _write(path, members: dict) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
