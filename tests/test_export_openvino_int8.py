"""OpenVINO IR export and int8 quantization with its accuracy gate (semseg export --format openvino, --int8)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from semseg.cli import main
from semseg.errors import SemsegError
from semseg.export import export_model, quantize
from semseg.predict import Predictor
from semseg.predict.backends import open_exported
from test_predict import ToySeg, rgb

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Six frames and, as their ground truth, the float32 model's own labels (so float32 scores 100% mIoU)."""
    folder = tmp_path_factory.mktemp("labelled")
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    model = ToySeg()
    predictor = Predictor(model, precision="fp32", tta=False)
    for seed in range(6):
        image = rgb(40, 56, seed)
        Image.fromarray(image).save(folder / "images" / f"f{seed}.png")
        Image.fromarray(predictor(image).astype(np.uint8)).save(folder / "labels" / f"f{seed}.png")
    return folder


def test_openvino_ir_is_checked_and_predicts_like_pytorch(tmp_path):
    model = ToySeg()
    out = tmp_path / "model.xml"
    report = export_model(model, out, "openvino", (32, 48))
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert report["dynamic"] and report["agreement"] >= 0.999 and report["workflow_agreement"] >= 0.999
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    session = open_exported(out)
    assert session.backend == "openvino" and session.pretrained_cfg.num_classes == 4 and session.model_name == "toy"
    image = rgb(45, 70, 3)
    assert (Predictor(session)(image) == Predictor(model, precision="fp32")(image)).mean() >= 0.999


def test_openvino_export_names_the_xml(tmp_path):
    with pytest.raises(SemsegError, match="name the .xml file"):
        export_model(ToySeg(), tmp_path / "model.onnx", "openvino", (32, 48))


@pytest.mark.parametrize("fmt, suffix", [("openvino", ".xml"), ("onnx", ".onnx")])
def test_int8_export_measures_both_models_and_writes_the_int8_one(labelled, tmp_path, fmt, suffix):
    out = tmp_path / f"int8{suffix}"
    report = export_model(ToySeg(), out, fmt, (32, 48), int8=True, calib=[str(labelled / "images")],
                          labels=labelled / "labels", max_drop=100.0)
    assert report["fp32"]["miou"] == pytest.approx(1.0) and report["fp32"]["agreement"] == 1.0
    assert 0 <= report["int8"]["miou"] <= 1 and report["int8"]["agreement"] > 0.5
    assert report["miou_drop"] == pytest.approx(100 * (1 - report["int8"]["miou"]))
    assert report["calibration_images"] == report["scored_images"] == 6
    assert report["int8"]["ms_per_image"] > 0 and report["fp32"]["ms_per_image"] > 0
    session = open_exported(out)
    labels = Predictor(session, tta=False)(rgb(40, 56, 0))
    assert labels.shape == (40, 56) and set(np.unique(labels)) <= set(range(4))


@pytest.mark.parametrize("gate", [True, False])
def test_the_accuracy_gate_refuses_a_model_that_drops_more_than_allowed(labelled, tmp_path, monkeypatch, gate):
    out = tmp_path / "int8.onnx"
    out.write_bytes(b"the user's earlier file")

    def measured(*args, **kwargs):  # an int8 model 2.5 points below float32
        return {"fp32": {"miou": 0.600, "agreement": 1.0, "ms_per_image": 2.0, "images_per_s": 500.0},
                "int8": {"miou": 0.575, "agreement": 0.97, "ms_per_image": 1.0, "images_per_s": 1000.0}}

    monkeypatch.setattr(quantize, "compare_predictors", measured)
    call = lambda: export_model(ToySeg(), out, "onnx", (32, 48), int8=True, calib=[str(labelled / "images")],  # noqa: E731
                                labels=labelled / "labels", max_drop=2.0, gate=gate)
    if gate:
        with pytest.raises(SemsegError, match=r"scores 57.50 mIoU on the 6 labelled images against 60.00 in float32, "
                           r"a drop of 2.50 points, more than --max-drop 2; nothing written"):
            call()
        assert out.read_bytes() == b"the user's earlier file"
    else:
        assert call()["miou_drop"] == pytest.approx(2.5)
        assert open_exported(out).backend == "onnxruntime"
    assert [p.name for p in tmp_path.iterdir()] == ["int8.onnx"]  # no staging folder left


def test_int8_cli_prints_the_comparison(tmp_path, capsys):
    import torch

    from semseg.checkpoint import save_checkpoint
    from semseg.models import create_model

    torch.manual_seed(0)
    model = create_model("lraspp_mobilenet_v3_large", 3).eval()
    checkpoint = tmp_path / "model.pt"
    save_checkpoint({"model_name": model.model_name, "model_meta": model.pretrained_cfg.to_dict(),
                     "model": model.state_dict()}, checkpoint)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    predictor = Predictor(model, precision="fp32", tta=False)
    for seed in range(3):
        image = rgb(64, 96, seed)
        Image.fromarray(image).save(tmp_path / "images" / f"f{seed}.png")
        Image.fromarray(predictor(image).astype(np.uint8)).save(tmp_path / "labels" / f"f{seed}.png")
    out = tmp_path / "int8.xml"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "openvino", "--int8", "--calib",
                 str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--no-gate", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(int8, dynamic height and width" in printed
    assert "int8 (calibrated on 3 images) against float32 in OpenVINO on the 3 labelled images" in printed
    assert "vs 100.00" in printed and "ms per image" in printed
    assert out.is_file() and out.with_suffix(".bin").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--int8", "--out", "m.onnx"], "--int8 needs --calib DIR"),
        (["--calib", "d", "--out", "m.onnx"], "--calib and --labels calibrate an int8 export: add --int8"),
        (["--max-drop", "2", "--out", "m.onnx"], "gate an int8 export: add --int8"),
        (["--no-gate", "--out", "m.onnx"], "gate an int8 export: add --int8"),
        (["--format", "semseg", "--int8", "--calib", "d", "--labels", "l", "--out", "m.pt"],
         "--format semseg --int8 stores the weights in int8 and needs no calibration"),
        (["--format", "semseg", "--int8", "--max-drop", "2", "--out", "m.pt"], "--format semseg --int8 is gated by the parity"),
        (["--format", "openvino", "--half", "--out", "m.xml"], "--half applies to --format semseg"),
        (["--format", "openvino", "--out", "m.onnx"], "name the .xml file"),
        (["--format", "tflite", "--out", "m.tflite"], "semseg exports onnx, openvino"),
    ],
)
def test_export_option_errors_come_before_the_model_loads(tmp_path, capsys, args, message):
    # --checkpoint names a file that does not exist: the option check must fail first
    args = [a if not a.startswith("m.") else str(tmp_path / a) for a in args]
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pt"), *args]) == 2
    assert message in capsys.readouterr().err


def test_int8_names_an_image_without_ground_truth(labelled, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "f0.png").write_bytes((labelled / "labels" / "f0.png").read_bytes())
    with pytest.raises(SemsegError, match=r"f1.png: no label map of the same name"):
        export_model(ToySeg(), tmp_path / "m.onnx", "onnx", (32, 48), int8=True, calib=[str(labelled / "images")],
                     labels=labels)
    assert not (tmp_path / "m.onnx").exists()


def test_predict_runs_an_openvino_ir_and_refuses_the_wrong_backend(tmp_path, capsys):
    model = ToySeg()
    out = tmp_path / "model.xml"
    export_model(model, out, "openvino", (32, 48))
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(rgb(36, 52, 1)).save(images / "a.png")
    assert main(["predict", str(images), "--onnx", str(out), "--out", str(tmp_path / "pred")]) == 0
    assert "openvino" in capsys.readouterr().out
    labels = np.asarray(Image.open(tmp_path / "pred" / "labels" / "a.png"))
    assert (labels == Predictor(model, precision="fp32")(rgb(36, 52, 1))).mean() >= 0.999
    assert main(["predict", str(images), "--onnx", str(out), "--backend", "onnxruntime",
                 "--out", str(tmp_path / "p2")]) == 2
    assert "an OpenVINO IR runs in OpenVINO" in capsys.readouterr().err
    assert main(["predict", str(images), "--onnx", str(out), "--backend", "torch", "--out", str(tmp_path / "p3")]) == 2
    assert "--backend torch needs --checkpoint or --model" in capsys.readouterr().err


@pytest.mark.parametrize("fmt, name, steps", [("onnx", "m.onnx", 11), ("openvino", "m.xml", 12), ("semseg", "m.pt", 6)])
def test_export_shows_its_progress(tmp_path, caplog, fmt, name, steps):
    # not a terminal: one line per 10% of the steps (a file written, each batch and frame checked)
    import logging

    from semseg.models import create_model

    model = create_model("lraspp_mobilenet_v3_large", 3).eval() if fmt == "semseg" else ToySeg()  # rebuilt by name
    with caplog.at_level(logging.INFO, logger="semseg"):
        export_model(model, tmp_path / name, fmt, (32, 48))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("export: ")]
    assert lines and lines[-1].startswith(f"export: {steps}/{steps} step (100%)")


def test_int8_without_nncf_says_what_to_install(labelled, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    with pytest.raises(SemsegError, match=r"--int8 --format onnx needs nncf: pip install 'semseg\[openvino\]'"):
        export_model(ToySeg(), tmp_path / "m.onnx", "onnx", (32, 48), int8=True, calib=[str(labelled / "images")],
                     labels=labelled / "labels")


def test_int8_refuses_labels_without_a_labelled_pixel(labelled, tmp_path):
    labels = tmp_path / "void"
    labels.mkdir()
    for path in (labelled / "labels").iterdir():
        Image.fromarray(np.full((40, 56), 255, np.uint8)).save(labels / path.name)
    with pytest.raises(SemsegError, match="no labelled pixel in the label maps"):
        export_model(ToySeg(), tmp_path / "m.onnx", "onnx", (32, 48), int8=True, calib=[str(labelled / "images")],
                     labels=labels)
    assert not (tmp_path / "m.onnx").exists()
