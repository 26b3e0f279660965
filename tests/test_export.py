"""A merged network is a plain module: save/load, trace, export and ONNX all accept it; ds.export
writes it as ONNX and OpenVINO IR that run without ds."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import ds
from ds.export import EXPORT_TOLERANCE, ExportError, check_file, export, openvino_bf16_supported
from ds.export.__main__ import main as export_main

pytest.importorskip("onnxruntime")  # both are in the 'runtimes' extra that make installs
pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def merged_and_input():
    model = ds.create_model("mobilenetv2_100", num_classes=10, input_size=32).eval()
    return ds.merge(ds.apply_pattern(model, "DS-E")), torch.randn(2, 3, 32, 32)


def test_save_and_load(merged_and_input, tmp_path):
    merged, x = merged_and_input
    loaded = ds.load_network(ds.save_network(merged, tmp_path / "m.pt"))
    with torch.no_grad():
        assert torch.equal(loaded(x), merged(x))


def test_trace_and_export(merged_and_input):
    merged, x = merged_and_input
    with torch.no_grad():
        expected = merged(x)
        assert torch.allclose(torch.jit.trace(merged, x)(x), expected, atol=1e-6)
        assert torch.allclose(torch.export.export(merged, (x,)).module()(x), expected, atol=1e-6)


def test_onnx_runs_the_same(merged_and_input):
    onnxruntime = pytest.importorskip("onnxruntime")
    merged, x = merged_and_input
    buffer = io.BytesIO()
    torch.onnx.export(merged, (x,), buffer, dynamo=False, input_names=["x"])
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(output, merged(x).numpy(), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- ds.export (issue 12, item 1)


# Runs in a fresh interpreter with only the runtime: proves the files need nothing of ds.
RUNTIME_ONLY = r"""
import sys, numpy as np
x = np.load(sys.argv[2])
if sys.argv[1] == "onnx":
    import onnxruntime
    session = onnxruntime.InferenceSession(sys.argv[3], providers=["CPUExecutionProvider"])
    y = session.run(None, {session.get_inputs()[0].name: x})[0]
else:
    import openvino
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(sys.argv[3]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    y = compiled.create_infer_request().infer({0: x})[0]
np.save(sys.argv[4], np.asarray(y))
assert not any(name == "ds" or name.startswith("ds.") for name in sys.modules), "ds was imported"
"""


def run_without_ds(fmt, path, x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", RUNTIME_ONLY, fmt, str(tmp_path / "x.npy"), str(path),
                    str(tmp_path / "y.npy")], check=True, cwd=tmp_path,
                   env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""})
    return np.load(tmp_path / "y.npy")


def rel_error(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()


def test_cli_exports_a_shrunk_merged_network_that_runs_without_ds(tmp_path, capsys):
    out = tmp_path / "exported"
    assert export_main(["--model", "mobilenetv2_035", "--pattern", "DS-E", "--input", "32",
                        "--num-classes", "10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "checked onnxruntime/fp32: max relative error" in printed
    assert "checked openvino/fp32: max relative error" in printed
    torch.manual_seed(0)  # the CLI's default seed: the same random weights
    reference = ds.merge(ds.apply_pattern(
        ds.create_model("mobilenetv2_035", num_classes=10, input_size=32), "DS-E"))
    x = torch.randn(5, 3, 32, 32)  # batch 5: the export's batch axis is dynamic
    with torch.no_grad():
        expected = reference.eval()(x).numpy()
    for fmt, name in (("onnx", "model.onnx"), ("openvino", "model.xml")):
        actual = run_without_ds(fmt, out / name, x.numpy(), tmp_path)
        assert actual.shape == (5, 10)
        assert rel_error(actual, expected) <= ds.MERGE_TOLERANCE, fmt
    record = json.loads((out / "model.json").read_text())
    assert record["network"]["merged"] and record["network"]["pattern"] == list(ds.PATTERNS["mobilenetv2_035"]["DS-E"])
    assert record["opset"] >= 17 and set(record["checks"]) >= {"onnxruntime/fp32", "openvino/fp32"}


def test_cli_exports_the_weights_of_a_train_checkpoint(tmp_path, capsys):
    from ds.train import build_model
    pattern = list(ds.PATTERNS["mobilenetv2_035"]["DS-F"])
    torch.manual_seed(123)
    trained = build_model("mobilenetv2_035", 10, 32, pattern)
    with torch.no_grad():  # weights and BN statistics no fresh network has
        for name, tensor in trained.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn_like(tensor))
            if name.endswith("running_var"):
                tensor.abs_().add_(0.5)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": trained.state_dict(), "epoch": 0,
                "meta": {"backbone": "mobilenetv2_035", "pattern": pattern, "num_classes": 10,
                         "input_size": 32}}, checkpoint)
    assert export_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "e"),
                        "--formats", "onnx"]) == 0
    assert not (tmp_path / "e" / "model.xml").exists()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = trained.eval()(x).numpy()
    actual = run_without_ds("onnx", tmp_path / "e" / "model.onnx", x.numpy(), tmp_path)
    assert rel_error(actual, expected) <= ds.MERGE_TOLERANCE


def test_a_file_that_does_not_match_its_network_is_refused(tmp_path):
    torch.manual_seed(0)
    a = ds.create_model("mobilenetv2_035", num_classes=10, input_size=32)
    b = ds.create_model("mobilenetv2_035", num_classes=10, input_size=32)  # other random weights
    result = export(a, tmp_path, formats=("onnx",))
    assert result.checks["onnxruntime/fp32"]["max_rel"] <= EXPORT_TOLERANCE["fp32"]
    with pytest.raises(ExportError, match="differs from torch: max relative error"):
        check_file(ds.merge(b), result.files["onnx"], "onnxruntime", 32)


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "no/such/checkpoint.pt"], "no such file"),
    (["--model", "mobilenetv2_035"], "--model needs --input"),
    (["--model", "mobilenetv2_035", "--input", "32", "--pattern", "DS-Z"], "--pattern DS-Z"),
    (["--model", "mobilenetv2_035", "--input", "32", "--formats", "tflite"], "choose from onnx, openvino"),
])
def test_cli_errors_name_the_problem(tmp_path, capsys, args, message):
    assert export_main([*args, "--out", str(tmp_path / "e")]) == 2
    assert message in capsys.readouterr().err


def test_a_checkpoint_without_meta_is_explained(tmp_path, capsys):
    path = tmp_path / "plain.pt"
    torch.save(ds.create_model("mobilenetv2_035", input_size=32).state_dict(), path)
    assert export_main(["--checkpoint", str(path), "--out", str(tmp_path / "e")]) == 2
    assert "does not say which network it holds" in capsys.readouterr().err


@pytest.mark.skipif(openvino_bf16_supported(), reason="checks the refusal on a CPU without BF16")
def test_openvino_bf16_is_refused_where_the_cpu_lacks_it(tmp_path):
    from ds.export import openvino_compiled, to_onnx
    path = to_onnx(ds.create_model("mobilenetv2_035", num_classes=10, input_size=32), tmp_path / "m.onnx", 32)
    with pytest.raises(ExportError, match="does not list BF16"):
        openvino_compiled(path, 1, "bf16")
