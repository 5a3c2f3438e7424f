"""BiSeNet V2 (Yu, Gao, Wang, Yu, Shen & Sang, 2021, "BiSeNet V2: Bilateral Network with Guided Aggregation
for Real-time Semantic Segmentation", IJCV 129; arXiv:2004.02147).

Two branches read the image. The Detail Branch is a VGG-like stack of plain
3x3 convolutions, wide and shallow, down to stride 8 (64, 64, 128 channels).
The Semantic Branch is narrow and deep (16, 32, 64, 128 channels: lambda =
1/4 of the Detail Branch): a Stem (a strided conv, then a strided conv path
and a max-pool path concatenated), Gather-and-Expansion layers (a 3x3 conv,
a depthwise 3x3 conv expanding the channels 6 times, a 1x1 projection; the
strided ones add a second depthwise conv and a depthwise-separable shortcut)
down to stride 32, and a Context Embedding block (global average pooling,
added back to every position). The Guided Aggregation layer lets each branch
gate the other (the semantic features, upsampled, gate the detail features
through a sigmoid at stride 8; the detail features, downsampled, are gated by
the semantic ones at stride 32), sums the two and convolves.

Booster training: during training four auxiliary heads, with the structure of
the segmentation head, read the Stem, the stride-8 and stride-16 stages and
the last Gather-and-Expansion layer before the Context Embedding; they are
discarded at inference. The paper weights every auxiliary loss 1 (set
``train.aux_weight: 1.0``). The paper trains from scratch, which is why it is
in this zoo.

Choices the paper leaves open, taken from the authors' released models and
mmsegmentation's: the head is conv3x3-BN-ReLU, dropout 0.1, conv1x1; its
middle width is 1024 for the main head (``head_channels``) and 16, 64, 256,
1024 for the four boosters; the aggregation ends with conv-BN-ReLU. Where the
paper draws a plain 3x3 convolution (the last layer of the Context Embedding)
it is one. The network pads its input to a multiple of 32, its stride.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semseg.models.realtime.blocks import conv_bn, kaiming_init, resize
from semseg.models.realtime.common import RealtimeSegModel, refuse_pretrained
from semseg.models.registry import register_model

DETAIL_CHANNELS = (64, 64, 128)
SEMANTIC_CHANNELS = (16, 32, 64, 128)
EXPANSION = 6
BOOSTER_CHANNELS = (16, 64, 256, 1024)  # middle widths of the four auxiliary heads


class Stem(nn.Module):
    """Stride 4: a strided conv, then (1x1 conv, strided 3x3 conv) beside a max-pool, concatenated and fused."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.first = conv_bn(3, out_channels, 3, stride=2)
        self.conv_path = nn.Sequential(conv_bn(out_channels, out_channels // 2, 1),
                                       conv_bn(out_channels // 2, out_channels, 3, stride=2))
        self.pool_path = nn.MaxPool2d(3, stride=2, padding=1)
        self.fuse = conv_bn(2 * out_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.first(x)
        return self.fuse(torch.cat([self.conv_path(x), self.pool_path(x)], dim=1))


class GatherExpansion(nn.Module):
    """Gather-and-Expansion layer (the paper's Fig. 5b for stride 1, 5c for stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        mid = in_channels * EXPANSION
        layers = [conv_bn(in_channels, in_channels, 3),
                  conv_bn(in_channels, mid, 3, stride=stride, groups=in_channels, relu=False)]
        if stride == 2:
            layers.append(conv_bn(mid, mid, 3, groups=mid, relu=False))
        layers.append(conv_bn(mid, out_channels, 1, relu=False))
        self.body = nn.Sequential(*layers)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:  # depthwise-separable: a strided depthwise 3x3 conv, then a 1x1 conv
            self.shortcut = nn.Sequential(conv_bn(in_channels, in_channels, 3, stride=stride, groups=in_channels, relu=False),
                                          conv_bn(in_channels, out_channels, 1, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ContextEmbedding(nn.Module):
    """Global average pooling, BN, 1x1 conv-BN-ReLU, added to every position, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.project = conv_bn(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        context = self.project(self.norm(x.mean(dim=(2, 3), keepdim=True)))
        return self.out(x + context)


class SemanticBranch(nn.Module):
    """Stem (stride 4), GE stages at strides 8, 16, 32, Context Embedding; returns the booster inputs too."""

    def __init__(self, channels: tuple[int, ...] = SEMANTIC_CHANNELS) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.stem = Stem(c1)
        self.stage3 = nn.Sequential(GatherExpansion(c1, c2, 2), GatherExpansion(c2, c2))
        self.stage4 = nn.Sequential(GatherExpansion(c2, c3, 2), GatherExpansion(c3, c3))
        self.stage5 = nn.Sequential(GatherExpansion(c3, c4, 2), *(GatherExpansion(c4, c4) for _ in range(3)))
        self.context = ContextEmbedding(c4)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """-> (stride-32 features, [stem, stage 3, stage 4, stage 5 outputs] for the booster heads)."""
        s2 = self.stem(x)
        s3 = self.stage3(s2)
        s4 = self.stage4(s3)
        s5 = self.stage5(s4)
        return self.context(s5), [s2, s3, s4, s5]


class GuidedAggregation(nn.Module):
    """Bilateral Guided Aggregation (the paper's Fig. 6): each branch gates the other at its own resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.detail_keep = nn.Sequential(conv_bn(channels, channels, 3, groups=channels, relu=False),
                                         nn.Conv2d(channels, channels, 1, bias=False))
        self.detail_down = nn.Sequential(conv_bn(channels, channels, 3, stride=2, relu=False),
                                         nn.AvgPool2d(3, stride=2, padding=1))
        self.semantic_up = conv_bn(channels, channels, 3, relu=False)
        self.semantic_keep = nn.Sequential(conv_bn(channels, channels, 3, groups=channels, relu=False),
                                           nn.Conv2d(channels, channels, 1, bias=False))
        self.fuse = conv_bn(channels, channels, 3)

    def forward(self, detail: Tensor, semantic: Tensor) -> Tensor:
        """``detail: [N,C,H/8,W/8]``, ``semantic: [N,C,H/32,W/32]`` -> ``[N,C,H/8,W/8]``."""
        size = detail.shape[-2:]
        high = self.detail_keep(detail) * torch.sigmoid(resize(self.semantic_up(semantic), size))
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        return self.fuse(high + resize(low, size))


class SegHead(nn.Module):
    """conv3x3-BN-ReLU to ``mid_channels``, dropout 0.1, conv1x1 to the classes; the booster heads are the same."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(in_channels, mid_channels, 3), nn.Dropout2d(0.1),
                                  nn.Conv2d(mid_channels, num_classes, 1))

    def forward(self, x: Tensor, size: tuple[int, int] | Tensor) -> Tensor:
        return resize(self.body(x), size)


class BiSeNetV2Backbone(nn.Module):
    """Detail Branch, Semantic Branch and Guided Aggregation: the whole feature extractor."""

    def __init__(self) -> None:
        super().__init__()
        c1, c2, c3 = DETAIL_CHANNELS
        self.detail = nn.Sequential(
            conv_bn(3, c1, 3, stride=2), conv_bn(c1, c1, 3),
            conv_bn(c1, c2, 3, stride=2), conv_bn(c2, c2, 3), conv_bn(c2, c2, 3),
            conv_bn(c2, c3, 3, stride=2), conv_bn(c3, c3, 3), conv_bn(c3, c3, 3),
        )
        self.semantic = SemanticBranch()
        self.aggregate = GuidedAggregation(c3)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        semantic, boosted = self.semantic(x)
        return self.aggregate(self.detail(x), semantic), boosted


class BiSeNetV2(nn.Module):
    """``forward(x, with_aux)``: ``{"out"}``, plus ``"aux"`` ... ``"aux4"`` (the booster heads, shallow to deep)."""

    training_heads = ("boosters",)  # run by forward_aux only; an inference export leaves them out

    def __init__(self, num_classes: int, head_channels: int = 1024) -> None:
        super().__init__()
        self.backbone = BiSeNetV2Backbone()
        self.head = SegHead(DETAIL_CHANNELS[-1], head_channels, num_classes)
        self.boosters = nn.ModuleList(SegHead(c, mid, num_classes) for c, mid in zip(SEMANTIC_CHANNELS, BOOSTER_CHANNELS))
        kaiming_init(self)

    def forward(self, x: Tensor, with_aux: bool = False) -> dict[str, Tensor]:
        size = x.shape[-2:]
        features, boosted = self.backbone(x)
        outputs = {"out": self.head(features, size)}
        if with_aux:
            for i, (head, feature) in enumerate(zip(self.boosters, boosted)):
                outputs["aux" if i == 0 else f"aux{i + 1}"] = head(feature, size)
        return outputs


@register_model
def bisenetv2(num_classes: int, pretrained: bool = False, head_channels: int = 1024) -> RealtimeSegModel:
    """BiSeNet V2 with its four booster heads for training; ``head_channels``: the main head's middle width."""
    refuse_pretrained("bisenetv2", pretrained)
    return RealtimeSegModel(BiSeNetV2(num_classes, head_channels), num_classes, encoder_path="net.backbone",
                            size_divisor=32, has_aux=True)
