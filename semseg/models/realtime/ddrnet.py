"""DDRNet-23-slim (Hong, Pan, Sun & Jia, 2021, "Deep Dual-resolution Networks for Real-time and Accurate
Semantic Segmentation of Road Scenes", arXiv:2101.06085).

A ResNet-like stem (two strided 3x3 convs, then basic-block stages at strides
4 and 8) splits into two branches that run side by side: a high-resolution
branch that stays at stride 8 with 64 channels, and a low-resolution branch
that goes on to strides 16, 32 and 64 (128, 256, 512 channels). After each of
the next two stages the branches exchange information (bilateral fusion): the
low branch is compressed by a 1x1 conv-BN and upsampled into the high one, the
high branch is downsampled by strided 3x3 convs into the low one. A
Deep Aggregation Pyramid Pooling Module (DAPPM) turns the stride-64 features
into context: average pools of growing size (5x5/2, 9x9/4, 17x17/8 and global)
each upsampled and added to the previous scale before its 3x3 conv, so the
scales build on each other; their concatenation is compressed and added to a
shortcut. The context, upsampled to stride 8, is added to the high branch, and
a head (BN-ReLU-conv3x3, BN-ReLU, conv1x1) gives the logits at stride 8.

Deep supervision: an auxiliary head reads the high branch after the first
fusion; the paper weights its loss 0.4 (semseg's default ``train.aux_weight``).
The "slim" widths: 32 stem channels, 128 in the pyramid, 64 in the heads.
Every stage of two blocks ends in a block without its final ReLU, so the
fusions add to the pre-activation features and the ReLU follows, as in the
authors' released network.
The network pads its input to a multiple of 32, so that every fusion of the
branches (strides 8, 16 and 32) lines up exactly at any input size. The
stride-64 stage is left to round up: it only feeds the pooling pyramid (5x5 to
global averages), and padding to 64 would cost 11-14% more pixels at CamVid's
288x384 and 360x480 crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semseg.models.realtime.blocks import (BasicBlock, Bottleneck, PreActHead, bn_relu_conv, conv_bn, kaiming_init,
                                            res_layer, resize)
from semseg.models.realtime.common import RealtimeSegModel, refuse_pretrained
from semseg.models.registry import register_model


class DAPPM(nn.Module):
    """Deep Aggregation Pyramid Pooling: ``in_channels`` at the deepest stride -> ``out_channels``, same size.

    Scale 0 is a 1x1 conv; scales 1-4 average-pool (5/2, 9/4, 17/8, global),
    1x1-convolve and upsample. Each upsampled scale is added to the previous
    processed one and convolved (3x3): hierarchical, scale by scale.
    """

    def __init__(self, in_channels: int, branch_channels: int, out_channels: int) -> None:
        super().__init__()
        pools = [nn.AvgPool2d(k, stride=s, padding=k // 2) for k, s in ((5, 2), (9, 4), (17, 8))]
        self.scales = nn.ModuleList([bn_relu_conv(in_channels, branch_channels)])
        self.scales.extend(nn.Sequential(pool, bn_relu_conv(in_channels, branch_channels)) for pool in pools)
        self.scales.append(bn_relu_conv(in_channels, branch_channels))  # after global pooling
        self.process = self._make_process(branch_channels)
        self.compress = bn_relu_conv(5 * branch_channels, out_channels)
        self.shortcut = bn_relu_conv(in_channels, out_channels)

    def _make_process(self, channels: int) -> nn.Module:
        return nn.ModuleList(bn_relu_conv(channels, channels, 3) for _ in range(4))

    def pooled(self, x: Tensor) -> list[Tensor]:
        """The five scales: the 1x1 conv and three pooled ones upsampled (``[N,branch_channels,H,W]``), the global one."""
        size = x.shape[-2:]
        scales = [self.scales[0](x)]
        scales += [resize(self.scales[i](x), size) for i in (1, 2, 3)]
        scales.append(self.scales[4](x.mean(dim=(2, 3), keepdim=True)))  # [N,C,1,1]: broadcast where added
        return scales

    def aggregate(self, scales: list[Tensor]) -> list[Tensor]:
        out = [scales[0]]
        for process, scale in zip(self.process, scales[1:]):
            out.append(process(scale + out[-1]))
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.compress(torch.cat(self.aggregate(self.pooled(x)), dim=1)) + self.shortcut(x)


class DualResolution(nn.Module):
    """The layers DDRNet and PIDNet share: a stem to stride 8, then a high-resolution branch (``high3`` to
    ``high5``, stride 8, PIDNet's P branch) and a low-resolution one (``low3`` to ``low5``, strides 16, 32,
    64, PIDNet's I branch), and the 1x1 conv-BN compressions that carry the low branch into the high one."""

    def __init__(self, channels: int, blocks: int, low_blocks: int, low5_blocks: int) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(
            conv_bn(3, c, 3, stride=2), conv_bn(c, c, 3, stride=2),
            res_layer(BasicBlock, c, c, blocks), nn.ReLU(),
            res_layer(BasicBlock, c, 2 * c, blocks, stride=2),
        )
        self.low3 = res_layer(BasicBlock, 2 * c, 4 * c, low_blocks, stride=2)
        self.low4 = res_layer(BasicBlock, 4 * c, 8 * c, low_blocks, stride=2)
        self.low5 = res_layer(Bottleneck, 8 * c, 8 * c, low5_blocks, stride=2)
        self.high3 = res_layer(BasicBlock, 2 * c, 2 * c, blocks)
        self.high4 = res_layer(BasicBlock, 2 * c, 2 * c, blocks)
        self.high5 = res_layer(Bottleneck, 2 * c, 2 * c, 1)
        self.compress3 = conv_bn(4 * c, 2 * c, 1, relu=False)
        self.compress4 = conv_bn(8 * c, 2 * c, 1, relu=False)


class DDRNetBackbone(DualResolution):
    """Stem, the two branches with their two bilateral fusions, DAPPM; returns (stride-8 features, aux features)."""

    def __init__(self, channels: int = 32, ppm_channels: int = 128, blocks: int = 2) -> None:
        super().__init__(channels, blocks, low_blocks=blocks, low5_blocks=1)
        c = channels
        # bilateral fusion, high -> low: strided convs (low -> high: the compressions, upsampled)
        self.down3 = conv_bn(2 * c, 4 * c, 3, stride=2, relu=False)
        self.down4 = nn.Sequential(conv_bn(2 * c, 4 * c, 3, stride=2), conv_bn(4 * c, 8 * c, 3, stride=2, relu=False))
        self.spp = DAPPM(16 * c, ppm_channels, 4 * c)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.stem(x))
        size = x.shape[-2:]
        low = self.low3(x)
        high = self.high3(x)
        low, high = low + self.down3(F.relu(high)), high + resize(self.compress3(F.relu(low)), size)
        aux = high
        low = self.low4(F.relu(low))
        high = self.high4(F.relu(high))
        low, high = low + self.down4(F.relu(high)), high + resize(self.compress4(F.relu(low)), size)
        high = self.high5(F.relu(high))
        context = resize(self.spp(self.low5(F.relu(low))), size)
        return high + context, aux


class DDRNet(nn.Module):
    """``forward(x, with_aux)``: ``{"out"}``, plus ``"aux"`` (the head on the high branch after the first fusion)."""

    training_heads = ("aux_head",)  # run by forward_aux only; an inference export leaves them out

    def __init__(self, num_classes: int, channels: int = 32, ppm_channels: int = 128, head_channels: int = 64) -> None:
        super().__init__()
        self.backbone = DDRNetBackbone(channels, ppm_channels)
        self.head = PreActHead(4 * channels, head_channels, num_classes)
        self.aux_head = PreActHead(2 * channels, head_channels, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor, with_aux: bool = False) -> dict[str, Tensor]:
        size = x.shape[-2:]
        features, aux = self.backbone(x)
        outputs = {"out": resize(self.head(features), size)}
        if with_aux:
            outputs["aux"] = resize(self.aux_head(aux), size)
        return outputs


@register_model
def ddrnet_23_slim(num_classes: int, pretrained: bool = False) -> RealtimeSegModel:
    """DDRNet-23-slim with its auxiliary head for training."""
    refuse_pretrained("ddrnet_23_slim", pretrained)
    return RealtimeSegModel(DDRNet(num_classes), num_classes, encoder_path="net.backbone", size_divisor=32, has_aux=True)
