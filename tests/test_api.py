"""The public API as a user meets it: build, inspect, shrink, merge, verify, count, and the record
ds keeps on every network (ds.meta.info), through one round trip."""
import json

import pytest
import torch
from torch import nn

import ds
from ds.meta import NetInfo, info, set_info


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ds.create_model("mobilenetv2_035", num_classes=7, input_size=32).eval()


def test_create_model_builds_what_it_is_asked_for(model):
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert info(model) == NetInfo(backbone="mobilenetv2_035", num_classes=7, input_size=32)


def test_switches_index_the_network(model):
    switches = ds.switches(model)
    assert len(switches) == 19 and isinstance(switches[0], ds.Switch)
    assert [s.kind for s in switches] == ["stem"] + ["block"] * 17 + ["head"]
    # each switch's channels chain into the next one's
    assert all(a.out_channels == b.in_channels for a, b in zip(switches, switches[1:]))
    assert switches[0].in_channels == 3


def test_patterns_are_the_papers_six_per_standard_mobilenetv2():
    assert list(ds.PATTERNS["mobilenetv2_140"]) == [f"DS-{c}" for c in "ABCDEF"]
    assert all(len(p) == 19 and set(p) <= {0, 1} for p in ds.PATTERNS["mobilenetv2_140"].values())
    assert ds.PATTERNS["mobilenetv2_035"] == ds.PATTERNS["mobilenetv2_140"]


def test_shrink_merge_verify_round_trip(model):
    shrunk = ds.apply_pattern(model, "DS-C")
    assert info(shrunk).pattern == ds.PATTERNS["mobilenetv2_035"]["DS-C"] and not info(shrunk).merged
    removed = [s.index for s in ds.switches(model) if ds.PATTERNS["mobilenetv2_035"]["DS-C"][s.index] == 0]
    assert all(not ds.switches(shrunk)[i].switchable for i in removed if ds.switches(model)[i].kind == "block")

    merged = ds.merge(shrunk)
    record = info(merged)
    assert record.merged and record.pattern == info(shrunk).pattern and record.backbone == "mobilenetv2_035"
    assert 0 <= record.merge_max_rel < ds.MERGE_TOLERANCE
    assert not any(isinstance(m, nn.BatchNorm2d) for m in merged.modules())   # every BN folded

    errors = ds.verify(shrunk, merged, 32)
    assert set(errors) == {"max_abs", "max_rel"} and errors["max_rel"] < ds.MERGE_TOLERANCE
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(merged(x), shrunk.eval()(x), rtol=0, atol=1e-3 * shrunk(x).abs().max().item())

    # fewer MACs and parameters after the merge, measured on the networks themselves
    assert ds.macs(merged, 32) < ds.macs(model, 32)
    assert ds.params(merged) != ds.params(model)


def test_verify_sees_a_different_network(model):
    other = ds.create_model("mobilenetv2_035", num_classes=7, input_size=32).eval()
    assert ds.verify(model, other, 32)["max_rel"] > 1e-2


def test_merge_tolerance_is_enforced(model):
    shrunk = ds.apply_pattern(model, "DS-A")
    with pytest.raises(ds.MergeError, match="exceeds 0 "):
        ds.merge(shrunk, tolerance=0.0)


def test_meta_record_round_trips_through_a_dict(model, tmp_path):
    merged = ds.merge(ds.apply_pattern(model, "DS-A", final_act=False))
    record = info(merged)
    path = tmp_path / "record.json"
    path.write_text(json.dumps(record.as_dict()))   # as a checkpoint stores it
    restored = NetInfo.from_dict(json.loads(path.read_text()))
    assert restored == record and restored.final_act is False and isinstance(restored.pattern, tuple)
    fresh = set_info(nn.Sequential(nn.Conv2d(3, 4, 1)), restored)
    assert info(fresh) == record
    assert info(nn.Conv2d(3, 4, 1)) == NetInfo()   # a network ds did not build has an empty record
