"""apply_pattern: structure, errors, and what it leaves alone."""
import json

import pytest
import torch
from torch import nn

import numpy as np

import ds
from ds.linear import LinearRun
from conftest import scramble_batchnorm, tiny_timm


def test_model_is_not_modified(mbv2_cifar):
    before = {k: v.clone() for k, v in mbv2_cifar.state_dict().items()}
    structure = str(mbv2_cifar)
    merged = ds.merge(ds.apply_pattern(mbv2_cifar, "DS-F"))
    assert str(mbv2_cifar) == structure
    assert all(torch.equal(before[k], v) for k, v in mbv2_cifar.state_dict().items())
    assert not merged.training


def test_stem_and_head_lose_activation_only(mbv2_cifar):
    shrunk = ds.apply_pattern(mbv2_cifar, "DS-A")  # removes the stem activation, keeps the head's
    assert isinstance(shrunk.bn1.act, nn.Identity) and isinstance(shrunk.bn2.act, nn.ReLU6)
    assert isinstance(shrunk.conv_stem, nn.Conv2d) and shrunk.conv_stem.padding == (1, 1)


def test_final_act_groups(mbv2_cifar):
    pattern = ds.PATTERNS["mobilenetv2_140"]["DS-D"]  # blocks 1-3, 6-13 removed
    with_act = ds.apply_pattern(mbv2_cifar, pattern)
    runs = [m for m in with_act.modules() if isinstance(m, LinearRun)]
    assert len(runs) == pattern.count(0) - 1  # the stem switch is not a block
    assert all(isinstance(run.final_act, nn.ReLU6) for run in runs)
    without = ds.apply_pattern(mbv2_cifar, pattern, final_act=False)
    runs = [m for m in without.modules() if isinstance(m, LinearRun)]
    assert [len(run.stages) for run in runs] == [3, 8]
    assert all(isinstance(run.final_act, nn.Identity) for run in runs)
    assert isinstance(without.blocks[1][1], nn.Identity)


def test_switches_of_shrunk_model(mbv2_cifar):
    shrunk = ds.apply_pattern(mbv2_cifar, "DS-D", final_act=False)
    switches = ds.switches(shrunk)
    assert len(switches) == 19
    assert not switches[1].switchable and "already linear" in switches[1].reason
    assert not switches[2].switchable and "folded into the linear run" in switches[2].reason
    with pytest.raises(ds.PatternError, match="not switchable: already linear"):
        ds.apply_pattern(shrunk, "DS-D")


def test_all_ones_is_a_plain_copy(mbv2_cifar):
    same = ds.apply_pattern(mbv2_cifar, [1] * 19)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(same(x), mbv2_cifar(x))


def test_training_mode_is_kept():
    model = tiny_timm([["ds_r1_k3_s1_e1_c8"], ["ir_r1_k3_s2_e6_c16"]]).train()
    shrunk = ds.apply_pattern(model, [1, 1, 0, 1])
    assert shrunk.training and shrunk.blocks[1][0].training
    shrunk(torch.randn(2, 3, 16, 16)).sum().backward()  # trainable as it is
    assert shrunk.blocks[1][0].stages[0].convs[1].weight.grad is not None


DS_A = list(ds.PATTERNS["mobilenetv2_140"]["DS-A"])


@pytest.fixture(scope="module")
def mbv2_small():
    return ds.create_model("mobilenetv2_035", num_classes=10, input_size=32)


@pytest.mark.parametrize("pattern", [
    np.array(DS_A), np.array(DS_A, dtype=bool), torch.tensor(DS_A), torch.tensor(DS_A).bool(),
    torch.tensor(DS_A, dtype=torch.float32), tuple(DS_A), [bool(b) for b in DS_A],
    ",".join(map(str, DS_A)), " ".join(map(str, DS_A)), str(DS_A), "".join(map(str, DS_A)),
], ids=["numpy", "numpy-bool", "tensor", "tensor-bool", "tensor-float", "tuple", "bools",
        "commas", "spaces", "brackets", "digits"])
def test_pattern_forms(mbv2_small, pattern):
    assert ds.meta.info(ds.apply_pattern(mbv2_small, pattern)).pattern == tuple(DS_A)


@pytest.mark.parametrize("pattern,message", [
    ([1, 0, 1], "has 3 entries but mobilenetv2_035 has 19 switches"),
    ("0,1,2", "has 3 entries but .* has 19 switches"),   # what a wrong --pattern 0,1,2 shows
    ("1,0,x", "has 3 entries but .* has 19 switches"),
    (",".join(["1"] * 18 + ["x"]), "must be 0 \\(remove\\) or 1 \\(keep\\); got 'x' at 18"),
    (np.ones((2, 19), dtype=int), "must be 1-D .* shape \\(2, 19\\)"),
    (torch.ones(1, 19), "must be 1-D .* shape \\(1, 19\\)"),
    ([[1] * 19], "must be 1-D .* entry 0 is itself a sequence"),
    (np.full(19, 0.5), "must be 0 \\(remove\\) or 1 \\(keep\\); got 0.5 at 0"),
    (torch.full((19,), 2), "got 2 at 0"),
    ([1] * 18 + ["1"], "got '1' at 18"),
    (7, "a pattern is a 0/1 sequence, a name in ds.PATTERNS or a JSON file; got int 7"),
    ([1] * 18 + [2], "must be 0 \\(remove\\) or 1 \\(keep\\); got 2 at 18"),
    ("DS-Z", "unknown pattern name 'DS-Z' \\(known for mobilenetv2_035: DS-A"),
    ("missing.json", "pattern file missing.json does not exist"),
])
def test_pattern_errors(mbv2_small, pattern, message):
    with pytest.raises(ds.PatternError, match=message):
        ds.apply_pattern(mbv2_small, pattern)


def test_pattern_file(mbv2_cifar, tmp_path):
    path = tmp_path / "p.json"
    path.write_text("[1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1]")
    assert len([m for m in ds.apply_pattern(mbv2_cifar, str(path)).modules() if isinstance(m, LinearRun)]) == 9
    path.write_text("{")
    with pytest.raises(ds.PatternError, match="not valid JSON"):
        ds.apply_pattern(mbv2_cifar, str(path))


def test_pattern_file_of_named_patterns(mbv2_cifar, tmp_path):
    path = tmp_path / "patterns.json"
    path.write_text(json.dumps({"a": [1] * 19, "b": list(ds.PATTERNS["mobilenetv2_140"]["DS-F"])}))
    shrunk = ds.apply_pattern(mbv2_cifar, f"{path}:b")
    assert len([m for m in shrunk.modules() if isinstance(m, LinearRun)]) == 17  # every block
    with pytest.raises(ds.PatternError, match="holds patterns a, b; choose one as .*:NAME"):
        ds.apply_pattern(mbv2_cifar, str(path))


def test_named_pattern_needs_known_model():
    model = ds.create_model("efficientnet_lite0", num_classes=10, input_size=32)
    with pytest.raises(ds.PatternError, match="no named patterns for 'efficientnet_lite0'"):
        ds.apply_pattern(model, "DS-A")


def test_non_switchable_block_cannot_be_removed():
    model = ds.create_model("efficientnet_b0", num_classes=10, input_size=32)
    switches = ds.switches(model)
    assert not switches[1].switchable and "squeeze-excite" in switches[1].reason
    pattern = [1] * len(switches)
    pattern[1] = 0
    with pytest.raises(ds.PatternError, match="switch 1 .* not switchable: squeeze-excite"):
        ds.apply_pattern(model, pattern)


def test_merge_error_names_a_bug_or_conditioning(monkeypatch):
    model = scramble_batchnorm(tiny_timm([["ds_r1_k3_s1_e1_c8"], ["ir_r1_k3_s1_e6_c8"]]))
    shrunk = ds.apply_pattern(model, [1, 1, 0, 1])
    with pytest.raises(ds.MergeError, match="merge is exact"):
        ds.merge(shrunk, tolerance=0.0)
    exact_merge = LinearRun.merged

    def broken_merge(self, *args):
        merged = exact_merge(self, *args)
        merged[0].bias.data += 1.0
        return merged

    monkeypatch.setattr(LinearRun, "merged", broken_merge)
    with pytest.raises(ds.MergeError, match="bug in ds"):
        ds.merge(shrunk)
