"""MAC and parameter counts: worked out by hand on a small network, checked against PyTorch's own
FLOP counter on whole networks, and the reference table for mobilenetv2_140 at 224."""
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import ds


def _hand_net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8),
                         nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1, bias=False),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))


def test_macs_and_params_by_hand():
    # Input 16 x 15. Conv 3->8, k3, stride 2, padding 1: output rows (16 + 2 - 3) // 2 + 1 = 8,
    # columns (15 + 2 - 3) // 2 + 1 = 8; 8 * 8 * 8 = 512 outputs, each 3 * 3 * 3 = 27 MACs -> 13,824.
    # BatchNorm: not counted.
    # Depthwise conv 8->8, k3, groups 8, padding 1: 512 outputs, each 1 * 3 * 3 = 9 MACs -> 4,608.
    # Pointwise conv 8->16: 16 * 8 * 8 = 1,024 outputs, each 8 MACs -> 8,192.
    # Linear 16->5: 5 outputs, each 16 MACs -> 80.
    assert ds.macs(_hand_net(), (16, 15)) == 13_824 + 4_608 + 8_192 + 80   # = 26,704
    # Parameters: conv 8 * 27 + 8 bias = 224; BN weight and bias 8 + 8 = 16 (running stats are
    # buffers, not counted); depthwise 8 * 9 + 8 = 80; pointwise 16 * 8 = 128 (no bias);
    # linear 16 * 5 + 5 = 85.
    assert ds.params(_hand_net()) == 224 + 16 + 80 + 128 + 85   # = 533


@pytest.mark.parametrize("name,pattern", [("mobilenetv2_035", None), ("mobilenetv2_035", "DS-C"),
                                          ("tv_mobilenet_v2", "DS-A"), ("efficientnet_lite0", None)])
def test_macs_agree_with_torch_flop_counter(name, pattern):
    model = ds.create_model(name, num_classes=10, input_size=32).eval()
    if pattern is not None:
        model = ds.merge(ds.apply_pattern(model, pattern), verify=False)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert counter.get_total_flops() == 2 * ds.macs(model, 32)   # a multiply-accumulate is 2 FLOPs


def test_macs_keeps_training_mode():
    net = ds.create_model("mobilenetv2_050", num_classes=10, input_size=32).train()
    ds.macs(net, 32)
    assert net.training


# Reference values, computed independently of ds: convs and linears, BN excluded, 224 x 224.
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
