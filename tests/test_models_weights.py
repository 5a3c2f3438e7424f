"""Weights: torchvision's files reproduced exactly, class-count changes, bad files, published weights offline."""

from __future__ import annotations

import inspect
import json
import socket
import time
import urllib.error
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from semseg.checkpoint import save_checkpoint
from semseg.errors import SemsegError
from semseg.models import PretrainedCfg, create_model, load_model, load_weights
from semseg.models import download
from semseg.models.torchvision_zoo import TORCHVISION_MODELS

TV_FAST = {"lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"}


def torchvision_net(name: str, num_classes: int, aux: bool | None) -> nn.Module:
    """torchvision's own model, random weights and random BatchNorm statistics (so eval mode is not trivial)."""
    builder, _ = TORCHVISION_MODELS[name]
    torch.manual_seed(1)
    net = builder(weights=None, weights_backbone=None, num_classes=num_classes,
                  **({} if aux is None else {"aux_loss": aux}))
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _aux_cases() -> list:
    cases = []
    for name, (builder, _) in TORCHVISION_MODELS.items():
        has_aux = "aux_loss" in inspect.signature(builder).parameters
        for aux in (True, False) if has_aux else (None,):
            cases.append(pytest.param(name, aux, marks=() if name in TV_FAST else pytest.mark.slow))
    return cases


@pytest.mark.parametrize("name, aux", _aux_cases())
def test_torchvision_weight_file_reproduces_torchvision_exactly(name, aux, tmp_path):
    net = torchvision_net(name, 5, aux)
    path = tmp_path / "torchvision.pth"
    torch.save(net.state_dict(), path)  # the format of torchvision's published files
    model = create_model(name, 5, pretrained=str(path)).eval()
    assert model.size_divisor == 1  # torchvision takes any size itself: no padding
    for size in [(64, 64), (97, 131)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = net(x)
            outputs = model.forward_aux(x)
            assert torch.equal(model(x), expected["out"])
        if aux:
            assert torch.equal(outputs["aux"], expected["aux"])


def test_torchvision_file_with_aux_head_loads_into_a_model_without_one(tmp_path):
    net = torchvision_net("deeplabv3_mobilenet_v3_large", 3, aux=True)
    torch.save(net.state_dict(), tmp_path / "tv.pth")
    model = create_model("deeplabv3_mobilenet_v3_large", 3, pretrained=tmp_path / "tv.pth", aux_loss=False).eval()
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        assert torch.equal(model(x), net(x)["out"])


def test_other_class_count_keeps_the_backbone_and_reinitializes_the_head(tmp_path):
    net = torchvision_net("deeplabv3_mobilenet_v3_large", 21, aux=True)
    torch.save(net.state_dict(), tmp_path / "voc.pth")
    model = create_model("deeplabv3_mobilenet_v3_large", 4)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match=r"voc.pth: weights for another number of classes.*re-initialized for 4 classes "
                                         r"\(net.classifier.4.weight, net.classifier.4.bias, net.aux_classifier.4.weight"):
        load_weights(model, tmp_path / "voc.pth")
    file_state = net.state_dict()
    for key, value in model.state_dict().items():
        source = file_state[key.removeprefix("net.")]
        if source.shape == value.shape:
            assert torch.equal(value, source), key
        else:
            assert key.endswith((".4.weight", ".4.bias")) and torch.equal(value, initial[key]), key


def test_checkpoint_of_another_model_names_it_and_the_keys(tmp_path):
    other = create_model("fcn8s_mobilenetv3_large_100", 3)
    path = tmp_path / "other.pt"
    state = {"model_name": "fcn8s_mobilenetv3_large_100", "model_kwargs": {},
             "model_meta": PretrainedCfg(3).to_dict(), "model": other.state_dict()}
    save_checkpoint(state, path)
    with pytest.raises(SemsegError, match=r"other.pt: the weights do not fit model 'unet_resnet18' \(the file holds "
                                          r"weights of model 'fcn8s_mobilenetv3_large_100'\): \d+ missing key\(s\): "
                                          r"net.encoder.conv1.weight.*unexpected key\(s\): net.encoder.conv_stem.weight"):
        load_weights(create_model("unet_resnet18", 3), path)
    save_checkpoint({**state, "model_name": "unet_resnet18"}, path)  # a checkpoint that lies about its model
    with pytest.raises(SemsegError, match=r"other.pt: the weights do not fit model 'unet_resnet18': .*missing key"):
        load_model(path)


def test_checkpoint_shapes_must_match_except_a_new_head(tmp_path):
    model = create_model("lraspp_mobilenet_v3_large", 3)
    state = model.state_dict()
    meta = PretrainedCfg(3).to_dict()
    encoder_key = next(k for k in state if k.startswith("net.backbone") and k.endswith("weight"))
    bad = {**state, encoder_key: torch.zeros(7, 7)}
    save_checkpoint({"model_name": "lraspp_mobilenet_v3_large", "model_meta": meta, "model": bad}, tmp_path / "a.pt")
    with pytest.raises(SemsegError, match=rf"1 shape mismatch\(es\): {encoder_key} \(file \[7, 7\], model \["):
        load_weights(create_model("lraspp_mobilenet_v3_large", 3), tmp_path / "a.pt")
    # load_model rebuilds exactly what the checkpoint says: a head of another size is an error there
    head = {**state, "net.classifier.low_classifier.weight": torch.zeros(5, 40, 1, 1)}
    save_checkpoint({"model_name": "lraspp_mobilenet_v3_large", "model_meta": meta, "model": head}, tmp_path / "b.pt")
    with pytest.raises(SemsegError, match=r"shape mismatch.*low_classifier.weight \(file \[5, 40, 1, 1\], model \[3, 40"):
        load_model(tmp_path / "b.pt")


def test_non_strict_loading_keeps_what_fits_and_warns(tmp_path):
    source = create_model("lraspp_mobilenet_v3_large", 3)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("net.classifier")}
    torch.save(state, tmp_path / "partial.pth")
    model = create_model("lraspp_mobilenet_v3_large", 3)
    with pytest.raises(SemsegError, match="missing key"):
        load_weights(model, tmp_path / "partial.pth")
    with pytest.warns(UserWarning, match="missing key.*keep their initial values"):
        load_weights(model, tmp_path / "partial.pth", strict=False)
    assert torch.equal(model.state_dict()[next(iter(state))], next(iter(state.values())))


@pytest.mark.parametrize("content, message", [({"a": "b"}, "not a state dict"), ([1, 2], "not a state dict")])
def test_files_that_are_not_state_dicts_are_refused(content, message, tmp_path):
    torch.save(content, tmp_path / "w.pth")
    with pytest.raises(SemsegError, match=message):
        load_weights(create_model("lraspp_mobilenet_v3_large", 3), tmp_path / "w.pth")
    with pytest.raises(SemsegError, match="not found"):
        create_model("lraspp_mobilenet_v3_large", 3, pretrained=tmp_path / "missing.pth")


def test_semseg_checkpoint_brings_its_metadata_to_load_weights(tmp_path):
    model = create_model("lraspp_mobilenet_v3_large", 2)
    meta = PretrainedCfg(2, class_names=["road", "sky"], palette=[[1, 1, 1], [2, 2, 2]], mean=(0.5, 0.5, 0.5))
    save_checkpoint({"model_name": "lraspp_mobilenet_v3_large", "model_meta": meta.to_dict(),
                     "model": model.state_dict()}, tmp_path / "c.pt")
    loaded = load_weights(create_model("lraspp_mobilenet_v3_large", 2), tmp_path / "c.pt")
    assert loaded.pretrained_cfg.class_names == ["road", "sky"] and loaded.pretrained_cfg.mean == (0.5, 0.5, 0.5)
    assert loaded.pretrained_cfg.source == str(tmp_path / "c.pt")


@pytest.mark.parametrize(
    "state, message",
    [
        ({"model_name": "lraspp_mobilenet_v3_large", "model": {}}, "lacks model_meta.num_classes"),
        ({"model_name": "no_such_model", "model_meta": {"num_classes": 3}, "model": {}},
         r"c.pt: cannot rebuild its model 'no_such_model'.*unknown model"),
    ],
)
def test_load_model_explains_checkpoints_it_cannot_rebuild(state, message, tmp_path):
    save_checkpoint(state, tmp_path / "c.pt")
    with pytest.raises(SemsegError, match=message):
        load_model(tmp_path / "c.pt")


# ------------------------------------------------------------------ published weights: caches and offline
@pytest.fixture
def empty_caches(monkeypatch, tmp_path):
    """Empty torch hub and Hugging Face caches in tmp_path; returns (hub dir, HF cache dir)."""
    hub, hf = tmp_path / "torch_hub", tmp_path / "hf_cache"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf))
    return hub, hf


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable (blocked by the test)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    for key in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)


def fake_hf_repo(cache: Path, repo_id: str, files: dict[str, bytes], revision: str | None = None) -> None:
    """A Hugging Face cache entry as ``hf_hub_download`` leaves it (refs/main -> snapshots/<commit>/...)."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    commit = revision or "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    for name, data in files.items():
        (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        (folder / "snapshots" / commit / name).write_bytes(data)


def safetensors_bytes(state: dict[str, torch.Tensor], tmp_path: Path) -> bytes:
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    return (tmp_path / "w.safetensors").read_bytes()


@pytest.mark.parametrize(
    "name, kwargs, address, hint",
    [
        ("lraspp_mobilenet_v3_large", {"pretrained": True},
         "https://download.pytorch.org/models/lraspp_mobilenet_v3_large", "torch_hub/checkpoints/lraspp"),
        ("lraspp_mobilenet_v3_large", {"pretrained_backbone": True},
         "https://download.pytorch.org/models/mobilenet_v3_large", "torch hub cache"),
        ("unet_resnet18", {"pretrained": True}, "https://huggingface.co/smp-hub/resnet18.imagenet",
         "hf download smp-hub/resnet18.imagenet"),
        ("fcn8s_resnet18", {"pretrained": True}, "https://huggingface.co/timm/resnet18", "hf_cache"),
    ],
)
def test_offline_download_fails_fast_saying_how_to_supply_the_file(name, kwargs, address, hint, empty_caches, no_network):
    start = time.monotonic()
    with pytest.raises(SemsegError) as error:
        create_model(name, 3, **kwargs)
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert "could not download" in message and address in message and hint in message
    assert "pretrained='/path/to/weights.pth'" in message


def test_a_failed_download_names_the_url_and_the_reason(empty_caches, monkeypatch):
    monkeypatch.setattr(download, "network_reachable", lambda url: True)

    def time_out(url, dst, *args, **kwargs):
        raise urllib.error.URLError("timed out")

    monkeypatch.setattr(torch.hub, "download_url_to_file", time_out)
    with pytest.raises(SemsegError, match=r"could not download .* from https://download.pytorch.org/.*timed out"):
        create_model("lraspp_mobilenet_v3_large", 3, pretrained=True)


def test_network_probe_is_skipped_behind_a_proxy(monkeypatch, no_network):
    assert not download.network_reachable("https://huggingface.co/timm/resnet18.a1_in1k")
    monkeypatch.setenv("https_proxy", "http://proxy.invalid:3128")
    assert download.network_reachable("https://huggingface.co/timm/resnet18.a1_in1k")


def test_torchvision_weights_in_the_hub_cache_load_without_network(empty_caches, no_network):
    net = torchvision_net("lraspp_mobilenet_v3_large", 21, aux=None)
    _, weights = TORCHVISION_MODELS["lraspp_mobilenet_v3_large"]
    cached = download.torch_hub_file(weights.DEFAULT.url)
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)
    model = create_model("lraspp_mobilenet_v3_large", 21, pretrained=True).eval()
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(model(x), net(x)["out"])
    cfg = model.pretrained_cfg
    assert cfg.class_names[:2] == ["background", "aeroplane"] and len(cfg.palette) == 21
    assert cfg.source == "torchvision:LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1"
    with pytest.warns(UserWarning, match="re-initialized for 11 classes"):
        assert create_model("lraspp_mobilenet_v3_large", 11, pretrained=True).pretrained_cfg.class_names is None
    # the two-stride head keeps torchvision's whole head and its weights; only its stride-4 term starts fresh
    two_stride = create_model("lraspp_mobilenet_v3_large", 21, pretrained=True, low_level_stride=[4, 8]).state_dict()
    published = {f"net.{key}": value for key, value in net.state_dict().items()}
    assert set(two_stride) - set(published) == {"net.classifier.detail_classifier.weight",
                                                "net.classifier.detail_classifier.bias"}
    assert all(torch.equal(two_stride[key], value) for key, value in published.items())


def test_timm_encoder_weights_in_the_hf_cache_load_without_network(empty_caches, no_network, tmp_path):
    import timm

    backbone = timm.create_model("resnet18")
    fake_hf_repo(empty_caches[1], "timm/resnet18.a1_in1k",
                 {"model.safetensors": safetensors_bytes(backbone.state_dict(), tmp_path)})
    model = create_model("fcn8s_resnet18", 3, pretrained=True)
    assert torch.equal(model.net.encoder.conv1.weight, backbone.conv1.weight)
    assert torch.equal(model.net.encoder.layer4[1].bn2.running_var, backbone.layer4[1].bn2.running_var)
    assert model.pretrained_cfg.source == "timm:resnet18"


def test_smp_encoder_weights_in_the_hf_cache_load_without_network(empty_caches, no_network, tmp_path):
    import segmentation_models_pytorch as smp

    encoder = smp.encoders.get_encoder("resnet18")
    settings = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]
    config = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_range": [0, 1], "input_space": "RGB"}
    fake_hf_repo(empty_caches[1], settings["repo_id"], {
        "config.json": json.dumps(config).encode(),
        "model.safetensors": safetensors_bytes(encoder.state_dict(), tmp_path),
    }, revision=settings["revision"])
    model = create_model("unet_resnet18", 3, pretrained=True)
    assert torch.equal(model.net.encoder.conv1.weight, encoder.conv1.weight)
    assert model.pretrained_cfg.mean == (0.5, 0.5, 0.5) and model.pretrained_cfg.std == (0.25, 0.25, 0.25)
