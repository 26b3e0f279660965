"""Reading a file never runs code from it: a pickle carrying a payload is refused on every path
that reads a network, checkpoint or data file, with one line naming the file and the conversion
command; files of an older ds are converted by `python -m ds.convert` and then read."""
import json
import os
import pickle
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ds
from ds import data
from ds.convert import main as convert_main
from ds.export.__main__ import main as export_main
from ds.meta import info
from ds.networks import load_network, save_network
from ds.train import CheckpointError, UnsafeCheckpoint, fit, load_checkpoint, model_state, save_checkpoint
from ds.train.cli import run as train_run
from train_fixtures import TINY, TINY_SIZE

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--backbone", TINY, "--dataset", "fake", "--input-size", str(TINY_SIZE), "--batch-size", "32",
          "--lr", "0.02", "--limit-train", "64", "--limit-test", "32", "--epochs", "1", "--no-progress"]


class Payload:
    """What a hostile file carries: unpickling it runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A file that looks like a ds checkpoint of the tiny base network, with a payload inside."""
    model = ds.create_model(TINY, num_classes=10, input_size=TINY_SIZE)
    torch.save({"model": model.state_dict(), "meta": info(model).as_dict(), "epoch": 0,
                "extra": Payload(marker)}, path)
    return path


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / "payload-ran"
    return hostile_checkpoint(tmp_path / "net.pt", marker), marker


def assert_refused(message: str, path: Path, marker: Path):
    assert not marker.exists(), "the payload ran"
    assert str(path) in message and "python -m ds.convert" in message and "posix.system" in message, message
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1, message


def test_the_payload_would_run_if_unpickled(hostile):
    """The fixture is real: an unrestricted torch.load runs it (so the tests below can fail)."""
    path, marker = hostile
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_model_state_and_load_network_refuse_it(hostile):
    path, marker = hostile
    for read in (model_state, load_network, load_checkpoint):
        with pytest.raises(UnsafeCheckpoint) as error:
            read(path)
        assert_refused(str(error.value), path, marker)


@pytest.mark.parametrize("option", ["--init", "--teacher"])
def test_train_refuses_it_as_init_or_teacher(hostile, tmp_path, capsys, option):
    path, marker = hostile
    assert train_run([*COMMON, option, str(path), "--out", str(tmp_path / "out")]) == 1
    assert_refused(capsys.readouterr().err, path, marker)


def test_train_refuses_to_resume_from_it(hostile, tmp_path, capsys):
    path, marker = hostile
    out = tmp_path / "out"
    out.mkdir()
    planted = out / "checkpoint.pt"
    path.rename(planted)
    assert train_run([*COMMON, "--out", str(out), "--resume"]) == 1
    assert_refused(capsys.readouterr().err, planted, marker)


def test_export_refuses_it(hostile, tmp_path, capsys):
    path, marker = hostile
    assert export_main(["--checkpoint", str(path), "--out", str(tmp_path / "e")]) == 2
    assert_refused(capsys.readouterr().err, path, marker)


def test_the_command_lines_exit_with_one_line(hostile, tmp_path):
    """As a user runs them: non-zero exit, one line on stderr, no traceback."""
    path, marker = hostile
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("DS_TRACEBACK", None)
    for command in (["ds.export", "--checkpoint", str(path), "--out", str(tmp_path / "e")],
                    ["ds.train", *COMMON, "--init", str(path), "--out", str(tmp_path / "t")]):
        done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode != 0
        assert_refused(done.stderr, path, marker)


def test_gpu_publish_slimming_refuses_it(hostile, tmp_path):
    slim_checkpoint = runpy.run_path(str(ROOT / "scripts" / "gpu_publish.py"))["slim_checkpoint"]
    path, marker = hostile
    with pytest.raises(UnsafeCheckpoint) as error:
        slim_checkpoint(path, tmp_path / "slim.pt")
    assert_refused(str(error.value), path, marker)


def test_the_study_refuses_it_as_base_checkpoint(hostile, tmp_path):
    from ds.study.profiles import PROFILES_FILE
    from ds.study.runner import ChapterFailed, run_study
    path, marker = hostile
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text(PROFILES_FILE.read_text() + f"\nhostile: {{extends: tiny, base_checkpoint: '{path}'}}\n")
    with pytest.raises(ChapterFailed) as error:
        run_study("hostile", profiles_file=profiles, run_root=tmp_path / "runs", book=False,
                  chapters=["01_observation"])
    assert not marker.exists() and "UnsafeCheckpoint" in str(error.value)
    notebook = (tmp_path / "runs" / "hostile" / "01_observation.ipynb").read_text()
    assert "python -m ds.convert" in notebook and path.name in notebook


def test_cifar_batches_are_read_without_running_code(tmp_path):
    """torchvision's cifar-10-batches-py files are pickles: only arrays and plain data are rebuilt."""
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = Payload(marker) if name == "data_batch_3" else [0, 1, 2, 3]
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": labels}, f)
    with pytest.raises(data.DataError) as error:
        data.load_cifar10(tmp_path)
    assert not marker.exists()
    assert "data_batch" in str(error.value) and "posix.system" in str(error.value)


def test_an_object_array_in_a_data_pickle_is_refused(tmp_path):
    path = tmp_path / "batch"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.array([1, "x"], dtype=object)}, f)
    with pytest.raises(pickle.UnpicklingError, match="array of Python objects"):
        data.read_data_pickle(path)


# ---------------------------------------------------------------- what ds writes, and reads back

def _trained_like(model):
    """Weights and BatchNorm statistics that no fresh network has."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn_like(tensor))
            if name.endswith("running_var"):
                tensor.abs_().add_(0.5)
    return model.eval()


@pytest.mark.parametrize("kind", ["base", "shrunk", "merged", "merged-base", "merged-dws", "no-final-act"])
def test_every_network_file_loads_back_equal(tmp_path, kind):
    torch.manual_seed(0)
    model = _trained_like(ds.create_model(TINY, num_classes=10, input_size=TINY_SIZE))
    pattern = list(ds.PATTERNS[TINY]["DS-E"])
    if kind in ("shrunk", "merged", "merged-dws", "no-final-act"):
        model = _trained_like(ds.apply_pattern(model, pattern, final_act=kind != "no-final-act"))
    if kind.startswith("merged"):
        model = ds.merge(model, merge_depthwise_separable=kind == "merged-dws")
    path = save_network(model, tmp_path / "net.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []   # data only
    loaded = load_network(path)
    assert info(loaded) == info(model) and not loaded.training
    x = torch.randn(2, 3, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_a_bare_state_dict_is_explained(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(ds.create_model(TINY, input_size=TINY_SIZE).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not say which network it holds"):
        load_network(path)


def test_saving_anything_but_data_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"\['rng'\]\[0\].*numpy.ndarray.*weights_only=True"):
        save_checkpoint({"model": {}, "rng": [np.zeros(3)]}, tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


def test_a_training_checkpoint_is_data_only(tmp_path):
    """Everything fit saves (optimizer, scheduler, scaler, EMA, RNG, gate-search state) reads as data."""
    assert train_run([*COMMON, "--ema-decay", "0.9", "--out", str(tmp_path / "base")]) == 0
    assert train_run([*COMMON, "--init", str(tmp_path / "base" / "checkpoint.pt"), "--search-budget", "8",
                      "--out", str(tmp_path / "search")]) == 0
    for run in ("base", "search"):
        path = tmp_path / run / "checkpoint.pt"
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        assert load_network(path) is not None


# ---------------------------------------------------------------- files of an older ds

def _old_checkpoint(path: Path) -> dict:
    """A training checkpoint as ds wrote it before: numpy's RNG state as its tuple with an ndarray."""
    model = ds.create_model(TINY, num_classes=10, input_size=TINY_SIZE)
    np.random.seed(5)
    state = {"model": model.state_dict(), "meta": info(model).as_dict(), "epoch": 0,
             "rng": [{"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": (3, (1, 2), None)}]}
    torch.save(state, path)
    return state


def test_an_old_checkpoint_is_refused_with_the_hint_and_converts(tmp_path, capsys):
    path = tmp_path / "old.pt"
    old = _old_checkpoint(path)
    with pytest.raises(UnsafeCheckpoint, match=r"numpy.*python -m ds.convert .*old.pt"):
        load_checkpoint(path)
    assert convert_main([str(path)]) == 0
    assert "rewritten as plain data" in capsys.readouterr().out
    new = load_checkpoint(path)
    from ds.train.rng import set_rng_state
    set_rng_state(new["rng"][0] | {"python": __import__("random").getstate()})
    np.random.set_state(old["rng"][0]["numpy"])
    expected = np.random.rand(3)
    set_rng_state(new["rng"][0] | {"python": __import__("random").getstate()})
    assert np.array_equal(np.random.rand(3), expected)        # the converted RNG state is the same state
    assert all(torch.equal(a, b) for a, b in zip(old["model"].values(), new["model"].values()))


def test_an_old_pickled_merged_network_converts_to_the_same_outputs(tmp_path, capsys):
    torch.manual_seed(1)
    shrunk = _trained_like(ds.apply_pattern(ds.create_model(TINY, num_classes=10, input_size=TINY_SIZE), "DS-A"))
    merged = ds.merge(shrunk)
    path = tmp_path / "net-merged.pt"
    torch.save(merged, path)                     # what chapter 4 of an older ds saved
    record = tmp_path / "net-merged.pt.provenance.json"
    record.write_text(json.dumps({"what": "a merged network"}))
    with pytest.raises(UnsafeCheckpoint, match="timm.models"):
        load_network(path)
    assert export_main(["--checkpoint", str(path), "--out", str(tmp_path / "e")]) == 2
    assert "python -m ds.convert" in capsys.readouterr().err
    assert convert_main([str(path)]) == 0
    assert "became a network file" in capsys.readouterr().out
    loaded = load_network(path)
    x = torch.randn(4, 3, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(x), merged(x))
    converted = json.loads(record.read_text())
    assert converted["what"] == "a merged network" and converted["sha256"] == ds.provenance.file_sha256(path)
    assert convert_main([str(path)]) == 0 and "nothing to convert" in capsys.readouterr().out


def test_a_published_file_must_match_its_sha256(tmp_path):
    model = ds.create_model(TINY, num_classes=10, input_size=TINY_SIZE)
    path = save_network(model, tmp_path / "base.pt")
    record = tmp_path / "base.pt.provenance.json"
    record.write_text(json.dumps({"sha256": ds.provenance.file_sha256(path)}))
    load_network(path)
    save_network(_trained_like(model), path)                 # changed after publishing
    with pytest.raises(CheckpointError) as error:
        load_network(path)
    message = str(error.value)
    assert json.loads(record.read_text())["sha256"] in message and ds.provenance.file_sha256(path) in message


def test_no_reader_unpickles():
    """Outside the conversion command, nothing in ds, the scripts or the benchmarks reads a file
    with weights_only=False or a bare pickle.load."""
    offenders = []
    for folder in ("ds", "scripts", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if path.name == "convert.py" and path.parent.name == "ds":
                continue
            if "weights_only=False" in text or "pickle.load(" in text or "pickle.loads(" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


def test_fit_resumes_from_a_data_only_checkpoint(tmp_path):
    """The RNG state round-trips as data: stopping after an epoch and resuming equals one run."""
    from ds.loaders import DeviceLoader
    from ds.train import TrainConfig
    torch.set_num_threads(1)
    d = data.fake_dataset(n_train=64, n_test=32, size=TINY_SIZE, seed=0)

    def run(out, stop=None):
        train = DeviceLoader(d.train_images, d.train_labels, 32, d.mean, d.std, train=True,
                             device=torch.device("cpu"), seed=0)
        test = DeviceLoader(d.test_images, d.test_labels, 32, d.mean, d.std, train=False,
                            device=torch.device("cpu"), seed=0)
        torch.manual_seed(0)
        model = ds.create_model(TINY, num_classes=10, input_size=TINY_SIZE)
        cfg = TrainConfig(epochs=2, lr=0.05, seed=0, progress=False, stop_after_epoch=stop)
        return fit(model, train, test, cfg, out_dir=out, resume=True, meta=info(model))

    whole = run(tmp_path / "whole")
    run(tmp_path / "pieces", stop=1)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "pieces" / "checkpoint.pt") == []
    resumed = run(tmp_path / "pieces")
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
