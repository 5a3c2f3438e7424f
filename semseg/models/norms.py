"""Norm layers for small batches: BatchNorm -> GroupNorm (Wu & He, 2018, "Group Normalization"), or SyncBatchNorm.

BatchNorm's statistics are noisy with 1-2 images per GPU; GroupNorm has none
to estimate, SyncBatchNorm estimates them over every process of a DDP run.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from semseg.errors import SemsegError

MAX_GROUPS = 32  # Wu & He's default


def group_count(channels: int) -> int:
    """Groups for ``channels``: the largest divisor of ``channels`` up to 32 that leaves 2+ channels per group.

    One channel per group would be InstanceNorm, which discards the
    per-channel contrast that segmentation needs; so 24 channels get 12
    groups of 2, 64 get 32 groups of 2, 3 get 1 group.
    """
    fitting = [g for g in range(1, MAX_GROUPS + 1) if channels % g == 0 and channels // g >= 2]
    return max(fitting, default=1)


def _group_norm_like(bn: _BatchNorm) -> nn.Module:
    """A GroupNorm with ``bn``'s channels, eps and affine parameters; timm's BatchNormAct2d keeps its activation."""
    from timm.layers import BatchNormAct2d, GroupNormAct

    channels = bn.num_features
    if isinstance(bn, BatchNormAct2d):
        gn: nn.Module = GroupNormAct(channels, group_count(channels), eps=bn.eps, affine=bn.affine, apply_act=False)
        gn.act, gn.drop = bn.act, bn.drop
    else:
        gn = nn.GroupNorm(group_count(channels), channels, eps=bn.eps, affine=bn.affine)
    if bn.affine:
        # the same Parameter objects: trained scale and shift, device and dtype carry over
        gn.weight, gn.bias = bn.weight, bn.bias
    return gn


def _to_group_norm(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm):
        return _group_norm_like(module)
    for name, child in module.named_children():
        converted = _to_group_norm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def convert_norm(model: nn.Module, kind: str) -> nn.Module:
    """Convert every BatchNorm of ``model`` in place (the root too, when it is one); returns the model.

    ``kind``: ``"bn"`` (nothing to do), ``"gn"`` (GroupNorm, :func:`group_count`
    groups, affine parameters kept, running statistics dropped) or
    ``"syncbn"`` (SyncBatchNorm, for DDP). A zoo model converted to GroupNorm
    records ``norm="gn"`` in ``model_kwargs``, so :func:`load_model` rebuilds it
    with GroupNorm; SyncBatchNorm holds the same weights as BatchNorm and is not recorded.
    """
    if kind == "bn":
        return model
    if kind == "gn":
        converted = _to_group_norm(model)
        if hasattr(converted, "model_kwargs"):
            converted.model_kwargs["norm"] = "gn"
        return converted
    if kind == "syncbn":
        # timm's converter, not nn.SyncBatchNorm.convert_sync_batchnorm: torch's turns timm's
        # BatchNormAct2d (BatchNorm + activation in one layer) into a plain SyncBatchNorm and
        # silently drops the activation (tests/test_models_norms.py checks the outputs agree)
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model)
    raise SemsegError(f"unknown norm {kind!r}: choose bn, gn or syncbn")
