"""ds.export.quantize: INT8 files for ONNX Runtime and OpenVINO, calibrated on training images (here
fake ones), each run in its runtime and checked against the float network (issue 22, item 1)."""
import json

import numpy as np
import pytest

from ds.export import ExportError, to_onnx
from ds.export.__main__ import main as export_main
from ds.export.quantize import (INT8_MAX_ERROR, Int8Images, calibration_images, compare, export_int8, image_set,
                                output_error, quantize, quantize_onnx)

pytest.importorskip("onnxruntime")   # the 'runtimes' extra that make installs
pytest.importorskip("openvino")
pytest.importorskip("nncf")

SIZE = 16
EXTENSION = {"onnxruntime": ".onnx", "openvino": ".xml"}




@pytest.fixture(scope="module")
def fake_images():
    """Calibration and check images as a caller passes them: arrays (here normalized noise)."""
    rng = np.random.default_rng(0)
    return Int8Images.from_arrays(rng.standard_normal((16, 3, SIZE, SIZE)).astype(np.float32),
                                  rng.standard_normal((16, 3, SIZE, SIZE)).astype(np.float32), name="noise")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("pattern", ["base", "DS-F"])
def test_each_runtime_gets_a_checked_int8_file(tiny_merged, fake_images, tmp_path, runtime, pattern):
    q = quantize(tiny_merged[pattern], runtime, tmp_path / f"m.int8{EXTENSION[runtime]}", fake_images)
    assert q.path.is_file() and (runtime == "onnxruntime" or q.path.with_suffix(".bin").is_file())
    assert q.check["images"] == 16 and 0 <= q.check["top1_agreement"] <= 1
    assert 0 < q.check["rel_rms_error"] <= INT8_MAX_ERROR and q.check["max_error"] == INT8_MAX_ERROR
    assert "16 noise images" in q.label and q.settings["images"]["calibration"]["source"] == "array"
    # the file is what was checked: run again, the same error
    again = compare(tiny_merged[pattern], q.path, runtime, fake_images.check)
    assert again["rel_rms_error"] == pytest.approx(q.check["rel_rms_error"], rel=1e-6)
    if runtime == "onnxruntime":  # QDQ: every Conv has its weight behind a DequantizeLinear
        import onnx
        graph = onnx.load(str(q.path)).graph
        made_by = {out: node.op_type for node in graph.node for out in node.output}
        assert all(made_by.get(n.input[1]) == "DequantizeLinear" for n in graph.node if n.op_type == "Conv")


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_broken_quantization_is_an_export_error_and_leaves_no_file(tiny_merged, fake_images, tmp_path, runtime):
    path = tmp_path / f"m.int8{EXTENSION[runtime]}"
    with pytest.raises(ExportError, match=r"differs from the float network: relative RMS error .* exceeds 0 ") as e:
        quantize(tiny_merged["DS-F"], runtime, path, fake_images, max_error=0.0)   # a threshold forced to fail
    assert "\n" not in str(e.value) and "do not deploy it" in str(e.value)
    assert not path.exists() and not path.with_suffix(".bin").exists()


def test_calibration_far_off_the_training_input_is_caught_at_the_default_threshold(tiny_merged, tmp_path):
    """Images 50x smaller than the network's input: every activation range far too narrow, clipped."""
    images = calibration_images(SIZE, 16, dataset="fake")
    off = Int8Images(image_set(images.calibration.images * 0.02, "scaled"), images.check)
    with pytest.raises(ExportError, match="relative RMS error"):
        quantize(tiny_merged["base"], "onnxruntime", tmp_path / "m.int8.onnx", off)


def test_calibration_images_are_seeded_training_images_disjoint_from_the_check():
    a = calibration_images(SIZE, 20, seed=3, dataset="fake", check_count=10)
    b = calibration_images(SIZE, 20, seed=3, dataset="fake", check_count=10)
    c = calibration_images(SIZE, 20, seed=4, dataset="fake", check_count=10)
    assert a.calibration.images.shape == (20, 3, SIZE, SIZE) and a.check.images.shape == (10, 3, SIZE, SIZE)
    for key in ("dataset", "split", "count", "seed", "first", "indices_sha256"):
        assert key in a.calibration.identity
    assert a.calibration.identity["split"] == a.check.identity["split"] == "train"   # never test images
    assert (a.calibration.identity["first"], a.check.identity["first"]) == (0, 20)
    assert a.calibration.identity == b.calibration.identity
    assert np.array_equal(a.calibration.images, b.calibration.images)
    assert a.calibration.identity["indices_sha256"] != c.calibration.identity["indices_sha256"]
    assert a.calibration.identity["indices_sha256"] != a.check.identity["indices_sha256"]
    # normalized as ds.train feeds the network: about zero mean, unit spread
    assert abs(float(a.calibration.images.mean())) < 0.5 and 0.5 < float(a.calibration.images.std()) < 2


@pytest.mark.parametrize("call, message", [
    (lambda: image_set(np.zeros((3, 16, 16), np.float32)), r"expected a float array \(N, C, H, W\)"),
    (lambda: image_set(np.full((1, 3, 4, 4), np.nan, np.float32)), "not all values are finite"),
    (lambda: calibration_images(SIZE, 400, dataset="fake"), "ask for fewer"),
    (lambda: calibration_images(SIZE, 0, dataset="fake"), "whole number >= 1"),
    (lambda: calibration_images((16, 24), 4, dataset="fake"), "pass your own images"),
    (lambda: calibration_images(SIZE, 4, dataset="imagenet"), "calibration images: unknown dataset"),
])
def test_bad_calibration_input_is_one_line_naming_the_fix(call, message):
    with pytest.raises(ExportError, match=message) as e:
        call()
    assert "\n" not in str(e.value)


def test_the_file_name_must_suit_the_runtime(tiny_merged, fake_images, tmp_path):
    with pytest.raises(ExportError, match="is a .xml file; rename it"):
        quantize(tiny_merged["base"], "openvino", tmp_path / "m.onnx", fake_images)
    with pytest.raises(ExportError, match="INT8 runs in onnxruntime or openvino"):
        quantize(tiny_merged["base"], "torch", tmp_path / "m.onnx", fake_images)


def test_output_error_ignores_a_shift_common_to_all_classes():
    expected = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]])
    shifted = output_error(expected + 5.0, expected)
    assert shifted["rel_rms_error"] == pytest.approx(0.0) and shifted["top1_agreement"] == 1.0
    flipped = expected.copy()
    flipped[0] = expected[0, ::-1]   # the first image's prediction changes, the second's does not
    swapped = output_error(flipped, expected)
    assert swapped["top1_agreement"] == 0.5 and swapped["rel_rms_error"] > 1


def test_cli_int8_writes_checked_files_and_the_calibration_identity(tmp_path, capsys):
    out = tmp_path / "e"
    assert export_main(["--model", "mobilenetv2_035", "--pattern", "DS-F", "--input", str(SIZE), "--num-classes",
                        "10", "--out", str(out), "--int8", "--calibration-dataset", "fake",
                        "--calibration-images", "16", "--calibration-seed", "5"]) == 0
    printed = capsys.readouterr().out
    for runtime in ("onnxruntime", "openvino"):
        assert f"checked {runtime}/int8 against the float network on 16 fake train images (seed 5)" in printed
    assert (out / "model.int8.onnx").is_file() and (out / "model.int8.xml").is_file()
    assert (out / "model.int8.bin").is_file()
    record = json.loads((out / "model.json").read_text())
    assert record["files"]["onnx_int8"] == "model.int8.onnx" and record["files"]["openvino_int8"] == "model.int8.xml"
    calib = record["int8"]["images"]["calibration"]
    assert (calib["dataset"], calib["split"], calib["count"], calib["seed"]) == ("fake", "train", 16, 5)
    assert len(calib["indices_sha256"]) == 64 and record["int8"]["images"]["check"]["first"] == 16
    for runtime in ("onnxruntime", "openvino"):
        check = record["checks"][f"{runtime}/int8"]
        assert check["rel_rms_error"] <= check["max_error"] and "top1_agreement" in check
        assert record["int8"]["files"][runtime]["settings"]["tool"] in ("onnxruntime.quantization.quantize_static",
                                                                       "nncf.quantize")


def test_export_int8_from_python_with_arrays_and_one_format(tiny_merged, fake_images, tmp_path):
    result = export_int8(tiny_merged["base"], tmp_path, SIZE, images=fake_images, formats=("onnx",))
    assert set(result.files) == {"onnx", "onnx_int8"} and "onnxruntime/int8" in result.checks
    record = json.loads(result.record.read_text())
    assert record["int8"]["images"]["calibration"]["sha256"] == fake_images.calibration.identity["sha256"]


def test_cli_int8_errors_are_one_line(tmp_path, capsys):
    assert export_main(["--model", "mobilenetv2_035", "--input", str(SIZE), "--out", str(tmp_path / "e"), "--int8",
                        "--calibration-dataset", "fake", "--calibration-images", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: calibration count must be a whole number >= 1") and err.count("\n") == 1


def test_a_cpu_without_vnni_is_saturation_prone_and_the_records_say_which_quantization_ran():
    from ds.export.quantize import saturation_prone, settings, settings_label
    avx2 = {"fpu", "sse2", "avx", "avx2", "fma"}
    assert saturation_prone(avx2, "x86_64") and saturation_prone(set(), "x86_64")
    assert not saturation_prone(avx2 | {"avx512f", "avx512_vnni"}, "x86_64")
    assert not saturation_prone(avx2 | {"avx_vnni"}, "AMD64")
    assert not saturation_prone(avx2, "aarch64")                      # not x86: other kernels
    assert "reduce_range" in settings("onnxruntime", True)["weights"]
    assert "reduce_range" not in settings("onnxruntime", False)["weights"]
    assert settings("openvino", True)["overflow_fix"] == "enable"
    assert settings("openvino", False)["overflow_fix"] == "first_layer_only"
    calib = image_set(np.zeros((2, 3, SIZE, SIZE), np.float32), "noise")
    assert "(7-bit: reduce_range)" in settings_label("onnxruntime", calib, True)
    assert "overflow fix on every layer" in settings_label("openvino", calib, True)
    assert "7-bit" not in settings_label("onnxruntime", calib, False)


def test_the_saturation_fix_gives_ort_7_bit_weights_and_the_cli_records_it(tiny_merged, fake_images, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper
    widest = {}
    for fix in (True, False):
        q = quantize(tiny_merged["base"], "onnxruntime", tmp_path / f"m{fix}.onnx", fake_images, saturation_fix=fix,
                     max_error=10.0)   # without the fix a CPU lacking VNNI fails the check: the weights are the point
        weights = [numpy_helper.to_array(t) for t in onnx.load(str(q.path)).graph.initializer
                   if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
        widest[fix] = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
        assert ("reduce_range" in q.settings["weights"]) == fix
    assert widest[True] <= 64 < widest[False]                          # 7-bit weights only with the fix
    out = tmp_path / "e"
    assert export_main(["--model", "mobilenetv2_035", "--input", str(SIZE), "--num-classes", "10", "--out", str(out),
                        "--int8", "--calibration-dataset", "fake", "--calibration-images", "8",
                        "--int8-saturation-fix", "on"]) == 0
    record = json.loads((out / "model.json").read_text())["int8"]
    assert "cpu_saturation_prone" in record and record["files"]["openvino"]["settings"]["overflow_fix"] == "enable"
    assert "reduce_range" in record["files"]["onnxruntime"]["settings"]["weights"]


def test_uint8_weights_use_their_full_range_whatever_the_saturation_fix(tiny_merged, fake_images, tmp_path):
    """ONNX Runtime's other remedy (benchmarks/int8_saturation.py measures it): uint8 weights over all
    256 levels, never the 7-bit range, even where the fix is asked for."""
    import onnx
    from onnx import numpy_helper
    source = to_onnx(tiny_merged["base"], tmp_path / "float.onnx", SIZE)
    path = quantize_onnx(source, tmp_path / "u8.onnx", fake_images.calibration, saturation_fix=True, uint8_weights=True)
    initializers = onnx.load(str(path)).graph.initializer
    weights = [numpy_helper.to_array(t) for t in initializers if len(t.dims) == 4]
    assert weights and all(w.dtype == np.uint8 for w in weights)
    assert max(int(w.max()) - int(w.min()) for w in weights) > 128     # wider than 7 bits
