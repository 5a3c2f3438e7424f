"""Datasets of every format on tiny trees made in tmp_path, bad inputs, statistics, and the audit."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from semseg.cli import main
from semseg.config import DataConfig
from semseg.data import add_statistics, build_dataset, check_dataset, class_statistics, default_palette
from semseg.errors import SemsegError
from semseg.io import write_label_png

CAMVID = Path("/work/shared/camvid")
RNG = np.random.default_rng(0)


def write_image(path: Path, height: int = 6, width: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def write_mask(path: Path, values: np.ndarray, palette: list[list[int]] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_png(path, np.asarray(values), palette)


def make_camvid(root: Path, n: int = 3, split: str = "train") -> Path:
    for i in range(n):
        write_image(root / split / f"f{i}.png")
        write_mask(root / f"{split}annot" / f"f{i}.png", np.where(np.eye(6, 8) > 0, 11, i).astype(np.uint8))
    return root


def make_folder(root: Path, masks: list[np.ndarray], split: str = "train", ext: str = ".png") -> Path:
    for i, mask in enumerate(masks):
        write_image(root / "images" / split / f"s{i}{ext}", *mask.shape[:2])
        if mask.ndim == 3:  # colour mask
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / split / f"s{i}.png")
        else:
            write_mask(root / "masks" / split / f"s{i}.png", mask)
    return root


# ---------------------------------------------------------------- formats
def test_camvid_real_frames(tmp_path):
    names = sorted(p.name for p in (CAMVID / "train").iterdir())[:2]
    for folder in ("train", "trainannot"):
        (tmp_path / folder).mkdir()
        for name in names:
            shutil.copy(CAMVID / folder / name, tmp_path / folder / name)
    dataset = build_dataset(DataConfig(format="camvid", root=str(tmp_path)), "train")
    assert len(dataset) == 2 and dataset.info.num_classes == 11
    image, mask = dataset[0]
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert (image.shape, image.dtype, mask.shape, mask.dtype) == ((3, 360, 480), torch.uint8, (360, 480), torch.int64)
    raw = np.asarray(Image.open(tmp_path / "trainannot" / names[0]))
    assert np.array_equal(mask.numpy(), np.where(raw == 11, 255, raw))  # void 11 -> ignore 255
    assert set(np.unique(dataset.read_mask(1)).tolist()) <= set(range(11)) | {255}


def test_camvid_tiny_tree(tmp_path):
    dataset = build_dataset(DataConfig(format="camvid", root=str(make_camvid(tmp_path))), "train")
    assert [p.name for p, _ in dataset.samples] == ["f0.png", "f1.png", "f2.png"]
    assert dataset.read_mask(2)[0].tolist() == [255, 2, 2, 2, 2, 2, 2, 2]


def test_splits_joined_with_plus_are_concatenated_in_order(tmp_path):
    make_camvid(tmp_path, n=2, split="train")
    make_camvid(tmp_path, n=1, split="val")
    dataset = build_dataset(DataConfig(format="camvid", root=str(tmp_path)), "train+val")
    assert [(p.parent.name, p.name) for p, _ in dataset.samples] == [("train", "f0.png"), ("train", "f1.png"), ("val", "f0.png")]
    with pytest.raises(SemsegError, match=r"/test: folder not found"):
        build_dataset(DataConfig(format="camvid", root=str(tmp_path)), "train+test")


def test_voc_palette_masks_and_jpeg_images(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    for name, value in (("2007_000032", 1), ("2007_000039", 20)):
        write_image(base / "JPEGImages" / f"{name}.jpg")
        mask = np.full((6, 8), value, np.uint8)
        mask[0] = 255  # object boundary
        write_mask(base / "SegmentationClass" / f"{name}.png", mask, default_palette(256))
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n2007_000039\n")
    for root in (tmp_path, tmp_path / "VOCdevkit", base):
        dataset = build_dataset(DataConfig(format="voc", root=str(root)), "train")
        assert len(dataset) == 2
    assert Image.open(dataset.samples[1][1]).mode == "P"
    assert np.unique(dataset.read_mask(1)).tolist() == [20, 255]
    assert dataset.info.num_classes == 21


def test_cityscapes_labelids_become_trainids(tmp_path):
    for city, frame in (("aachen", "aachen_000000_000019"), ("bremen", "bremen_000001_000019")):
        write_image(tmp_path / "leftImg8bit" / "val" / city / f"{frame}_leftImg8bit.png")
        ids = np.array([[7, 8, 26, 33, 0, 1, 24, 23]] * 6, np.uint8)
        write_mask(tmp_path / "gtFine" / "val" / city / f"{frame}_gtFine_labelIds.png", ids)
        # the other gtFine files beside it are not masks
        write_mask(tmp_path / "gtFine" / "val" / city / f"{frame}_gtFine_instanceIds.png", ids)
    dataset = build_dataset(DataConfig(format="cityscapes", root=str(tmp_path)), "val")
    assert len(dataset) == 2
    assert dataset.read_mask(0)[0].tolist() == [0, 1, 13, 18, 255, 255, 11, 10]


def test_ade20k_zero_becomes_ignore(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    write_image(base / "images" / "training" / "ADE_train_00000001.jpg")
    write_mask(base / "annotations" / "training" / "ADE_train_00000001.png", np.array([[0, 1, 150, 0]] * 3))
    write_image(base / "images" / "validation" / "ADE_val_00000001.jpg", 3, 4)
    write_mask(base / "annotations" / "validation" / "ADE_val_00000001.png", np.ones((3, 4)))
    train = build_dataset(DataConfig(format="ade20k", root=str(tmp_path)), "train")
    assert train.read_mask(0)[0].tolist() == [255, 0, 149, 255]
    assert len(build_dataset(DataConfig(format="ade20k", root=str(base)), "validation")) == 1


def test_folder_layouts_and_list_file(tmp_path):
    masks = [np.zeros((6, 8), np.uint8), np.ones((6, 8), np.uint8)]
    make_folder(tmp_path / "a", masks, ext=".jpg")
    cfg = DataConfig(root=str(tmp_path / "a"), num_classes=2)
    assert [i.name for i, _ in build_dataset(cfg, "train").samples] == ["s0.jpg", "s1.jpg"]
    # ROOT/<split>/images + ROOT/<split>/masks
    for i, mask in enumerate(masks):
        write_image(tmp_path / "b" / "val" / "images" / f"x{i}.webp")
        write_mask(tmp_path / "b" / "val" / "masks" / f"x{i}.png", mask)
    assert len(build_dataset(DataConfig(root=str(tmp_path / "b"), num_classes=2), "val")) == 2
    # list file of pairs, relative to ROOT, with a comment and a blank line
    (tmp_path / "a" / "mine.txt").write_text("# pairs\nimages/train/s1.jpg masks/train/s1.png\n\n")
    listed = build_dataset(cfg, "mine")
    assert [(i.name, m.name) for i, m in listed.samples] == [("s1.jpg", "s1.png")]


def test_folder_colour_masks(tmp_path):
    palette = [[0, 0, 0], [250, 0, 0], [0, 0, 250]]
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[:, 4:] = palette[2]
    rgb[0, 0] = palette[1]
    make_folder(tmp_path, [rgb])
    cfg = DataConfig(root=str(tmp_path), num_classes=3, mask_mode="color", palette=palette)
    mask = build_dataset(cfg, "train")[0][1]
    assert mask[0].tolist() == [1, 0, 0, 0, 2, 2, 2, 2]


def test_folder_sixteen_bit_masks(tmp_path):
    make_folder(tmp_path, [np.array([[0, 1000], [2000, 0]])])
    cfg = DataConfig(root=str(tmp_path), num_classes=2, label_map={0: 255, 1000: 0, 2000: 1})
    assert build_dataset(cfg, "train").read_mask(0).tolist() == [[255, 0], [1, 255]]


# ---------------------------------------------------------------- bad input
def test_missing_root_split_and_empty_split(tmp_path):
    with pytest.raises(SemsegError, match=r"nowhere: dataset root not found; the camvid format expects ROOT/<split>/\*.png"):
        build_dataset(DataConfig(format="camvid", root=str(tmp_path / "nowhere")), "train")
    make_camvid(tmp_path)
    with pytest.raises(SemsegError, match=r"/val: folder not found; the camvid format expects"):
        build_dataset(DataConfig(format="camvid", root=str(tmp_path)), "val")
    (tmp_path / "test").mkdir()
    (tmp_path / "testannot").mkdir()
    with pytest.raises(SemsegError, match="the test split is empty"):
        build_dataset(DataConfig(format="camvid", root=str(tmp_path)), "test")
    with pytest.raises(SemsegError, match="no train split found; the folder format expects ROOT/<split>.txt"):
        build_dataset(DataConfig(root=str(tmp_path), num_classes=2), "train")
    with pytest.raises(SemsegError, match="data.root' is empty"):
        build_dataset(DataConfig(format="camvid"), "train")


def test_missing_mask_and_missing_image_are_named(tmp_path):
    make_camvid(tmp_path)
    (tmp_path / "trainannot" / "f1.png").unlink()
    write_mask(tmp_path / "trainannot" / "extra.png", np.zeros((6, 8), np.uint8))
    with pytest.raises(SemsegError) as err:
        build_dataset(DataConfig(format="camvid", root=str(tmp_path)), "train")
    message = str(err.value)
    assert "2 problem(s) in the train split" in message
    assert f"{tmp_path / 'train' / 'f1.png'}: image without a mask" in message
    assert f"{tmp_path / 'trainannot' / 'extra.png'}: mask without an image" in message
    assert "semseg data check --format camvid" in message


def test_voc_list_naming_a_missing_file(tmp_path):
    base = tmp_path / "VOC2012"
    write_image(base / "JPEGImages" / "a.jpg")
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    with pytest.raises(SemsegError, match=r"SegmentationClass/a.png: listed in .*train.txt but not found"):
        build_dataset(DataConfig(format="voc", root=str(tmp_path)), "train")
    with pytest.raises(SemsegError, match=r"val.txt: split list not found"):
        build_dataset(DataConfig(format="voc", root=str(tmp_path)), "val")


@pytest.fixture
def bad_camvid(tmp_path) -> Path:
    """CamVid tree: f0 good, f1 corrupt image, f2 truncated image, f3 mask of the wrong size, f4 label 12, f5 good."""
    make_camvid(tmp_path, n=6)
    (tmp_path / "train" / "f1.png").write_bytes(b"this is not a png")
    write_image(tmp_path / "train" / "f2.png", 60, 80)
    data = (tmp_path / "train" / "f2.png").read_bytes()
    (tmp_path / "train" / "f2.png").write_bytes(data[: len(data) // 2])
    write_mask(tmp_path / "trainannot" / "f3.png", np.zeros((5, 8), np.uint8))
    write_mask(tmp_path / "trainannot" / "f4.png", np.full((6, 8), 12, np.uint8))
    return tmp_path


@pytest.mark.parametrize(
    "index, file, reason",
    [
        (1, "train/f1.png", "cannot read image"),
        (2, "train/f2.png", "cannot read image"),
        (3, "trainannot/f3.png", "mask is 8x5 but its image f3.png is 8x6"),
        (4, "trainannot/f4.png", r"label values 12 \(48 px\) are neither a class nor ignore"),
    ],
)
def test_bad_sample_stops_with_path_and_reason(bad_camvid, index, file, reason):
    dataset = build_dataset(DataConfig(format="camvid", root=str(bad_camvid)), "train")
    with pytest.raises(SemsegError, match=f"{bad_camvid / file}: {reason}"):
        dataset[index]


def test_skip_bad_samples_warns_counts_and_reads_the_next(bad_camvid, caplog):
    cfg = DataConfig(format="camvid", root=str(bad_camvid), skip_bad_samples=True)
    # the setting alone does not skip: only the training set is built to skip
    with pytest.raises(SemsegError, match="f1.png"):
        build_dataset(cfg, "train")[1]
    dataset = build_dataset(cfg, "train", skip_bad_samples=True)
    with caplog.at_level(logging.WARNING, logger="semseg.data.datasets"):
        image, mask = dataset[1]
    # sample 1 is bad and counted; f2..f4, tried in its place, are counted when drawn themselves
    assert [r.getMessage().split(": ", 1)[1].split(":")[0] for r in caplog.records] == [str(bad_camvid / "train" / "f1.png")]
    assert dataset.skipped == 1  # f1 skipped: f2..f4 are bad too, f5 is read
    assert torch.equal(mask, torch.where(torch.eye(6, 8) > 0, 255, 5))
    # the counter is shared with DataLoader workers
    assert skips_in_workers(dataset, "fork") == 4  # an epoch: f1, f2, f3 and f4, each once


def skips_in_workers(dataset, context: str) -> int:
    before = dataset.skipped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(DataLoader(dataset, batch_size=2, num_workers=2, multiprocessing_context=context))
    assert len(batches) == 3
    return dataset.skipped - before


@pytest.mark.slow
def test_skip_counter_is_shared_with_spawned_workers(bad_camvid):
    dataset = build_dataset(DataConfig(format="camvid", root=str(bad_camvid)), "train", skip_bad_samples=True)
    assert skips_in_workers(dataset, "spawn") == 4


def test_too_many_bad_samples_in_a_row_stop(tmp_path):
    make_camvid(tmp_path, n=1)
    (tmp_path / "train" / "f0.png").write_bytes(b"junk")
    dataset = build_dataset(DataConfig(format="camvid", root=str(tmp_path)), "train", skip_bad_samples=True)
    with warnings.catch_warnings(), pytest.raises(SemsegError, match="16 bad samples in a row from index 0 on; the last: .*f0.png"):
        warnings.simplefilter("ignore")
        dataset[0]


def test_unknown_colour_in_a_dataset_names_the_file(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[0, :3] = [10, 20, 30]
    make_folder(tmp_path, [rgb])
    cfg = DataConfig(root=str(tmp_path), num_classes=2, mask_mode="color", palette=[[0, 0, 0], [255, 255, 255]])
    with pytest.raises(SemsegError, match=r"s0.png: colours not in data.palette: \(10, 20, 30\) \(3 px\)"):
        build_dataset(cfg, "train")[0]


# ---------------------------------------------------------------- statistics
def test_class_statistics(tmp_path):
    masks = [np.array([[0, 0, 1, 255]]), np.array([[1, 1, 1, 1]]), np.array([[0, 255, 255, 255]])]
    make_folder(tmp_path, masks)
    dataset = build_dataset(DataConfig(root=str(tmp_path), num_classes=3), "train")
    for workers in (0, 2):
        stats = class_statistics(dataset, workers=workers)
        assert stats == {
            "num_images": 3,
            "class_pixels": [3, 5, 0],
            "present_pixels": [8, 8, 0],
            "image_counts": [2, 2, 0],
            "ignored_pixels": 4,
            "skipped": 0,
        }
    # DDP's ranks count a share each: the parts add up to the whole, for any number of parts
    for count in (2, 3, 4):
        parts = [class_statistics(dataset, part=(k, count)) for k in range(count)]
        assert sum(part["num_images"] for part in parts) == 3
        assert add_statistics(parts) == class_statistics(dataset)


# ---------------------------------------------------------------- audit and `semseg data check`
def test_audit_names_every_bad_file(bad_camvid):
    (bad_camvid / "trainannot" / "f5.png").unlink()
    report = check_dataset(DataConfig(format="camvid", root=str(bad_camvid)), "train")
    errors = {(Path(e["file"]).relative_to(bad_camvid).as_posix(), e["message"].split(" (")[0]) for e in report["errors"]}
    assert errors == {
        ("train/f5.png", "image without a mask"),
        ("train/f1.png", "cannot read image"),
        ("train/f2.png", "cannot read image"),
        ("trainannot/f3.png", "mask is 8x5 but its image f3.png is 8x6"),
        ("trainannot/f4.png", "label values 12"),
    }
    assert report["num_images"] == 5 and report["num_counted"] == 1
    assert report["class_pixels"] == [42] + [0] * 10 and report["ignored_pixels"] == 6
    assert report["warnings"][0] == "class 'Building' has no pixels in this split"


def test_data_check_cli_json_and_exit_codes(bad_camvid, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["data", "check", "--format", "camvid", "--root", str(bad_camvid), "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "f4.png: label values 12" in printed and "4 error(s) in 4 file(s)" in printed
    report = json.loads(out.read_text())
    assert {"num_images", "class_pixels", "ignored_pixels", "errors", "class_names", "suggested_weights"} <= set(report)
    assert all(set(e) == {"file", "message"} for e in report["errors"])

    clean = make_camvid(tmp_path / "clean")
    assert main(["data", "check", "--format", "camvid", "--root", str(clean)]) == 0
    assert "no errors" in capsys.readouterr().out
    # no --root and no config: a usage error, status 2
    assert main(["data", "check", "--format", "camvid"]) == 2
    assert "pass --root DIR" in capsys.readouterr().err


def test_data_check_folder_with_config_and_overrides(tmp_path, capsys):
    make_folder(tmp_path / "d", [np.array([[0, 1], [1, 7]])], split="val")
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  root: {tmp_path / 'd'}\n  num_classes: 2\n  val_split: val\n")
    # missing num_classes names the key
    assert main(["data", "check", "--root", str(tmp_path / "d"), "--split", "val"]) == 2
    assert "data.num_classes' is required" in capsys.readouterr().err
    report_path = tmp_path / "r.json"
    assert main(["data", "check", "--config", str(config), "--split", "val", "--json", str(report_path)]) == 1
    assert "label values 7 (1 px)" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert (report["num_images"], report["num_counted"], report["suggested_weights"]) == (1, 0, {"median_freq": [], "enet": []})
    assert report["warnings"] == []  # no "class has no pixels" noise when nothing could be counted
    assert main(["data", "check", "--config", str(config), "--split", "val", "label_map={0: 0, 1: 1, 7: 255}"]) == 0
    assert main(["data", "check", "--root", str(tmp_path / "d"), "--split", "val", "num_classes=8"]) == 0


def test_audit_of_camvid_train_is_fast_and_matches_the_readme():
    report = check_dataset(DataConfig(format="camvid", root=str(CAMVID)), "train", workers=2)
    assert report["errors"] == [] and report["num_images"] == 367
    assert report["class_pixels"][0] == 10_682_767 and report["ignored_pixels"] == 2_503_995
    weights = report["suggested_weights"]["median_freq"]
    assert weights[4] == pytest.approx(1.0)  # Pavement holds the median frequency
    assert max(weights) == weights[10]  # Bicyclist, the rarest
