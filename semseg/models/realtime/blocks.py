"""Layers the real-time families share: convolution + BatchNorm units, ResNet blocks, a pre-activation head.

The residual blocks are those of ResNet (He et al., 2016, "Deep Residual
Learning for Image Recognition"), as DDRNet and PIDNet use them: a block may
leave out its final ReLU (``relu_out=False``) so that the two-branch networks
can add a fused feature to the pre-activation sum, and the last block of every
layer of two or more blocks does so. ``Bottleneck`` expands by 2, not 4 (DDRNet's choice, kept by
PIDNet).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def resize(x: Tensor, size: tuple[int, int] | Tensor) -> Tensor:
    """Bilinear resize to ``size`` (``align_corners=False``), the upsampling of every real-time family here."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
            relu: bool = True, dilation: int = 1) -> nn.Sequential:
    """Convolution (no bias), BatchNorm, and ReLU when ``relu``; 'same' padding."""
    padding = dilation * (kernel_size // 2)
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int = 1, groups: int = 1) -> nn.Sequential:
    """Pre-activation unit: BatchNorm, ReLU, convolution (no bias); DDRNet's and PIDNet's pyramids and heads."""
    return nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False),
    )


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return conv_bn(in_channels, out_channels, 1, stride, relu=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut; ``out_channels`` out."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, relu_out: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(in_channels, channels, 3, stride), conv_bn(channels, channels, 3, relu=False))
        self.shortcut = _shortcut(in_channels, channels, stride)
        self.relu_out = relu_out

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x) + self.shortcut(x)
        return F.relu(out) if self.relu_out else out


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (by 2) and a shortcut; ``2 * channels`` out."""

    expansion = 2

    def __init__(self, in_channels: int, channels: int, stride: int = 1, relu_out: bool = True) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.body = nn.Sequential(
            conv_bn(in_channels, channels, 1),
            conv_bn(channels, channels, 3, stride),
            conv_bn(channels, out_channels, 1, relu=False),
        )
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.relu_out = relu_out

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x) + self.shortcut(x)
        return F.relu(out) if self.relu_out else out


def res_layer(block: type[BasicBlock | Bottleneck], in_channels: int, channels: int, blocks: int,
              stride: int = 1) -> nn.Sequential:
    """``blocks`` residual blocks, the first with ``stride``; the last one, when not also the first, without
    its final ReLU (DDRNet's layers: a one-block layer keeps it)."""
    layers = []
    for i in range(blocks):
        layers.append(block(in_channels, channels, stride if i == 0 else 1, relu_out=i == 0 or i < blocks - 1))
        in_channels = channels * block.expansion
    return nn.Sequential(*layers)


class PreActHead(nn.Module):
    """DDRNet's and PIDNet's segmentation head: BN-ReLU-conv3x3, BN-ReLU, conv1x1 (with bias) to ``out_channels``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = bn_relu_conv(in_channels, mid_channels, 3)
        self.norm = nn.Sequential(nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(mid_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.norm(self.conv(x)))


def kaiming_init(module: nn.Module) -> None:
    """He-normal (fan-out) convolutions, BatchNorm at scale 1 and shift 0: the initialization these papers train from."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
