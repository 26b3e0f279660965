"""Build the backbones ds supports, randomly initialized (no weights are downloaded)."""
from __future__ import annotations

import re

import timm
from torch import nn
from torchvision.models import mobilenet_v2

from .anatomy import parse_units
from .cost import image_size
from .errors import UnsupportedModelError
from .meta import info, set_info
from .paths import get_module

_TORCHVISION_MOBILENET_V2 = re.compile(r"^tv_mobilenet_v2(?:_(\d{3}))?$")
CIFAR_MAX_INPUT = 64


def create_model(name: str, num_classes: int = 1000, input_size: int | tuple[int, int] = 224) -> nn.Module:
    """A randomly initialized backbone by name.

    Names: any timm model whose layout ds reads (mobilenetv2_035..140, mobilenetv2_110d/120d,
    efficientnet_lite0..4, mnasnet_100, ...) and torchvision's MobileNetV2 as `tv_mobilenet_v2`
    (width 1.0) or `tv_mobilenet_v2_075` etc. (width 0.75).

    `input_size` is an int or an (height, width) pair of positive ints. When both sides are 64 px or
    less (CIFAR), the stem and the first stride-2 block are set to stride 1, as CIFAR variants of
    MobileNetV2 do, so a 32 px input reaches the head at 4 x 4 instead of 1 x 1. The model records
    its name and sizes in `ds.meta.info(model)`.

    The classifier's weights are drawn from N(0, 0.01), its bias zero, as torchvision initializes
    its own (`_init_classifier`).
    """
    height, width = image_size(input_size)   # raises a ValueError naming a bad size
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = _build(name, num_classes)
    _init_classifier(model)
    units = parse_units(model)  # raises for layouts ds cannot read
    if max(height, width) <= CIFAR_MAX_INPUT:
        _use_cifar_strides(model, units)
    input_size = (height, width) if isinstance(input_size, (tuple, list)) else height
    return set_info(model, backbone=name, num_classes=num_classes, input_size=input_size)


def model_name(model: nn.Module) -> str | None:
    """The name the model was built under (ds or timm), if known."""
    name = info(model).backbone
    if name is None:
        name = getattr(model, "pretrained_cfg", {}).get("architecture")
    return name


def _build(name: str, num_classes: int) -> nn.Module:
    match = _TORCHVISION_MOBILENET_V2.match(name)
    if match:
        width = int(match.group(1)) / 100 if match.group(1) else 1.0
        return mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width)
    if not timm.is_model(name):
        raise UnsupportedModelError(
            f"unknown model name {name!r}: give a timm model name (e.g. mobilenetv2_140, "
            f"efficientnet_lite0, mnasnet_100) or tv_mobilenet_v2[_075]"
        )
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def _init_classifier(model: nn.Module) -> None:
    """timm draws a classifier uniformly within +-1/sqrt(num_classes): with 10 classes the logits of
    a new network have a standard deviation of about 5 (a first-epoch loss near 5.5 instead of
    ln 10 = 2.3), and a short CIFAR schedule spends its first epochs undoing that.
    benchmarks/classifier_init.py (4,000 images at 24 px, 12 epochs, 2 seeds): 33.5% and 30.2% test
    top-1 with timm's init, 39.7% and 38.7% with this one. N(0, 0.01) keeps the initial logits near
    zero for any number of classes."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(classifier, nn.Linear):
        nn.init.normal_(classifier.weight, 0.0, 0.01)
        nn.init.zeros_(classifier.bias)


def _use_cifar_strides(model: nn.Module, units) -> None:
    """Stride 1 in the stem and in the first block that has stride 2."""
    stem_conv = get_module(model, units[0].ops[0].conv)
    _set_stride_one(stem_conv)
    for unit in units[1:]:
        convs = [get_module(model, op.conv) for op in unit.ops]
        strided = [conv for conv in convs if conv.stride[0] == 2]
        if strided:
            _set_stride_one(strided[0])
            block = get_module(model, unit.path)
            if hasattr(block, "stride"):  # torchvision's InvertedResidual records it
                block.stride = 1
            return


def _set_stride_one(conv: nn.Conv2d) -> None:
    k = conv.kernel_size[0]
    if conv.padding[0] != (k - 1) // 2:
        raise UnsupportedModelError(
            f"cannot switch a {k}x{k} conv with padding {conv.padding[0]} to stride 1 and keep its "
            f"output size; ds expects padding (k - 1) / 2"
        )
    conv.stride = (1, 1)
