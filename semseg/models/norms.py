"""Norm layers: BatchNorm -> GroupNorm (Wu & He, 2018, "Group Normalization"), SyncBatchNorm, or IBN.

BatchNorm's statistics are noisy with 1-2 images per GPU; GroupNorm has none
to estimate, SyncBatchNorm estimates them over every process of a DDP run:
PyTorch's on CUDA, :class:`CrossProcessBatchNorm` on the CPU (gloo), where
PyTorch's refuses to run. IBN (:class:`InstanceBatchNorm2d`) instance-normalizes
half the channels of the shallow layers, for models that must work on images
whose appearance differs from the training set's.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
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


def _replace_batch_norms(module: nn.Module, replacement: Callable[[_BatchNorm], nn.Module]) -> nn.Module:
    """``module`` with every BatchNorm (PyTorch's SyncBatchNorm aside) swapped for ``replacement(bn)``, in place
    (the root is returned swapped when it is one)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm):
        return replacement(module)
    for name, child in module.named_children():
        converted = _replace_batch_norms(child, replacement)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _synchronized(bn: _BatchNorm) -> bool:
    return bn.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _CrossProcessBatchNormFunction(torch.autograd.Function):
    """BatchNorm's training forward and backward with the statistics of every process's share of the batch.

    Forward: each process's pixel count, mean and biased variance per channel (PyTorch's fused
    BatchNorm kernel computes them) are gathered and combined with Chan et al.'s pairwise formula,
    stable where E[x^2] - E[x]^2 is not; the normalization is the fused kernel again, with the global
    statistics. Backward: with x_hat = (x - mean) * invstd and N the global pixel count,
    dx = weight * invstd * (dy - (sum dy + x_hat * sum dy * x_hat) / N), the two sums taken over every
    process (one all-reduce); PyTorch's fused eval-mode backward gives dy * weight * invstd and this
    process's sums. The weight and bias gradients are this process's, as DDP expects (it averages them).
    Written by hand because PyTorch's SyncBatchNorm kernels (batch_norm_stats, batch_norm_elemt, ...)
    exist for CUDA only; letting autograd differentiate unfused statistics costs several passes per layer
    (BENCHMARKS.md, "BatchNorm synchronized over CPU processes").
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        channels = x.shape[1]
        # eps 0: invstd = 1 / sqrt(var), so var comes back exactly (a constant channel: invstd inf, var 0)
        _, local_mean, local_invstd = torch.ops.aten.native_batch_norm(x, None, None, None, None, True, 0.0, 0.0)
        local_var = local_invstd.pow(-2)
        row = torch.cat([local_mean.new_full((1,), x.numel() // channels), local_mean, local_var])
        rows = [torch.empty_like(row) for _ in range(dist.get_world_size())]
        dist.all_gather(rows, row)
        stacked = torch.stack(rows)
        counts, means, variances = stacked[:, :1], stacked[:, 1:1 + channels], stacked[:, 1 + channels:]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (counts * (variances + (means - mean) ** 2)).sum(0) / total
        out = torch.nn.functional.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps, ctx.total = eps, total
        unbiased_var = var * total / (total - 1).clamp(min=1)
        ctx.mark_non_differentiable(mean, unbiased_var)
        return out, mean, unbiased_var

    @staticmethod
    def backward(ctx, grad_out: Tensor, _grad_mean: Tensor, _grad_var: Tensor):  # type: ignore[override]
        x, weight, mean, var = ctx.saved_tensors
        grad_in, grad_weight, grad_bias = torch.ops.aten.native_batch_norm_backward(
            grad_out.contiguous(memory_format=_memory_format(x)), x, weight, mean, var, None, None, False, ctx.eps,
            [True, True, True])
        sums = torch.cat([grad_bias, grad_weight])  # sum dy, sum dy * x_hat: this process's
        dist.all_reduce(sums)
        channels = x.shape[1]
        invstd = torch.rsqrt(var + ctx.eps)
        per_pixel = weight * invstd / ctx.total
        slope = per_pixel * invstd * sums[channels:]  # times x
        offset = per_pixel * sums[:channels] - mean * slope
        shape = (1, channels) + (1,) * (x.dim() - 2)
        grad_in = grad_in - (x * slope.view(shape) + offset.view(shape))
        return grad_in, grad_weight, grad_bias, None


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def cross_process_batch_norm(bn: _BatchNorm, x: Tensor) -> Tensor:
    """``bn`` in training mode with the statistics of the whole global batch, i.e. of ``x`` on every process.

    The gradients equal one process's BatchNorm over the concatenated batch; the running statistics are
    updated as BatchNorm does (unbiased variance, ``momentum`` or a cumulative average). Every process must
    call it the same number of times, with a non-empty ``x``. Statistics are float32 for float16 / bfloat16
    input; the output has the input's dtype.
    """
    x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    ones = bn.weight if bn.weight is not None else x32.new_ones(x.shape[1])
    zeros = bn.bias if bn.bias is not None else x32.new_zeros(x.shape[1])
    out, mean, unbiased_var = _CrossProcessBatchNormFunction.apply(x32, ones, zeros, bn.eps)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), factor)
            bn.running_var.lerp_(unbiased_var.to(bn.running_var.dtype), factor)
    return out.to(x.dtype)


class CrossProcessBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics span every process of a DDP run, over any backend (gloo on the CPU).

    PyTorch's ``nn.SyncBatchNorm`` raises on CPU tensors (torch 2.x: "expected input tensor to be on GPU"), so
    a CPU DDP run otherwise normalizes over its own share of the global batch. Outside training, or without
    a process group of 2+, it is plain BatchNorm; its state dict is BatchNorm's.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        if _synchronized(self):
            return cross_process_batch_norm(self, input)
        return super().forward(input)


def _cross_process_like(bn: _BatchNorm) -> nn.Module:
    """A :class:`CrossProcessBatchNorm` sharing ``bn``'s parameters and buffers; timm's BatchNormAct2d keeps its
    activation."""
    from timm.layers import BatchNormAct2d

    if isinstance(bn, BatchNormAct2d):
        converted: _BatchNorm = _cross_process_norm_act_class()(bn.num_features, eps=bn.eps, momentum=bn.momentum,
                                                                affine=bn.affine,
                                                                track_running_stats=bn.track_running_stats,
                                                                apply_act=False)
        converted.act, converted.drop = bn.act, bn.drop
    else:
        converted = CrossProcessBatchNorm(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                                          track_running_stats=bn.track_running_stats)
    # the same Parameter and buffer objects: trained values, device and dtype carry over
    for name in ("weight", "bias"):
        setattr(converted, name, getattr(bn, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        converted.register_buffer(name, getattr(bn, name))
    converted.train(bn.training)
    return converted


@functools.cache
def _cross_process_norm_act_class() -> type:
    """timm's BatchNormAct2d (BatchNorm + activation in one layer) with cross-process statistics in training;
    defined on first use so that importing semseg.models does not import timm."""
    from timm.layers import BatchNormAct2d

    class CrossProcessBatchNormAct2d(BatchNormAct2d):
        def forward(self, x: Tensor) -> Tensor:
            if not _synchronized(self):
                return super().forward(x)
            return self.act(self.drop(cross_process_batch_norm(self, x)))

    return CrossProcessBatchNormAct2d


class InstanceBatchNorm2d(nn.Module):
    """IBN-Net's "IBN-a" layer (Pan et al., 2018, "Two at Once: Enhancing Learning and Generalization
    Capacities via IBN-Net"): the first ``instance_channels`` channels InstanceNorm (affine), the rest BatchNorm.

    InstanceNorm removes each image's own per-channel mean and contrast, which in the shallow layers
    is mostly appearance (lighting, colour cast, camera); the BatchNorm half keeps what tells content
    apart. Written here because neither PyTorch nor timm (nor smp) has the layer.
    """

    def __init__(self, channels: int, instance_channels: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        if not 0 < instance_channels < channels:
            raise ValueError(f"instance_channels must be in 1..{channels - 1}, got {instance_channels}")
        self.instance_channels = instance_channels
        self.instance = nn.InstanceNorm2d(instance_channels, eps=eps, affine=True)
        self.batch = nn.BatchNorm2d(channels - instance_channels, eps=eps, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        instance_part, batch_part = torch.split(x, [self.instance_channels, x.shape[1] - self.instance_channels], 1)
        return torch.cat([self.instance(instance_part.contiguous()), self.batch(batch_part.contiguous())], 1)


IBN_PROBE_SIZE = 256  # the side of the blank image that locates each BatchNorm's stride; a multiple of 32
# IBN-Net keeps the stem's BatchNorm (stride 2) and puts IBN from the first stage on (stride 4); the
# stride-2 layers are also where the split and concatenation cost the most (the largest tensors)
IBN_MIN_STRIDE = 4
# IBN-Net's shallow layers; in a dilated network the last stage runs at stride 16, so 16 would reach it (convert_to_ibn)
IBN_MAX_STRIDE = 8


def _ibn_like(bn: _BatchNorm) -> nn.Module:
    """An :class:`InstanceBatchNorm2d` in place of ``bn`` (half its channels instance-normalized, rounded
    down); timm's BatchNormAct2d keeps its dropout and activation after it."""
    from timm.layers import BatchNormAct2d

    channels = bn.num_features
    ibn = InstanceBatchNorm2d(channels, channels // 2, eps=bn.eps, momentum=bn.momentum)
    ibn.train(bn.training)
    if isinstance(bn, BatchNormAct2d):
        return nn.Sequential(ibn, bn.drop, bn.act)
    return ibn


def _shallow_batch_norms(model: nn.Module, max_stride: int) -> set[int]:
    """The ids of the 2-d BatchNorms (of 2+ channels) whose output is at a stride from ``IBN_MIN_STRIDE`` to
    ``max_stride`` in one inference forward of a blank ``IBN_PROBE_SIZE`` image (layers that inference never
    runs, such as aux heads, are left out)."""
    found: set[int] = set()

    def record(module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        if isinstance(output, Tensor) and output.dim() == 4 and module.num_features >= 2:
            if IBN_MIN_STRIDE <= IBN_PROBE_SIZE / output.shape[-1] <= max_stride:
                found.add(id(module))

    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    handles = [m.register_forward_hook(record) for m in norms]
    was_training = model.training
    try:
        model.eval()
        parameter = next(model.parameters(), None)
        probe = torch.zeros(1, 3, IBN_PROBE_SIZE, IBN_PROBE_SIZE,
                            device=parameter.device if parameter is not None else "cpu")
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return found


def convert_to_ibn(model: nn.Module, max_stride: int = IBN_MAX_STRIDE) -> nn.Module:
    """``model`` with every BatchNorm whose output is at a stride from 4 to ``max_stride`` (found by one forward
    pass of a blank image) turned into a new :class:`InstanceBatchNorm2d`, in place; returns the model.

    For models trained from scratch: the new layers are freshly initialized (pretrained BatchNorm
    statistics do not carry over to a half-instance-normalized layer). IBN-Net puts IBN in ResNet's
    stages at strides 4 to 16 and keeps the last stage's BatchNorm, whose features must stay
    discriminative; in a dilated network the last stage runs at stride 16 too, hence the default 8.
    """
    shallow = _shallow_batch_norms(model, max_stride)
    if not shallow:
        raise SemsegError(f"norm 'ibn': the model has no BatchNorm at strides {IBN_MIN_STRIDE} to {max_stride} "
                          "to convert (transformer models use LayerNorm)")
    return _replace_batch_norms(model, lambda bn: _ibn_like(bn) if id(bn) in shallow else bn)


def convert_norm(model: nn.Module, kind: str, device_type: str = "cuda") -> nn.Module:
    """Convert every BatchNorm of ``model`` in place (the root too, when it is one); returns the model.

    ``kind``: ``"bn"`` (nothing to do), ``"gn"`` (GroupNorm, :func:`group_count`
    groups, affine parameters kept, running statistics dropped) or
    ``"syncbn"`` (statistics over every DDP process: PyTorch's SyncBatchNorm when
    ``device_type`` is ``"cuda"``, :class:`CrossProcessBatchNorm` otherwise). A zoo
    model converted to GroupNorm records ``norm="gn"`` in ``model_kwargs``, so
    :func:`load_model` rebuilds it with GroupNorm; synchronized BatchNorm holds the
    same weights as BatchNorm and is not recorded.
    """
    if kind == "bn":
        return model
    if kind == "gn":
        converted = _replace_batch_norms(model, _group_norm_like)
        if hasattr(converted, "model_kwargs"):
            converted.model_kwargs["norm"] = "gn"
        return converted
    if kind == "syncbn" and device_type != "cuda":
        return _replace_batch_norms(model, _cross_process_like)
    if kind == "syncbn":
        # timm's converter, not nn.SyncBatchNorm.convert_sync_batchnorm: torch's turns timm's
        # BatchNormAct2d (BatchNorm + activation in one layer) into a plain SyncBatchNorm and
        # silently drops the activation (tests/test_models_norms.py checks the outputs agree)
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model)
    raise SemsegError(f"unknown norm {kind!r}: choose bn, gn or syncbn")
