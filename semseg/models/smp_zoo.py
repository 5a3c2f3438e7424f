"""segmentation_models_pytorch's architectures on any of its encoders (timm's included, as ``tu-NAME``).

U-Net (Ronneberger et al., 2015), U-Net++ (Zhou et al., 2018), FPN (Kirillov
et al., 2019, "Panoptic Feature Pyramid Networks"), PSPNet (Zhao et al., 2017),
DeepLabV3+ (Chen et al., 2018), UPerNet (Xiao et al., 2018) and SegFormer (Xie
et al., 2021), as smp builds them. smp needs input sizes divisible by the
encoder's output stride, so these models pad to it (``size_divisor``).
``pretrained=True`` loads smp's ImageNet encoder weights; the decoder starts
from smp's initialization.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import replace
from typing import Any, Callable

from torch import nn

from semseg.errors import SemsegError
from semseg.models.base import SegModel
from semseg.models.download import WeightSource, download_errors, fetch, hf_source, timm_source
from semseg.models.registry import register_model

# name -> (smp architecture, smp encoder); smp_deeplabv3 is left out: torchvision's deeplabv3_* hold the name
SMP_MODELS: dict[str, tuple[str, str]] = {
    "unet_resnet18": ("unet", "resnet18"),
    "unet_resnet34": ("unet", "resnet34"),
    "unet_mobilenet_v2": ("unet", "mobilenet_v2"),
    "unet_efficientnet_b0": ("unet", "efficientnet-b0"),
    "unetplusplus_resnet34": ("unetplusplus", "resnet34"),
    "fpn_resnet50": ("fpn", "resnet50"),
    "fpn_mobilenet_v2": ("fpn", "mobilenet_v2"),
    "pspnet_resnet50": ("pspnet", "resnet50"),
    "deeplabv3plus_resnet50": ("deeplabv3plus", "resnet50"),
    "deeplabv3plus_resnet101": ("deeplabv3plus", "resnet101"),
    "deeplabv3plus_mobilenet_v2": ("deeplabv3plus", "mobilenet_v2"),
    "upernet_convnext_tiny": ("upernet", "tu-convnext_tiny"),
    **{f"segformer_b{i}": ("segformer", f"mit_b{i}") for i in range(6)},
}
# set by semseg, not by the caller: the contract is 3 input channels in, one logits tensor out
# (smp's activation would turn logits into probabilities, its aux_params add a classification output)
_FIXED_ARGS = ("self", "encoder_name", "encoder_weights", "in_channels", "classes", "activation", "aux_params", "kwargs")


def smp_architectures() -> list[str]:
    import segmentation_models_pytorch as smp

    return sorted(smp.MODEL_ARCHITECTURES_MAPPING)


def _check_encoder(name: str, encoder: str) -> None:
    import segmentation_models_pytorch as smp
    import timm

    if encoder.startswith("tu-"):
        if not timm.is_model(encoder[3:]):
            close = difflib.get_close_matches(encoder[3:], timm.list_models(), n=3, cutoff=0.6)
            hint = f" Did you mean: {', '.join('tu-' + c for c in close)}?" if close else ""
            raise SemsegError(f"model {name!r}: timm has no model {encoder[3:]!r}.{hint}")
        return
    names = smp.encoders.get_encoder_names()
    if encoder not in names:
        close = difflib.get_close_matches(encoder, names, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise SemsegError(
            f"model {name!r}: unknown smp encoder {encoder!r}.{hint} "
            "(smp.encoders.get_encoder_names() lists them; timm's models are written 'tu-NAME')"
        )


def _check_kwargs(name: str, arch_class: type, kwargs: dict[str, Any]) -> None:
    accepted = [p for p in inspect.signature(arch_class.__init__).parameters if p not in _FIXED_ARGS]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise SemsegError(f"model {name!r}: unknown keyword argument(s) {', '.join(unknown)}; "
                          f"smp's {arch_class.__name__} accepts: {', '.join(accepted + ['norm'])}")


def _encoder_weights(name: str, encoder: str) -> tuple[Any, WeightSource]:
    """smp's ``encoder_weights`` value for ImageNet weights, and where they are downloaded from."""
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-"):
        return True, timm_source(encoder[3:])
    settings = smp.encoders.encoders[encoder]["pretrained_settings"]
    if "imagenet" not in settings:
        raise SemsegError(f"model {name!r}: smp has no ImageNet weights for encoder {encoder!r} "
                          f"(it has: {', '.join(settings) or 'none'}); use pretrained=False")
    repo = settings["imagenet"]
    return "imagenet", hf_source(repo["repo_id"], ("config.json", "model.safetensors"), repo["revision"])


def _preprocessing(encoder: str) -> tuple[tuple, tuple]:
    """The mean and std the encoder's ImageNet weights expect, for inputs scaled to [0, 1]."""
    import segmentation_models_pytorch as smp

    params = smp.encoders.get_preprocessing_params(encoder)
    scale = float(max(params["input_range"]))  # a few encoders were trained on [0, 255] inputs
    return tuple(m / scale for m in params["mean"]), tuple(s / scale for s in params["std"])


def build_smp(arch: str, encoder: str, num_classes: int, pretrained: bool, kwargs: dict[str, Any],
              name: str) -> SegModel:
    import segmentation_models_pytorch as smp

    arch_class = smp.MODEL_ARCHITECTURES_MAPPING[arch]
    _check_encoder(name, encoder)
    _check_kwargs(name, arch_class, kwargs)

    def make(weights: Any) -> nn.Module:
        try:
            return arch_class(encoder_name=encoder, encoder_weights=weights, in_channels=3, classes=num_classes, **kwargs)
        except (SemsegError, *download_errors()):  # semseg's own message; a failed download: fetch explains it
            raise
        except (ValueError, KeyError, TypeError, AssertionError) as exc:  # how smp rejects a pairing or an argument
            raise SemsegError(
                f"model {name!r}: segmentation_models_pytorch refused it: {type(exc).__name__}: {exc}"
            ) from exc

    mean_std = None
    if pretrained:
        weights, source = _encoder_weights(name, encoder)
        net, mean_std = fetch(source, lambda: (make(weights), _preprocessing(encoder)), f"{encoder} ImageNet weights")
    else:
        net = make(None)
    model = SegModel(net, num_classes, encoder_path="net.encoder", size_divisor=int(net.encoder.output_stride))
    if mean_std is not None:
        model.pretrained_cfg = replace(model.pretrained_cfg, mean=mean_std[0], std=mean_std[1],
                                       source=f"smp:{encoder}:imagenet")
    return model


def smp_builder(arch: str, encoder: str, name: str | None = None) -> Callable[..., SegModel]:
    """The builder of smp architecture ``arch`` on ``encoder``; smp's keyword arguments pass through."""
    name = name or f"{arch}:{encoder}"

    def build(num_classes: int, pretrained: bool = False, **kwargs: Any) -> SegModel:
        """segmentation_models_pytorch model; ``kwargs``: the architecture's own (e.g. ``decoder_channels``)."""
        return build_smp(arch, encoder, num_classes, pretrained, kwargs, name)

    build.__name__ = build.__qualname__ = name
    return build


for _name, (_arch, _encoder) in SMP_MODELS.items():
    register_model(smp_builder(_arch, _encoder, _name))
