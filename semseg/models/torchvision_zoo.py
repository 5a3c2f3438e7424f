"""torchvision's segmentation models, with their published COCO-VOC weights.

FCN (Long et al., 2015, "Fully Convolutional Networks for Semantic
Segmentation"), DeepLabV3 (Chen et al., 2017, "Rethinking Atrous Convolution
for Semantic Image Segmentation") and LR-ASPP (Howard et al., 2019, "Searching
for MobileNetV3"), as torchvision builds them. Their state dicts are
torchvision's under ``net.``, so torchvision's own files load unchanged. They
take any input size themselves (the logits are resized to the input), so they
are not padded: ``size_divisor`` is 1 and the outputs are torchvision's, bit
for bit.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
import torchvision.models.segmentation as tvseg
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from semseg.errors import SemsegError
from semseg.models.base import SegModel
from semseg.models.download import fetch, torch_hub_source
from semseg.models.registry import register_model

TORCHVISION_MODELS: dict[str, tuple[Callable[..., nn.Module], type[WeightsEnum]]] = {
    "fcn_resnet50": (tvseg.fcn_resnet50, tvseg.FCN_ResNet50_Weights),
    "fcn_resnet101": (tvseg.fcn_resnet101, tvseg.FCN_ResNet101_Weights),
    "deeplabv3_resnet50": (tvseg.deeplabv3_resnet50, tvseg.DeepLabV3_ResNet50_Weights),
    "deeplabv3_resnet101": (tvseg.deeplabv3_resnet101, tvseg.DeepLabV3_ResNet101_Weights),
    "deeplabv3_mobilenet_v3_large": (tvseg.deeplabv3_mobilenet_v3_large, tvseg.DeepLabV3_MobileNet_V3_Large_Weights),
    "lraspp_mobilenet_v3_large": (tvseg.lraspp_mobilenet_v3_large, tvseg.LRASPP_MobileNet_V3_Large_Weights),
}


def _resize_to(logits: Tensor, x: Tensor) -> Tensor:
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


# the aux heads by the stride of the stage they supervise: (the backbone's output key and forward_aux's, the
# module under net). 16's are torchvision's own names (FCN's and DeepLabV3's aux head, and LR-ASPP's here);
# lraspp_mobilenet_v3_large may also have 8's (aux_strides)
AUX_HEADS = {16: ("aux", "aux_classifier"), 8: ("aux8", "aux_classifier_stride8")}


class TorchvisionSegModel(SegModel):
    """torchvision's forward, except that the aux head runs only when asked for (torchvision always runs it)."""

    # a weights file without the aux heads (or a model without them) loads: they only serve training
    training_only_prefixes = tuple(f"net.{head}." for _, head in AUX_HEADS.values())

    def _logits(self, x: Tensor, with_aux: bool) -> dict[str, Tensor]:
        features = self.net.backbone(x)
        if isinstance(self.net, tvseg.LRASPP):
            out = self.net.classifier(features)  # LR-ASPP fuses the "low" and "high" features itself
        else:
            out = self.net.classifier(features["out"])
        outputs = {"out": _resize_to(out, x)}
        if with_aux:
            for key, head in AUX_HEADS.values():
                if key in features:
                    outputs[key] = _resize_to(getattr(self.net, head)(features[key]), x)
        return outputs


def _load_published(model: SegModel, weights: WeightsEnum) -> None:
    """torchvision's COCO-VOC weights (21 classes); another class count keeps all but the heads' last layers."""
    from semseg.data.formats import FORMATS
    from semseg.models.weights import load_state

    what = f"torchvision's {weights} weights"
    state = fetch(
        torch_hub_source(weights.url),
        lambda: torch.hub.load_state_dict_from_url(weights.url, progress=False, check_hash=True, weights_only=True),
        what,
    )
    load_state(model, state, source=what)
    cfg = replace(model.pretrained_cfg, source=f"torchvision:{weights}")
    voc = FORMATS["voc"]
    if cfg.num_classes == voc.num_classes:  # torchvision's categories are VOC's, in VOC's order
        cfg = replace(cfg, class_names=list(voc.class_names), palette=[list(c) for c in voc.palette])
    model.pretrained_cfg = cfg


def build_torchvision(name: str, num_classes: int, pretrained: bool, aux_loss: bool | None,
                      pretrained_backbone: bool) -> SegModel:
    builder, weights = TORCHVISION_MODELS[name]
    params = inspect.signature(builder).parameters
    has_aux_head = "aux_loss" in params
    if aux_loss and not has_aux_head:
        raise SemsegError(f"model {name!r} has no auxiliary head: leave aux_loss out")
    aux = has_aux_head if aux_loss is None else aux_loss
    kwargs: dict[str, Any] = {"aux_loss": aux} if has_aux_head else {}

    def make(backbone_weights: WeightsEnum | None) -> nn.Module:
        return builder(weights=None, weights_backbone=backbone_weights, num_classes=num_classes, **kwargs)

    if pretrained_backbone and not pretrained:
        backbone_weights = params["weights_backbone"].default  # torchvision's ImageNet weights of that backbone
        net = fetch(torch_hub_source(backbone_weights.url), lambda: make(backbone_weights),
                    f"torchvision's {backbone_weights} backbone weights")
    else:
        net = make(None)
    model = TorchvisionSegModel(net, num_classes, encoder_path="net.backbone", size_divisor=1, has_aux=aux)
    if pretrained:
        _load_published(model, weights.DEFAULT)
    elif pretrained_backbone:
        model.pretrained_cfg = replace(model.pretrained_cfg, source=f"torchvision:{params['weights_backbone'].default}")
    return model


def _torchvision_builder(name: str) -> Callable[..., SegModel]:
    def build(num_classes: int, pretrained: bool = False, aux_loss: bool | None = None,
              pretrained_backbone: bool = False) -> SegModel:
        """torchvision model; ``aux_loss``: build the aux head (default: where torchvision has one);
        ``pretrained_backbone``: torchvision's ImageNet weights for the backbone alone."""
        return build_torchvision(name, num_classes, pretrained, aux_loss, pretrained_backbone)

    build.__name__ = build.__qualname__ = name
    return build


LRASPP_LOW_LEVEL_STRIDES = (4, 8)


class _TwoStrideLRASPPHead(tvseg.lraspp.LRASPPHead):
    """torchvision's LR-ASPP head, whose logits at stride 8 then take a second low-level term at stride 4.

    torchvision's head adds a 1x1 classifier of the stride-8 features to the classified high branch; this one
    does the same, upsamples those logits (``num_classes`` channels, cheaper than upsampling the high branch's
    128) to stride 4 and adds ``detail_classifier`` of the stride-4 features, so the logits keep torchvision's
    stride-8 term and gain the stride-4 detail. Its state-dict keys are torchvision's plus ``detail_classifier``.
    """

    def __init__(self, low_channels: int, detail_channels: int, high_channels: int, num_classes: int,
                 inter_channels: int = 128) -> None:
        super().__init__(low_channels, high_channels, num_classes, inter_channels)
        self.detail_classifier = nn.Conv2d(detail_channels, num_classes, 1)

    def forward(self, input: dict[str, Tensor]) -> Tensor:
        coarse = super().forward(input)
        detail = input["detail"]
        coarse = F.interpolate(coarse, size=detail.shape[-2:], mode="bilinear", align_corners=False)
        return coarse + self.detail_classifier(detail)


def _stride_set(value: int | list[int] | tuple[int, ...], key: str, allowed: tuple[int, ...],
                choices: str) -> tuple[int, ...]:
    """``value``, a stride or a list of them (``low_level_stride``, ``aux_strides``), as the sorted tuple of its
    distinct strides, each in ``allowed``; else one error naming ``key`` and its ``choices``."""
    strides = (value,) if isinstance(value, int) else tuple(value)
    if not strides or len(set(strides)) != len(strides) or not set(strides) <= set(allowed):
        raise SemsegError(f"model 'lraspp_mobilenet_v3_large': {key} must be {choices}, got {value!r}")
    return tuple(sorted(strides))


def _aux_strides(aux_strides: int | list[int] | tuple[int, ...], aux: bool) -> tuple[int, ...]:
    """``aux_strides`` as the sorted tuple of the stages that get an aux head (none without ``aux``)."""
    strides = _stride_set(aux_strides, "aux_strides", tuple(AUX_HEADS), "16, 8 or [8, 16]")
    if not aux and strides != (16,):
        raise SemsegError("model 'lraspp_mobilenet_v3_large': aux_strides places aux heads: add aux_loss: true")
    return strides if aux else ()


def _lraspp_backbone_blocks(net: tvseg.LRASPP, strides: tuple[int, ...], aux: tuple[int, ...]) -> dict[str, str]:
    """The MobileNetV3 block index LR-ASPP's backbone returns for each of its outputs: ``"low"`` (the last block
    before the stride-8 stage for stride 4 alone; torchvision's strided block that starts the stride-8 stage
    where 8 is among ``strides``), ``"detail"`` (the last stride-4 block, where ``strides`` is (4, 8)),
    ``"high"`` (the last block) and, for the aux heads' strides ``aux``, ``"aux"`` (16: the last block of the
    stride-16 stage, before the dilated last stage: the depth where PSPNet and torchvision's FCN/DeepLabV3 put
    their aux heads) and ``"aux8"`` (8: the last block of the stride-8 stage)."""
    blocks = net.backbone
    # MobileNetV3 marks the blocks that halve the resolution (_is_cn); in the segmentation backbone the last
    # one is dilated instead, so the marks are the starts of the stride-4, 8, 16 and dilated stages
    strided = [int(key) for key, block in blocks.items() if getattr(block, "_is_cn", False)]
    last_stride_4, first_stride_8 = str(strided[-3] - 1), str(strided[-3])
    outputs = {"low": last_stride_4 if strides == (4,) else first_stride_8, "high": list(blocks.keys())[-1]}
    if strides == (4, 8):
        outputs["detail"] = last_stride_4
    last_block_of_stage = {8: strided[-2] - 1, 16: strided[-1] - 1}
    for stride in aux:
        outputs[AUX_HEADS[stride][0]] = str(last_block_of_stage[stride])
    return outputs


def _lraspp_customized(net: tvseg.LRASPP, num_classes: int, strides: tuple[int, ...], aux: tuple[int, ...]) -> None:
    """Rewire torchvision's LR-ASPP in place; the backbone's layers and their state-dict keys stay as they are.

    ``strides`` (4,) feeds the low-level classifier MobileNetV3's last stride-4 block (24 channels) instead
    of torchvision's stride-8 block: the logits get detail at twice the resolution, for thin classes (poles,
    signs, pedestrians), at about the same cost per training step (the head's high branch is only upsampled
    further). torchvision builds the stride-8 head alone, so its low-level classifier is new. (4, 8) keeps
    torchvision's stride-8 head and adds the stride-4 term after it (``_TwoStrideLRASPPHead``).

    ``aux`` adds deep supervision, which torchvision's LR-ASPP lacks: torchvision's FCN head (3x3 conv to a
    quarter of the channels, BatchNorm, ReLU, dropout, 1x1 conv) on the output of the stride-16 stage
    (``net.aux_classifier``) and/or of the stride-8 stage (``net.aux_classifier_stride8``), each trained with
    ``train.aux_weight`` and never run at prediction or export.
    """
    from torchvision.models._utils import IntermediateLayerGetter

    block_of = _lraspp_backbone_blocks(net, strides, aux)
    blocks = net.backbone
    net.backbone = IntermediateLayerGetter(blocks, return_layers={key: name for name, key in block_of.items()})
    low_channels = blocks[block_of["low"]].out_channels
    if strides == (4,):
        net.classifier.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
    elif strides == (4, 8):
        stride_8_head = net.classifier
        net.classifier = _TwoStrideLRASPPHead(low_channels, blocks[block_of["detail"]].out_channels,
                                              stride_8_head.cbr[0].in_channels, num_classes,
                                              stride_8_head.cbr[0].out_channels)
        # torchvision's head (and the published weights it may hold) carries over; only the new term starts fresh
        missing = net.classifier.load_state_dict(stride_8_head.state_dict(), strict=False).missing_keys
        assert set(missing) == {"detail_classifier.weight", "detail_classifier.bias"}, missing
    for stride, (key, head) in AUX_HEADS.items():  # the table's order: the heads' initialization draws as before
        if stride in aux:
            setattr(net, head, tvseg.fcn.FCNHead(blocks[block_of[key]].out_channels, num_classes))


@register_model
def lraspp_mobilenet_v3_large(num_classes: int, pretrained: bool = False, aux_loss: bool | None = None,
                              pretrained_backbone: bool = False,
                              low_level_stride: int | list[int] = 8, aux_strides: int | list[int] = 16) -> SegModel:
    """torchvision's LR-ASPP MobileNetV3-Large. ``aux_loss``: aux heads for deep supervision (default: none, as
    torchvision's), on the stages of ``aux_strides``: 16 (the stride-16 stage), 8 or [8, 16];
    ``pretrained_backbone``: torchvision's ImageNet weights for the backbone alone; ``low_level_stride``: 8
    (torchvision's), 4 (the low-level branch at twice the resolution) or [4, 8] (torchvision's stride-8 head plus
    a stride-4 term). With ``pretrained``, the head's new classifiers and the aux heads start untrained."""
    strides = _stride_set(low_level_stride, "low_level_stride", LRASPP_LOW_LEVEL_STRIDES, "4, 8 or [4, 8]")
    aux = _aux_strides(aux_strides, bool(aux_loss))
    model = build_torchvision("lraspp_mobilenet_v3_large", num_classes, pretrained, None, pretrained_backbone)
    if strides != (8,) or aux:
        _lraspp_customized(model.net, num_classes, strides, aux)
        model.has_aux = bool(aux_loss)
    return model


for _name in TORCHVISION_MODELS:
    if _name != "lraspp_mobilenet_v3_large":
        register_model(_torchvision_builder(_name))
