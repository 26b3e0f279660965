"""Merging is exact: every linear run equals its merged conv, borders included."""
import itertools

import pytest
import torch
from torch import nn

import ds
from conftest import calibrate_batchnorm, scramble_batchnorm, tiny_timm, tiny_torchvision

ODD_SIZE = (13, 17)


def _block_string(kind, kernel, stride, expansion, skip):
    channels = 8 if skip else 16  # the stem and first block give 8 channels
    suffix = "" if skip or stride == 2 or channels != 8 else "_noskip"
    return f"{kind}_r1_k{kernel}_s{stride}_e{expansion}_c{channels}{suffix}"


TIMM_GRID = [
    (kind, k, s, e, skip)
    for kind, k, s, e, skip in itertools.product(("ir", "ds", "er"), (3, 5), (1, 2), (1, 6), (True, False))
    if not (skip and s == 2) and not (kind == "ds" and e != 1)
]


@pytest.mark.parametrize("kind,kernel,stride,expansion,skip", TIMM_GRID)
@pytest.mark.parametrize("final_act", [True, False])
def test_timm_block_merges_exactly(kind, kernel, stride, expansion, skip, final_act):
    arch = [["ds_r1_k3_s1_e1_c8"], [_block_string(kind, kernel, stride, expansion, skip)]]
    model = scramble_batchnorm(tiny_timm(arch)).double()
    switch = ds.switches(model)[2]
    assert (switch.kernel_size, switch.stride, switch.skip) == (kernel, stride, skip)
    pattern = [1, 1, 0, 1]
    shrunk = ds.apply_pattern(model, pattern, final_act=final_act)
    merged = ds.merge(shrunk, merge_depthwise_separable=True, input_size=ODD_SIZE)
    run = merged.get_submodule(switch.path)
    assert isinstance(run, nn.Sequential) and run[0].kernel_size == (kernel, kernel)
    assert run[0].stride == (stride, stride) and run[0].padding == ((kernel - 1) // 2,) * 2
    assert isinstance(run[-1], nn.ReLU) == final_act
    assert ds.verify(shrunk, merged, ODD_SIZE, batch=1, dtype=torch.float64)["max_rel"] < 1e-10


@pytest.mark.parametrize("expansion,stride,skip", [(1, 1, True), (1, 2, False), (6, 1, True), (6, 2, False), (6, 1, False)])
def test_torchvision_block_merges_exactly(expansion, stride, skip):
    channels = 8 if skip else 16
    model = scramble_batchnorm(tiny_torchvision([[1, 8, 1, 1], [expansion, channels, 1, stride]])).double()
    assert ds.switches(model)[2].skip == skip
    shrunk = ds.apply_pattern(model, [1, 0, 0, 1])
    merged = ds.merge(shrunk, input_size=ODD_SIZE)
    assert ds.verify(shrunk, merged, ODD_SIZE, batch=1, dtype=torch.float64)["max_rel"] < 1e-10
    assert ds.verify(shrunk, merged, ODD_SIZE, batch=1, dtype=torch.float32)["max_rel"] < 1e-4


MIXED_RUN = [["ds_r1_k3_s1_e1_c8"], ["ir_r2_k3_s2_e6_c16"], ["ir_r1_k5_s1_e6_c16"], ["er_r1_k3_s2_e4_c24"]]


@pytest.mark.parametrize("merge_depthwise_separable", [False, True])
def test_long_run_without_final_act_is_one_conv(merge_depthwise_separable):
    """Consecutive removed blocks with strides 1, 2, 1, 1, 2 and skips compose into one conv."""
    model = scramble_batchnorm(tiny_timm(MIXED_RUN)).double()
    pattern = [1, 0, 0, 0, 0, 0, 1]
    shrunk = ds.apply_pattern(model, pattern, final_act=False)
    merged = ds.merge(shrunk, merge_depthwise_separable=merge_depthwise_separable, input_size=ODD_SIZE)
    convs = [m for m in merged.blocks.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == (1 if merge_depthwise_separable else 3)
    assert convs[-1].stride == (4, 4)  # strides 1, 2, 1, 1, 2
    for size in (ODD_SIZE, (32, 32), (9, 24)):
        assert ds.verify(shrunk, merged, size, batch=1, dtype=torch.float64)["max_rel"] < 1e-10


def test_depthwise_separable_block_with_skip_kept_unmerged_in_a_run():
    """A kept-separate expansion-1 block with a skip, inside a longer run (skip zero-padded)."""
    model = scramble_batchnorm(tiny_timm([["ds_r1_k3_s1_e1_c8"], ["ir_r1_k3_s1_e6_c8"]])).double()
    assert ds.switches(model)[1].skip
    shrunk = ds.apply_pattern(model, [1, 0, 0, 1], final_act=False)
    merged = ds.merge(shrunk, input_size=ODD_SIZE)
    assert isinstance(merged.blocks[0][0], ds.linear.LinearRun)
    assert ds.verify(shrunk, merged, ODD_SIZE, batch=1, dtype=torch.float64)["max_rel"] < 1e-10


@pytest.mark.parametrize("name", ["mobilenetv2_140", "tv_mobilenet_v2", "efficientnet_lite0", "mnasnet_100"])
def test_whole_network_random_pattern_float64(name):
    model = scramble_batchnorm(ds.create_model(name, num_classes=10, input_size=32)).double()
    generator = torch.Generator().manual_seed(1)
    n = len(ds.switches(model))
    pattern = [1] + torch.randint(0, 2, (n - 2,), generator=generator).tolist() + [1]
    for final_act in (True, False):
        shrunk = ds.apply_pattern(model, pattern, final_act=final_act)
        merged = ds.merge(shrunk, input_size=(35, 29))
        assert ds.verify(shrunk, merged, (35, 29), batch=1, dtype=torch.float64)["max_rel"] < 1e-10


@pytest.mark.parametrize("pattern", sorted(ds.PATTERNS["mobilenetv2_140"]))
def test_paper_patterns_float32(mbv2_cifar, pattern):
    shrunk = ds.apply_pattern(mbv2_cifar, pattern)
    merged = ds.merge(shrunk)  # verifies in float32 itself
    errors = ds.verify(shrunk, merged, (32, 32), batch=1)
    assert errors["max_rel"] < 1e-4
    assert ds.verify(shrunk, merged, (31, 33), batch=2)["max_rel"] < 1e-4


def test_border_trap_is_avoided():
    """Removing activations in place (padding left inside the block) differs from the merged conv
    on the border ring only; the merge-ready form equals it everywhere."""
    model = calibrate_batchnorm(tiny_timm([["ds_r1_k3_s1_e1_c8"], ["ir_r1_k3_s1_e6_c16"]]), 12).double()
    shrunk = ds.apply_pattern(model, [1, 1, 0, 1])
    merged_block = ds.merge(shrunk, input_size=12).blocks[1][0]
    in_place = model.blocks[1][0]
    in_place.bn1.act, in_place.bn2.act = nn.Identity(), nn.Identity()
    x = torch.randn(1, 8, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        naive_gap = (in_place(x) - merged_block[0](x)).abs()
        ready_gap = (shrunk.blocks[1][0].stages[0](x) - merged_block[0](x)).abs()
    assert naive_gap[..., 1:-1, 1:-1].max() < 1e-10  # inside: the same linear map
    assert naive_gap[..., 0, :].max() > 1e-3  # border ring: the trap
    assert ready_gap.max() < 1e-10


# ---------------------------------------------------------------- what merge refuses, and low precision

def _tiny_shrunk():
    model = calibrate_batchnorm(tiny_timm([["ds_r1_k3_s1_e1_c8"], ["ir_r2_k3_s2_e6_c16"], ["ir_r1_k5_s1_e6_c16"]]), 32)
    return ds.apply_pattern(model, [1, 1, 0, 0, 1, 1])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_network_merges_with_its_dtype_tolerance(dtype):
    shrunk = _tiny_shrunk().to(dtype)
    merged = ds.merge(shrunk, input_size=32)   # float32's 1e-4 would refuse the rounding of the merged weights
    record = ds.meta.info(merged)
    assert merged.conv_stem.weight.dtype == dtype and record.merged
    assert 1e-4 < record.merge_max_rel <= ds.merging.MERGE_TOLERANCES[dtype]
    with pytest.raises(ds.MergeError, match=f"merge is exact .* rounding of the merged weights to {dtype}.*"
                                            f"ds.merge\\(model.float\\(\\)\\).to\\({dtype}\\)"):
        ds.merge(shrunk, input_size=32, tolerance=1e-6)


def test_float64_network_is_checked_in_float64():
    merged = ds.merge(_tiny_shrunk().double(), input_size=32)
    assert ds.meta.info(merged).merge_max_rel < 1e-12


@pytest.mark.parametrize("damage,message", [
    ("nan_var", "layer 'blocks.1.0.bn2' \\(BatchNormAct2d\\) has NaN or infinite running_var"),
    ("negative_var", "layer 'blocks.1.0.bn2' \\(BatchNormAct2d\\) has negative running_var \\(min -0.5\\)"),
    ("nan_mean", "layer 'blocks.1.0.bn2' \\(BatchNormAct2d\\) has NaN or infinite running_mean"),
    ("inf_weight", "layer 'blocks.1.0.conv_pw' \\(Conv2d\\) has NaN or infinite weight"),
])
def test_broken_weights_are_named_before_merging(damage, message):
    model = calibrate_batchnorm(tiny_timm([["ds_r1_k3_s1_e1_c8"], ["ir_r1_k3_s2_e6_c16"]]), 32)
    with torch.no_grad():
        if damage == "nan_var":
            model.blocks[1][0].bn2.running_var[3] = float("nan")
        elif damage == "negative_var":
            model.blocks[1][0].bn2.running_var[3] = -0.5
        elif damage == "nan_mean":
            model.blocks[1][0].bn2.running_mean[0] = float("nan")
        else:
            model.blocks[1][0].conv_pw.weight[0, 0] = float("inf")
    for network in (model, ds.apply_pattern(model, [1, 1, 0, 1])):   # in a kept block and in a linear run
        with pytest.raises(ds.MergeError, match=message.replace("blocks.1.0.", "blocks.1.0.(stages.0.)?")
                           .replace("bn2' \\(BatchNormAct2d\\)", "(bn2|norms.1)' \\((BatchNormAct2d|BatchNorm2d)\\)")
                           .replace("conv_pw'", "(conv_pw|convs.0)'") + ".*weights are broken.*checkpoint"):
            ds.merge(network, input_size=32)


def test_merging_a_merged_network_is_refused():
    merged = ds.merge(_tiny_shrunk(), input_size=32)
    with pytest.raises(ds.MergeError, match="^this network is already merged .*merge the shrunk network it came from"):
        ds.merge(merged)


@pytest.mark.parametrize("size", [0, (32, 0), -1, (32,), "32"])
def test_merge_rejects_bad_input_size(size):
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        ds.merge(_tiny_shrunk(), input_size=size)


def test_merge_accepts_a_size_pair():
    merged = ds.merge(_tiny_shrunk(), input_size=(24, 40))
    assert ds.meta.info(merged).merge_max_rel < ds.MERGE_TOLERANCE
