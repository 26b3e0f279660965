"""python -m ds.bench end to end on a tiny MobileNetV2 (width 0.35, 32 px) on CPU."""
import json

import pandas as pd
import pytest
import torch

import ds
from ds.bench import BenchError
from ds.bench.cli import main
from ds.bench.report import COLUMNS
from ds.bench.variants import build_variants, load_patterns

MODEL = "mobilenetv2_035"
TWO_PATTERNS = {"DS-E": list(ds.PATTERNS[MODEL]["DS-E"]), "DS-F": list(ds.PATTERNS[MODEL]["DS-F"])}
FAST = ["--batch", "2", "--input", "32", "--threads", "1", "--warmup", "1", "--min-time", "0.005"]


@pytest.fixture
def pattern_file(tmp_path):
    path = tmp_path / "patterns.json"
    path.write_text(json.dumps(TWO_PATTERNS))
    return path


def test_cli_writes_schema_speedups_from_same_run_and_verifies(tmp_path, pattern_file):
    out = tmp_path / "t.csv"
    assert main(["--model", MODEL, "--patterns", str(pattern_file), "--device", "cpu",
                 "--out", str(out), "--layouts", "nchw,channels_last", *FAST]) == 0

    frame = pd.read_csv(out)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 2 * 3 and set(frame["pattern"]) == {"base", "DS-E", "DS-F"}
    for _, setting in frame.groupby(["dtype", "layout", "mode"]):
        base = setting.set_index("pattern").loc["base", "img_s_median"]
        assert setting["speedup_same_runtime"].tolist() == pytest.approx(
            (setting["img_s_median"] / base).tolist())
    best = frame[frame["pattern"] == "base"]["img_s_median"].max()
    assert frame["speedup_over_best_base"].tolist() == pytest.approx((frame["img_s_median"] / best).tolist())
    assert (frame["runtime"] == "torch").all() and (frame["runtime_version"] == torch.__version__).all()
    assert frame["load_average"].notna().all()
    assert (frame["img_s_min"] <= frame["img_s_median"]).all()
    assert (frame["img_s_median"] <= frame["img_s_max"]).all()
    assert (frame["bound_s"] > 0).all() and (frame["achieved_fraction"] > 0).all()
    assert (frame["threads"] == 1).all() and (frame["device"] == "cpu").all()
    macs = frame.drop_duplicates("pattern").set_index("pattern")["macs"]
    assert macs["DS-F"] < macs["DS-E"] < macs["base"]

    sidecar = json.loads(out.with_suffix(".json").read_text())
    for key in ("command", "date_utc", "git", "torch", "timm", "device_name", "threads",
                "load_average_before", "verification", "peaks", "protocol"):
        assert key in sidecar
    assert sidecar["command"].startswith("python -m ds.bench --model mobilenetv2_035")
    assert set(sidecar["verification"]) == {"base", "DS-E", "DS-F"}   # every merged network checked
    assert all(0 <= e["max_rel"] < 1e-4 for e in sidecar["verification"].values())


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "unknown device"),
    (["--dtypes", "fp8"], "unknown dtype"),
    (["--modes", "jit"], "unknown mode"),
    (["--patterns", "no_such_file.json"], "not 'paper' and no such file"),
])
def test_cli_errors_name_the_problem(tmp_path, capsys, args, message):
    assert main(["--model", MODEL, "--out", str(tmp_path / "x.csv"), *FAST, *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cli_cuda_without_cuda(tmp_path, capsys):
    assert main(["--model", MODEL, "--device", "cuda", "--out", str(tmp_path / "x.csv")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_pattern_files_are_checked(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BenchError, match="not valid JSON"):
        load_patterns(str(bad), MODEL)
    bad.write_text(json.dumps({"base": [1] * 19}))
    with pytest.raises(BenchError, match="reserved"):
        load_patterns(str(bad), MODEL)
    bad.write_text(json.dumps([[1] * 19]))
    with pytest.raises(BenchError, match="JSON object"):
        load_patterns(str(bad), MODEL)
    with pytest.raises(BenchError, match="holds the paper.s patterns only for"):
        load_patterns("paper", "efficientnet_lite0")
    assert set(load_patterns("paper", "mobilenetv2_140")) == {f"DS-{c}" for c in "ABCDEF"}


def test_wrong_pattern_length_is_refused_and_merge_errors_are_reported():
    model = ds.create_model(MODEL, input_size=32)
    with pytest.raises(BenchError, match="switches"):
        build_variants(model, {"short": [1, 0, 1]}, 32)
    merged, errors = build_variants(model, {"DS-F": TWO_PATTERNS["DS-F"]}, 32)
    assert set(merged) == set(errors) == {"base", "DS-F"}
    for name, error in errors.items():
        assert 0 <= error["max_rel"] <= ds.MERGE_TOLERANCE, name
    # the errors are those of ds.merge's own check, which refuses a merge beyond its tolerance
    with pytest.raises(ds.MergeError, match="differs from the original"):
        ds.merge(ds.apply_pattern(model, "DS-F"), input_size=32, tolerance=0.0)


def test_settings_are_the_product_of_the_lists_with_fallbacks_merged():
    from ds.bench import Setting
    from ds.bench.cli import parse_args, settings_from
    args = parse_args(["--model", MODEL, "--out", "x.csv", "--dtypes", "fp32,bf16",
                       "--modes", "eager,cudagraph", "--threads", "1,2", "--batch", "1,8"])
    with pytest.warns(UserWarning, match="falls back to 'eager'"):
        settings, notes = settings_from(args, torch.device("cpu"))
    assert len(settings) == 2 * 2 * 2 and not notes  # cudagraph fell back to eager, already listed
    assert settings[:3] == [Setting("torch", "fp32", "nchw", "eager", 1, 1),
                            Setting("torch", "fp32", "nchw", "eager", 1, 8),
                            Setting("torch", "fp32", "nchw", "eager", 2, 1)]
    for option in ("--threads", "--batch"):
        with pytest.raises(BenchError, match=option):
            settings_from(parse_args(["--model", MODEL, "--out", "x", option, "two"]),
                          torch.device("cpu"))


def test_paper_subset_for_a_batch_sweep():
    assert list(load_patterns("paper:DS-A,DS-F", "mobilenetv2_140")) == ["DS-A", "DS-F"]
    with pytest.raises(BenchError, match="no paper pattern 'DS-Z'"):
        load_patterns("paper:DS-Z", "mobilenetv2_140")


# ---------------------------------------------------------------- runtimes (issue 12) and issue 11

def test_every_runtime_in_one_run_with_both_speedups(tmp_path, pattern_file):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    out = tmp_path / "rt.csv"
    assert main(["--model", MODEL, "--patterns", str(pattern_file), "--device", "cpu",
                 "--out", str(out), "--runtimes", "torch,onnxruntime,openvino,openvino:bf16",
                 "--layouts", "nchw,channels_last", "--iters", "1", *FAST]) == 0
    frame = pd.read_csv(out)
    ways = frame.drop_duplicates(["runtime", "dtype", "layout"])[["runtime", "dtype", "layout"]]
    assert {tuple(w) for w in ways.values} >= {("torch", "fp32", "nchw"), ("torch", "fp32", "channels_last"),
                                               ("onnxruntime", "fp32", "nchw"), ("openvino", "fp32", "nchw")}
    import onnxruntime
    import openvino
    versions = dict(zip(frame["runtime"], frame["runtime_version"].astype(str)))
    assert versions["onnxruntime"] == onnxruntime.__version__
    assert openvino.__version__.startswith(versions["openvino"])
    bases = frame[frame["pattern"] == "base"]
    fastest = bases.loc[bases["img_s_median"].idxmax()]
    assert (frame["best_base"] == f"{fastest['runtime']} {fastest['dtype']} {fastest['layout']} "
                                  f"{fastest['mode']}").all()
    assert frame["speedup_over_best_base"].tolist() == pytest.approx(
        (frame["img_s_median"] / fastest["img_s_median"]).tolist())
    for _, setting in frame.groupby(["runtime", "dtype", "layout"]):
        base = setting.set_index("pattern").loc["base", "img_s_median"]
        assert setting["speedup_same_runtime"].tolist() == pytest.approx((setting["img_s_median"] / base).tolist())
    sidecar = json.loads(out.with_suffix(".json").read_text())
    from ds.export import openvino_bf16_supported
    if openvino_bf16_supported():
        assert ((frame["runtime"] == "openvino") & (frame["dtype"] == "bf16")).any()
    else:  # said so, not silently dropped
        assert any("openvino bf16 not measured" in n for n in sidecar["settings_not_measured"])
    assert len(sidecar["load_average_per_setting"]) == len(frame) // 3


def test_unwritable_outputs_fail_before_measuring(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for option, target in (("--out", blocker / "t.csv"), ("--latency-table", blocker / "l.json")):
        args = ["--model", MODEL, "--device", "cpu", "--patterns", "paper:DS-F", *FAST, option, str(target)]
        if option == "--latency-table":
            args += ["--out", str(tmp_path / "ok.csv")]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"{option} {target}: cannot write there" in err
        assert "measuring" not in err and "building" not in err  # nothing was measured
    assert not (tmp_path / "ok.csv").exists()


def test_latency_table_in_a_chosen_runtime(tmp_path):
    pytest.importorskip("onnxruntime")
    from ds.gating import load_latency_table, searchable_switches
    table_path = tmp_path / "latency.json"
    assert main(["--model", MODEL, "--device", "cpu", "--runtimes", "onnxruntime",
                 "--latency-table", str(table_path), "--iters", "1", *FAST]) == 0
    table = load_latency_table(table_path)
    model = ds.create_model(MODEL, input_size=32)
    assert set(table) == {str(s.index) for s in searchable_switches(model)}
    assert all(isinstance(v, float) for v in table.values())
    side = json.loads(tmp_path.joinpath("latency.provenance.json").read_text())
    assert side["setting"].startswith("onnxruntime fp32") and side["runtimes"]["onnxruntime"]


def test_latency_table_times_each_block_on_the_input_it_gets_in_the_network(tmp_path):
    from ds.bench.latency import block_latencies
    from ds.gating import searchable_switches
    model = ds.create_model(MODEL, input_size=32)
    table_path = tmp_path / "latency.json"
    assert main(["--model", MODEL, "--device", "cpu", "--latency-table", str(table_path),
                 "--iters", "1", *FAST]) == 0
    blocks = pd.DataFrame(json.loads(tmp_path.joinpath("latency.provenance.json").read_text())["blocks"])
    searched = searchable_switches(model)
    assert blocks["block"].tolist() == [s.index for s in searched]
    assert blocks["path"].tolist() == [s.path for s in searched]
    # a block's input has its in_channels, and the size the previous block's stride left (CIFAR
    # strides: the 32 px input reaches the first searched block whole)
    assert [int(shape.split("x")[0]) for shape in blocks["input"]] == [s.in_channels for s in searched]
    sizes = [int(shape.split("x")[1]) for shape in blocks["input"]]
    assert sizes[0] == 32
    assert sizes[1:] == [size // s.stride for size, s in zip(sizes, searched)][:-1]
    assert blocks["saved_ms"].tolist() == pytest.approx((blocks["block_ms_median"] - blocks["merged_ms_median"]).tolist())
    table = json.loads(table_path.read_text())
    assert table == pytest.approx({str(b): ms / 1e3 for b, ms in zip(blocks["block"], blocks["saved_ms"])})
    frame = block_latencies(model, 32, batch=2, runtime="torch", threads=1, iters=1, repeats=5, warmup=1)
    assert (frame[["block_ms_median", "merged_ms_median"]] > 0).all().all()


def test_a_patterns_predicted_saving_is_the_sum_over_its_removed_blocks():
    from ds.bench.latency import predicted_saving
    table = {"1": 0.5, "2": 0.25, "3": -0.125}
    assert predicted_saving(table, [1, 0, 1, 0]) == pytest.approx(0.375)
    assert predicted_saving(table, [1, 1, 1, 1]) == 0
    with pytest.raises(BenchError, match="no entry for removed switch"):
        predicted_saving(table, [0, 1, 1, 1])


def test_latency_table_needs_one_setting(tmp_path, capsys):
    assert main(["--model", MODEL, "--device", "cpu", "--latency-table", str(tmp_path / "l.json"),
                 *FAST, "--threads", "1,2"]) == 2
    assert "--latency-table measures one setting" in capsys.readouterr().err


def test_runtime_errors_name_the_problem(tmp_path, capsys):
    assert main(["--model", MODEL, "--out", str(tmp_path / "x.csv"), *FAST, "--runtimes", "tvm"]) == 2
    assert "unknown runtime 'tvm'" in capsys.readouterr().err
    assert main(["--model", MODEL, "--out", str(tmp_path / "x.csv"), *FAST,
                 "--runtimes", "onnxruntime", "--dtypes", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime fp16 not measured" in err and "nothing to measure" in err


def test_time_shares_profile_every_network_in_every_cpu_setting(tmp_path, pattern_file):
    pytest.importorskip("onnxruntime")
    shares = tmp_path / "shares.csv"
    assert main(["--model", MODEL, "--patterns", str(pattern_file), "--device", "cpu", "--runtimes",
                 "torch,onnxruntime", "--layouts", "nchw,channels_last", "--time-shares", str(shares),
                 "--iters", "1", *FAST]) == 0
    table = pd.read_csv(shares)
    assert set(zip(table["setting"], table["pattern"])) == {
        (s, p) for s in ("torch NCHW", "torch channels_last", "onnxruntime") for p in ("base", "DS-E", "DS-F")}
    kinds = table[["depthwise_share", "pointwise_share", "dense_kxk_share", "other_share"]]
    assert kinds.sum(axis=1).tolist() == pytest.approx([1.0] * len(table))
    # the merged networks trade depthwise time for dense k x k time
    base, merged = table[table["pattern"] == "base"], table[table["pattern"] == "DS-F"]
    assert (base["dense_kxk_ms"].to_numpy() < merged["dense_kxk_ms"].to_numpy()).all()
    side = json.loads(shares.with_suffix(".json").read_text())
    assert side["batch"] == 2 and side["threads"] == 1 and "cpu_features" in side


def test_time_shares_need_one_thread_count_and_batch(tmp_path, capsys):
    assert main(["--model", MODEL, "--device", "cpu", "--time-shares", str(tmp_path / "s.csv"),
                 *FAST, "--threads", "1,2"]) == 2
    assert "--time-shares profiles one thread count and one batch" in capsys.readouterr().err


# ---------------------------------------------------------------- INT8 (issue 22, item 2)

def test_int8_settings_parse_beside_the_others():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from ds.bench import Setting
    from ds.bench.cli import parse_args, settings_from
    from ds.bench.compare import parse_runtimes
    assert parse_runtimes("torch,openvino:bf16,openvino:int8,onnxruntime:INT8") == [
        ("torch", None), ("openvino", "bf16"), ("openvino", "int8"), ("onnxruntime", "int8")]
    args = parse_args(["--model", MODEL, "--out", "x.csv", "--threads", "1", "--batch", "2",
                       "--runtimes", "torch,onnxruntime,openvino:int8,onnxruntime:int8"])
    settings, notes = settings_from(args, torch.device("cpu"))
    assert [s.short for s in settings] == ["torch NCHW", "onnxruntime", "openvino int8", "onnxruntime int8"]
    assert settings[2:] == [Setting("openvino", "int8", "nchw", "latency", 1, 2),
                            Setting("onnxruntime", "int8", "nchw", "ort_enable_all", 1, 2)] and not notes
    # torch has no int8 here: said so, not silently dropped
    settings, notes = settings_from(parse_args(["--model", MODEL, "--out", "x.csv", "--dtypes", "fp32,int8",
                                                "--threads", "1", "--batch", "2"]), torch.device("cpu"))
    assert [s.dtype for s in settings] == ["fp32"] and any("torch int8 not measured" in n for n in notes)


@pytest.mark.parametrize("args, message", [
    (["--calibration-images", "8"], "--calibration-images and --calibration-dataset go with int8 settings"),
    (["--runtimes", "onnxruntime:int4"], "unknown dtype 'int4'"),
    (["--runtimes", "onnxruntime:int8", "--calibration-dataset", "fake", "--calibration-images", "0"],
     "--calibration-images 0: give a whole number >= 1"),
    (["--runtimes", "onnxruntime:int8", "--latency-table", "{tmp}/l.json"],
     "--latency-table times blocks alone in float"),
])
def test_int8_option_errors_name_the_problem(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["--model", MODEL, "--out", str(tmp_path / "x.csv"), *FAST, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "measuring" not in err


def test_int8_rows_name_their_quantization_and_the_profile_says_what_ran_in_8_bits(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    out, shares = tmp_path / "q.csv", tmp_path / "s.csv"
    assert main(["--model", MODEL, "--patterns", "paper:DS-F", "--device", "cpu", "--batch", "2", "--input", "16",
                 "--threads", "1", "--warmup", "1", "--iters", "1",
                 "--runtimes", "torch,onnxruntime:int8,openvino:int8",
                 "--calibration-dataset", "fake", "--calibration-images", "8", "--out", str(out),
                 "--time-shares", str(shares)]) == 0
    frame = pd.read_csv(out, keep_default_na=False)
    assert list(frame.columns) == COLUMNS and len(frame) == 3 * 2
    int8 = frame[frame["dtype"] == "int8"]
    assert set(int8["runtime"]) == {"onnxruntime", "openvino"}
    assert int8["quantization"].str.endswith("; 8 fake train images (seed 0)").all()
    assert set(int8["quantization"].str.split(",").str[0]) == {"ORT QDQ static", "NNCF PTQ"}
    assert (frame.loc[frame["dtype"] != "int8", "quantization"] == "").all()
    # the best base is the fastest base of every setting, the int8 ones included
    bases = frame[frame["pattern"] == "base"]
    fastest = bases.loc[bases["img_s_median"].idxmax()]
    assert (frame["best_base"] == f"{fastest['runtime']} {fastest['dtype']} nchw {fastest['mode']}").all()
    assert frame["speedup_over_best_base"].tolist() == pytest.approx(
        (frame["img_s_median"] / fastest["img_s_median"]).tolist())
    assert ((frame["achieved_fraction"] > 0) & (frame["achieved_fraction"] <= 1)).all()
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["int8_images"]["calibration"]["dataset"] == "fake"
    for label, networks in sidecar["quantization"].items():
        assert " int8 " in label and set(networks) == {"base", "DS-F"}
        assert all(n["check"]["rel_rms_error"] <= n["check"]["max_error"] for n in networks.values())
    assert {(p["runtime"], p["dtype"]) for p in sidecar["peaks"]} == {("torch", "fp32"), ("onnxruntime", "int8"),
                                                                      ("openvino", "int8")}
    assert all(p["flop_s"] > 0 and p["flop_s_from"] for p in sidecar["peaks"])

    table = pd.read_csv(shares)
    assert set(table["setting"]) == {"torch NCHW", "onnxruntime int8", "openvino int8"}
    assert ((table["int8_convs"] <= table["convs"]) & (table["convs"] > 0)).all()
    assert ((table["int8_share"] >= 0) & (table["int8_share"] <= 1)).all()
    rows = table.set_index(["setting", "pattern"])
    assert (rows.loc["torch NCHW", "int8_convs"] == 0).all() and (rows.loc["torch NCHW", "int8_ms"] == 0).all()
    # after ORT's pre-processing every conv of these networks runs as QLinearConv
    assert (rows.loc["onnxruntime int8", "int8_convs"] == rows.loc["onnxruntime int8", "convs"]).all()
    assert (rows.loc["openvino int8", "int8_convs"] > 0).all() and (rows.loc["openvino int8", "int8_ms"] > 0).all()
    assert "int8_images" in json.loads(shares.with_suffix(".json").read_text())
