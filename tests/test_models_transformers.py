"""Hugging Face transformers models in the zoo: Mask2Former by name (tiny configs, CPU), its set-prediction loss
against transformers' own, training / val / resume / predict through the CLI, and hf:FOLDER checkpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")
pytest.importorskip("scipy")

import semseg  # noqa: E402
from semseg.cli import main  # noqa: E402
from semseg.errors import SemsegError  # noqa: E402
from semseg.io import read_label_map  # noqa: E402
from semseg.losses.mask_classification import MaskClassificationLoss  # noqa: E402
from semseg.models import download  # noqa: E402
from semseg.models.transformers_zoo import MaskClassificationModel, semantic_logits  # noqa: E402

BACKBONE = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}
TINY = {"hidden_dim": 32, "feature_size": 32, "mask_feature_size": 32, "encoder_layers": 1, "decoder_layers": 3,
        "num_attention_heads": 2, "dim_feedforward": 64, "encoder_feedforward_dim": 64, "num_queries": 8,
        "train_num_points": 256, "backbone": BACKBONE}


def tiny_mask2former(num_classes: int = 3, **kwargs) -> MaskClassificationModel:
    return semseg.create_model("mask2former_swin_tiny", num_classes=num_classes, **{**TINY, **kwargs})


def tiny_hf_config(num_classes: int = 3, id2label: dict | None = None):
    return transformers.Mask2FormerConfig(
        backbone_config=transformers.SwinConfig(**BACKBONE, out_features=["stage1", "stage2", "stage3", "stage4"]),
        num_labels=num_classes, id2label=id2label, **{k: v for k, v in TINY.items() if k != "backbone"})


def test_mask2former_names_are_listed_and_build_without_download():
    assert semseg.list_models("mask2former*") == [f"mask2former_swin_{s}" for s in ("base", "large", "small", "tiny")]
    model = tiny_mask2former()
    assert isinstance(model.net, transformers.Mask2FormerForUniversalSegmentation)
    assert model.pretrained_cfg.num_classes == 3 and model.pretrained_cfg.source == ""
    assert model.model_kwargs["num_queries"] == 8


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (1, 1), (33, 97)])
def test_forward_gives_logits_at_any_input_size(size):
    model = tiny_mask2former().eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, *size))
    assert logits.shape == (2, 3, *size) and torch.isfinite(logits).all()


def test_logits_are_the_authors_semantic_inference():
    """softmax(out) is sum_q p(c|q) sigmoid(m_q), normalized over classes, from the network's own queries."""
    model = tiny_mask2former().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw = model.net(pixel_values=x)
        masks = torch.nn.functional.interpolate(raw.masks_queries_logits, size=(64, 64), mode="bilinear",
                                                align_corners=False).sigmoid()
        scores = (raw.class_queries_logits.softmax(-1)[0, :, :-1, None, None] * masks[0][:, None]).sum(0)
        torch.testing.assert_close(model(x)[0].softmax(0), scores / scores.sum(0), rtol=1e-4, atol=1e-6)


def test_forward_aux_returns_every_decoder_layer_over_the_padded_input():
    model = tiny_mask2former()
    outputs = model.forward_aux(torch.randn(2, 3, 37, 53))
    assert outputs["out"].shape == (2, 3, 37, 53)
    assert outputs["class_queries"].shape == (2, 8, 4)
    assert outputs["mask_queries"].shape == (2, 8, 16, 16)  # 64x64 padded input, stride 4
    assert outputs["layer_class_queries"].shape == (2, 2, 8, 4)  # decoder_layers - 1 intermediate predictions
    assert outputs["layer_mask_queries"].shape == (2, 2, 8, 16, 16)


def _random_outputs(seed: int, layers: int = 2):
    gen = torch.Generator().manual_seed(seed)
    return {
        "class_queries": torch.randn(2, 6, 4, generator=gen, requires_grad=True),
        "mask_queries": torch.randn(2, 6, 16, 16, generator=gen, requires_grad=True),
        "layer_class_queries": torch.randn(layers, 2, 6, 4, generator=gen),
        "layer_mask_queries": torch.randn(layers, 2, 6, 16, 16, generator=gen),
    }


def _blob_target(seed: int, shape=(2, 64, 64), classes: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, classes, (shape[0], shape[1] // 16, shape[2] // 16), generator=gen)
    return coarse.repeat_interleave(16, 1).repeat_interleave(16, 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_set_loss_equals_transformers_mask2former_loss_without_ignored_pixels(seed):
    from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

    outputs, target = _random_outputs(seed), _blob_target(seed)
    config = transformers.Mask2FormerConfig(num_labels=3, train_num_points=300)
    reference = Mask2FormerLoss(config, {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0})
    classes = [t.unique() for t in target]
    masks = [(t[None] == c[:, None, None]).float() for t, c in zip(target, classes)]
    aux = [{"class_queries_logits": c, "masks_queries_logits": m}
           for c, m in zip(outputs["layer_class_queries"], outputs["layer_mask_queries"])]
    torch.manual_seed(seed)
    terms = reference(outputs["mask_queries"], outputs["class_queries"], masks, classes, aux)
    expected = sum(value * (2.0 if "cross_entropy" in key else 5.0) for key, value in terms.items())
    torch.manual_seed(seed)
    ours = MaskClassificationLoss(3, 255, size_divisor=32, num_points=300)(outputs, target)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_ignored_pixels_and_padding_count_in_no_term():
    """Mask logits over ignored (or padded) pixels get no gradient; the loss is finite with everything ignored."""
    outputs = _random_outputs(0)
    target = _blob_target(0)[:, :50, :]  # padded to 64 rows by the loss (size_divisor 32)
    target[:, :, :32] = 255  # the left half ignored
    loss = MaskClassificationLoss(3, 255, size_divisor=32, num_points=400)(outputs, target)
    loss.backward()
    grad = outputs["mask_queries"].grad.abs()
    assert grad[..., :, :7].sum() == 0  # mask cells whose samples all fall on ignored pixels
    assert grad[..., 14:, :].sum() == 0  # cells over the padding below row 50 (and their bilinear neighbours)
    assert grad[..., :11, 9:].sum() > 0
    everything_ignored = MaskClassificationLoss(3, 255, size_divisor=32, num_points=50)(
        _random_outputs(1), torch.full((2, 64, 64), 255))
    assert torch.isfinite(everything_ignored)


def test_set_loss_rejects_bad_settings_and_inputs():
    with pytest.raises(SemsegError, match="no setting"):
        MaskClassificationLoss(3, num_pointz=4)
    with pytest.raises(SemsegError, match="'mask_weight' must be a number >= 0"):
        MaskClassificationLoss(3, mask_weight=-1)
    loss = MaskClassificationLoss(3, size_divisor=32, num_points=20)
    with pytest.raises(SemsegError, match="'class_queries' output"):
        loss({"out": torch.zeros(1, 3, 8, 8)}, torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(SemsegError, match=r"values \[7\]"):
        loss(_random_outputs(0), torch.full((2, 64, 64), 7))
    with pytest.raises(SemsegError, match="built for 2"):
        MaskClassificationLoss(2, size_divisor=32)(_random_outputs(0), _blob_target(0))
    with pytest.raises(SemsegError, match="size_divisor"):
        MaskClassificationLoss(3, size_divisor=8)(_random_outputs(0), _blob_target(0)[:, :40, :])


def test_a_few_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = tiny_mask2former(num_classes=3)
    criterion = MaskClassificationLoss(3, 255, model.size_divisor, **{**model.set_loss_settings(), "num_points": 256})
    images = torch.randn(2, 3, 48, 64)
    target = torch.zeros(2, 48, 64, dtype=torch.long)
    target[:, :, 32:] = 1
    target[:, 30:, :20] = 2
    target[:, :4] = 255
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = criterion(model.forward_aux(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_unknown_kwargs_and_missing_folders_are_named(tmp_path):
    with pytest.raises(SemsegError, match="unknown keyword argument.*hidden_dims"):
        semseg.create_model("mask2former_swin_tiny", num_classes=3, hidden_dims=4)
    with pytest.raises(SemsegError, match="refused the config"):
        semseg.create_model("mask2former_swin_tiny", num_classes=3, backbone={"no_such_field": 1, "depths": "x"})
    with pytest.raises(SemsegError, match="no such folder"):
        semseg.create_model(f"hf:{tmp_path / 'missing'}", num_classes=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SemsegError, match="no config.json"):
        semseg.create_model(f"hf:{tmp_path / 'empty'}", num_classes=3)
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text("{}")
    with pytest.raises(SemsegError, match="no weights"):
        semseg.create_model(f"hf:{tmp_path / 'noweights'}", num_classes=3)


def test_published_weights_fail_fast_and_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(download.constants if hasattr(download, "constants") else download, "HF_HUB_CACHE", str(tmp_path), raising=False)
    monkeypatch.setattr(download, "network_reachable", lambda url: False)
    start = time.monotonic()
    with pytest.raises(SemsegError, match="could not download Mask2Former Swin-tiny ADE20K weights.*mask2former-swin-tiny-ade-semantic"):
        semseg.create_model("mask2former_swin_tiny", num_classes=3, pretrained=True)
    assert time.monotonic() - start < 10
    with pytest.raises(SemsegError, match="could not download the transformers model nvidia/segformer-b0"):
        semseg.create_model("hf:nvidia/segformer-b0-finetuned-ade-512-512", num_classes=3)


def test_weights_from_a_from_pretrained_folder(tmp_path):
    torch.manual_seed(1)
    net = transformers.Mask2FormerForUniversalSegmentation(tiny_hf_config(3))
    net.save_pretrained(tmp_path / "m2f")
    model = tiny_mask2former(3, ).eval()
    semseg.models.load_weights(model, tmp_path / "m2f")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.net(pixel_values=x).class_queries_logits, net.eval()(pixel_values=x).class_queries_logits)
    loaded = semseg.create_model("mask2former_swin_tiny", num_classes=3, pretrained=str(tmp_path / "m2f"), **TINY)
    assert loaded.pretrained_cfg.source == str(tmp_path / "m2f")
    with pytest.warns(UserWarning, match="head is re-initialized for 5 classes"):
        semseg.create_model("mask2former_swin_tiny", num_classes=5, pretrained=str(tmp_path / "m2f"), **TINY)
    with pytest.raises(SemsegError, match="loads into transformers models only"):
        semseg.create_model("fcn8s:resnet18", num_classes=3, pretrained=str(tmp_path / "m2f"))


def test_weights_from_a_file_the_zoo_way(tmp_path):
    """A state dict of the zoo model, or of the transformers network alone, loads like every zoo model's weights."""
    torch.manual_seed(2)
    model = tiny_mask2former(3).eval()
    torch.save(model.state_dict(), tmp_path / "zoo.pt")
    torch.save(model.net.state_dict(), tmp_path / "net.pt")
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        expected = model(x)
        for name in ("zoo.pt", "net.pt"):
            loaded = semseg.create_model("mask2former_swin_tiny", 3, pretrained=str(tmp_path / name), **TINY).eval()
            torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
            assert loaded.pretrained_cfg.source == str(tmp_path / name)


def test_onnx_export_passes_its_parity_check_and_predicts(tmp_path):
    from semseg.export import export_model

    report = export_model(tiny_mask2former().eval(), tmp_path / "m.onnx", "onnx", size=(64, 96), dynamic=True)
    assert report["agreement"] > 0.999
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(image), "--onnx", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "out")]) == 0
    assert read_label_map(tmp_path / "out" / "labels" / "in.png").shape == (45, 70)


# ------------------------------------------------------------------ the CLI: train, val, resume, predict (tiny_camvid: conftest.py)
def _train_args(run: Path, root: Path, *extra: str) -> list[str]:
    kwargs = json.dumps({k: v for k, v in TINY.items()})
    return ["train", "--run-dir", str(run), f"data.root={root}", "data.format=camvid", "model.name=mask2former_swin_tiny",
            f"model.kwargs={kwargs}", "data.crop_size=[48,64]", "data.workers=0", "train.batch_size=2", "train.epochs=2",
            "train.optimizer=adamw", "train.lr=0.0005", "train.precision=fp32", "train.device=cpu", *extra]


def test_train_val_resume_and_predict_every_mode(tiny_camvid, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_train_args(run, tiny_camvid)) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2] and all(np.isfinite(line["train_loss"]) for line in lines)
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["model_name"] == "mask2former_swin_tiny" and state["model_kwargs"]["num_queries"] == 8

    assert main(["val", "--checkpoint", str(run / "last.pt"), "--json", str(tmp_path / "val.json")]) == 0
    scores = json.loads((tmp_path / "val.json").read_text())
    assert scores["miou"] == lines[-1]["miou"] and "mboundary_iou" in scores

    # resume: one more epoch on top of the two
    assert main(["train", "--resume", str(run), "train.epochs=3"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

    frames = tiny_camvid / "val"
    for mode in (["--mode", "whole"], ["--mode", "slide", "--crop", "48", "48"], ["--tta", "--scales", "0.75", "1"]):
        out = tmp_path / ("pred" + "_".join(mode))
        assert main(["predict", str(frames), "--checkpoint", str(run / "last.pt"), "--out", str(out), *mode]) == 0
        for path in frames.glob("*.png"):
            labels = read_label_map(out / "labels" / path.name)
            assert labels.shape == (64, 80) and labels.max() < 11


def test_train_rejects_a_per_pixel_loss_for_mask2former(tiny_camvid, tmp_path, capsys):
    assert main(_train_args(tmp_path / "r", tiny_camvid, "train.loss=ce+dice")) == 2
    assert "trains with its set-prediction loss: set train.loss=auto" in capsys.readouterr().err


# ------------------------------------------------------------------ hf:FOLDER checkpoints
def _segformer(num_classes: int, id2label: dict):
    config = transformers.SegformerConfig(num_labels=num_classes, id2label=id2label, hidden_sizes=[8, 16, 24, 32],
                                          depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16)
    config.architectures = ["SegformerForSemanticSegmentation"]
    return transformers.SegformerForSemanticSegmentation(config)


def _upernet(num_classes: int, id2label: dict):
    backbone = transformers.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                           out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.UperNetConfig(backbone_config=backbone, num_labels=num_classes, id2label=id2label,
                                        hidden_size=16, auxiliary_in_channels=24, auxiliary_channels=8)
    config.architectures = ["UperNetForSemanticSegmentation"]
    return transformers.UperNetForSemanticSegmentation(config)


def _dpt(num_classes: int, id2label: dict):
    config = transformers.DPTConfig(num_labels=num_classes, id2label=id2label, hidden_size=16, num_hidden_layers=4,
                                    num_attention_heads=2, intermediate_size=32, image_size=64, patch_size=16,
                                    neck_hidden_sizes=[8, 16, 16, 16], fusion_hidden_size=16, head_in_index=-1,
                                    backbone_out_indices=[0, 1, 2, 3])
    config.architectures = ["DPTForSemanticSegmentation"]
    return transformers.DPTForSemanticSegmentation(config)


def _mask2former_hf(num_classes: int, id2label: dict):
    config = tiny_hf_config(num_classes, id2label)
    config.architectures = ["Mask2FormerForUniversalSegmentation"]
    return transformers.Mask2FormerForUniversalSegmentation(config)


@pytest.mark.parametrize("make", [_segformer, _upernet, _dpt, _mask2former_hf])
def test_hf_folder_checkpoints_predict_with_their_class_names(make, tmp_path, capsys):
    torch.manual_seed(0)
    names = {0: "road", 1: "car", 2: "sky"}
    net = make(3, names).eval()
    folder = tmp_path / "ckpt"
    net.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))

    model = semseg.create_model(f"hf:{folder}", num_classes=3).eval()
    meta = model.pretrained_cfg
    assert meta.class_names == ["road", "car", "sky"] and meta.mean == (0.5,) * 3 and meta.std == (0.25,) * 3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        raw = net(pixel_values=x)
    assert ours.shape == (1, 3, 64, 64)
    if hasattr(raw, "logits"):  # per-pixel models: the checkpoint's logits, upsampled to the input
        expected = torch.nn.functional.interpolate(raw.logits, size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    else:
        torch.testing.assert_close(ours, semantic_logits(raw.class_queries_logits, raw.masks_queries_logits, (64, 64)))

    image = tmp_path / "in" / "frame.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 70, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(image), "--model", f"hf:{folder}", "--out", str(tmp_path / "out")]) == 0
    assert read_label_map(tmp_path / "out" / "labels" / "frame.png").shape == (45, 70)
    assert main(["predict", str(image), "--model", f"hf:{folder}", "--num-classes", "3", "--out", str(tmp_path / "o")]) == 2
    assert "leave out --weights and --num-classes" in capsys.readouterr().err


def test_hf_checkpoint_fine_tunes_for_other_classes_and_rebuilds_from_a_checkpoint(tmp_path):
    net = _segformer(3, {0: "a", 1: "b", 2: "c"})
    net.save_pretrained(tmp_path / "seg")
    with pytest.warns(UserWarning, match="re-initialized for 5 classes"):
        model = semseg.create_model(f"hf:{tmp_path / 'seg'}", num_classes=5)
    assert model.pretrained_cfg.class_names is None and model.pretrained_cfg.num_classes == 5
    torch.testing.assert_close(model.net.segformer.stages[0].patch_embeddings.proj.weight,
                               net.segformer.stages[0].patch_embeddings.proj.weight)
    # a checkpoint keeps the config: the model rebuilds with the folder gone
    from semseg.checkpoint import save_checkpoint

    save_checkpoint({"model_name": model.model_name, "model_kwargs": model.model_kwargs,
                     "model_meta": model.pretrained_cfg.to_dict(), "model": model.state_dict()}, tmp_path / "c.pt")
    (tmp_path / "seg" / "config.json").unlink()
    rebuilt = semseg.load_model(tmp_path / "c.pt")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model.eval()(x))


def test_hf_folder_of_another_kind_of_model_is_named(tmp_path):
    config = transformers.SwinConfig(embed_dim=8, depths=[1], num_heads=[1])
    config.architectures = ["SwinModel"]
    transformers.SwinModel(config).save_pretrained(tmp_path / "swin")
    with pytest.raises(SemsegError, match="architecture 'SwinModel'"):
        semseg.create_model(f"hf:{tmp_path / 'swin'}", num_classes=3)


def test_hf_upernet_trains_its_auxiliary_head_and_predicts_without_it(tmp_path):
    import torch.nn.functional as F

    from semseg.models.transformers_zoo import UperNetModel

    torch.manual_seed(0)
    net = _upernet(3, {0: "road", 1: "car", 2: "sky"}).eval()
    net.save_pretrained(tmp_path / "up")
    model = semseg.create_model(f"hf:{tmp_path / 'up'}", num_classes=3).eval()
    assert isinstance(model, UperNetModel) and model.has_aux
    calls = []
    model.net.auxiliary_head.register_forward_hook(lambda *args: calls.append("aux"))
    x, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    with torch.no_grad():
        predicted = model(x)
        assert calls == []  # prediction runs the decode head alone
        outputs = model.forward_aux(x)
        reference = net(pixel_values=x, labels=labels)  # transformers' own loss over both heads
    assert set(outputs) == {"out", "aux"} and outputs["aux"].shape == (2, 3, 64, 64)
    torch.testing.assert_close(predicted, outputs["out"])
    torch.testing.assert_close(outputs["out"], reference.logits)
    ours = F.cross_entropy(outputs["out"], labels) + net.config.auxiliary_loss_weight * F.cross_entropy(outputs["aux"], labels)
    torch.testing.assert_close(ours, reference.loss)
    # training reaches the auxiliary head; an inference checkpoint leaves it out
    model.train().forward_aux(x)["aux"].sum().backward()
    assert all(p.grad is not None for p in model.net.auxiliary_head.parameters())
    from semseg.checkpoint import load_checkpoint
    from semseg.export.checkpoint import export_checkpoint_checked

    export_checkpoint_checked(model.eval(), tmp_path / "inference.pt", (64, 64))
    assert not any(key.startswith("net.auxiliary_head.") for key in load_checkpoint(tmp_path / "inference.pt")["model"])
    from semseg.export import export_checked

    calls.clear()
    assert export_checked(model, tmp_path / "upernet.onnx", (64, 64), dynamic=False)["agreement"] >= 0.999
    assert calls == []  # the graph holds the decode head alone


def test_hf_dpt_trains_its_auxiliary_head_with_transformers_own_loss(tmp_path):
    import torch.nn.functional as F

    torch.manual_seed(0)
    net = _dpt(3, {0: "road", 1: "car", 2: "sky"}).eval()
    assert net.config.use_auxiliary_head
    net.save_pretrained(tmp_path / "dpt")
    model = semseg.create_model(f"hf:{tmp_path / 'dpt'}", num_classes=3).eval()
    assert model.has_aux
    x, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    with torch.no_grad():
        outputs = model.forward_aux(x)
        reference = net(pixel_values=x, labels=labels)
        predicted = model(x)
    assert set(outputs) == {"out", "aux"} and outputs["aux"].shape == (2, 3, 64, 64)
    torch.testing.assert_close(predicted, outputs["out"])
    ours = F.cross_entropy(outputs["out"], labels) + net.config.auxiliary_loss_weight * F.cross_entropy(outputs["aux"], labels)
    torch.testing.assert_close(ours, reference.loss)
    # a wide input is padded to a square and the aux logits are cropped back like the main ones
    with torch.no_grad():
        wide = model.forward_aux(torch.randn(1, 3, 32, 64))
    assert wide["out"].shape == wide["aux"].shape == (1, 3, 32, 64)
    model.train().forward_aux(x)["aux"].sum().backward()
    assert all(p.grad is not None for p in model.net.auxiliary_head.parameters())


def test_hf_dpt_predicts_and_exports_without_its_auxiliary_head(tmp_path):
    """transformers' DPT (as BEiT and Data2Vec) calls its auxiliary head on every pass; semseg's prediction does not."""
    from semseg.export import export_checked

    torch.manual_seed(0)
    net = _dpt(3, {0: "road", 1: "car", 2: "sky"}).eval()
    net.save_pretrained(tmp_path / "dpt")
    model = semseg.create_model(f"hf:{tmp_path / 'dpt'}", num_classes=3).eval()
    calls = []
    for layer in model.net.auxiliary_head.modules():
        if isinstance(layer, torch.nn.Conv2d):
            layer.register_forward_hook(lambda *args: calls.append("aux"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        predicted = model(x)
        assert calls == []
        reference = net(pixel_values=x).logits  # a fresh transformers model: its head runs
        assert model.forward_aux(x)["aux"].shape == (1, 3, 64, 64) and calls  # training still reaches it
    expected = torch.nn.functional.interpolate(reference, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(predicted, expected)
    # the gate keeps the head's weights and their names
    assert [k for k in model.state_dict() if k.startswith("net.auxiliary_head.")] == [
        "net." + k for k in net.state_dict() if k.startswith("auxiliary_head.")]
    calls.clear()
    assert export_checked(model, tmp_path / "dpt.onnx", (64, 64), dynamic=False)["agreement"] >= 0.999
    assert calls == []  # the graph holds the main head alone
