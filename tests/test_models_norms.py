"""Norm conversion (GroupNorm, SyncBatchNorm, IBN) on zoo models."""

from __future__ import annotations

import copy

import numpy as np

import pytest
import torch
from timm.layers import BatchNormAct2d, GroupNormAct, SyncBatchNormAct
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from semseg.checkpoint import save_checkpoint
from semseg.errors import SemsegError
from semseg.models import convert_norm, create_model, load_model
from semseg.models.norms import InstanceBatchNorm2d, convert_to_ibn, group_count


@pytest.mark.parametrize("channels, groups", [(64, 32), (256, 32), (24, 12), (16, 8), (40, 20), (3, 1), (1, 1), (960, 32)])
def test_group_count_divides_channels_and_keeps_two_per_group(channels, groups):
    assert group_count(channels) == groups


def test_group_norm_replaces_every_batch_norm_and_keeps_the_affine_parameters():
    model = create_model("unet_resnet18", 3)
    bn_weight = model.net.encoder.bn1.weight
    convert_norm(model, "gn")  # in place: the trainer ignores the return value
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert isinstance(model.net.encoder.bn1, nn.GroupNorm) and model.net.encoder.bn1.weight is bn_weight
    assert model.net.encoder.bn1.num_groups == 32 and model.model_kwargs == {"norm": "gn"}
    model.train()
    out = model(torch.randn(1, 3, 40, 50))  # batch 1 trains: no batch statistics
    out.mean().backward()
    assert out.shape == (1, 3, 40, 50)


def test_group_norm_model_round_trips_through_a_checkpoint(tmp_path):
    model = create_model("fcn8s_mobilenetv3_large_100", 3, norm="gn").eval()
    assert model.model_kwargs == {"norm": "gn"}
    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, tmp_path / "gn.pt")
    loaded = load_model(tmp_path / "gn.pt")
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_timm_norm_act_layers_keep_their_activation():
    layer = nn.Sequential(BatchNormAct2d(8, act_layer=nn.ReLU))
    convert_norm(layer, "gn")
    assert isinstance(layer[0], GroupNormAct) and isinstance(layer[0].act, nn.ReLU)
    assert (layer(torch.randn(2, 8, 5, 5)) >= 0).all()


def test_sync_batch_norm_keeps_outputs_and_timm_activations():
    torch.manual_seed(0)
    model = create_model("fcn8s_mobilenetv3_large_100", 3).eval()  # timm's MobileNetV3 uses BatchNormAct2d
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        converted = convert_norm(model, "syncbn").eval()
        assert torch.allclose(converted(x), expected, atol=1e-5)
    assert any(isinstance(m, SyncBatchNormAct) for m in converted.modules())
    assert not any(isinstance(m, _BatchNorm) and not isinstance(m, nn.SyncBatchNorm) for m in converted.modules())
    assert "norm" not in converted.model_kwargs  # the same weights as BatchNorm: checkpoints rebuild with BatchNorm


def test_torch_sync_converter_would_drop_timm_activations():
    # why convert_norm uses timm's converter: torch's turns BatchNormAct2d into a bare SyncBatchNorm
    layer = nn.Sequential(BatchNormAct2d(4, act_layer=nn.ReLU)).eval()
    x = torch.randn(1, 4, 3, 3)
    assert (layer(x) >= 0).all()
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(layer).eval()
    assert (converted(x) < 0).any()


def test_bn_is_a_no_op_and_unknown_kinds_are_refused():
    model = nn.Sequential(nn.BatchNorm2d(4))
    assert convert_norm(model, "bn") is model and isinstance(model[0], nn.BatchNorm2d)
    with pytest.raises(SemsegError, match="unknown norm 'ln'"):
        convert_norm(model, "ln")


# ---------------------------------------------------------------- cross-process BatchNorm (syncbn on the CPU)


def _reference_and_inputs(layer_kind: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    if layer_kind == "bn":
        layer: nn.Module = nn.BatchNorm2d(5, momentum=0.3)
    else:
        layer = BatchNormAct2d(5, act_layer=nn.ReLU, momentum=None)  # cumulative running average
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    # unequal shares (3 and 1 images, 2 of their 4 columns cropped), a large mean against a small spread
    x = torch.randn(4, 5, 6, 4) * 0.1 + 30
    upstream = torch.randn(4, 5, 6, 4)  # the gradient that reaches the layer's output
    return layer, x, upstream


def _cross_process_worker(rank: int, store_file: str, out_dir: str, layer_kind: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    try:
        layer, x, upstream = _reference_and_inputs(layer_kind)
        share = slice(0, 3) if rank == 0 else slice(3, 4)
        columns = slice(None) if rank == 0 else slice(0, 2)
        layer = convert_norm(layer, "syncbn", "cpu").train()
        x = x[share, ..., columns].clone().contiguous(memory_format=torch.channels_last).requires_grad_()
        for _ in range(2):  # twice: the running statistics' update is checked after two steps
            out = layer(x)
        (out * upstream[share, ..., columns]).sum().backward()
        torch.save({"out": out.detach(), "x_grad": x.grad, "weight_grad": layer.weight.grad,
                    "bias_grad": layer.bias.grad, "state": layer.state_dict(), "type": type(layer).__name__},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("layer_kind", ["bn", "timm_bn_act"])
def test_cross_process_batch_norm_over_two_gloo_processes_equals_one_batch_norm_over_both_shares(tmp_path, layer_kind):
    import torch.multiprocessing as mp

    mp.spawn(_cross_process_worker, args=(str(tmp_path / "store"), str(tmp_path), layer_kind), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["type"] for r in ranks] == ["CrossProcessBatchNorm"] * 2 if layer_kind == "bn" else \
        ["CrossProcessBatchNormAct2d"] * 2
    # the independent reference: PyTorch's BatchNorm in one process over the same pixels (rank 1's share
    # has 2 of the 4 columns, so the reference sees every share's pixels flattened side by side)
    layer, x, upstream = _reference_and_inputs(layer_kind)
    layer.train()
    def pixels(*tensors: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] shares -> [1, C, all their pixels, 1]
        return torch.cat([t.transpose(0, 1).reshape(1, 5, -1) for t in tensors], dim=2).unsqueeze(-1)

    flat = pixels(x[0:3], x[3:4, ..., 0:2]).requires_grad_()
    for _ in range(2):
        out = layer(flat)
    (out * pixels(upstream[0:3], upstream[3:4, ..., 0:2])).sum().backward()
    torch.testing.assert_close(pixels(ranks[0]["out"], ranks[1]["out"]), out.detach(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pixels(ranks[0]["x_grad"], ranks[1]["x_grad"]), flat.grad, atol=1e-3, rtol=1e-3)
    # parameter gradients: each rank holds its share's; DDP sums (then averages) them
    torch.testing.assert_close(ranks[0]["weight_grad"] + ranks[1]["weight_grad"], layer.weight.grad, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(ranks[0]["bias_grad"] + ranks[1]["bias_grad"], layer.bias.grad, atol=1e-4, rtol=1e-4)
    for rank in ranks:  # the same running statistics on both ranks, and BatchNorm's state-dict keys
        assert rank["state"].keys() == layer.state_dict().keys()
        for key, value in layer.state_dict().items():
            torch.testing.assert_close(rank["state"][key], value, atol=1e-5, rtol=1e-5)


def test_cross_process_batch_norm_is_batch_norm_without_a_process_group():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), BatchNormAct2d(4, act_layer=nn.ReLU))
    converted = convert_norm(copy.deepcopy(reference), "syncbn", "cpu")
    assert not any(type(m) in (nn.BatchNorm2d, BatchNormAct2d) for m in converted.modules())
    x = torch.randn(2, 3, 8, 8)
    for mode in ("train", "eval"):
        getattr(reference, mode)(), getattr(converted, mode)()
        torch.testing.assert_close(converted(x), reference(x))
    torch.testing.assert_close(converted.state_dict(), reference.state_dict())
    assert isinstance(converted[2].act, nn.ReLU)


def test_instance_batch_norm_normalizes_half_the_channels_per_image_and_half_over_the_batch():
    torch.manual_seed(0)
    layer = InstanceBatchNorm2d(6, 3).train()
    with torch.no_grad():
        layer.instance.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        layer.instance.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.randn(2, 6, 5, 7) * 3 + 2
    out = layer(x).detach().double().numpy()
    xs = x.double().numpy()
    # a numpy reference of IBN-Net's layer: channels 0-2 over each image's pixels, 3-5 over the whole batch
    for c in range(3):
        for n in range(2):
            plane = xs[n, c]
            expected = (plane - plane.mean()) / np.sqrt(plane.var() + 1e-5) * [1.0, 2.0, 0.5][c] + [0.0, 1.0, -1.0][c]
            np.testing.assert_allclose(out[n, c], expected, atol=1e-4)
    for c in range(3, 6):
        values = xs[:, c]
        np.testing.assert_allclose(out[:, c], (values - values.mean()) / np.sqrt(values.var() + 1e-5), atol=1e-4)
    # a brighter, higher-contrast copy of one image leaves its instance-normalized channels unchanged
    layer.eval()
    with torch.no_grad():
        assert torch.allclose(layer(x * 4 + 9)[:, :3], layer(x)[:, :3], atol=1e-4)


def test_ibn_converts_the_batch_norms_at_strides_4_to_max_stride_only():
    def stage(channels_in: int, channels_out: int) -> list[nn.Module]:
        return [nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1), nn.BatchNorm2d(channels_out), nn.ReLU()]

    # outputs at strides 2, 4, 8, 16: the stem keeps BatchNorm (as in IBN-Net), 4 and 8 are converted
    model = nn.Sequential(*stage(3, 8), *stage(8, 16), *stage(16, 32), *stage(32, 64))
    convert_to_ibn(model, max_stride=8)
    kinds = [type(model[i]).__name__ for i in (1, 4, 7, 10)]
    assert kinds == ["BatchNorm2d", "InstanceBatchNorm2d", "InstanceBatchNorm2d", "BatchNorm2d"]
    assert model[4].instance_channels == 8 and model[7].batch.num_features == 16
    assert model.training  # the probe forward ran in eval mode and the mode came back
    model(torch.randn(2, 3, 48, 64)).mean().backward()  # any input size, and it trains
    with pytest.raises(SemsegError, match="no BatchNorm at strides 4 to 8"):
        convert_to_ibn(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU()), max_stride=8)


def test_ibn_zoo_model_round_trips_through_a_checkpoint_and_keeps_aux_heads_in_batch_norm(tmp_path):
    model = create_model("lraspp_mobilenet_v3_large", 3, low_level_stride=4, aux_loss=True, norm="ibn",
                         ibn_max_stride=4).eval()
    assert model.model_kwargs == {"low_level_stride": 4, "aux_loss": True, "norm": "ibn", "ibn_max_stride": 4}
    converted = [name for name, m in model.named_modules() if isinstance(m, InstanceBatchNorm2d)]
    assert converted and all(name.startswith("net.backbone.") for name in converted)
    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, tmp_path / "ibn.pt")
    loaded = load_model(tmp_path / "ibn.pt")
    assert [name for name, m in loaded.named_modules() if isinstance(m, InstanceBatchNorm2d)] == converted
    x = torch.randn(1, 3, 72, 100)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("kwargs, message", [
    ({"ibn_max_stride": 8}, "ibn_max_stride goes with norm='ibn'"),
    ({"norm": "ibn", "ibn_max_stride": 6}, "ibn_max_stride must be 4, 8, 16 or 32, got 6"),
    ({"norm": "ibn", "ibn_max_stride": True}, "ibn_max_stride must be"),
    ({"norm": "ibn", "pretrained": True}, "norm='ibn' is for training from scratch"),
])
def test_ibn_option_errors_name_the_option(kwargs, message):
    with pytest.raises(SemsegError, match=message):
        create_model("lraspp_mobilenet_v3_large", 3, **kwargs)
