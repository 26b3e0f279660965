"""create_model and switches: supported backbones, CIFAR strides, the paper's indexing, errors."""
import pytest
import torch

import ds

SUPPORTED = [f"mobilenetv2_{w}" for w in ("035", "050", "075", "100", "140", "110d", "120d")] + [
    f"efficientnet_lite{i}" for i in range(5)] + ["mnasnet_100", "tv_mobilenet_v2", "tv_mobilenet_v2_075"]


@pytest.mark.parametrize("name", SUPPORTED)
def test_supported_backbones(name):
    model = ds.create_model(name, num_classes=10, input_size=32)
    switches = ds.switches(model)
    assert [s.kind for s in switches[:1] + switches[-1:]] == ["stem", "head"]
    assert all(s.kind == "block" for s in switches[1:-1])
    assert all(s.switchable for s in switches)
    assert [s.index for s in switches] == list(range(len(switches)))


def test_mobilenetv2_140_switches_follow_the_paper():
    switches = ds.switches(ds.create_model("mobilenetv2_140"))
    assert len(switches) == 19
    block1, block2, head = switches[1], switches[2], switches[18]
    assert (block1.block_type, block1.expansion, block1.in_channels, block1.out_channels) == (
        "DepthwiseSeparableConv", 1.0, 48, 24)
    assert (block2.block_type, block2.expansion, block2.stride, block2.kernel_size) == ("InvertedResidual", 6.0, 2, 3)
    assert block2.act_paths == ("blocks.1.0.bn1.act", "blocks.1.0.bn2.act")
    assert [s.skip for s in switches[2:18]].count(True) == 10  # 16 IR blocks, 6 change shape
    assert (head.path, head.in_channels, head.out_channels) == ("conv_head", 448, 1792)


@pytest.mark.parametrize("name", ["mobilenetv2_140", "tv_mobilenet_v2"])
def test_cifar_strides(name):
    small, large = ds.create_model(name, input_size=32), ds.create_model(name, input_size=224)
    assert [s.stride for s in ds.switches(small)].count(2) == [s.stride for s in ds.switches(large)].count(2) - 2
    features = small.forward_features if hasattr(small, "forward_features") else small.features
    with torch.no_grad():
        assert features(torch.randn(1, 3, 32, 32)).shape[-2:] == (4, 4)
    assert (ds.meta.info(small).backbone, ds.meta.info(small).input_size) == (name, 32)


def test_unknown_model_name():
    with pytest.raises(ds.UnsupportedModelError, match="unknown model name 'mobilenetv9'"):
        ds.create_model("mobilenetv9")


def test_unsupported_model_names_first_module():
    with pytest.raises(ds.UnsupportedModelError, match="model ResNet: its first module 'conv1' \\(Conv2d\\)"):
        ds.create_model("resnet18")


def test_unsupported_block_is_named():
    with pytest.raises(ds.UnsupportedModelError, match="module 'blocks.4.0' \\(CondConvResidual\\)"):
        ds.create_model("efficientnet_cc_b0_4e")


def test_input_size_pair():
    model = ds.create_model("mobilenetv2_035", num_classes=10, input_size=(32, 48))   # both <= 64: CIFAR strides
    assert ds.meta.info(model).input_size == (32, 48)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 48)).shape[-2:] == (4, 6)
    wide = ds.create_model("mobilenetv2_035", num_classes=10, input_size=(32, 96))   # one side > 64: ImageNet strides
    with torch.no_grad():
        assert wide.forward_features(torch.randn(1, 3, 32, 96)).shape[-2:] == (1, 3)


@pytest.mark.parametrize("size", [0, -32, (0, 32), (32, -1), (32,), (32, 32, 3), 32.0, "32", True, None])
def test_bad_input_size_is_a_clear_error(size):
    with pytest.raises(ValueError, match="input_size must be a positive int .* or a \\(height, width\\) pair"):
        ds.create_model("mobilenetv2_035", num_classes=10, input_size=size)


@pytest.mark.parametrize("classes", [0, -1, 10.0, True])
def test_bad_num_classes_is_a_clear_error(classes):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        ds.create_model("mobilenetv2_035", num_classes=classes, input_size=32)
