"""scripts/gpu_publish.sh: the packing, the resume logic and the dry run on the CPU, so that the
first GPU command does not fail on a typo."""
import importlib.util
import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import ds

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_publish.sh"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_publish", REPO / "scripts" / "gpu_publish.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_publish"] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gp = load_script()


# ---------------------------------------------------------------- packing

def test_parts_round_trip_under_the_part_size(tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    payload = os.urandom(300_000)   # incompressible, like trained weights
    (source / "sub" / "weights.bin").write_bytes(payload)
    (source / "table.csv").write_text("a,b\n1,2\n")
    out = tmp_path / "out"
    out.mkdir()
    members = [(source / "sub" / "weights.bin", "run/sub/weights.bin"), (source / "table.csv", "run/table.csv")]
    parts = gp.pack(members, out, part_size=100_000)
    assert len(parts) == 4
    assert all(p.stat().st_size <= 100_000 for p in parts)
    manifest = {"seq": 1, "profile": "tiny", "resumable": True,
                "parts": [{"name": p.name, "bytes": p.stat().st_size, "sha256": gp.sha256(p)} for p in parts]}
    (out / gp.MANIFEST).write_text(json.dumps(manifest))
    target = tmp_path / "restored"
    gp.unpack(out, target)
    assert (target / "run" / "sub" / "weights.bin").read_bytes() == payload
    assert (target / "run" / "table.csv").read_text() == "a,b\n1,2\n"


def test_a_changed_or_missing_part_is_refused(tmp_path):
    (tmp_path / "f.bin").write_bytes(os.urandom(50_000))
    out = tmp_path / "out"
    out.mkdir()
    parts = gp.pack([(tmp_path / "f.bin", "f.bin")], out, part_size=20_000)
    manifest = {"seq": 1, "profile": "tiny", "resumable": True,
                "parts": [{"name": p.name, "bytes": p.stat().st_size, "sha256": gp.sha256(p)} for p in parts]}
    (out / gp.MANIFEST).write_text(json.dumps(manifest))
    data = bytearray(parts[1].read_bytes())
    data[10] ^= 0xFF
    parts[1].write_bytes(bytes(data))
    with pytest.raises(gp.PublishError, match="differs from the one the last command wrote"):
        gp.unpack(out, tmp_path / "x")
    parts[1].unlink()
    with pytest.raises(gp.PublishError, match="is missing"):
        gp.unpack(out, tmp_path / "x")


def test_limits_name_the_one_exceeded(tmp_path):
    part = tmp_path / "state.tar.xz.00"
    part.write_bytes(b"x" * 1000)
    assert gp.limits_problem([part], 1000, carry_limit=10_000, part_size=15 * gp.MIB) is None
    assert "carried in next time" in gp.limits_problem([part], 1000, carry_limit=500, part_size=15 * gp.MIB)
    too_many = [part] * 7
    assert "files that come back" in gp.limits_problem(too_many, 7000, carry_limit=10 ** 9, part_size=1000)


def test_checkpoints_are_carried_while_a_chapter_reads_them():
    every = set(gp.chapters())
    assert gp.checkpoint_needed(Path("base/checkpoint.pt"), every - {"05_throughput"})
    assert not gp.checkpoint_needed(Path("base/checkpoint.pt"), every)
    assert gp.checkpoint_needed(Path("03_finetune/DS-A/distill/checkpoint.pt"),
                                {"01_observation", "02_search", "03_finetune"})
    assert not gp.checkpoint_needed(Path("01_observation/scratch/checkpoint.pt"), {"01_observation"})
    assert gp.checkpoint_needed(Path("02_search/finetune/DS-A/checkpoint.pt"),   # chapter 4 merges it
                                {"01_observation", "02_search", "03_finetune"})
    assert not gp.checkpoint_needed(Path("02_search/k8/checkpoint.pt"), every - {"05_throughput"})
    assert gp.checkpoint_needed(Path("02_search/k8/checkpoint.pt"), {"01_observation"})
    assert gp.checkpoint_needed(Path("elsewhere/checkpoint.pt"), every)   # unknown: kept


def test_rollback_gives_up_only_unfinished_chapters_trainings():
    needed = [Path("base/checkpoint.pt"), Path("01_observation/scratch/checkpoint.pt"),
              Path("03_finetune/DS-A/plain/checkpoint.pt")]
    assert gp.rollback_dirs(needed, {"01_observation", "02_search"}) == [Path("03_finetune/DS-A/plain")]
    assert gp.rollback_dirs(needed, {"01_observation"}) == [Path("03_finetune/DS-A/plain")]
    assert gp.rollback_dirs(needed, set()) == [Path("01_observation/scratch"), Path("03_finetune/DS-A/plain"),
                                               Path("base")]   # chapter 1 trains the base network


def test_state_over_the_limit_rolls_back_the_unfinished_chapter(tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    for folder in ("base", "01_observation/scratch"):
        (run_dir / folder).mkdir(parents=True)
        torch.save({"model": torch.randn(100_000)}, run_dir / folder / "checkpoint.pt")   # ~0.4 MiB, unfinished
        (run_dir / folder / "metrics.csv").write_text("epoch,seconds\n1,1.0\n")
    (run_dir / "01_observation" / "removal.csv").write_text("switch,acc\n1,50\n")
    out = tmp_path / "out"
    out.mkdir()
    lines = []
    (run_dir / "01_observation.done").write_text("")   # base/ is finished chapter 1's: kept
    (run_dir / "02_search" / "k8").mkdir(parents=True)
    torch.save({"model": torch.randn(100_000)}, run_dir / "02_search" / "k8" / "checkpoint.pt")
    args = gp.parse_args(["--carry-limit-mib", "0.6"])
    code = gp.finish({"seq": 3, "steps": {}}, args, "tiny", out, tmp_path / "runs" / gp.WORK, run_dir,
                     time.monotonic(), lines, gp.EXIT_MORE)
    text = (out / "summary.txt").read_text()
    assert code == gp.EXIT_MORE, text
    assert "ROLLED BACK" in text and "02_search/k8" in text
    assert json.loads((out / gp.MANIFEST).read_text())["resumable"]
    restored = tmp_path / "restored"
    gp.unpack(out, restored)
    assert (restored / "tiny" / "base" / "checkpoint.pt").is_file()
    assert (restored / "tiny" / "01_observation" / "removal.csv").is_file()
    assert not (restored / "tiny" / "02_search").exists()
    assert not (restored / "tiny" / "01_observation" / "scratch" / "checkpoint.pt").exists()   # read no more


def _tiny_training(out_dir, epochs, stop_after=None):
    from ds.data import fake_dataset
    from ds.loaders import DeviceLoader
    from ds.train import TrainConfig, build_model, fit
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    data = fake_dataset(64, 32, size=16, seed=0)
    train = DeviceLoader(data.train_images, data.train_labels, 32, data.mean, data.std, train=True,
                         device=torch.device("cpu"), seed=0)
    test = DeviceLoader(data.test_images, data.test_labels, 32, data.mean, data.std, train=False,
                        device=torch.device("cpu"), seed=0)
    model = build_model("mobilenetv2_035", 10, 16)
    cfg = TrainConfig(epochs=epochs, lr=0.05, seed=0, progress=False, stop_after_epoch=stop_after)
    return fit(model, train, test, cfg, out_dir=out_dir, resume=True, meta=ds.meta.info(model)), (model, train, test, cfg)


def test_slimmed_checkpoint_of_a_finished_training_resumes_to_the_same_result(tmp_path):
    from ds.train import fit
    torch.set_num_threads(1)
    result, _ = _tiny_training(tmp_path / "run", epochs=1)
    source = tmp_path / "run" / "checkpoint.pt"
    slim = tmp_path / "slim" / "checkpoint.pt"
    slim.parent.mkdir()
    assert gp.slim_checkpoint(source, slim)
    assert slim.stat().st_size < 0.75 * source.stat().st_size   # the momentum buffers are gone
    (tmp_path / "slim" / "metrics.csv").write_bytes((tmp_path / "run" / "metrics.csv").read_bytes())
    resumed, (model, train, test, cfg) = _tiny_training(tmp_path / "slim", epochs=1)
    pd.testing.assert_frame_equal(resumed.metrics, result.metrics)
    for (name, a), b in zip(result.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_unfinished_training_keeps_its_optimizer_state(tmp_path):
    _tiny_training(tmp_path / "run", epochs=2, stop_after=1)
    source = tmp_path / "run" / "checkpoint.pt"
    copy = tmp_path / "copy.pt"
    assert not gp.slim_checkpoint(source, copy)
    assert copy.read_bytes() == source.read_bytes()


# ---------------------------------------------------------------- the GPU commands

@pytest.mark.skipif(torch.cuda.is_available(), reason="would run the GPU tables")
@pytest.mark.parametrize("step", [s.name for s in gp.bench_steps(False, Path("/tmp/bench"))])
def test_gpu_table_commands_get_past_the_argument_parser(step, capsys, monkeypatch):
    """On the CPU each GPU command must stop at the missing CUDA device, not at its arguments."""
    argv = next(s.argv for s in gp.bench_steps(False, Path("/tmp/bench")) if s.name == step)
    assert argv[:2] == ["-m", "ds.bench"]
    monkeypatch.setattr(sys, "argv", ["ds.bench", *argv[2:]])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("ds.bench", run_name="__main__", alter_sys=True)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "CUDA is not available" in err and "unrecognized arguments" not in err


def test_the_study_profile_keeps_its_name_with_a_shorter_piece(tmp_path):
    import yaml
    path = gp.study_profiles("full", 2.5, tmp_path / "profiles.yaml")
    profiles = yaml.safe_load(path.read_text())
    assert profiles["full"]["piece_minutes"] == 2.5
    assert profiles["tiny"] == yaml.safe_load((REPO / "profiles.yaml").read_text())["tiny"]
    assert gp.study_profiles("full", 30, tmp_path / "p.yaml").read_text().count("piece_minutes: 9") == 1
    with pytest.raises(gp.PublishError, match="not in profiles.yaml"):
        gp.study_profiles("fulll", 2, tmp_path / "q.yaml")


def test_a_missing_out_folder_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OUT", raising=False)
    assert gp.main(["--state", str(tmp_path / "s"), "--run-root", str(tmp_path / "r")]) == gp.EXIT_MACHINE
    assert "$OUT is not set" in capsys.readouterr().err


# ---------------------------------------------------------------- the dry run, end to end

OTHER_TABLES = ["fast-cudagraph", "fast-compile-bf16", "fast-compile-fp16", "sweep-fp32", "sweep-fast"]


def run_script(tmp, name, *args, state="state"):
    """One command as on the GPU machine: a fresh run root, the state the caller copied in."""
    env = dict(os.environ, PYTHON=sys.executable)
    env.setdefault("DS_DATA", str(REPO / "data"))
    out = tmp / f"out-{name}"
    done = subprocess.run([str(SCRIPT), "--dry-run", "--state", str(tmp / state), "--out", str(out),
                           "--run-root", str(tmp / f"machine-{name}"), *args],
                          env=env, capture_output=True, text=True, timeout=600)
    return done, out


def carry_back(tmp, out, state="state"):
    """What the caller does: replace the state folder by the returned files."""
    target = tmp / state
    if target.exists():
        subprocess.run(["rm", "-rf", str(target)], check=True)
    target.mkdir()
    for f in out.iterdir():
        (target / f.name).write_bytes(f.read_bytes())


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_publish")
    runs = {}
    # 1: the first table and a short piece of the study (5 s: every piece does some work, then pauses;
    #    45 s let the whole tiny study finish on a fast CPU); 2: a fresh machine finishes the study
    runs["first"] = run_script(tmp, "first", "--skip", *OTHER_TABLES, "--piece-seconds", "5")
    carry_back(tmp, runs["first"][1])
    runs["second"] = run_script(tmp, "second", "--skip", *OTHER_TABLES)
    # a state that cannot be carried: a fake limit far below it
    carry_back(tmp, runs["first"][1], state="big")
    runs["too_large"] = run_script(tmp, "too-large", "--skip", *OTHER_TABLES, "study",
                                   "--carry-limit-mib", "0.001", state="big")
    carry_back(tmp, runs["too_large"][1], state="big")
    runs["after_too_large"] = run_script(tmp, "after", "--skip", *OTHER_TABLES, state="big")
    return tmp, runs


def summary(run) -> str:
    return (run[1] / "summary.txt").read_text()


@pytest.mark.slow
def test_dry_run_first_command_makes_a_table_and_pauses_the_study(dry_runs):
    tmp, runs = dry_runs
    done, out = runs["first"]
    assert done.returncode == gp.EXIT_MORE, done.stdout + done.stderr
    text = summary(runs["first"])
    assert "done   paper" in text and "paused study: piece 1" in text
    assert sorted(f.name for f in out.iterdir())[:2] == ["MANIFEST.json", "state.tar.xz.00"]
    assert pd.read_csv(tmp / "machine-first" / "gpu_publish" / "bench" / "paper.csv")["img_s_median"].gt(0).all()


@pytest.mark.slow
def test_dry_run_second_command_skips_the_table_and_resumes_the_study(dry_runs):
    tmp, runs = dry_runs
    done, out = runs["second"]
    text = summary(runs["second"])
    assert "state: restored command 1's state" in text
    assert "skip   paper: done before" in text
    assert "done   study: piece 2 finished it" in text, text + done.stderr
    assert done.returncode == gp.EXIT_MORE   # the five tables it was told to skip remain
    machine = tmp / "machine-second"
    assert sorted(p.name for p in (machine / "tiny").glob("*.done")) == [f"{c}.done" for c in gp.chapters()]
    progress = json.loads((machine / "gpu_publish" / "progress.json").read_text())
    assert progress["steps"]["study"]["pieces"] == 2
    # nothing the finished study no longer reads is carried: no checkpoint in the returned state
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["resumable"] and manifest["seq"] == 2
    for part in manifest["parts"]:
        assert part["bytes"] <= 15 * gp.MIB
    restored = tmp / "restored"
    gp.unpack(out, restored)
    assert not list(restored.rglob("*.pt"))
    assert (restored / "tiny" / "05_throughput.ipynb").is_file()


@pytest.mark.slow
def test_dry_run_state_over_the_limit_is_a_clear_error_and_results_come_back(dry_runs):
    tmp, runs = dry_runs
    done, out = runs["too_large"]
    assert done.returncode == gp.EXIT_TOO_LARGE, done.stdout + done.stderr
    text = summary(runs["too_large"])
    assert "TOO LARGE:" in text and "exceeds the 0.0 MiB that can be carried in next time" in text
    assert "run the same command again before it is given back" in text
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["resumable"] is False
    restored = tmp / "restored-light"
    gp.unpack(out, restored)
    assert (restored / "gpu_publish" / "bench" / "paper.csv").is_file()
    assert not list(restored.rglob("*.pt"))
    # a fresh machine cannot resume the study from it, and says so
    after, after_out = runs["after_too_large"]
    assert after.returncode == gp.EXIT_TOO_LARGE
    assert "the study cannot resume here" in summary(runs["after_too_large"])
    assert "no state returned" in summary(runs["after_too_large"])
