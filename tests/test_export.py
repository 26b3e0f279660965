"""A merged network is a plain module: save/load, trace, export and ONNX all accept it."""
import io

import numpy as np
import pytest
import torch

import ds


@pytest.fixture(scope="module")
def merged_and_input():
    model = ds.create_model("mobilenetv2_100", num_classes=10, input_size=32).eval()
    return ds.merge(ds.apply_pattern(model, "DS-E")), torch.randn(2, 3, 32, 32)


def test_save_and_load(merged_and_input, tmp_path):
    merged, x = merged_and_input
    torch.save(merged, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
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
