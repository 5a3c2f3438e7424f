"""The zoo contract, checked on every registered model: small ones in the fast suite, the rest marked slow."""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semseg.checkpoint import save_checkpoint
from semseg.errors import SemsegError
from semseg.models import PretrainedCfg, SegModel, create_model, list_models, load_model, register_model
from semseg.models import registry

NUM_CLASSES = 3
# small encoders: each family, each padding rule (none, 16, 32), with and without an aux head
FAST_MODELS = {
    "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
    "unet_resnet18",
    "deeplabv3plus_mobilenet_v2",
    "segformer_b0",
    "fcn8s_mobilenetv3_large_100",
    "bisenetv2", "ddrnet_23_slim", "pidnet_s", "erfnet",  # semseg's real-time families: several aux heads, a boundary head
}
REQUIRED = {
    "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large", "unet_resnet34", "unet_resnet18", "unetplusplus_resnet34", "fpn_resnet50",
    "pspnet_resnet50", "deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "upernet_convnext_tiny",
    *(f"segformer_b{i}" for i in range(6)), "fcn8s_resnet50", "fcn8s_resnet18", "fcn8s_mobilenetv3_large_100",
}
ALL_MODELS = [pytest.param(n, marks=() if n in FAST_MODELS else pytest.mark.slow) for n in list_models()]


@functools.lru_cache(maxsize=None)
def _built(name: str) -> SegModel:
    torch.manual_seed(0)
    return create_model(name, NUM_CLASSES)


def fresh(name: str) -> SegModel:
    """A model of ``name`` with fixed random weights (built once per session, copied per test)."""
    return copy.deepcopy(_built(name))


def stat_norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]


# ------------------------------------------------------------------ the contract, per model
@pytest.mark.parametrize("name", ALL_MODELS)
def test_logits_at_input_size_for_odd_sizes(name):
    model = fresh(name).eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        out = model(x)
        outputs = model.forward_aux(x)
    assert out.shape == (1, NUM_CLASSES, 97, 131) and out.dtype == torch.float32
    assert ("aux" in outputs) == model.has_aux
    assert all(k in ("out", "boundary") or k.startswith("aux") for k in outputs)  # the keys the trainer knows
    assert all(v.shape == (1, 1 if k == "boundary" else NUM_CLASSES, 97, 131) for k, v in outputs.items())
    torch.testing.assert_close(outputs["out"], out)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_gives_finite_gradients_to_every_parameter(name):
    model = fresh(name).train()
    outputs = model.forward_aux(torch.randn(2, 3, 33, 47))
    sum(v.square().mean() for v in outputs.values()).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_is_deterministic(name):
    model = fresh(name).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_checkpoint_round_trip_rebuilds_the_same_model(name, tmp_path):
    model = fresh(name).eval()
    model.pretrained_cfg = PretrainedCfg(NUM_CLASSES, class_names=["a", "b", "c"], palette=[[0, 0, 0]] * 3)
    path = tmp_path / "model.pt"
    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, path)
    loaded = load_model(path)
    assert not loaded.training and loaded.model_name == name
    assert loaded.pretrained_cfg.class_names == ["a", "b", "c"] and loaded.pretrained_cfg.source == str(path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_frozen_encoder_keeps_weights_and_statistics_through_train_mode(name):
    model = fresh(name)
    model.freeze_encoder()
    model.train()
    encoder_stats = [m.running_mean.clone() for m in stat_norms(model.encoder)]
    decoder_ids = {id(p) for p in model.decoder_parameters()}
    with torch.no_grad():
        model.forward_aux(torch.randn(2, 3, 40, 40) * 3 + 1)
    assert all(torch.equal(m.running_mean, s) for m, s in zip(stat_norms(model.encoder), encoder_stats))
    assert not any(p.requires_grad for p in model.encoder_parameters())
    assert all(p.requires_grad for p in model.parameters() if id(p) in decoder_ids)
    model.freeze_encoder(False)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in stat_norms(model.encoder))


# ------------------------------------------------------------------ names and errors
def test_zoo_holds_the_curated_names():
    assert REQUIRED <= set(list_models())
    assert FAST_MODELS <= set(list_models())


def test_list_models_filters_with_fnmatch_patterns():
    assert list_models("segformer_*") == [f"segformer_b{i}" for i in range(6)]
    assert list_models("*mobilenet*") == sorted(n for n in list_models() if "mobilenet" in n)
    assert list_models("no_such_model*") == []
    assert list_models() == sorted(list_models())


def test_unknown_name_suggests_close_names_and_list_models():
    with pytest.raises(SemsegError, match=r"unknown model 'unet_resnet'.*unet_resnet18.*list_models\(\).*ARCH:ENCODER"):
        create_model("unet_resnet", 3)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("unet_resnet18", {"decoder_chanels": [8]}, r"unknown keyword argument\(s\) decoder_chanels.*decoder_channels"),
        ("lraspp_mobilenet_v3_large", {"foo": 1, "bar": 2}, r"unknown keyword argument\(s\) bar, foo.*pretrained_backbone"),
        ("fcn8s_mobilenetv3_large_100", {"dropout": 0.1}, r"unknown keyword argument\(s\) dropout"),
        ("unet_resnet18", {"activation": "softmax"}, r"unknown keyword argument\(s\) activation"),
        ("lraspp_mobilenet_v3_large", {"low_level_stride": 16}, r"low_level_stride must be 4, 8 or \[4, 8\], got 16"),
        ("lraspp_mobilenet_v3_large", {"low_level_stride": [4, 16]}, r"must be 4, 8 or \[4, 8\], got \[4, 16\]"),
        ("lraspp_mobilenet_v3_large", {"low_level_stride": [8, 8]}, r"must be 4, 8 or \[4, 8\], got \[8, 8\]"),
        ("lraspp_mobilenet_v3_large", {"low_level_stride": []}, r"must be 4, 8 or \[4, 8\], got \[\]"),
        ("lraspp_mobilenet_v3_large", {"aux_loss": True, "aux_strides": 32}, r"aux_strides must be 16, 8 or \[8, 16\], got 32"),
        ("lraspp_mobilenet_v3_large", {"aux_loss": True, "aux_strides": [16, 16]}, r"must be 16, 8 .*got \[16, 16\]"),
        ("lraspp_mobilenet_v3_large", {"aux_strides": [8, 16]}, "aux_strides places aux heads: add aux_loss: true"),
        ("unet_resnet18", {"norm": "ln"}, "norm must be one of bn, gn, syncbn, ibn"),
        ("unet_resnet18", {"decoder_channels": nn.ReLU()}, "must be a plain value"),
        ("unet:resnet1", {}, r"unknown smp encoder 'resnet1'.*resnet18"),
        ("unet:tu-resnet1000", {}, "timm has no model 'resnet1000'"),
        ("unetx:resnet18", {}, r"unknown architecture 'unetx'.*unet"),
        ("fcn8s:vit_tiny_patch16_224", {}, "FCN-8s needs 8, 16, 32"),
        ("unet:resnet18", {"encoder_depth": 9}, "segmentation_models_pytorch refused it"),
    ],
)
def test_bad_arguments_name_the_problem(name, kwargs, message):
    with pytest.raises(SemsegError, match=message):
        create_model(name, 3, **kwargs)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True, "3"])
def test_num_classes_must_be_a_positive_integer(num_classes):
    with pytest.raises(SemsegError, match="num_classes"):
        create_model("lraspp_mobilenet_v3_large", num_classes)


@pytest.mark.parametrize("pretrained", ["", 3, None])
def test_pretrained_must_be_a_bool_or_a_path(pretrained):
    with pytest.raises(SemsegError, match="pretrained must be"):
        create_model("lraspp_mobilenet_v3_large", 3, pretrained=pretrained)


@pytest.mark.parametrize("name, divisor", [("fpn:resnet18", 32), ("fcn8s:tu-efficientnet_b0", 32), ("pspnet:resnet18", 8)])
def test_arch_encoder_form_builds_any_pairing(name, divisor):
    model = create_model(name, 4).eval()
    assert model.model_name == name and model.size_divisor == divisor
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 51)).shape == (1, 4, 45, 51)


def test_aux_head_is_optional_for_torchvision_models():
    model = create_model("deeplabv3_mobilenet_v3_large", 3, aux_loss=False).eval()
    assert not model.has_aux and model.model_kwargs == {"aux_loss": False}
    with torch.no_grad():
        assert set(model.forward_aux(torch.randn(1, 3, 40, 40))) == {"out"}


def test_lraspp_low_level_branch_at_stride_4_keeps_the_contract(tmp_path):
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", NUM_CLASSES, low_level_stride=4).eval()
    default = create_model("lraspp_mobilenet_v3_large", NUM_CLASSES)
    assert model.model_kwargs == {"low_level_stride": 4} and default.model_kwargs == {}
    # the same backbone layers under the same keys; only the low-level classifier differs (24 against 40 inputs)
    ours, theirs = model.state_dict(), default.state_dict()
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if ours[k].shape != theirs[k].shape] == ["net.classifier.low_classifier.weight"]
    seen = {}
    model.net.classifier.low_classifier.register_forward_hook(lambda m, i, o: seen.update(low=tuple(o.shape[-2:])))
    default.net.classifier.low_classifier.register_forward_hook(lambda m, i, o: seen.update(default=tuple(o.shape[-2:])))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out, _ = model(x), default(x)
    assert out.shape == (1, NUM_CLASSES, 64, 96) and seen == {"low": (16, 24), "default": (8, 12)}
    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, tmp_path / "s4.pt")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "s4.pt")(x), out)


def test_lraspp_two_stride_head_adds_a_stride_4_term_to_torchvisions_stride_8_logits(tmp_path):
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", NUM_CLASSES, low_level_stride=[4, 8]).eval()
    default = create_model("lraspp_mobilenet_v3_large", NUM_CLASSES).eval()
    assert model.model_kwargs == {"low_level_stride": [4, 8]}
    # torchvision's keys under their names, plus the stride-4 classifier (24 inputs: MobileNetV3's stride-4 stage)
    ours, theirs = model.state_dict(), default.state_dict()
    assert set(ours) - set(theirs) == {"net.classifier.detail_classifier.weight", "net.classifier.detail_classifier.bias"}
    assert set(theirs) < set(ours) and ours["net.classifier.detail_classifier.weight"].shape == (NUM_CLASSES, 24, 1, 1)
    default.load_state_dict({k: v for k, v in ours.items() if k in theirs})
    seen = {}
    model.net.classifier.detail_classifier.register_forward_hook(lambda m, i, o: seen.update(detail=o))
    default.net.classifier.register_forward_hook(lambda m, i, o: seen.update(coarse=o))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out, _ = model(x), default(x)
    # reference: torchvision's own head gives the stride-8 logits; upsampled to stride 4, plus the stride-4 term
    assert seen["coarse"].shape[-2:] == (8, 12) and seen["detail"].shape[-2:] == (16, 24)
    expected = F.interpolate(F.interpolate(seen["coarse"], size=(16, 24), mode="bilinear", align_corners=False)
                             + seen["detail"], size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)
    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, tmp_path / "s48.pt")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "s48.pt")(x), out)


def test_lraspp_aux_head_supervises_the_stride_16_stage_and_only_in_training(tmp_path):
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", NUM_CLASSES, low_level_stride=4, aux_loss=True).eval()
    plain = create_model("lraspp_mobilenet_v3_large", NUM_CLASSES, low_level_stride=4).eval()
    assert model.has_aux and not plain.has_aux
    assert model.model_kwargs == {"low_level_stride": 4, "aux_loss": True}
    # the plain model's keys plus the aux head's: torchvision's FCN head, under torchvision's own key prefix
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) < set(model.state_dict()) and extra
    assert {key.split(".")[1] for key in extra} == {"aux_classifier"}
    seen = {}
    model.net.aux_classifier.register_forward_hook(lambda m, i, o: seen.update(aux=tuple(i[0].shape[1:])))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outputs = model.forward_aux(x)
        assert set(outputs) == {"out", "aux"} and outputs["aux"].shape == (1, NUM_CLASSES, 64, 96)
        assert seen == {"aux": (112, 4, 6)}  # MobileNetV3-Large's stride-16 stage: 112 channels
        seen.clear()
        out = model(x)
    assert not seen and torch.equal(out, outputs["out"])  # prediction never runs the aux head
    # the aux head changes nothing at prediction: the same weights without it predict the same logits
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in extra})
    with torch.no_grad():
        assert torch.equal(plain(x), out)
    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, tmp_path / "aux.pt")
    reloaded = load_model(tmp_path / "aux.pt")
    assert reloaded.has_aux
    with torch.no_grad():
        assert torch.equal(reloaded(x), out)


def test_lraspp_aux_heads_on_the_stride_8_and_16_stages_supervise_training_only():
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", NUM_CLASSES, low_level_stride=4, aux_loss=True,
                         aux_strides=[8, 16]).eval()
    one = create_model("lraspp_mobilenet_v3_large", NUM_CLASSES, low_level_stride=4, aux_loss=True).eval()
    assert model.model_kwargs == {"low_level_stride": 4, "aux_loss": True, "aux_strides": [8, 16]}
    # the one-aux model's keys (its stride-16 head under torchvision's prefix) plus the stride-8 head's
    extra = set(model.state_dict()) - set(one.state_dict())
    assert set(one.state_dict()) < set(model.state_dict())
    assert {key.split(".")[1] for key in extra} == {"aux_classifier_stride8"}
    seen = {}
    for name in ("aux_classifier", "aux_classifier_stride8"):
        getattr(model.net, name).register_forward_hook(lambda m, i, o, name=name: seen.update({name: tuple(i[0].shape[1:])}))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outputs = model.forward_aux(x)
        assert set(outputs) == {"out", "aux", "aux8"}
        assert all(value.shape == (1, NUM_CLASSES, 64, 96) for value in outputs.values())
        # MobileNetV3-Large's stride-16 stage (112 channels) and stride-8 stage (40 channels)
        assert seen == {"aux_classifier": (112, 4, 6), "aux_classifier_stride8": (40, 8, 12)}
        seen.clear()
        out = model(x)
    assert not seen and torch.equal(out, outputs["out"])  # prediction runs neither aux head
    # the same weights without the aux heads predict the same logits; the checkpoint for deployment has none
    plain = create_model("lraspp_mobilenet_v3_large", NUM_CLASSES, low_level_stride=4).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(model.training_only_prefixes)})
    with torch.no_grad():
        assert torch.equal(plain(x), out)
    # the trainer's loss counts each aux head at train.aux_weight
    from semseg.engine.step import training_loss

    masks = torch.randint(0, NUM_CLASSES, (1, 64, 96))
    criterion = nn.CrossEntropyLoss()
    expected = criterion(outputs["out"], masks) + 0.4 * (criterion(outputs["aux"], masks) + criterion(outputs["aux8"], masks))
    assert torch.allclose(training_loss(outputs, masks, criterion, 0.4, 255), expected)


def test_encoder_and_decoder_parameters_split_the_model():
    model = fresh("fcn8s_mobilenetv3_large_100")
    encoder = {id(p) for p in model.encoder_parameters()}
    decoder = {id(p) for p in model.decoder_parameters()}
    assert encoder and decoder and not encoder & decoder
    assert encoder | decoder == {id(p) for p in model.parameters()}
    assert {id(p) for p in model.net.score8.parameters()} <= decoder


def test_fcn8s_starts_as_fcn32s():
    # the skip score layers start at zero (Long et al.): only the stride-32 scores reach the output
    model = fresh("fcn8s_mobilenetv3_large_100").eval()
    assert not model.net.score8.weight.any() and not model.net.score16.weight.any()
    assert [model.net.encoder.feature_info.reduction()[i] for i in model.net.feature_indices] == [8, 16, 32]


def test_pretrained_cfg_round_trips_through_a_plain_dict():
    cfg = PretrainedCfg(4, class_names=list("abcd"), palette=[[1, 2, 3]] * 4, input_size=(32, 48), source="x")
    values = cfg.to_dict()
    assert values["mean"] == [0.485, 0.456, 0.406] and values["input_size"] == [32, 48]
    assert PretrainedCfg.from_dict({**values, "added_in_a_later_version": 1}) == cfg


def test_register_model_adds_a_plain_function_once():
    @register_model
    def tiny_test_model(num_classes: int, pretrained: bool = False) -> SegModel:
        return SegModel(nn.Conv2d(3, num_classes, 1), num_classes, encoder_path="net")

    try:
        assert "tiny_test_model" in list_models("tiny_*")
        model = create_model("tiny_test_model", 2)
        assert model(torch.randn(1, 3, 5, 7)).shape == (1, 2, 5, 7) and model.model_name == "tiny_test_model"
        with pytest.raises(ValueError, match="registered twice"):
            register_model(tiny_test_model)
    finally:
        registry._MODELS.pop("tiny_test_model")


def test_semseg_namespace_forwards_to_the_zoo():
    import semseg

    assert semseg.create_model is create_model and semseg.list_models is list_models
    assert semseg.load_model is load_model
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building a model warns about nothing
        semseg.create_model("unet_resnet18", 2)
