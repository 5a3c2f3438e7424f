"""semseg data convert: COCO polygon/RLE JSON and YOLO segmentation txt to index masks, checked against masks
drawn independently with NumPy slicing and against pycocotools' own rasterization; data check runs on the result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from semseg.cli import main
from semseg.data.convert import coco_to_masks, polygon_mask, yolo_to_masks
from semseg.errors import SemsegError
from semseg.io import read_label_map

coco_mask = pytest.importorskip("pycocotools.mask")


def _rect(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    """The polygon of the pixel block [y0:y1, x0:x1] in COCO coordinates (pixel edges)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _save_image(path: Path, height: int, width: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)


def _blob(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (yy - 30) ** 2 / 100 + (xx - 12) ** 2 / 40 < 1


@pytest.fixture()
def coco(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Two images, categories 3 'car' and 7 'person' (and 9 'tree', unused), polygons, an RLE blob, a crowd region."""
    images = tmp_path / "images"
    _save_image(images / "a.jpg", 48, 64)
    _save_image(images / "sub" / "b.png", 40, 30)
    blob = _blob(48, 64)
    rle = coco_mask.encode(np.asfortranarray(blob.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "segmentation": [_rect(0, 0, 40, 20)], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 7, "segmentation": [_rect(10, 5, 20, 15)], "iscrowd": 0},  # on the car
        {"id": 3, "image_id": 1, "category_id": 7, "segmentation": rle, "iscrowd": 0},
        {"id": 4, "image_id": 1, "category_id": 3, "segmentation": [_rect(50, 30, 60, 44)], "iscrowd": 1},
        {"id": 5, "image_id": 2, "category_id": 3, "segmentation": [_rect(0, 0, 5, 5), _rect(20, 30, 30, 40)]},
    ]
    document = {"images": [{"id": 1, "file_name": "a.jpg", "height": 48, "width": 64},
                           {"id": 2, "file_name": "sub/b.png", "height": 40, "width": 30}],
                "annotations": annotations,
                "categories": [{"id": 7, "name": "person"}, {"id": 3, "name": "car"}, {"id": 9, "name": "tree"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(document))
    # expected with the default map: background 0, car (id 3) 1, person (id 7) 2, tree 3; crowd 255
    a = np.zeros((48, 64), dtype=np.int64)
    a[0:20, 0:40] = 1
    a[blob] = 2
    a[5:15, 10:20] = 2
    a[30:44, 50:60] = 255
    b = np.zeros((40, 30), dtype=np.int64)
    b[0:5, 0:5] = 1
    b[30:40, 20:30] = 1
    return path, images, {"a": a, "b": b}


def test_coco_polygons_rle_and_crowd_become_the_expected_masks(coco, tmp_path):
    path, images, expected = coco
    report = coco_to_masks(path, images, tmp_path / "out")
    assert report.class_names == ["background", "car", "person", "tree"] and report.problems == []
    assert (report.images, report.shapes) == (2, 5)
    for stem, labels in expected.items():
        np.testing.assert_array_equal(read_label_map(tmp_path / "out" / "masks" / f"{stem}.png"), labels)
    assert (tmp_path / "out" / "train.txt").read_text().split() == [
        "../images/a.jpg", "masks/a.png", "../images/sub/b.png", "masks/b.png"]
    data = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())["data"]
    assert data["num_classes"] == 4 and data["class_names"] == report.class_names and data["format"] == "folder"


def test_data_check_reads_the_converted_folder(coco, tmp_path, capsys):
    path, images, _ = coco
    assert main(["data", "convert", "coco", str(path), "--images", str(images), "--out", str(tmp_path / "o"),
                 "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "converted 5 shapes of 2 images" in out and "semseg data check --config" in out
    assert main(["data", "check", "--config", str(tmp_path / "o" / "data.yaml"), "--split", "val",
                 "--json", str(tmp_path / "check.json")]) == 0
    check = json.loads((tmp_path / "check.json").read_text())
    assert check["errors"] == []


def test_a_class_map_merges_renumbers_and_ignores(coco, tmp_path):
    path, images, expected = coco
    report = coco_to_masks(path, images, tmp_path / "out", class_map={"car": 1, "7": "ignore", "tree": 1},
                           background="ignore", ignore_index=100)
    assert report.class_names == ["class_0", "car+tree"]
    a = expected["a"].copy()
    a[(a == 0) | (a == 2) | (a == 255)] = 100
    np.testing.assert_array_equal(read_label_map(tmp_path / "out" / "masks" / "a.png"), a)
    with pytest.raises(SemsegError, match="does not say what becomes of class\\(es\\) 'tree' \\(id 9\\)"):
        coco_to_masks(path, images, tmp_path / "o2", class_map={"car": 1, "person": 2})
    with pytest.raises(SemsegError, match="'car' maps to 'x'"):
        coco_to_masks(path, images, tmp_path / "o3", class_map={"car": "x", "person": 2, "tree": 3})
    with pytest.raises(SemsegError, match="ignore index 2 must lie in 4..65535"):
        coco_to_masks(path, images, tmp_path / "o4", ignore_index=2)


def test_polygons_agree_with_pycocotools_rasterization():
    """Random star polygons: Pillow at pixel centres and pycocotools' own rasterizer differ only along edges."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        radius = rng.uniform(5, 25, 9)
        flat = np.stack([40 + radius * np.cos(angles), 32 + radius * np.sin(angles)], 1).ravel().tolist()
        ours = polygon_mask([flat], 64, 80)
        reference = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([flat], 64, 80))).astype(bool)
        differ = ours ^ reference
        assert differ.sum() <= 0.05 * reference.sum(), differ.sum()
        # every disagreement lies on the reference's edge
        padded = np.pad(reference, 1, mode="edge")
        edge = np.zeros_like(reference)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                edge |= padded[1 + dy:65 + dy, 1 + dx:81 + dx] != reference
        assert not (differ & ~edge).any()


def test_coco_bad_inputs_are_named(coco, tmp_path):
    path, images, _ = coco
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SemsegError, match="bad.json: not valid JSON"):
        coco_to_masks(bad, images, tmp_path / "o")
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(SemsegError, match="not a COCO annotation file"):
        coco_to_masks(bad, images, tmp_path / "o")
    document = json.loads(path.read_text())
    document["annotations"].append({"id": 99, "image_id": 1, "category_id": 5, "segmentation": [_rect(0, 0, 2, 2)]})
    bad.write_text(json.dumps(document))
    with pytest.raises(SemsegError, match="annotation 99 names category_id 5"):
        coco_to_masks(bad, images, tmp_path / "o")
    document["annotations"][-1] = {"id": 98, "image_id": 1, "category_id": 3, "segmentation": [[1, 2, 3, 4]]}
    document["images"].append({"id": 3, "file_name": "missing.jpg", "height": 4, "width": 4})
    bad.write_text(json.dumps(document))
    report = coco_to_masks(bad, images, tmp_path / "o")
    assert report.images == 2 and len(report.problems) == 2
    assert "annotation 98: a polygon needs" in report.problems[0][1] and "missing.jpg" in report.problems[1][0]
    with pytest.raises(SemsegError, match="images folder not found"):
        coco_to_masks(path, tmp_path / "nowhere", tmp_path / "o")


def test_yolo_segments_become_masks_and_data_check_runs(tmp_path, capsys):
    images, labels = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    _save_image(images / "x.jpg", 40, 80)
    _save_image(images / "empty.png", 20, 20)
    labels.mkdir(parents=True)
    # class 1 over the left half, class 0 a small block on it (drawn last: smaller), normalized coordinates
    (labels / "x.txt").write_text("1 0 0 0.5 0 0.5 1 0 1\n0 0.125 0.25 0.25 0.25 0.25 0.5 0.125 0.5\n\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"names": {0: "cat", 1: "dog"}}))
    out = tmp_path / "masks_out"
    assert main(["data", "convert", "yolo", str(labels), "--images", str(images), "--out", str(out),
                 "--names", str(tmp_path / "data.yaml")]) == 0
    expected = np.zeros((40, 80), dtype=np.int64)
    expected[:, :40] = 2
    expected[10:20, 10:20] = 1
    np.testing.assert_array_equal(read_label_map(out / "masks" / "x.png"), expected)
    np.testing.assert_array_equal(read_label_map(out / "masks" / "empty.png"), np.zeros((20, 20)))
    assert yaml.safe_load((out / "data.yaml").read_text())["data"]["class_names"] == ["background", "cat", "dog"]
    capsys.readouterr()
    assert main(["data", "check", "--config", str(out / "data.yaml")]) == 0


def test_yolo_bad_lines_are_reported_and_bad_classes_refused(tmp_path, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    _save_image(images / "x.png", 10, 10)
    labels.mkdir()
    (labels / "x.txt").write_text("0 0.5 0.5 0.2 0.2\nzero 0 0 1 0 1 1\n0 0 0 1 0 1 1\n")
    (labels / "orphan.txt").write_text("0 0 0 1 0 1 1\n")
    report = yolo_to_masks(labels, images, tmp_path / "out")
    assert report.shapes == 1 and report.class_names == ["background", "class_0"]
    assert [p[0] for p in report.problems] == [f"{labels / 'x.txt'}:1", f"{labels / 'x.txt'}:2", str(labels / "orphan.txt")]
    assert "detection box" in report.problems[0][1]
    assert main(["data", "convert", "yolo", str(labels), "--images", str(images), "--out", str(tmp_path / "o")]) == 1
    assert "x.txt:1: a polygon needs" in capsys.readouterr().out
    (labels / "x.txt").write_text("4 0 0 1 0 1 1\n")
    with pytest.raises(SemsegError, match="x.txt:1: class 4 is not among the 2 names"):
        yolo_to_masks(labels, images, tmp_path / "o", names=["a", "b"])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "convert", "coco", str(tmp_path / "none.json"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "none.json: cannot read it" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "map.yaml").write_text("[1, 2]")
    assert main(["data", "convert", "yolo", str(tmp_path), "--images", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--class-map", str(tmp_path / "map.yaml")]) == 2
    assert "a class map is a mapping" in capsys.readouterr().err
    assert main(["data", "convert", "coco", str(tmp_path / "x.json"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "o"), "--names", "n.yaml"]) == 2
    assert "--names is for yolo labels" in capsys.readouterr().err
