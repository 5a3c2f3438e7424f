"""ONNX export: metadata, the parity check, ONNX Runtime prediction, and the zoo."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from semseg.export import checkpoint as export_checkpoint_module
from semseg.export import onnx as export
from semseg.export import parity as export_parity
from semseg.errors import SemsegError
from semseg.export import check_parity, export_checked, export_onnx, parity_inputs
from semseg.runtime import OnnxModel
from semseg.predict import Predictor
from test_predict import ToySeg, rgb


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    model = ToySeg()
    report_static = export_checked(model, folder / "static.onnx", (32, 48), dynamic=False)
    report_dynamic = export_checked(model, folder / "dynamic.onnx", (32, 48), dynamic=True)
    return model, folder, report_static, report_dynamic


def test_export_checks_parity_itself(toy_onnx):
    _, _, static, dynamic = toy_onnx
    for report in (static, dynamic):
        assert report["agreement"] >= 0.999 and report["max_abs_diff"] < 1e-4
        assert report["workflow_frames"] == 4 and report["workflow_agreement"] >= 0.99
    assert dynamic["batches"] == static["batches"] + 1  # the odd-sized batch of a dynamic graph
    assert dynamic["dynamic"] and not static["dynamic"]
    assert dynamic["workflow_agreement"] >= 0.999 and "graph_agreement" not in dynamic
    assert static["graph_agreement"] >= 0.999  # the graph in the same tiles as PyTorch


def test_export_is_dynamic_by_default(tmp_path):
    model = ToySeg()
    report = export_checked(model, tmp_path / "m.onnx", (32, 48))
    assert report["dynamic"] and OnnxModel(tmp_path / "m.onnx").fixed_input_size is None


def test_the_workflow_check_fails_the_export_and_removes_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(export_parity, "compare_workflow", lambda *a: {"workflow_agreement": 0.9, "workflow_frames": 4})
    with pytest.raises(SemsegError, match="parity check failed: semseg predict --onnx agrees with semseg predict on the "
                       "PyTorch model on 90.000% of pixels"):
        export_checked(ToySeg(), tmp_path / "m.onnx", (32, 48))
    assert not (tmp_path / "m.onnx").exists()


def test_compare_workflow_runs_predict_on_native_size_frames(toy_onnx):
    from semseg.export import compare_workflow, workflow_frames

    model, folder, _, _ = toy_onnx
    frames = workflow_frames()
    assert {frame.shape for frame in frames} == {(180, 240, 3)}  # the shipped CamVid frames, not resized
    other = ToySeg()
    with torch.no_grad():
        other.head.weight.neg_()  # another model: its labels differ almost everywhere
    assert compare_workflow(other, OnnxModel(folder / "dynamic.onnx"), frames)["workflow_agreement"] < 0.5


def test_metadata_round_trips(toy_onnx):
    model, folder, _, _ = toy_onnx
    props = {p.key: json.loads(p.value) for p in onnx.load(folder / "static.onnx").metadata_props}
    cfg = model.pretrained_cfg
    assert props["class_names"] == cfg.class_names and props["palette"] == cfg.palette
    assert props["mean"] == list(cfg.mean) and props["std"] == list(cfg.std)
    assert props["num_classes"] == 4 and props["ignore_index"] == 255 and props["input_size"] == [32, 48]
    runtime = OnnxModel(folder / "static.onnx")
    assert runtime.pretrained_cfg.class_names == cfg.class_names and runtime.fixed_input_size == (32, 48)
    assert OnnxModel(folder / "dynamic.onnx").fixed_input_size is None


def test_dynamic_graph_takes_any_size_and_batch(toy_onnx):
    model, folder, _, _ = toy_onnx
    x = torch.randn(3, 3, 27, 61)
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(folder / "dynamic.onnx")(x), model(x), rtol=1e-4, atol=1e-5)


def test_onnx_predictor_matches_pytorch(toy_onnx):
    model, folder, _, _ = toy_onnx
    image = rgb(37, 53)
    torch_labels = Predictor(model, precision="fp32")(image)
    assert (Predictor(OnnxModel(folder / "dynamic.onnx"))(image) == torch_labels).mean() >= 0.999
    # a fixed-size graph runs at native resolution: tiles of its size over a larger image, never a resized image
    fixed = Predictor(OnnxModel(folder / "static.onnx"))
    assert fixed.size is None and fixed.windowed and fixed.crop == (32, 48)
    tiled = Predictor(model, mode="slide", crop=(32, 48), precision="fp32")(image)
    assert (fixed(image) == tiled).mean() >= 0.999
    # a smaller image is padded to the graph's size and the logits cropped back
    small = rgb(20, 30)
    padded = np.zeros((32, 48, 3), np.uint8)
    padded[:20, :30] = small
    with torch.no_grad():
        x = fixed.preprocess(torch.from_numpy(small).permute(2, 0, 1)[None])
        expected = model(torch.nn.functional.pad(x, (0, 18, 0, 12)))[0, :, :20, :30].argmax(0).numpy()
    assert (fixed(small) == expected).mean() >= 0.999


def test_fixed_size_graph_refuses_what_it_cannot_run(toy_onnx):
    _, folder, _, _ = toy_onnx
    with pytest.raises(SemsegError, match="only takes 32x48 inputs; use a --crop of at most 32 48"):
        Predictor(OnnxModel(folder / "static.onnx"), mode="slide", crop=(64, 16))
    with pytest.raises(SemsegError, match="only takes 32x48 inputs; use --size 32 48, or leave --size out"):
        Predictor(OnnxModel(folder / "static.onnx"), size=(64, 64))
    assert Predictor(OnnxModel(folder / "static.onnx"), size=(32, 48)).windowed is False  # resized, as asked
    assert Predictor(OnnxModel(folder / "static.onnx"), mode="slide", crop=(16, 16)).crop == (16, 16)  # padded
    with pytest.raises(SemsegError, match="TTA needs one exported with --dynamic"):
        Predictor(OnnxModel(folder / "static.onnx"), tta=True)
    with pytest.raises(SemsegError, match="PyTorch models only"):
        Predictor(OnnxModel(folder / "dynamic.onnx"), precision="bf16")
    assert Predictor(OnnxModel(folder / "static.onnx"), mode="slide").crop == (32, 48)


def test_a_failed_parity_check_fails_the_export_and_keeps_the_existing_file(tmp_path, monkeypatch):
    real_export = export.export_onnx

    def export_a_different_model(model, path, *args, **kwargs):
        other = ToySeg()
        with torch.no_grad():
            other.head.weight.neg_()
        return real_export(other, path, *args, **kwargs)

    monkeypatch.setattr(export, "export_onnx", export_a_different_model)
    with pytest.raises(SemsegError, match="bad.onnx: parity check failed.*a file already there is left as it was"):
        export_checked(ToySeg(), tmp_path / "bad.onnx", (32, 32))
    assert not (tmp_path / "bad.onnx").exists()
    (tmp_path / "bad.onnx").write_bytes(b"the deployed model")
    with pytest.raises(SemsegError, match="parity check failed"):
        export_checked(ToySeg(), tmp_path / "bad.onnx", (32, 32))
    assert (tmp_path / "bad.onnx").read_bytes() == b"the deployed model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_check_parity_reports_differences(toy_onnx):
    model, folder, _, _ = toy_onnx
    other = ToySeg()
    with torch.no_grad():
        other.head.bias.add_(torch.tensor([0.0, 0.0, 0.0, 5.0]))  # class 3 wins everywhere
    report = check_parity(other, folder / "dynamic.onnx", parity_inputs((32, 48), other.pretrained_cfg.mean, other.pretrained_cfg.std))
    assert report["agreement"] < 0.9 and report["max_abs_diff"] > 1


def test_models_listed_as_not_exportable_say_why(tmp_path, monkeypatch):
    monkeypatch.setitem(export.NOT_EXPORTABLE, "toy", "it uses an operator ONNX lacks")
    with pytest.raises(SemsegError, match="model toy cannot be exported to ONNX: it uses an operator ONNX lacks"):
        export_onnx(ToySeg(), tmp_path / "toy.onnx", (32, 32))


class PyramidToy(ToySeg):
    """ToySeg plus PSPNet-style pooling to a 2x2 grid: shape-dependent kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d((2, 2))

    def forward(self, x):
        y = super().forward(x)
        return y + torch.nn.functional.interpolate(self.pool(y), size=y.shape[-2:], mode="bilinear")


def test_grid_pooling_exports_for_a_fixed_size_only(tmp_path, caplog):
    model = PyramidToy()
    with pytest.raises(SemsegError, match="cannot be exported with --dynamic: its pool pools to a fixed 2x2 grid"):
        export_onnx(model, tmp_path / "p.onnx", (32, 32), dynamic=True)
    assert export.fixed_size_only(ToySeg()) is None
    report = export_checked(model, tmp_path / "p.onnx", (32, 48))  # TorchScript fails on it; torch.export takes over
    assert report["agreement"] >= 0.999 and report["graph_agreement"] >= 0.999 and not report["dynamic"]
    assert "model toy is exported for 32x48 inputs only: its pool pools to a fixed 2x2 grid" in caplog.text
    assert OnnxModel(tmp_path / "p.onnx")(torch.randn(3, 3, 32, 48)).shape == (3, 4, 32, 48)


def test_unreadable_onnx_files_raise_clear_errors(tmp_path):
    with pytest.raises(SemsegError, match="ONNX file not found"):
        OnnxModel(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(SemsegError, match="not a readable ONNX model"):
        OnnxModel(tmp_path / "junk.onnx")


def test_a_foreign_onnx_model_gets_imagenet_defaults(tmp_path):
    model = torch.nn.Conv2d(3, 2, 1)
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), tmp_path / "plain.onnx", dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    predictor = Predictor(OnnxModel(tmp_path / "plain.onnx"))
    assert predictor.mean == [0.485, 0.456, 0.406]
    assert predictor(rgb(9, 11)).shape == (9, 11)


# ------------------------------------------------------------------ the zoo and the command
from semseg.cli import main  # noqa: E402
from semseg.models import create_model, list_models  # noqa: E402

FAST_EXPORTS = ["lraspp_mobilenet_v3_large", "fcn8s_resnet18", "segformer_b0"]


def _export_zoo_model(name, tmp_path, dynamic):
    torch.manual_seed(0)
    model = create_model(name, 3)
    if name in export.NOT_EXPORTABLE or (dynamic and export.fixed_size_only(model)):
        with pytest.raises(SemsegError, match="cannot be exported"):
            export_onnx(model, tmp_path / f"{name}.onnx", (64, 96), dynamic=dynamic)
        return
    report = export_checked(model, tmp_path / f"{name}.onnx", (64, 96), dynamic=dynamic)
    assert report["agreement"] >= 0.999


@pytest.mark.parametrize("name", FAST_EXPORTS)
def test_small_zoo_models_export_with_parity(name, tmp_path):
    _export_zoo_model(name, tmp_path, dynamic=True)


@pytest.mark.parametrize("kwargs", [{"low_level_stride": 4}, {"low_level_stride": 4, "aux_loss": True},
                                    {"low_level_stride": [4, 8], "aux_loss": True},
                                    {"low_level_stride": 4, "aux_loss": True, "aux_strides": [8, 16]}])
def test_lraspp_with_a_stride_4_low_level_branch_exports_with_parity(kwargs, tmp_path):
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", 3, **kwargs)
    assert export_checked(model, tmp_path / "s4.onnx", (64, 96), dynamic=True)["agreement"] >= 0.999


def test_an_ibn_model_exports_with_parity_as_instance_normalization(tmp_path):
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", 3, low_level_stride=4, norm="ibn")
    assert export_checked(model, tmp_path / "ibn.onnx", (64, 96), dynamic=True)["agreement"] >= 0.999
    assert "InstanceNormalization" in {node.op_type for node in onnx.load(str(tmp_path / "ibn.onnx")).graph.node}


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("name", list_models())
def test_every_curated_model_exports_or_says_why(name, dynamic, tmp_path):
    _export_zoo_model(name, tmp_path, dynamic)


@pytest.fixture(scope="module")
def zoo_checkpoint(tmp_path_factory):
    from semseg.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", 3).eval()
    model.pretrained_cfg.class_names = ["road", "car", "sky"]
    model.pretrained_cfg.palette = [[128, 64, 128], [0, 0, 142], [70, 130, 180]]
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint({"model_name": model.model_name, "model_meta": model.pretrained_cfg.to_dict(),
                     "model": model.state_dict()}, path)
    return path, model


def test_export_cli_then_predict_with_onnx_runtime(zoo_checkpoint, tmp_path, capsys):
    path, model = zoo_checkpoint
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(onnx_path), "--dynamic",
                 "--size", "64", "96"]) == 0
    out = capsys.readouterr().out
    assert "argmax agreement 100.000%" in out or "argmax agreement 99.9" in out
    runtime = OnnxModel(onnx_path)
    meta = runtime.pretrained_cfg
    assert meta.class_names == ["road", "car", "sky"] and meta.palette[1] == [0, 0, 142]
    assert runtime.model_name == "lraspp_mobilenet_v3_large" and runtime.dynamic is True

    image_dir = tmp_path / "images"
    image_dir.mkdir()
    from PIL import Image

    Image.fromarray(rgb(45, 70)).save(image_dir / "x.png")
    assert main(["predict", str(image_dir), "--onnx", str(onnx_path), "--out", str(tmp_path / "pred")]) == 0
    labels = np.asarray(Image.open(tmp_path / "pred" / "labels" / "x.png"))
    with Image.open(tmp_path / "pred" / "labels" / "x.png") as png:  # the palette travelled through the metadata
        assert png.getpalette()[3:6] == [0, 0, 142]
    assert (labels == Predictor(model, precision="fp32")(rgb(45, 70))).mean() >= 0.999


def test_export_with_no_flags_then_predict_onnx_matches_predict_on_camvid_size_frames(zoo_checkpoint, tmp_path, capsys):
    path, _ = zoo_checkpoint
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(path), "--out", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert "dynamic height and width" in out and "semseg predict --onnx on 4 street frames at native size" in out
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for seed in range(2):
        Image.fromarray(rgb(360, 480, seed)).save(images / f"{seed}.png")
    assert main(["predict", str(images), "--checkpoint", str(path), "--out", str(tmp_path / "torch")]) == 0
    assert main(["predict", str(images), "--onnx", str(onnx_path), "--out", str(tmp_path / "onnx")]) == 0
    for seed in range(2):
        torch_labels = np.asarray(Image.open(tmp_path / "torch" / "labels" / f"{seed}.png"))
        onnx_labels = np.asarray(Image.open(tmp_path / "onnx" / "labels" / f"{seed}.png"))
        assert torch_labels.shape == (360, 480) and (torch_labels == onnx_labels).mean() >= 0.999


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "w.pth"], "--weights and --num-classes go with --model NAME"),
        (["--model", "no_such_net", "--weights", "w.pth", "--num-classes", "3"], "unknown model 'no_such_net'"),
        (["--model", "lraspp_mobilenet_v3_large", "--num-classes", "3"], "needs --weights FILE"),
        (["--checkpoint", "missing.pt"], "checkpoint file not found"),
        (["--checkpoint", "CKPT", "--size", "0", "32"], "--size must be two positive integers"),
    ],
)
def test_export_cli_bad_inputs(zoo_checkpoint, tmp_path, capsys, args, message):
    args = [a.replace("CKPT", str(zoo_checkpoint[0])) for a in args]
    assert main(["export", *args, "--out", str(tmp_path / "x.onnx")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_export_without_a_model_source_exports_the_default_model(tmp_path, capsys):
    out = tmp_path / "default.pt"
    assert main(["export", "--format", "semseg", "--half", "--out", str(out)]) == 0
    assert "exporting the embedded default model" in capsys.readouterr().out
    from semseg.checkpoint import default_model_path, load_checkpoint

    exported, shipped = load_checkpoint(out), load_checkpoint(default_model_path())
    assert exported["model_meta"]["class_names"] == shipped["model_meta"]["class_names"]
    assert exported["model_meta"]["tta_scales"] == shipped["model_meta"]["tta_scales"]  # its recommendation carried over


def test_export_half_checkpoint_halves_the_file_and_predicts_the_same(zoo_checkpoint, tmp_path, capsys):
    from semseg.checkpoint import load_checkpoint, save_checkpoint
    from semseg.models import load_model

    path, model = zoo_checkpoint
    training = {**load_checkpoint(path), "config": {"name": "toy"}, "metrics": {"miou": 0.5},
                "optimizer": {"state": {}, "param_groups": []}}
    save_checkpoint(training, tmp_path / "train.pt")
    out = tmp_path / "small.pt"
    assert main(["export", "--checkpoint", str(tmp_path / "train.pt"), "--format", "semseg", "--half",
                 "--out", str(out), "--size", "64", "96"]) == 0
    assert "float16 weights" in capsys.readouterr().out
    state = load_checkpoint(out)
    assert "optimizer" not in state and state["config"] == {"name": "toy"} and state["metrics"] == {"miou": 0.5}
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float16}
    assert out.stat().st_size < 0.6 * path.stat().st_size
    reloaded = load_model(out)  # float32 weights again, with the metadata
    assert reloaded.pretrained_cfg.class_names == ["road", "car", "sky"]
    assert all(p.dtype == torch.float32 for p in reloaded.parameters())
    assert (Predictor(reloaded, precision="fp32")(rgb(45, 70)) == Predictor(model, precision="fp32")(rgb(45, 70))).mean() >= 0.999


def test_export_int8_checkpoint_stores_the_large_weights_in_int8_and_predicts_the_same(zoo_checkpoint, tmp_path, capsys):
    from semseg.checkpoint import load_checkpoint
    from semseg.models import load_model
    from semseg.models.weights import INT8_MIN_ELEMENTS

    path, model = zoo_checkpoint
    out = tmp_path / "int8.pt"
    assert main(["export", "--checkpoint", str(path), "--format", "semseg", "--int8", "--out", str(out),
                 "--size", "64", "96"]) == 0
    assert "int8 and float16 weights" in capsys.readouterr().out
    state = load_checkpoint(out)
    original = model.state_dict()
    large = {k for k, v in original.items() if v.is_floating_point() and v.ndim >= 2 and v.numel() >= INT8_MIN_ELEMENTS}
    assert large and set(state["int8_weights"]) == large and set(state["int8_scales"]) == large
    assert not large & set(state["model"])  # an older loader finds them missing instead of loading int8 as floats
    assert {v.dtype for v in state["int8_weights"].values()} == {torch.int8}
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float16}
    assert out.stat().st_size < 0.4 * path.stat().st_size
    reloaded = load_model(out)
    assert all(p.dtype == torch.float32 for p in reloaded.parameters())
    # the reference: symmetric int8, the largest magnitude of each output channel at 127
    key = sorted(large)[0]
    weight = original[key].numpy().reshape(original[key].shape[0], -1)
    scale = np.abs(weight).max(axis=1, keepdims=True) / 127
    expected = (np.clip(np.round(weight / scale), -127, 127) * scale).reshape(original[key].shape)
    np.testing.assert_allclose(reloaded.state_dict()[key].numpy(), expected, rtol=1e-6, atol=1e-8)
    assert np.abs(reloaded.state_dict()[key].numpy() - original[key].numpy()).max() <= scale.max() / 2 + 1e-8
    from semseg.models import load_weights

    fine_tuned = load_weights(create_model("lraspp_mobilenet_v3_large", 3), out)  # train model.pretrained=FILE's path
    torch.testing.assert_close(fine_tuned.state_dict()[key], reloaded.state_dict()[key])
    assert (Predictor(reloaded, precision="fp32")(rgb(45, 70)) == Predictor(model, precision="fp32")(rgb(45, 70))).mean() >= 0.999


@pytest.fixture(scope="module")
def int8_export(zoo_checkpoint, tmp_path_factory):
    from semseg.export import export_model

    path = tmp_path_factory.mktemp("int8") / "int8.pt"
    export_model(zoo_checkpoint[1], path, "semseg", size=(32, 48), int8=True)
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s["int8_scales"].pop(sorted(s["int8_scales"])[0]), "lacks its scales"),
        (lambda s: s["int8_scales"].update({k: v[:-1] for k, v in s["int8_scales"].items()}), "lacks its scales"),
        (lambda s: s["int8_weights"].update({k: v.float() for k, v in s["int8_weights"].items()}), "is not an int8 tensor"),
        (lambda s: s["int8_scales"].update({"net.no.such.weight": torch.ones(3)}), "entries without an int8 weight"),
        (lambda s: s.update(int8_scales=[1.0]), "must be dicts"),
    ],
)
def test_a_damaged_int8_checkpoint_is_refused_naming_the_file_and_the_entry(int8_export, tmp_path, capsys, damage, message):
    from PIL import Image

    from semseg.checkpoint import load_checkpoint, save_checkpoint
    from semseg.models import load_model

    state = load_checkpoint(int8_export)
    damage(state)
    state.pop("format"), state.pop("version")
    save_checkpoint(state, tmp_path / "bad.pt")
    with pytest.raises(SemsegError, match=f"bad.pt: .*{message}"):
        load_model(tmp_path / "bad.pt")
    capsys.readouterr()
    Image.fromarray(rgb(24, 32)).save(tmp_path / "street.png")
    assert main(["predict", str(tmp_path / "street.png"), "--checkpoint", str(tmp_path / "bad.pt"),
                 "--out", str(tmp_path / "pred")]) == 2
    assert message in capsys.readouterr().err


def test_export_checkpoint_fails_its_parity_check_and_keeps_the_existing_file(zoo_checkpoint, tmp_path, monkeypatch):
    from semseg.models import load_model

    _, model = zoo_checkpoint
    reloaded = load_model(zoo_checkpoint[0])
    # what a lossy storage would give: other logits than the original's
    monkeypatch.setattr(export_checkpoint_module, "load_model", lambda path: (lambda x: -reloaded(x)))
    with pytest.raises(SemsegError, match="parity check failed: the exported weights agree"):
        export_checkpoint_module.export_checkpoint_checked(model, tmp_path / "x.pt", (32, 48))
    assert not (tmp_path / "x.pt").exists()
    (tmp_path / "x.pt").write_bytes(b"the deployed model")
    with pytest.raises(SemsegError, match="x.pt: parity check failed"):
        export_checkpoint_module.export_checkpoint_checked(model, tmp_path / "x.pt", (32, 48))
    assert (tmp_path / "x.pt").read_bytes() == b"the deployed model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "onnx", "--half"], "--half applies to --format semseg"),
        (["--format", "semseg", "--dynamic"], "--dynamic applies to --format onnx"),
        (["--format", "semseg", "--fixed"], "--fixed applies to --format onnx"),
        (["--format", "semseg", "--int8", "--calib", "images"], "--format semseg --int8 stores the weights in int8"),
    ],
)
def test_export_format_flags_that_do_not_fit(zoo_checkpoint, tmp_path, capsys, args, message):
    assert main(["export", "--checkpoint", str(zoo_checkpoint[0]), *args, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_export_records_the_recommended_tta_in_both_formats(zoo_checkpoint, tmp_path, capsys):
    from semseg.models import load_model

    path, _ = zoo_checkpoint
    assert main(["export", "--checkpoint", str(path), "--format", "semseg", "--tta-scales", "1", "1.25",
                 "--out", str(tmp_path / "m.pt"), "--size", "32", "48"]) == 0
    assert load_model(tmp_path / "m.pt").pretrained_cfg.tta_scales == (1.0, 1.25)
    assert main(["export", "--checkpoint", str(tmp_path / "m.pt"), "--format", "onnx", "--dynamic",
                 "--out", str(tmp_path / "m.onnx"), "--size", "32", "48"]) == 0
    runtime = OnnxModel(tmp_path / "m.onnx")
    assert runtime.pretrained_cfg.tta_scales == (1.0, 1.25) and Predictor(runtime).tta
    assert main(["export", "--checkpoint", str(tmp_path / "m.pt"), "--format", "onnx", "--fixed",
                 "--out", str(tmp_path / "fixed.onnx"), "--size", "32", "48"]) == 0
    assert "32x48 inputs" in capsys.readouterr().out
    assert not Predictor(OnnxModel(tmp_path / "fixed.onnx")).tta  # a fixed-size graph cannot follow it
    assert main(["export", "--checkpoint", str(path), "--tta-scales", "0", "--out", str(tmp_path / "z.pt"),
                 "--format", "semseg"]) == 2
    assert "--tta-scales must be positive" in capsys.readouterr().err


def test_logit_adjustment_takes_back_a_share_of_the_class_weights_prior(tmp_path, capsys):
    from semseg.checkpoint import save_checkpoint
    from semseg.losses.weights import logit_adjustment
    from semseg.models import load_model

    weights = [0.5, 1.0, 4.0]
    np.testing.assert_allclose(logit_adjustment(weights, 0.5), [-0.5 * np.log(w) for w in weights])
    assert all(v == 0 for v in logit_adjustment(weights, 0.0))
    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", 3).eval()
    trained = tmp_path / "trained.pt"
    save_checkpoint({"model_name": model.model_name, "model_meta": model.pretrained_cfg.to_dict(),
                     "model": model.state_dict(), "class_weights": weights}, trained)
    assert main(["export", "--checkpoint", str(trained), "--format", "semseg", "--logit-adjust", "0.5",
                 "--out", str(tmp_path / "m.pt"), "--size", "32", "48"]) == 0
    adjusted = load_model(tmp_path / "m.pt")
    offset = torch.tensor([-0.5 * np.log(w) for w in weights], dtype=torch.float32).view(1, 3, 1, 1)
    np.testing.assert_allclose(adjusted.pretrained_cfg.logit_offset, offset.flatten().tolist(), rtol=1e-6)
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(adjusted(x), model(x) + offset, rtol=1e-5, atol=1e-5)
    # the exported graph carries it: ONNX Runtime gives the adjusted logits
    assert main(["export", "--checkpoint", str(tmp_path / "m.pt"), "--out", str(tmp_path / "m.onnx"), "--size", "32", "48"]) == 0
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(tmp_path / "m.onnx")(x), model(x) + offset, rtol=1e-4, atol=1e-4)
        # training's forward is the trained logits: the offset is for prediction only
        torch.testing.assert_close(adjusted.train().forward_aux(x)["out"], model.train().forward_aux(x)["out"])
    capsys.readouterr()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--logit-adjust", "0.5"], "trained without class weights"),
        (["--logit-adjust", "1.5", "WEIGHTED"], "must lie in 0..1"),
        (["--logit-adjust", "0.5", "NOCHECKPOINT"], "give --checkpoint"),
    ],
)
def test_logit_adjustment_bad_inputs(zoo_checkpoint, tmp_path, capsys, args, message):
    from semseg.checkpoint import save_checkpoint

    path, model = zoo_checkpoint
    if "WEIGHTED" in args:
        path = tmp_path / "weighted.pt"
        save_checkpoint({"model_name": model.model_name, "model_meta": model.pretrained_cfg.to_dict(),
                         "model": model.state_dict(), "class_weights": [1.0, 2.0, 3.0]}, path)
    source = [] if "NOCHECKPOINT" in args else ["--checkpoint", str(path)]
    args = [a for a in args if a not in ("WEIGHTED", "NOCHECKPOINT")]
    code = main(["export", *source, *args, "--format", "semseg", "--out", str(tmp_path / "m.pt")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_a_logit_offset_of_the_wrong_length_is_named(tmp_path):
    model = create_model("lraspp_mobilenet_v3_large", 3).eval()
    model.pretrained_cfg.logit_offset = (0.0, 1.0)
    with pytest.raises(SemsegError, match="logit_offset has 2 values but the model predicts 3 classes"):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name, kwargs, heads", [
    ("bisenetv2", {}, {"boosters"}),
    ("pidnet_s", {}, {"aux_head", "boundary_head"}),
    ("lraspp_mobilenet_v3_large", {"low_level_stride": 4, "aux_loss": True}, {"aux_classifier"}),
])
def test_an_inference_checkpoint_leaves_out_the_training_only_heads(name, kwargs, heads, tmp_path, caplog):
    import logging

    from semseg.checkpoint import load_checkpoint
    from semseg.export.checkpoint import export_checkpoint_checked
    from semseg.models import load_model

    torch.manual_seed(0)
    model = create_model(name, 3, **kwargs).eval()
    out = tmp_path / "inference.pt"
    report = export_checkpoint_checked(model, out, (64, 96))
    assert report["agreement"] == 1.0
    kept = load_checkpoint(out)["model"]
    dropped = {key.split(".")[1] for key in model.state_dict() if key not in kept}
    assert dropped == heads
    assert {key.split(".")[1] for key in kept} == {key.split(".")[1] for key in model.state_dict()} - heads
    x = torch.randn(1, 3, 64, 96)
    reloaded = load_model(out)
    assert reloaded.has_aux and reloaded.model_kwargs == model.model_kwargs
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))
    # fine-tuning from the file: the training heads start afresh, and the log says so
    with caplog.at_level(logging.INFO, logger="semseg.models.weights"):
        create_model(name, 3, pretrained=str(out), **kwargs)
    assert f"no weights for the training-only head(s) {', '.join(sorted(heads))}" in caplog.text
