"""Shared builders: tiny random networks and BatchNorm statistics that are not the defaults."""
import pytest
import torch
import torchvision
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.efficientnet import EfficientNet
from torch import nn

torch.set_num_threads(1)  # tests share a small machine; small convs gain nothing from threads


def tiny_timm(arch: list[list[str]], act_layer=None, stem_size: int = 8) -> nn.Module:
    """A small timm EfficientNet from a block string list, e.g. [['ir_r2_k5_s2_e6_c16']]."""
    return EfficientNet(decode_arch_def(arch), num_classes=10, stem_size=stem_size, num_features=32,
                        act_layer=act_layer)


def tiny_torchvision(settings: list[list[int]]) -> nn.Module:
    """A small torchvision MobileNetV2 from (expansion, channels, repeats, stride) rows."""
    return torchvision.models.mobilenet_v2(num_classes=10, inverted_residual_setting=settings)


def scramble_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Arbitrary BN statistics and affine parameters: merging must be exact for any of them."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.rand(c, generator=generator) * 2 - 1)
            module.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(c, generator=generator) - 0.5)
    return model.eval()


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, input_size=32, seed: int = 0) -> nn.Module:
    """Realistic BN statistics (measured on random images), then random affine parameters.

    Arbitrary statistics can make a deep random network so ill-conditioned that float32 rounding
    alone moves its output by 1e-4; measured statistics keep activations at unit scale, as in a
    trained network, so float32 comparisons are meaningful.
    """
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
    model.train()
    size = (input_size, input_size) if isinstance(input_size, int) else input_size
    for _ in range(3):
        model(torch.randn(16, 3, *size, generator=generator))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model.eval()


@pytest.fixture
def mbv2_cifar():
    import ds
    return calibrate_batchnorm(ds.create_model("mobilenetv2_140", num_classes=10, input_size=32))


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """The whole study on the `tiny` profile (CIFAR-10 from DS_DATA, else synthetic), run once per
    session with papermill into a temporary directory, its book built there with -W."""
    from ds.study.runner import run_study
    return run_study("tiny", run_root=tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def tiny_merged():
    """A merged random-weight mobilenetv2_035 at 16 px (base, BN folded) and its merged DS-F."""
    import ds
    torch.manual_seed(0)
    model = ds.create_model("mobilenetv2_035", num_classes=10, input_size=16).eval()
    return {"base": ds.merge(model, input_size=16), "DS-F": ds.merge(ds.apply_pattern(model, "DS-F"), input_size=16)}
