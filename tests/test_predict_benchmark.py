"""``semseg benchmark``: one row per backend with size, speed, agreement with PyTorch fp32 and mIoU."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from semseg.cli import main
from semseg.predict import Predictor
from semseg.predict.benchmark import COLUMNS, benchmark, format_benchmark
from test_predict_backends import toy_checkpoint  # noqa: F401  (a fixture: an FCN-8s checkpoint with 3 classes)


@pytest.fixture(scope="module")
def checkpoint(toy_checkpoint):
    from semseg.models import load_model

    return toy_checkpoint, load_model(toy_checkpoint)


@pytest.fixture
def folder(tmp_path, checkpoint):
    """Three images and label maps: for two the model's own fp32 labels (100% there), one all class 0."""
    _, model = checkpoint
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    rng = np.random.default_rng(0)
    predictor = Predictor(model, precision="fp32")
    for index, size in enumerate([(40, 56), (40, 56), (33, 47)]):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(image).save(images / f"f{index}.png")
        truth = predictor(image) if index < 2 else np.zeros(size, np.uint8)
        Image.fromarray(truth).save(labels / f"f{index}.png")
    return images, labels


def expected_miou(model, images, labels):
    from semseg.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(3, 255)
    for path in sorted(images.iterdir()):
        matrix.update(Predictor(model, precision="fp32")(path), np.asarray(Image.open(labels / path.name)))
    return float(matrix.compute()["miou"])


def test_benchmark_rows_for_every_backend(checkpoint, folder):
    path, model = checkpoint
    images, labels = folder
    rows = benchmark([str(images)], labels, checkpoint=path)
    assert [row["backend"] for row in rows] == ["torch-fp32", "torch", "onnxruntime", "openvino"]
    by_name = {row["backend"]: row for row in rows}
    assert by_name["torch-fp32"]["agreement"] == 1.0 and by_name["onnxruntime"]["agreement"] >= 0.999
    assert by_name["openvino"]["agreement"] >= 0.999 and by_name["openvino"]["file"] == by_name["onnxruntime"]["file"]
    assert by_name["torch-fp32"]["miou"] == pytest.approx(expected_miou(model, images, labels))
    assert by_name["onnxruntime"]["miou"] == pytest.approx(by_name["torch-fp32"]["miou"], abs=0.01)
    for row in rows:
        assert set(row) == set(COLUMNS) and row["ms_per_image"] > 0 and row["images_per_s"] > 0
    assert by_name["torch"]["size_mb"] == round(path.stat().st_size / 1e6, 2)
    assert by_name["onnxruntime"]["file"].endswith(".onnx") and by_name["onnxruntime"]["size_mb"] > 0
    assert sum(row["auto"] for row in rows) == 1
    assert "* what --backend auto runs" in format_benchmark(rows)


def test_the_auto_row_times_the_folder_as_semseg_predict_runs_it(checkpoint, folder, tmp_path, monkeypatch):
    """The picked backend's folder rate goes through predict's own path: a graph with one stream per CPU thread
    (capped at the file count), labels and overlays written to a temporary folder that is removed afterwards."""
    import tempfile

    monkeypatch.setattr("semseg.predict.benchmark.auto_choice", lambda record: "onnxruntime")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    rows = benchmark([str(folder[0])], checkpoint=checkpoint[0])
    by_name = {row["backend"]: row for row in rows}
    picked = by_name["onnxruntime"]
    assert picked["auto"] and picked["predict_images_per_s"] > 0 and picked["predict_streams"] == 2
    assert all(row["predict_images_per_s"] is None and row["predict_streams"] is None
               for name, row in by_name.items() if name != "onnxruntime")
    assert "semseg predict --no-tta with onnxruntime ran the folder at" in format_benchmark(rows)
    assert list(scratch.iterdir()) == []


def test_benchmark_without_onnxruntime_or_labels(checkpoint, folder, monkeypatch):
    monkeypatch.setattr("semseg.predict.backends.runtime_available", lambda runtime: False)
    rows = benchmark([str(folder[0])], checkpoint=checkpoint[0])
    assert [row["backend"] for row in rows] == ["torch-fp32", "torch"] and rows[1]["auto"]
    assert all(row["miou"] is None for row in rows)
    assert rows[1]["predict_images_per_s"] > 0 and rows[1]["predict_streams"] == 1  # PyTorch: one image at a time


def test_benchmark_cli_writes_csv_and_json(checkpoint, folder, tmp_path, capsys):
    images, labels = folder
    out = tmp_path / "report"
    assert main(["benchmark", str(images), "--checkpoint", str(checkpoint[0]), "--labels", str(labels),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "torch-fp32" in printed and "onnxruntime" in printed and "benchmark.csv" in printed
    with open(out / "benchmark.csv") as handle:
        table = list(csv.DictReader(handle))
    rows = json.loads((out / "benchmark.json").read_text())
    assert [r["backend"] for r in table] == [r["backend"] for r in rows] == ["torch-fp32", "torch", "onnxruntime",
                                                                            "openvino"]
    assert float(table[0]["miou"]) == pytest.approx(rows[0]["miou"])


def test_benchmark_runs_on_the_default_model_with_only_a_folder(tmp_path, monkeypatch, capsys, checkpoint):
    from semseg import checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "DEFAULT_MODEL_PATH", checkpoint[0])  # the shipped one, once the CamVid work lands
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(images / "a.png")
    assert main(["benchmark", str(images)]) == 0
    assert (tmp_path / "benchmark" / "benchmark.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "LABELS/missing"], "label folder not found"),
        (["--labels", "EMPTY"], "no label map of the same name"),
        (["--labels", "LABELS", "--ignore-index", "1"], "--ignore-index"),
    ],
)
def test_benchmark_bad_inputs(checkpoint, folder, tmp_path, capsys, args, message):
    images, labels = folder
    (tmp_path / "empty").mkdir()
    args = [a.replace("LABELS", str(labels)).replace("EMPTY", str(tmp_path / "empty")) for a in args]
    assert main(["benchmark", str(images), "--checkpoint", str(checkpoint[0]), *args, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_benchmark_names_a_label_map_of_the_wrong_size(checkpoint, folder, tmp_path, capsys):
    images, labels = folder
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(labels / "f1.png")
    assert main(["benchmark", str(images), "--checkpoint", str(checkpoint[0]), "--labels", str(labels),
                 "--out", str(tmp_path / "o")]) == 2
    assert "f1.png: label map is 10x10 (WxH) but its image is 56x40" in capsys.readouterr().err
