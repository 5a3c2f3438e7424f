"""PIDNet-S (Xu, Xiong & Bhattacharyya, 2023, "PIDNet: A Real-time Semantic Segmentation Network Inspired by
PID Controllers", CVPR 2023; arXiv:2206.02066).

DDRNet's two branches plus a third, after a PID controller: the P (proportional)
branch keeps detail at stride 8, the I (integral) branch aggregates context down
to stride 64, and the D (derivative) branch, also at stride 8, learns where the
boundaries are. After each of two stages the P branch takes in the I branch
through a Pixel-attention-guided fusion (Pag: a per-pixel sigmoid of the dot
product of the two embeddings chooses between them), and the D branch adds a
3x3 projection of the I branch. The I branch ends in a Parallel Aggregation
PPM (PAPPM: DDRNet's pyramid scales, processed in parallel by one grouped 3x3
conv instead of one after another). A Light Boundary-attention-guided fusion
(Light-Bag) mixes P and I where the D branch's sigmoid says "boundary" and
"not boundary" respectively, and the head gives the logits at stride 8.

Training heads: a semantic head on the P branch after the first fusion
(``"aux"``, loss weight 0.4 in the paper: semseg's default
``train.aux_weight``) and a boundary head on the D branch after the second
(``"boundary"``, one channel of logits). The boundary head is trained with the
paper's weighted binary cross-entropy (weight 20) against boundaries derived
from the label map, and the main logits get the paper's boundary-awareness
cross-entropy (weight 1) on the pixels the boundary head marks (sigmoid >
0.8); both are in :mod:`semseg.losses.boundary`, added by the trainer when
the model returns ``"boundary"``.

PIDNet-S widths: 32 stem channels, 2 blocks in the stem and P stages, 3 in
the I stages, 96 in the pyramid, 128 in the heads. The network pads its input
to a multiple of 32, for the reason given in :mod:`semseg.models.realtime.ddrnet`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semseg.models.realtime.blocks import (BasicBlock, Bottleneck, PreActHead, bn_relu_conv, conv_bn, kaiming_init,
                                            res_layer, resize)
from semseg.models.realtime.common import RealtimeSegModel, refuse_pretrained
from semseg.models.realtime.ddrnet import DAPPM, DualResolution
from semseg.models.registry import register_model


class PAPPM(DAPPM):
    """Parallel Aggregation PPM: DAPPM's scales, each added to scale 0, processed together by one grouped 3x3 conv."""

    def _make_process(self, channels: int) -> nn.Module:
        return bn_relu_conv(4 * channels, 4 * channels, 3, groups=4)

    def aggregate(self, scales: list[Tensor]) -> list[Tensor]:
        base = scales[0]
        return [base, self.process(torch.cat([scale + base for scale in scales[1:]], dim=1))]


class PagFM(nn.Module):
    """Pixel-attention-guided fusion: ``sigma = sigmoid(<f_p(p), f_i(i)>)`` per pixel, ``sigma * i + (1 - sigma) * p``."""

    def __init__(self, channels: int, embed_channels: int) -> None:
        super().__init__()
        self.embed_p = conv_bn(channels, embed_channels, 1, relu=False)
        self.embed_i = conv_bn(channels, embed_channels, 1, relu=False)

    def forward(self, p: Tensor, i: Tensor) -> Tensor:
        """``p: [N,C,H,W]`` (stride 8), ``i: [N,C,h,w]`` (a deeper stride) -> ``[N,C,H,W]``."""
        size = p.shape[-2:]
        sigma = torch.sigmoid((self.embed_p(p) * resize(self.embed_i(i), size)).sum(dim=1, keepdim=True))
        return sigma * resize(i, size) + (1 - sigma) * p


class LightBag(nn.Module):
    """Light boundary-attention-guided fusion: with ``sigma = sigmoid(d)``,
    ``f_p((1 - sigma) * i + p) + f_i(i + sigma * p)``, ``f`` being 1x1 conv-BN."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.f_p = conv_bn(in_channels, out_channels, 1, relu=False)
        self.f_i = conv_bn(in_channels, out_channels, 1, relu=False)

    def forward(self, p: Tensor, i: Tensor, d: Tensor) -> Tensor:
        sigma = torch.sigmoid(d)
        return self.f_p((1 - sigma) * i + p) + self.f_i(i + sigma * p)


class PIDNetBackbone(DualResolution):
    """Stem and the P, I, D branches; returns (fused stride-8 features, P features for "aux", D features for "boundary").

    The P and I branches are DDRNet's high- and low-resolution branches
    (``high*``, ``low*``), with 3 blocks per I stage and 2 in the last.
    """

    def __init__(self, channels: int = 32, ppm_channels: int = 96, p_blocks: int = 2, i_blocks: int = 3) -> None:
        super().__init__(channels, p_blocks, low_blocks=i_blocks, low5_blocks=2)
        c = channels
        # D branch: stride 8 (PIDNet-S/M: a basic block, then bottlenecks)
        self.d3 = BasicBlock(2 * c, c, relu_out=False)
        self.d4 = res_layer(Bottleneck, c, c, 1)
        self.d5 = res_layer(Bottleneck, 2 * c, 2 * c, 1)
        # I -> P: the compressions, then Pag; I -> D: a 3x3 conv-BN, upsampled and added
        self.pag3 = PagFM(2 * c, c)
        self.pag4 = PagFM(2 * c, c)
        self.diff3 = conv_bn(4 * c, c, 3, relu=False)
        self.diff4 = conv_bn(8 * c, 2 * c, 3, relu=False)
        self.spp = PAPPM(16 * c, ppm_channels, 4 * c)
        self.bag = LightBag(4 * c, 4 * c)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = F.relu(self.stem(x))
        size = x.shape[-2:]
        i = F.relu(self.low3(x))
        p = self.pag3(self.high3(x), self.compress3(i))
        d = self.d3(x) + resize(self.diff3(i), size)
        p_aux = p
        i = F.relu(self.low4(i))
        p = self.pag4(self.high4(F.relu(p)), self.compress4(i))
        d = self.d4(F.relu(d)) + resize(self.diff4(i), size)
        d_aux = d
        p = self.high5(F.relu(p))
        d = self.d5(F.relu(d))
        i = resize(self.spp(self.low5(i)), size)
        return self.bag(p, i, d), p_aux, d_aux


class PIDNet(nn.Module):
    """``forward(x, with_aux)``: ``{"out"}``, plus ``"aux"`` (P-branch logits) and ``"boundary"`` (``[N,1,H,W]``)."""

    training_heads = ("aux_head", "boundary_head")  # run by forward_aux only; an inference export leaves them out

    def __init__(self, num_classes: int, channels: int = 32, ppm_channels: int = 96, head_channels: int = 128) -> None:
        super().__init__()
        self.backbone = PIDNetBackbone(channels, ppm_channels)
        self.head = PreActHead(4 * channels, head_channels, num_classes)
        self.aux_head = PreActHead(2 * channels, head_channels, num_classes)
        self.boundary_head = PreActHead(2 * channels, channels, 1)
        kaiming_init(self)

    def forward(self, x: Tensor, with_aux: bool = False) -> dict[str, Tensor]:
        size = x.shape[-2:]
        features, p_aux, d_aux = self.backbone(x)
        outputs = {"out": resize(self.head(features), size)}
        if with_aux:
            outputs["aux"] = resize(self.aux_head(p_aux), size)
            outputs["boundary"] = resize(self.boundary_head(d_aux), size)
        return outputs


@register_model
def pidnet_s(num_classes: int, pretrained: bool = False) -> RealtimeSegModel:
    """PIDNet-S with its P-branch auxiliary head and its boundary head for training."""
    refuse_pretrained("pidnet_s", pretrained)
    return RealtimeSegModel(PIDNet(num_classes), num_classes, encoder_path="net.backbone", size_divisor=32, has_aux=True)
