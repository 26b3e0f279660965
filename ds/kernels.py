"""Exact kernel algebra: fold BatchNorm into a conv and compose linear convs into one.

An `Affine` is one convolution with bias: y = conv(x, weight, stride) + bias. Its `padding` is the
zero padding the original network applied for it; where that padding actually sits (the run's
first conv) is decided by the caller, see ds/linear.py. All arithmetic is done in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Affine:
    weight: Tensor  # [out, in / groups, k, k]
    bias: Tensor  # [out]
    stride: int
    padding: int
    groups: int = 1

    @property
    def kernel_size(self) -> int:
        return self.weight.shape[-1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    def is_pointwise(self) -> bool:
        return self.kernel_size == 1 and self.stride == 1 and self.padding == 0

    def is_depthwise(self) -> bool:
        return self.groups == self.in_channels == self.out_channels and self.groups > 1

    def dense(self) -> Tensor:
        """The weight as a full [out, in, k, k] kernel (block-diagonal for a grouped conv)."""
        return _block_diagonal(self.weight, self.groups)

    def spatial_sum(self) -> Tensor:
        """[out, in]: the kernel summed over space, i.e. its response to a constant input."""
        return _block_diagonal(self.weight.sum((2, 3), keepdim=True), self.groups)[:, :, 0, 0]


def _block_diagonal(weight: Tensor, groups: int) -> Tensor:
    if groups == 1:
        return weight
    out_channels, in_per_group = weight.shape[:2]
    rows = torch.arange(out_channels, device=weight.device)
    group = rows // (out_channels // groups)
    cols = group[:, None] * in_per_group + torch.arange(in_per_group, device=weight.device)
    dense = weight.new_zeros(out_channels, in_per_group * groups, *weight.shape[2:])
    dense[rows[:, None], cols] = weight
    return dense


def fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> Affine:
    """The conv followed by the norm (in eval mode) as one Affine, in float64."""
    weight = conv.weight.detach().double()
    bias = (conv.bias.detach().double() if conv.bias is not None
            else weight.new_zeros(weight.shape[0]))
    if norm is not None:
        std = torch.sqrt(norm.running_var.detach().double() + norm.eps)
        gamma = norm.weight.detach().double() if norm.weight is not None else torch.ones_like(std)
        beta = norm.bias.detach().double() if norm.bias is not None else torch.zeros_like(std)
        scale = gamma / std
        weight = weight * scale[:, None, None, None]
        bias = (bias - norm.running_mean.detach().double()) * scale + beta
    return Affine(weight, bias, conv.stride[0], conv.padding[0], conv.groups)


def compose(first: Affine, second: Affine) -> Affine:
    """second(first(x)) as one Affine, exact when the padding of both sits before `first`.

    A k1 conv with stride s1 followed by a k2 conv with stride s2 is one conv of size
    k1 + s1 (k2 - 1) and stride s1 s2; the bias of `first` reaches every position of `second`'s
    window because no zero padding sits between them.
    """
    if second.is_pointwise():
        weight = torch.einsum("om,mihw->oihw", second.spatial_sum(), first.dense())
    elif first.is_pointwise() and second.is_depthwise():
        weight = second.weight * first.dense()[:, :, 0, 0][:, :, None, None]
    elif first.is_pointwise():
        weight = torch.einsum("omhw,mi->oihw", second.dense(), first.dense()[:, :, 0, 0])
    else:
        # out[o, i] = sum_m second[o, m] placed at stride s1, convolved with first[m, i]
        weight = F.conv_transpose2d(second.dense(), first.dense(), stride=first.stride)
    bias = second.bias + second.spatial_sum() @ first.bias
    return Affine(weight, bias, first.stride * second.stride, first.padding + first.stride * second.padding)


def compose_all(affines: list[Affine]) -> Affine:
    result = affines[0]
    for affine in affines[1:]:
        result = compose(result, affine)
    return result


def add_identity(affine: Affine) -> Affine:
    """Fold a skip connection x + f(x) into f's kernel: +1 at the centre of each channel's own tap."""
    k, p = affine.kernel_size, affine.padding
    if affine.stride != 1 or affine.in_channels != affine.out_channels or k != 2 * p + 1:
        raise ValueError(
            f"a skip connection needs a stride-1, same-size map with equal channels; got kernel {k}, "
            f"padding {p}, stride {affine.stride}, channels {affine.in_channels}->{affine.out_channels}"
        )
    weight = affine.dense().clone()
    channels = torch.arange(affine.out_channels)
    weight[channels, channels, p, p] += 1.0
    return Affine(weight, affine.bias, 1, p)


def to_conv(affine: Affine, padding: int, like: nn.Conv2d) -> nn.Conv2d:
    """A new nn.Conv2d holding the Affine, with the given zero padding, in `like`'s dtype and device."""
    conv = nn.Conv2d(affine.in_channels, affine.out_channels, affine.kernel_size, stride=affine.stride,
                     padding=padding, groups=affine.groups, bias=True,
                     device=like.weight.device, dtype=like.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(affine.weight)
        conv.bias.copy_(affine.bias)
    return conv
