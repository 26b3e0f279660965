"""scripts/gpu_publish.sh: the time plan and the order of the steps, the packing after every step
(what finished comes back when a later step fails or the command is killed), the study's sizing
and skip rule, the resume logic, publishing, and the dry run on the CPU, so that the first GPU
command does not fail on a typo."""
import importlib.util
import json
import os
import runpy
import signal
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


# ---------------------------------------------------------------- the plan

def gpu_plan():
    return gp.plan_steps(False, Path("/tmp/gpu_publish_plan"))


def test_the_steps_run_in_the_issues_order():
    assert gp.step_names(False) == ["machine", "paper", "fast", "sweep-paper", "sweep-fast", "train-speed",
                                    "compile", "study"]
    assert [s.name for s in gp.plan_steps(True, Path("/tmp/w"))] == gp.step_names(True)[:-1]
    assert [s.name for s in gpu_plan() if s.optional] == ["compile"]


def test_the_first_command_is_planned_for_at_most_eight_minutes():
    required = sum(s.estimate_s for s in gpu_plan() if not s.optional)
    assert gp.FIRST_CALL_S <= 8 * 60
    assert gp.CHECK_S + required + gp.TABLE_PACK_RESERVE_S <= gp.FIRST_CALL_S
    assert gp.STUDY_CALL_S <= 9 * 60 < gp.COMMAND_LIMIT_S


def test_the_plan_shows_every_estimate_and_the_skip_rule(capsys):
    assert gp.main(["--plan"]) == gp.EXIT_DONE
    text = capsys.readouterr().out
    for step in gpu_plan():
        assert f"{step.name:<12} {step.estimate_s:4.0f} s" in text
    assert "only if" in text and "(tried once)" in text          # compile only when there is room
    assert f"--budget-seconds {gp.STUDY_CALL_S}" in text and "skipped for good" in text
    assert "mobilenetv2_140 30 epochs" in text and "mobilenetv2_100 15 epochs" in text


def test_the_table_estimates_follow_the_protocol():
    paper, fast = gpu_plan()[1:3]
    assert paper.estimate_s == gp.bench_estimate(7, 1) and fast.estimate_s == gp.bench_estimate(7, 2)
    assert gp.bench_estimate(2, 1, compile=True) > gp.bench_estimate(7, 1)   # compiling is what costs


def test_compile_times_the_fastest_pattern_of_the_fast_table(tmp_path):
    compile_step = next(s for s in gp.plan_steps(False, tmp_path) if s.name == "compile")
    assert "paper:DS-F" in compile_step.argv()                    # before the fast table exists
    (tmp_path / "bench").mkdir()
    pd.DataFrame({"pattern": ["base", "DS-A", "DS-E"], "img_s_median": [10.0, 30.0, 20.0]}).to_csv(
        tmp_path / "bench" / "fast.csv", index=False)
    assert "paper:DS-A" in compile_step.argv()


@pytest.mark.skipif(torch.cuda.is_available(), reason="would run the GPU tables")
@pytest.mark.parametrize("step", [s.name for s in gp.plan_steps(False, Path("/tmp/bench")) if s.argv])
def test_gpu_commands_get_past_the_argument_parser(step, capsys, monkeypatch):
    """On the CPU each GPU command must stop at the missing CUDA device, not at its arguments."""
    chosen = next(s for s in gp.plan_steps(False, Path("/tmp/bench")) if s.name == step)
    argv = chosen.argv() if callable(chosen.argv) else chosen.argv
    if argv[0] == "benchmarks/train_speed.py":
        module = runpy.run_path(str(REPO / argv[0]), run_name="train_speed")
        assert module["main"](argv[1:]) == 2
    else:
        assert argv[:2] == ["-m", "ds.bench"]
        monkeypatch.setattr(sys, "argv", ["ds.bench", *argv[2:]])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module("ds.bench", run_name="__main__", alter_sys=True)
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "unrecognized arguments" not in err


def test_an_unknown_step_to_skip_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        gp.parse_args(["--skip", "papr"])
    assert "--skip papr: no such step" in capsys.readouterr().err


def test_the_study_profile_keeps_its_name_with_a_shorter_piece_and_the_sizing(tmp_path):
    import yaml
    path = gp.study_profiles("gpu", 2.5, tmp_path / "profiles.yaml", {"backbone": "mobilenetv2_100", "base_epochs": 20})
    profiles = yaml.safe_load(path.read_text())
    assert profiles["gpu"]["piece_minutes"] == 2.5
    assert profiles["gpu"]["backbone"] == "mobilenetv2_100" and profiles["gpu"]["base_epochs"] == 20
    assert profiles["tiny"] == yaml.safe_load((REPO / "profiles.yaml").read_text())["tiny"]
    assert gp.study_profiles("gpu", 30, tmp_path / "p.yaml").read_text().count("piece_minutes: 9") == 1
    with pytest.raises(gp.PublishError, match="not in profiles.yaml"):
        gp.study_profiles("gpuu", 2, tmp_path / "q.yaml")


def test_a_missing_out_folder_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OUT", raising=False)
    assert gp.main(["--state", str(tmp_path / "s"), "--run-root", str(tmp_path / "r")]) == gp.EXIT_MACHINE
    assert "$OUT is not set" in capsys.readouterr().err


# ---------------------------------------------------------------- a command with stand-in steps

def writes(work: Path, name: str, text: str = "a,b\n1,2\n") -> list[str]:
    """A stand-in step: python -c that writes <work>/bench/<name>.csv."""
    return ["-c", f"import pathlib; p = pathlib.Path({str(work / 'bench')!r}); p.mkdir(parents=True, exist_ok=True); "
                  f"(p / {name + '.csv'!r}).write_text({text!r})"]


def stand_ins(work: Path, steps: str, speed: float | None = None) -> list:
    """Steps named in `steps` ('ok', 'fail', 'hang'), and a train-speed stand-in when `speed` is given."""
    made = []
    for i, kind in enumerate(steps.split()):
        argv = {"ok": writes(work, f"s{i}"), "fail": ["-c", "raise SystemExit('broken on purpose')"],
                "hang": ["-c", "import time; time.sleep(300)"]}[kind]
        made.append(gp.Step(f"s{i}", f"stand-in ({kind})", 1, argv))
    if speed is not None:
        record = {"backbones": {"mobilenetv2_035": {"images_per_s": speed}}}
        made.append(gp.Step("train-speed", "stand-in", 1, ["-c", f"import json, pathlib; pathlib.Path("
                            f"{str(work / gp.TRAIN_SPEED)!r}).write_text(json.dumps({record!r}))"]))
    return made


# The carry limit is 64 MiB less this checkout's size, which a committed run snapshot in state/
# can bring near zero; these tests are about the steps, so they pin it (a test may pass its own).
CARRY = ("--carry-limit-mib", "40")


def run_in_process(tmp_path, monkeypatch, steps: str, *args, speed=None):
    """main() with stand-in steps, the dry run's profile and paths under tmp_path; (code, out, summary)."""
    work = tmp_path / "runs" / gp.WORK
    plan = stand_ins(work, steps, speed)
    monkeypatch.setattr(gp, "plan_steps", lambda dry, w, profile=None: plan)
    monkeypatch.delenv("GPU_PUBLISH_T0", raising=False)
    out = tmp_path / "out"
    code = gp.main(["--dry-run", "--state", str(tmp_path / "state"), "--out", str(out),
                    "--run-root", str(tmp_path / "runs"), *CARRY, *args])
    return code, out, (out / gp.SUMMARY).read_text()


def test_a_failed_step_neither_stops_the_next_nor_loses_the_finished_ones(tmp_path, monkeypatch):
    code, out, text = run_in_process(tmp_path, monkeypatch, "ok fail ok", "--skip", "study")
    assert code == gp.EXIT_FAILED, text
    assert "done   s0" in text and "failed s1" in text and "broken on purpose" in text and "done   s2" in text
    gp.unpack(out, tmp_path / "restored")
    assert sorted(p.name for p in (tmp_path / "restored" / gp.WORK / "bench").iterdir()) == ["s0.csv", "s2.csv"]


def test_a_killed_command_returns_the_steps_it_finished(tmp_path):
    """The machine kills a command at its limit: what the steps before finished is in $OUT already."""
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(
        "import importlib.util, sys\n"
        "from pathlib import Path\n"
        "spec = importlib.util.spec_from_file_location('gpu_publish', sys.argv[1])\n"
        "gp = importlib.util.module_from_spec(spec); sys.modules['gpu_publish'] = gp; spec.loader.exec_module(gp)\n"
        "work = Path(sys.argv[2]) / gp.WORK\n"
        "plan = [gp.Step('s0', 'writes', 1, ['-c', \"import pathlib; p = pathlib.Path(%r) / 'bench'; "
        "p.mkdir(parents=True); (p / 's0.csv').write_text('a\\\\n1\\\\n')\" % str(work)]),\n"
        "        gp.Step('s1', 'hangs', 1, ['-c', 'import time; time.sleep(300)'])]\n"
        "gp.plan_steps = lambda dry, w, profile=None: plan\n"
        "sys.exit(gp.main(sys.argv[3:]))\n")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "GPU_PUBLISH_T0"}
    proc = subprocess.Popen([sys.executable, str(wrapper), str(REPO / "scripts" / "gpu_publish.py"),
                             str(tmp_path / "runs"), "--dry-run", "--state", str(tmp_path / "state"), "--out",
                             str(out), "--run-root", str(tmp_path / "runs")],
                            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            manifest = json.loads((out / gp.MANIFEST).read_text()) if (out / gp.MANIFEST).is_file() else {}
            if manifest.get("after_step") == "s0":
                break
            assert proc.poll() is None, "the command ended before its second step"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)   # as the machine does at the limit: no chance to pack
        proc.wait()
    text = (out / gp.SUMMARY).read_text()
    assert "SAVED after step s0" in text and "the state holds every step up to s0" in text
    gp.unpack(out, tmp_path / "restored")
    assert (tmp_path / "restored" / gp.WORK / "bench" / "s0.csv").read_text() == "a\n1\n"
    progress = json.loads((tmp_path / "restored" / gp.WORK / "progress.json").read_text())
    assert progress["steps"]["s0"]["status"] == "done" and "s1" not in progress["steps"]


def test_the_study_is_skipped_for_good_when_the_measured_speed_says_it_cannot_fit(tmp_path, monkeypatch):
    code, out, text = run_in_process(tmp_path, monkeypatch, "ok", speed=1.0)   # 1 img/s: nothing fits
    assert code == gp.EXIT_DONE, text
    assert "SKIPPED study: at the measured training speed (mobilenetv2_035 1 img/s)" in text
    assert "no choice fits even a command of its own" in text
    gp.unpack(out, tmp_path / "restored")
    progress = json.loads((tmp_path / "restored" / gp.WORK / "progress.json").read_text())
    assert progress["steps"]["study"]["status"] == "skipped"


def test_a_study_that_fits_its_own_command_but_not_this_one_waits_for_it(tmp_path, monkeypatch):
    code, out, text = run_in_process(tmp_path, monkeypatch, "ok", "--budget-seconds", "120", speed=1e6)
    assert code == gp.EXIT_MORE, text
    assert "next   study:" in text and "is too little" in text and "--budget-seconds 900" in text


def test_the_study_waits_for_a_measured_speed(tmp_path, monkeypatch):
    code, out, text = run_in_process(tmp_path, monkeypatch, "ok")
    assert code == gp.EXIT_MORE and "cannot be sized: the train-speed step has not measured" in text


def test_an_optional_step_without_room_is_tried_once(tmp_path, monkeypatch):
    work = tmp_path / "runs" / gp.WORK
    plan = [gp.Step("s0", "writes", 1, writes(work, "s0")),
            gp.Step("extra", "too long", 10_000, writes(work, "extra"), optional=True)]
    monkeypatch.setattr(gp, "plan_steps", lambda dry, w, profile=None: plan)
    monkeypatch.delenv("GPU_PUBLISH_T0", raising=False)
    code = gp.main(["--dry-run", "--state", str(tmp_path / "state"), "--out", str(tmp_path / "out"),
                    "--run-root", str(tmp_path / "runs"), *CARRY, "--skip", "study"])
    text = (tmp_path / "out" / gp.SUMMARY).read_text()
    assert code == gp.EXIT_MORE   # only because the study was skipped
    assert "no room extra: needs 10000 s" in text and not (work / "bench" / "extra.csv").exists()


# ---------------------------------------------------------------- publishing on the CPU machine

def gpu_table(tmp_path) -> Path:
    """A ds.bench-like GPU table: the paper's setting and a faster one, batch 128, 224 px."""
    rows = []
    for setting, scale in ((("fp32", "nchw", "eager"), 1.0), (("bf16", "channels_last", "cudagraph"), 3.0)):
        for i, pattern in enumerate(["base", "DS-A", "DS-B", "DS-C", "DS-D", "DS-E", "DS-F"]):
            rows.append(dict(model="mobilenetv2_140", pattern=pattern, runtime="torch", runtime_version="2",
                             device="cuda", device_name="NVIDIA H200", torch="2.9", dtype=setting[0],
                             layout=setting[1], mode=setting[2], batch=128, input=224, threads=16, macs=1, params=1,
                             img_s_median=1000.0 * scale * (1 + i / 2), img_s_min=1.0, img_s_max=1.0,
                             speedup_same_runtime=1 + i / 2, speedup_over_best_base=None, best_base=None,
                             bound_s=0.0, achieved_fraction=0.1, load_average=0.1))
    path = tmp_path / "bench" / "paper.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    path.with_suffix(".json").write_text(json.dumps({"command": "python -m ds.bench ...", "date_utc": "2026-12-01",
                                                     "git": {"short": "abc1234"}}))
    return path


def test_the_published_gpu_table_has_the_paper_beside_and_the_results_page_shows_it(tmp_path):
    from ds.study import book, gpu
    machine = {"gpu": {"cuda": "12.8", "gpus": [{"name": "NVIDIA H200"}],
                       "nvidia_smi": [{"name": "NVIDIA H200", "driver_version": "570.1"}]}}
    results, pages = tmp_path / "results", tmp_path / "book"
    pages.mkdir()
    (pages / "results.md").write_text("# Results summary\n\n## The answers\n\n## Every network of the run\n\nrows\n")
    assert "**No GPU run exists yet.**" in "\n".join(book.gpu_section(results))
    written = gpu.publish({"paper": gpu_table(tmp_path)}, machine, {"backbones": {}}, {"steps": {}, "commands": []},
                          None, "gpu", results_dir=results, book_dir=pages, build=False)
    csv = results / "throughput_mbv2_140_h200.csv"
    assert csv in written and csv.with_suffix(".json") in written
    table = pd.read_csv(csv)
    assert list(table.columns[:2]) == ["table", "model"]
    assert table.set_index(["pattern", "dtype"]).loc[("DS-F", "fp32"), "paper_v100_speedup"] == 5.08
    assert table["speedup_over_best_base"].max() == pytest.approx(4.0)   # DS-F bf16 over the bf16 base
    assert json.loads(csv.with_suffix(".json").read_text())["gpu"]["nvidia_smi"][0]["driver_version"] == "570.1"
    page = (pages / "results.md").read_text()
    assert "## On a GPU" in page and "No GPU run exists yet" not in page
    assert "**NVIDIA H200**" in page and "driver 570.1" in page and "5.08" in page
    assert "The fastest way to run the base is **torch bf16 channels_last cudagraph** at 3000.0 img/s" in page
    assert page.index("## On a GPU") < page.index("## Every network of the run")
    assert book.with_gpu_section(page, results) == page   # made anew, it stays the same


def test_cpu_tables_are_published_only_under_a_given_name(tmp_path):
    from ds.study import gpu
    path = gpu_table(tmp_path)
    pd.read_csv(path).assign(device="cpu").to_csv(path, index=False)
    with pytest.raises(gpu.GpuPublishError, match="measured on the CPU .* --gpu NAME"):
        gpu.publish({"paper": path}, {}, None, {}, None, "tiny", results_dir=tmp_path / "r",
                    book_dir=tmp_path, build=False)


def test_the_gpu_label_comes_from_the_gpu_name():
    from ds.study import gpu
    assert gpu.gpu_label({"gpu": {"gpus": [{"name": "NVIDIA H200"}]}}) == "h200"
    assert gpu.gpu_label({"gpu": {"gpus": [], "nvidia_smi": [{"name": "NVIDIA H100 80GB HBM3"}]}}) == "h100"
    with pytest.raises(gpu.GpuPublishError, match="--gpu NAME"):
        gpu.gpu_label({"gpu": {"gpus": [], "nvidia_smi": "not available"}})


def test_the_published_results_page_says_what_data_results_holds_of_gpu_runs():
    from ds.study import book
    from ds.study.layout import RESULTS_DIR
    page = (book.BOOK / "results.md").read_text()
    assert "\n".join(book.gpu_section(RESULTS_DIR)) in page


# ---------------------------------------------------------------- the dry run, end to end

def run_script(tmp, name, *args, state="state"):
    """One command as on the GPU machine: a fresh run root, the state the caller copied in."""
    env = dict(os.environ, PYTHON=sys.executable)
    env.setdefault("DS_DATA", str(REPO / "data"))
    env.pop("GPU_PUBLISH_T0", None)
    out = tmp / f"out-{name}"
    done = subprocess.run([str(SCRIPT), "--dry-run", "--state", str(tmp / state), "--out", str(out),
                           "--run-root", str(tmp / f"machine-{name}"), *CARRY, *args],
                          env=env, capture_output=True, text=True, timeout=900)
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
    """1: every step, the study paused after a short piece (5 s: every piece does some work, then
    pauses); 2: a fresh machine with the returned state finishes the study."""
    tmp = tmp_path_factory.mktemp("gpu_publish")
    runs = {"first": run_script(tmp, "first", "--piece-seconds", "5")}
    carry_back(tmp, runs["first"][1])
    runs["second"] = run_script(tmp, "second")
    carry_back(tmp, runs["second"][1])
    return tmp, runs


def summary(run) -> str:
    return (run[1] / "summary.txt").read_text()


@pytest.mark.slow
def test_dry_run_first_command_runs_every_step_in_order_and_pauses_the_study(dry_runs):
    tmp, runs = dry_runs
    done, out = runs["first"]
    assert done.returncode == gp.EXIT_MORE, done.stdout + done.stderr
    text = summary(runs["first"])
    assert "plan for a command of 900 s (dry run)" in text
    positions = [text.index(f"done   {name}:") for name in gp.step_names(True)[:-1]]
    assert positions == sorted(positions)
    assert "start  study: sized to mobilenetv2_035, base 1 epochs" in text and "paused study: piece 1" in text
    assert sorted(f.name for f in out.iterdir()) == ["MANIFEST.json", "state.tar.xz.00", "summary.txt"]
    machine = tmp / "machine-first" / gp.WORK
    assert pd.read_csv(machine / "bench" / "paper.csv")["img_s_median"].gt(0).all()
    assert json.loads((machine / gp.TRAIN_SPEED).read_text())["backbones"]["mobilenetv2_035"]["images_per_s"] > 0
    assert "nvidia_smi" in json.loads((machine / gp.MACHINE_RECORD).read_text())["gpu"]


@pytest.mark.slow
def test_dry_run_second_command_skips_the_tables_and_finishes_the_study(dry_runs):
    tmp, runs = dry_runs
    done, out = runs["second"]
    text = summary(runs["second"])
    assert done.returncode == gp.EXIT_DONE, text + done.stderr
    assert "state: restored command 1's state" in text and "skip   paper: done before" in text
    assert "done   study: piece 2 finished it" in text
    machine = tmp / "machine-second"
    assert sorted(p.name for p in (machine / "tiny").glob("*.done")) == [f"{c}.done" for c in gp.chapters()]
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["resumable"] and manifest["seq"] == 2
    restored = tmp / "restored"
    gp.unpack(out, restored)
    assert not list(restored.rglob("*.pt"))   # the finished study's checkpoints are read by no chapter
    assert (restored / "tiny" / "05_throughput.ipynb").is_file()


@pytest.mark.slow
def test_dry_run_publishes_tables_and_study_pages_beside_the_cpu_ones(dry_runs, tmp_path, capsys):
    import shutil
    from ds.study import layout
    tmp, runs = dry_runs
    book, results = tmp_path / "book", tmp_path / "results"
    shutil.copytree(layout.BOOK, book, ignore=shutil.ignore_patterns("_build"))
    shutil.copytree(layout.RESULTS_DIR, results)
    run_root = tmp_path / "runs"
    gp.restore(tmp / "state", run_root, run_root / gp.WORK, run_root / "tiny", "tiny", fresh=True,
               restart_study=False, lines=[])
    code = gp.publish(run_root / gp.WORK, run_root / "tiny", "tiny", "dry", build=False, results_dir=results,
                      book_dir=book)
    printed = capsys.readouterr().out
    assert code == gp.EXIT_DONE
    assert (results / "throughput_mbv2_035_dry.csv").is_file() and (results / "study_tiny_dry.csv").is_file()
    assert (results / "study_cpu.csv").read_bytes() == (layout.RESULTS_DIR / "study_cpu.csv").read_bytes()   # beside
    tables = set(pd.read_csv(results / "throughput_mbv2_035_dry.csv")["table"])
    assert tables == {"paper", "fast", "sweep-paper", "sweep-fast", "compile"}
    assert "mobilenetv2_035" in (results / "study_tiny_dry.csv.profile.yaml").read_text()   # what the study ran with
    pages = book / "gpu" / "tiny_dry"
    assert (pages / "05_throughput.ipynb").is_file() and f"published {pages / 'results.md'}" in printed
    toc = (book / "_toc.yml").read_text()
    assert "gpu/tiny_dry/results" in toc and "chapters/05_throughput" in toc
    assert (book / "chapters" / "05_throughput.ipynb").read_bytes() == \
        (layout.BOOK / "chapters" / "05_throughput.ipynb").read_bytes()   # the cpu chapters stay
