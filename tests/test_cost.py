"""MAC counts: a hand count on a tiny net and the reference table for mobilenetv2_140 at 224."""
import pytest
import torch
from torch import nn

import ds


def test_macs_hand_count():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    expected = 8 * 8 * 8 * 27 + 8 * 8 * 8 * 9 + 8 * 5
    assert ds.macs(net, (16, 15)) == expected - 8 * 8 * 36 + 8 * 8 * 36  # (16, 15) -> 8 x 8 outputs
    assert ds.params(net) == (8 * 27 + 8) + (8 * 9 + 8) + (8 * 5 + 5)


def test_macs_keeps_training_mode():
    net = ds.create_model("mobilenetv2_050", num_classes=10, input_size=32).train()
    ds.macs(net, 32)
    assert net.training


# Computed independently (DESIGN.md section 1): convs and linears, BN excluded, 224 x 224.
REFERENCE_MMACS = {"base": 582.2, "DS-A": 496.2, "DS-B": 481.9, "DS-C": 474.4, "DS-D": 466.6,
                   "DS-E": 459.1, "DS-F": 407.9}


@pytest.fixture(scope="module")
def mbv2_140():
    torch.manual_seed(0)
    return ds.create_model("mobilenetv2_140").eval()


@pytest.mark.parametrize("pattern", sorted(REFERENCE_MMACS))
def test_mobilenetv2_140_mac_table(mbv2_140, pattern):
    model = mbv2_140 if pattern == "base" else ds.merge(ds.apply_pattern(mbv2_140, pattern), verify=False)
    assert round(ds.macs(model, 224) / 1e6, 1) == REFERENCE_MMACS[pattern]


def test_merging_the_depthwise_separable_block_costs_macs(mbv2_140):
    shrunk = ds.apply_pattern(mbv2_140, "DS-F")  # removes switch 1
    kept, fused = (ds.merge(shrunk, merge_depthwise_separable=flag, verify=False) for flag in (False, True))
    extra = ds.macs(fused, 224) - ds.macs(kept, 224)
    separable = 112 * 112 * (48 * 9 + 48 * 24)
    assert extra == 112 * 112 * 24 * 48 * 9 - separable
    assert 6 < (extra + separable) / separable < 7  # the ~6.5x the paper avoids
