"""FCN-8s (Long, Shelhamer & Darrell, 2015, "Fully Convolutional Networks for Semantic Segmentation") on timm features.

Score layers (1x1 convolutions) read the encoder's stride-32, 16 and 8
features. The stride-32 scores are upsampled x2 and added to the stride-16
scores, that sum upsampled x2 and added to the stride-8 scores, and the result
upsampled x8 to the input size. Every upsampling is fixed bilinear
interpolation, as in the authors' released FCN-8s nets (their "upscore"
deconvolutions are bilinear with learning rate 0); the paper also describes
learning the x2 steps from a bilinear start. As in the paper, the skip score
layers start at zero, so the untrained net begins as FCN-32s. No library
offers this head; the encoder is any timm model with stride-8/16/32 features.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from semseg.errors import SemsegError
from semseg.models.base import SegModel
from semseg.models.download import download_errors, fetch, timm_source
from semseg.models.registry import register_model

FCN8S_ENCODERS = ("resnet18", "resnet50", "mobilenetv3_large_100")
SKIP_STRIDES = (8, 16, 32)


def _resize(scores: Tensor, size: tuple[int, int] | Tensor) -> Tensor:
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


class FCN8s(nn.Module):
    """``encoder``: a timm ``features_only`` model; ``feature_indices``: its stride-8, 16 and 32 outputs."""

    def __init__(self, encoder: nn.Module, feature_indices: list[int], num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.feature_indices = feature_indices
        channels = [encoder.feature_info.channels()[i] for i in feature_indices]
        self.score8, self.score16, self.score32 = (nn.Conv2d(c, num_classes, 1) for c in channels)
        for skip in (self.score8, self.score16):
            nn.init.zeros_(skip.weight)
            nn.init.zeros_(skip.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x: float[N,3,H,W]``, H and W multiples of 32 -> logits ``[N,C,H,W]``."""
        features = self.encoder(x)
        f8, f16, f32 = (features[i] for i in self.feature_indices)
        scores = _resize(self.score32(f32), f16.shape[-2:]) + self.score16(f16)
        scores = _resize(scores, f8.shape[-2:]) + self.score8(f8)
        return _resize(scores, x.shape[-2:])


def _timm_encoder(name: str, encoder: str, pretrained: bool) -> nn.Module:
    import timm

    if not timm.is_model(encoder):
        raise SemsegError(f"model {name!r}: timm has no model {encoder!r} (timm.list_models() lists them)")

    def make() -> nn.Module:
        try:
            return timm.create_model(encoder, features_only=True, pretrained=pretrained)
        except download_errors():  # fetch turns these into a message that says how to work offline
            raise
        except (RuntimeError, ValueError, TypeError, AssertionError) as exc:  # e.g. no features_only support
            raise SemsegError(
                f"model {name!r}: timm cannot build {encoder!r} as a feature encoder: {type(exc).__name__}: {exc}"
            ) from exc

    return fetch(timm_source(encoder), make, f"timm's {encoder} ImageNet weights") if pretrained else make()


def build_fcn8s(encoder: str, num_classes: int, pretrained: bool, name: str) -> SegModel:
    features = _timm_encoder(name, encoder, pretrained)
    strides = features.feature_info.reduction()
    if not all(s in strides for s in SKIP_STRIDES):
        raise SemsegError(f"model {name!r}: encoder {encoder!r} has features at strides {strides}, "
                          f"FCN-8s needs {', '.join(map(str, SKIP_STRIDES))}")
    # the last feature map at each stride: the deepest features of that resolution
    indices = [max(i for i, s in enumerate(strides) if s == stride) for stride in SKIP_STRIDES]
    model = SegModel(FCN8s(features, indices, num_classes), num_classes, encoder_path="net.encoder", size_divisor=32)
    if pretrained:
        cfg = features.pretrained_cfg
        model.pretrained_cfg = replace(model.pretrained_cfg, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                                       source=f"timm:{encoder}")
    return model


def fcn8s_builder(encoder: str, name: str | None = None) -> Callable[..., SegModel]:
    name = name or f"fcn8s:{encoder}"
    encoder = encoder.removeprefix("tu-")  # 'fcn8s:tu-NAME' reads like smp's timm encoders; timm's name is NAME

    def build(num_classes: int, pretrained: bool = False) -> SegModel:
        """FCN-8s on a timm encoder; ``pretrained``: timm's ImageNet weights for the encoder."""
        return build_fcn8s(encoder, num_classes, pretrained, name)

    build.__name__ = build.__qualname__ = name
    return build


for _encoder in FCN8S_ENCODERS:
    register_model(fcn8s_builder(_encoder, f"fcn8s_{_encoder}"))
