"""``semseg score``: folders of label PNGs in, a table and the JSON report out; every bad input named."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from semseg.cli import main
from semseg.errors import SemsegError
from semseg.io import read_label_map, write_label_png
from semseg.metrics import ConfusionMatrix, report, score_folders

DEMO = Path(str(resources.files("semseg") / "assets" / "demo"))
CAMVID_VOID = 11


def perturbed(labels: np.ndarray, seed: int) -> np.ndarray:
    """A plausible prediction: the truth shifted by a few pixels, void pixels given a class, some noise."""
    rng = np.random.default_rng(seed)
    pred = np.roll(labels, shift=(2, -3), axis=(0, 1)).copy()
    pred[pred == CAMVID_VOID] = 4
    noisy = rng.random(pred.shape) < 0.02
    pred[noisy] = rng.integers(0, 11, size=int(noisy.sum()))
    return pred


@pytest.fixture()
def camvid_folders(tmp_path: Path) -> tuple[Path, Path]:
    """The embedded CamVid val frames as ground truth (void = 11) and perturbed copies as predictions."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    shutil.copytree(DEMO / "valannot", gt_dir)
    pred_dir.mkdir()
    for i, path in enumerate(sorted(gt_dir.glob("*.png"))):
        write_label_png(pred_dir / path.name, perturbed(read_label_map(path), seed=i))
    return pred_dir, gt_dir


def score(pred_dir: Path, gt_dir: Path, *extra: str, num_classes: int = 11, ignore: int = CAMVID_VOID) -> int:
    args = ["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", str(num_classes)]
    return main([*args, "--ignore-index", str(ignore), *extra])


def test_score_prints_the_table_and_writes_the_json_report(camvid_folders, tmp_path, capsys):
    pred_dir, gt_dir = camvid_folders
    names = "sky,building,pole,road,pavement,tree,sign,fence,car,pedestrian,bicyclist"
    json_path = tmp_path / "out" / "scores.json"
    assert score(pred_dir, gt_dir, "--class-names", names, "--json", str(json_path)) == 0
    out = capsys.readouterr().out
    result = json.loads(json_path.read_text())
    assert list(result) == ["miou", "mean_acc", "mdice", "pixel_acc", "fwiou", "num_images", "per_class", "confusion_matrix"]
    assert list(result["per_class"]) == names.split(",")
    assert result["num_images"] == 3
    # the numbers are those of the library, on the same files
    cm = ConfusionMatrix(11, CAMVID_VOID)
    for path in sorted(gt_dir.glob("*.png")):
        cm.update(read_label_map(pred_dir / path.name), read_label_map(path))
    assert result == report(cm, names.split(","))
    # the table shows the same numbers as percentages
    road = next(line for line in out.splitlines() if line.startswith("road "))
    assert road.split()[1] == f"{100 * result['per_class']['road']['iou']:.2f}"
    assert f"mIoU {100 * result['miou']:.2f}" in out and "(3 images)" in out


def test_score_matches_torchmetrics_on_camvid_frames(camvid_folders):
    from torchmetrics.classification import MulticlassJaccardIndex

    pred_dir, gt_dir = camvid_folders
    jaccard = MulticlassJaccardIndex(11, average="macro", ignore_index=CAMVID_VOID)
    for path in sorted(gt_dir.glob("*.png")):
        pred, gt = (torch.from_numpy(read_label_map(p).astype(np.int64)) for p in (pred_dir / path.name, path))
        jaccard.update(pred, gt)
    cm = score_folders(pred_dir, gt_dir, 11, CAMVID_VOID)
    assert cm.compute()["miou"] == pytest.approx(float(jaccard.compute()), abs=1e-6)


def test_palette_and_sixteen_bit_pngs_are_read_as_their_values(tmp_path, capsys):
    gt = np.array([[0, 1, 2], [2, 65535, 1]], np.int64)  # 16-bit ground truth, ignore 65535
    pred = np.array([[0, 1, 1], [2, 0, 1]], np.uint8)
    write_label_png(tmp_path / "gt" / "a.png", gt)
    write_label_png(tmp_path / "pred" / "a.png", pred, palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0]])
    assert Image.open(tmp_path / "pred" / "a.png").mode == "P"
    json_path = tmp_path / "s.json"
    assert score(tmp_path / "pred", tmp_path / "gt", "--json", str(json_path), num_classes=3, ignore=65535) == 0
    assert json.loads(json_path.read_text())["confusion_matrix"] == [[1, 0, 0], [0, 2, 0], [0, 1, 1]]


# ---------------------------------------------------------------- bad input: exit 2, the file named


def expect_error(capsys, code: int, *fragments: str) -> None:
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("semseg: error: ")
    for fragment in fragments:
        assert fragment in err, err


def test_a_ground_truth_without_prediction_fails_unless_allowed(camvid_folders, capsys):
    pred_dir, gt_dir = camvid_folders
    missing = sorted(pred_dir.glob("*.png"))[1]
    missing.unlink()
    expect_error(capsys, score(pred_dir, gt_dir), str(gt_dir / missing.name), "has no prediction", "--allow-missing")
    assert score(pred_dir, gt_dir, "--allow-missing") == 0
    captured = capsys.readouterr()
    assert "semseg: warning: skipped 1 ground truths without a prediction" in captured.err
    assert "(2 images)" in captured.out


def test_predictions_without_ground_truth_are_left_out_with_a_warning(camvid_folders, capsys):
    pred_dir, gt_dir = camvid_folders
    write_label_png(pred_dir / "extra.png", np.zeros((4, 4), np.uint8))
    assert score(pred_dir, gt_dir) == 0
    captured = capsys.readouterr()
    assert f"1 predictions have no ground truth and are not scored, e.g. {pred_dir / 'extra.png'}" in captured.err
    assert "(3 images)" in captured.out


def test_sizes_that_differ_name_both_files(camvid_folders, capsys):
    pred_dir, gt_dir = camvid_folders
    name = sorted(gt_dir.glob("*.png"))[0].name
    write_label_png(pred_dir / name, np.zeros((90, 120), np.uint8))
    expect_error(capsys, score(pred_dir, gt_dir), str(pred_dir / name), "120x90", "240x180", str(gt_dir / name))


def test_a_ground_truth_value_out_of_range_names_the_file_values_and_counts(camvid_folders, capsys):
    pred_dir, gt_dir = camvid_folders
    path = sorted(gt_dir.glob("*.png"))[2]
    labels = read_label_map(path).copy()
    labels[:2, :5] = 14
    write_label_png(path, labels)
    expect_error(capsys, score(pred_dir, gt_dir), f"{path}: target has values", "ignore index 11: 14 (10 pixels)")


def test_a_prediction_out_of_range_names_the_prediction_file(camvid_folders, capsys):
    pred_dir, gt_dir = camvid_folders
    path = sorted(pred_dir.glob("*.png"))[0]
    labels = read_label_map(path).copy()
    labels[0, :3] = 255
    write_label_png(path, labels)
    expect_error(capsys, score(pred_dir, gt_dir), f"{path}: prediction has values outside the class ids 0..10: 255 (3 pixels)")


def test_an_unreadable_file_is_named(camvid_folders, capsys):
    pred_dir, gt_dir = camvid_folders
    path = sorted(pred_dir.glob("*.png"))[1]
    path.write_bytes(b"not a png")
    expect_error(capsys, score(pred_dir, gt_dir), str(path), "cannot read image")


def test_a_colour_prediction_is_named(camvid_folders, capsys):
    pred_dir, gt_dir = camvid_folders
    path = sorted(pred_dir.glob("*.png"))[0]
    rgb = np.zeros((180, 240, 3), np.uint8)
    rgb[..., 0] = 128
    Image.fromarray(rgb).save(path)
    expect_error(capsys, score(pred_dir, gt_dir), str(path), "label map has mode 'RGB'")


def test_two_files_with_one_stem_are_refused(camvid_folders, capsys):
    pred_dir, gt_dir = camvid_folders
    first = sorted(pred_dir.glob("*.png"))[0]
    Image.open(first).save(first.with_suffix(".bmp"))
    expect_error(capsys, score(pred_dir, gt_dir), "same name stem", first.stem)


def test_class_names_must_match_the_class_count(camvid_folders, capsys):
    pred_dir, gt_dir = camvid_folders
    expect_error(capsys, score(pred_dir, gt_dir, "--class-names", "a,b,c"), "got 3 names for 11 classes")


def test_an_empty_ground_truth_folder_and_a_missing_folder_are_named(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    expect_error(capsys, score(tmp_path / "pred", tmp_path / "gt"), f"{tmp_path / 'gt'}: no label images found")
    expect_error(capsys, score(tmp_path / "nope", tmp_path / "gt"), "not a folder")


def test_no_matching_pair_at_all_is_an_error(tmp_path, capsys):
    write_label_png(tmp_path / "gt" / "a.png", np.zeros((2, 2), np.uint8))
    write_label_png(tmp_path / "pred" / "b.png", np.zeros((2, 2), np.uint8))
    expect_error(capsys, score(tmp_path / "pred", tmp_path / "gt", "--allow-missing"), "no prediction matches a ground truth")


def test_score_folders_raises_semseg_errors_for_library_callers(tmp_path):
    write_label_png(tmp_path / "gt" / "a.png", np.full((2, 2), 7, np.uint8))
    write_label_png(tmp_path / "pred" / "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(SemsegError, match=r"a.png: target has values .*: 7 \(4 pixels\)"):
        score_folders(tmp_path / "pred", tmp_path / "gt", num_classes=3)


def test_score_with_a_format_names_the_classes_and_writes_a_report(camvid_folders, tmp_path, capsys):
    pred_dir, gt_dir = camvid_folders
    plain = tmp_path / "plain.json"
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--num-classes", "11", "--ignore-index", "11",
                 "--json", str(plain)]) == 0
    named = tmp_path / "named.json"
    folder = tmp_path / "report"
    capsys.readouterr()
    # --format camvid: CamVid's names, palette, 11 classes and its void value 11 ignored
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--format", "camvid", "--json", str(named),
                 "--report", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Sky" in out and "class_0" not in out and str((folder / "report.html").resolve()) in out
    a, b = json.loads(plain.read_text()), json.loads(named.read_text())
    assert list(b["per_class"])[:3] == ["Sky", "Building", "Pole"]
    assert list(a["per_class"].values()) == list(b["per_class"].values()) and a["miou"] == b["miou"]
    assert {"confusion_matrix.png", "confusion_matrix_normalized.png", "class_iou.png", "class_pixels.png", "summary.json",
            "report.html"} == {p.name for p in folder.iterdir()}
    assert json.loads((folder / "summary.json").read_text())["scores"] == b
    assert "Bicyclist" in (folder / "report.html").read_text()


def test_score_class_count_errors(camvid_folders, capsys):
    pred_dir, gt_dir = camvid_folders
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir)]) == 2
    assert "needs --num-classes N, or --format NAME" in capsys.readouterr().err
    assert main(["score", "--pred", str(pred_dir), "--gt", str(gt_dir), "--format", "camvid", "--num-classes", "12"]) == 2
    assert "--num-classes 12 disagrees with --format camvid (11 classes)" in capsys.readouterr().err
