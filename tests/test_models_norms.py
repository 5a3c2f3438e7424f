"""Norm conversion (GroupNorm, SyncBatchNorm) on zoo models."""

from __future__ import annotations

import pytest
import torch
from timm.layers import BatchNormAct2d, GroupNormAct, SyncBatchNormAct
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from semseg.checkpoint import save_checkpoint
from semseg.errors import SemsegError
from semseg.models import convert_norm, create_model, load_model
from semseg.models.norms import group_count


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
