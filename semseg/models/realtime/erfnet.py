"""ERFNet (Romera, Alvarez, Bergasa & Arroyo, 2018, "ERFNet: Efficient Residual Factorized ConvNet for
Real-time Semantic Segmentation", IEEE T-ITS 19(1)).

An encoder-decoder of 23 layers built from one residual block, the
non-bottleneck-1D: each 3x3 convolution factorized into a 3x1 and a 1x3
(ReLU between them), two such pairs, the second dilated, BatchNorm after each
pair, dropout, and an identity shortcut. Factorized dense convolutions, not
depthwise ones, which is why it runs near the CPU's peak. Encoder (the
paper's Table 1): a downsampler (a strided 3x3 conv concatenated with a 2x2
max-pool, BN, ReLU) to 16 channels, a downsampler to 64, five blocks
(dropout 0.03), a downsampler to 128 and eight blocks with dilations 2, 4, 8,
16, twice (dropout 0.3). Decoder: transposed-conv upsamplers (3x3, stride 2,
BN, ReLU) to 64 and 16 channels, each followed by two blocks, and a 2x2
transposed conv to the classes at the input resolution.

The paper has no auxiliary head: it trains the encoder alone first (with a
1x1 classifier on its stride-8 output) and then the whole network, or starts
the encoder from ImageNet; semseg trains the whole network in one run, with
no auxiliary output. ``net.encoder`` is the paper's encoder. The network pads
its input to a multiple of 8, its stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semseg.models.realtime.common import RealtimeSegModel, refuse_pretrained
from semseg.models.registry import register_model

BN_EPS = 1e-3  # the authors' BatchNorm epsilon


class Downsampler(nn.Module):
    """A strided 3x3 conv to ``out - in`` channels beside a 2x2 max-pool of the input, concatenated, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.norm = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class NonBottleneck1D(nn.Module):
    """3x1, ReLU, 1x3, BN, ReLU, dilated 3x1, ReLU, dilated 1x3, BN, dropout; plus the input; ReLU."""

    def __init__(self, channels: int, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()

        def factorized(d: int) -> list[nn.Module]:
            return [nn.Conv2d(channels, channels, (3, 1), padding=(d, 0), dilation=(d, 1)), nn.ReLU(inplace=True),
                    nn.Conv2d(channels, channels, (1, 3), padding=(0, d), dilation=(1, d)),
                    nn.BatchNorm2d(channels, eps=BN_EPS)]

        layers = [*factorized(1), nn.ReLU(inplace=True), *factorized(dilation)]
        if dropout:
            layers.append(nn.Dropout2d(dropout))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + x)


class Upsampler(nn.Module):
    """3x3 transposed conv, stride 2 (exactly doubles the size), BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
        self.norm = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


def erfnet_encoder() -> nn.Sequential:
    """The paper's layers 1-16: stride 8, 128 channels."""
    dilated = [NonBottleneck1D(128, d, 0.3) for d in (2, 4, 8, 16)]
    dilated += [NonBottleneck1D(128, d, 0.3) for d in (2, 4, 8, 16)]
    return nn.Sequential(Downsampler(3, 16), Downsampler(16, 64), *(NonBottleneck1D(64, 1, 0.03) for _ in range(5)),
                         Downsampler(64, 128), *dilated)


class ERFNet(nn.Module):
    """``forward(x, with_aux)``: ``{"out"}`` only (ERFNet has no auxiliary head)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.encoder = erfnet_encoder()
        self.decoder = nn.Sequential(Upsampler(128, 64), NonBottleneck1D(64), NonBottleneck1D(64),
                                     Upsampler(64, 16), NonBottleneck1D(16), NonBottleneck1D(16))
        self.classifier = nn.ConvTranspose2d(16, num_classes, 2, stride=2)

    def forward(self, x: Tensor, with_aux: bool = False) -> dict[str, Tensor]:
        return {"out": self.classifier(self.decoder(self.encoder(x)))}


@register_model
def erfnet(num_classes: int, pretrained: bool = False) -> RealtimeSegModel:
    """ERFNet, trained end to end (no auxiliary head)."""
    refuse_pretrained("erfnet", pretrained)
    return RealtimeSegModel(ERFNet(num_classes), num_classes, encoder_path="net.encoder", size_divisor=8)
