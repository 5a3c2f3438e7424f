"""ONNX export: metadata, the parity check, ONNX Runtime prediction, and the zoo."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from semseg import export
from semseg.errors import SemsegError
from semseg.export import OnnxModel, check_parity, export_checked, export_onnx, parity_inputs
from semseg.inference import Predictor
from test_inference import ToySeg, rgb


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    model = ToySeg()
    report_static = export_checked(model, folder / "static.onnx", (32, 48))
    report_dynamic = export_checked(model, folder / "dynamic.onnx", (32, 48), dynamic=True)
    return model, folder, report_static, report_dynamic


def test_export_checks_parity_itself(toy_onnx):
    _, _, static, dynamic = toy_onnx
    for report in (static, dynamic):
        assert report["agreement"] >= 0.999 and report["max_abs_diff"] < 1e-4
    assert dynamic["batches"] == static["batches"] + 1  # the odd-sized batch of a dynamic graph


def test_metadata_round_trips(toy_onnx):
    model, folder, _, _ = toy_onnx
    props = {p.key: json.loads(p.value) for p in onnx.load(folder / "static.onnx").metadata_props}
    cfg = model.pretrained_cfg
    assert props["class_names"] == cfg.class_names and props["palette"] == cfg.palette
    assert props["mean"] == cfg.mean and props["std"] == cfg.std
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
    # a fixed-size graph: whole mode runs at its size and resizes the logits back
    fixed = Predictor(OnnxModel(folder / "static.onnx"))
    assert fixed.size == (32, 48)
    resized = Predictor(model, size=(32, 48), precision="fp32")(image)
    assert (fixed(image) == resized).mean() >= 0.999


def test_fixed_size_graph_refuses_what_it_cannot_run(toy_onnx):
    _, folder, _, _ = toy_onnx
    with pytest.raises(SemsegError, match="only takes 32x48 inputs; use --crop 32 48"):
        Predictor(OnnxModel(folder / "static.onnx"), mode="slide", crop=(16, 16))
    with pytest.raises(SemsegError, match="TTA needs one exported with --dynamic"):
        Predictor(OnnxModel(folder / "static.onnx"), tta=True)
    with pytest.raises(SemsegError, match="PyTorch models only"):
        Predictor(OnnxModel(folder / "dynamic.onnx"), precision="bf16")
    assert Predictor(OnnxModel(folder / "static.onnx"), mode="slide").crop == (32, 48)


def test_a_failed_parity_check_fails_the_export_and_removes_the_file(tmp_path, monkeypatch):
    real_export = export.export_onnx

    def export_a_different_model(model, path, *args, **kwargs):
        other = ToySeg()
        with torch.no_grad():
            other.head.weight.neg_()
        return real_export(other, path, *args, **kwargs)

    monkeypatch.setattr(export, "export_onnx", export_a_different_model)
    with pytest.raises(SemsegError, match="parity check failed"):
        export_checked(ToySeg(), tmp_path / "bad.onnx", (32, 32))
    assert not (tmp_path / "bad.onnx").exists()


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
