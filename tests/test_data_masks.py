"""Label tables of the built-in formats and mask decoding through one lookup table."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from semseg.config import DataConfig
from semseg.data import FORMATS, dataset_info, default_palette, labelid_to_trainid, mask_decoder, trainid_to_labelid
from semseg.errors import SemsegError
from semseg.io import write_label_png


# ---------------------------------------------------------------- formats
def test_cityscapes_table_matches_cityscapesscripts():
    from cityscapesscripts.helpers import labels as official

    stored = [label for label in official.labels if label.id >= 0]
    label_ids = np.array([label.id for label in stored])
    expected = np.array([label.trainId if label.trainId not in (-1, 255) else 255 for label in stored])
    assert np.array_equal(labelid_to_trainid(label_ids), expected)

    train_labels = sorted((l for l in stored if l.trainId not in (-1, 255)), key=lambda l: l.trainId)
    fmt = FORMATS["cityscapes"]
    assert list(fmt.class_names) == [l.name for l in train_labels]
    assert [tuple(c) for c in fmt.palette] == [tuple(l.color) for l in train_labels]
    assert np.array_equal(trainid_to_labelid(np.arange(19)), [l.id for l in train_labels])


def test_trainid_to_labelid_round_trip_and_errors():
    label_ids = np.array([[7, 8, 26], [33, 0, 23]])
    train_ids = labelid_to_trainid(label_ids)
    assert train_ids.tolist() == [[0, 1, 13], [18, 255, 10]]
    back = trainid_to_labelid(train_ids)
    assert back.dtype == np.uint8
    assert back.tolist() == [[7, 8, 26], [33, 0, 23]]  # ignore -> 0 "unlabeled"
    with pytest.raises(SemsegError, match=r"values \[19\] are not Cityscapes trainIds"):
        trainid_to_labelid(np.array([[19]]))
    with pytest.raises(SemsegError, match=r"values \[40\] are not Cityscapes labelIds"):
        labelid_to_trainid(np.array([[40]]))


def test_builtin_formats_have_names_and_distinct_colours():
    readme = open("/work/shared/camvid/README.md").read()
    camvid_rows = re.findall(r"^\| (\d+) \| (\w+) \| (\d+),(\d+),(\d+) \|", readme, re.M)
    assert [name for i, name, *_ in camvid_rows if int(i) < 11] == list(FORMATS["camvid"].class_names)
    assert [tuple(map(int, c)) for i, _, *c in camvid_rows if int(i) < 11] == list(FORMATS["camvid"].palette)
    expected = {"camvid": 11, "voc": 21, "cityscapes": 19, "ade20k": 150}
    for name, fmt in FORMATS.items():
        assert fmt.num_classes == expected[name] == len(fmt.palette)
        assert len(set(fmt.palette)) == fmt.num_classes, name
    assert default_palette(21)[:5] == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert len({tuple(c) for c in default_palette(1000)}) == 1000


def test_dataset_info_of_folder_and_builtin():
    info = dataset_info(DataConfig(format="folder", num_classes=3))
    assert info.class_names == ["class_0", "class_1", "class_2"]
    assert len({tuple(c) for c in info.palette}) == 3
    assert dataset_info(DataConfig(format="ade20k")).class_names[:3] == ["wall", "building", "sky"]
    named = dataset_info(DataConfig(format="folder", num_classes=2, class_names=["bg", "cat"], palette=[[1, 2, 3], [4, 5, 6]]))
    assert (named.class_names, named.palette) == (["bg", "cat"], [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(SemsegError, match="data.num_classes' is required"):
        dataset_info(DataConfig(format="folder"))
    with pytest.raises(SemsegError, match="data.format': 'kitti' is not one of"):
        dataset_info(DataConfig(format="kitti"))
    with pytest.raises(SemsegError, match="data.class_names' has 1 names for 2 classes"):
        dataset_info(DataConfig(format="folder", num_classes=2, class_names=["a"]))
    with pytest.raises(SemsegError, match=r"data.ignore_index' \(1\) is a class id"):
        dataset_info(DataConfig(format="folder", num_classes=2, ignore_index=1))


# ---------------------------------------------------------------- index masks and the LUT
def _decode(raw, **cfg):
    cfg = DataConfig(**cfg)
    return mask_decoder(cfg, dataset_info(cfg).num_classes).decode(np.asarray(raw), "m.png")


@pytest.mark.parametrize(
    "fmt, raw, expected",
    [
        ("camvid", [[0, 10, 11]], [[0, 10, 255]]),
        ("voc", [[0, 20, 255]], [[0, 20, 255]]),
        ("ade20k", [[0, 1, 150]], [[255, 0, 149]]),
        ("cityscapes", [[7, 33, 1], [0, 24, 255]], [[0, 18, 255], [255, 11, 255]]),
    ],
)
def test_builtin_formats_map_void_to_the_one_ignore_index(fmt, raw, expected):
    ids = _decode(np.array(raw, np.uint8), format=fmt)
    assert ids.dtype == np.int64
    assert ids.tolist() == expected


def test_ignore_index_other_than_255_is_used_everywhere():
    assert _decode(np.array([[11, 3]], np.uint8), format="camvid", ignore_index=100).tolist() == [[100, 3]]
    with pytest.raises(SemsegError, match="255"):  # 255 is not void for CamVid: only 11 and the ignore index are
        _decode(np.array([[255]], np.uint8), format="camvid", ignore_index=100)


@pytest.mark.parametrize(
    "fmt, raw, values",
    [("camvid", [[12, 12, 0]], "12 (2 px)"), ("voc", [[21, 0]], "21 (1 px)"), ("ade20k", [[151]], "151 (1 px)"),
     ("cityscapes", [[34, 200, 200]], "200 (2 px), 34 (1 px)")],
)
def test_unknown_label_values_name_the_file_and_values(fmt, raw, values):
    with pytest.raises(SemsegError) as err:
        _decode(np.array(raw, np.uint8), format=fmt)
    message = str(err.value)
    assert message.startswith("m.png: label values ")
    assert values in message and "neither a class nor ignore" in message


def test_folder_identity_reduce_zero_label_and_label_map():
    assert _decode([[0, 2, 255]], num_classes=3).tolist() == [[0, 2, 255]]
    with pytest.raises(SemsegError, match=r"label values 3 \(1 px\).*known values: 0..2 \(classes\), 255 \(ignore\)"):
        _decode([[3]], num_classes=3)
    assert _decode([[0, 1, 3, 255]], num_classes=3, reduce_zero_label=True).tolist() == [[255, 0, 2, 255]]
    mapped = _decode([[0, 10, 20, 30]], num_classes=2, label_map={0: 255, 10: 0, 20: 1, 30: 1})
    assert mapped.tolist() == [[255, 0, 1, 1]]
    # the label map is the whole table: raw 1 is not in it, although 1 is a class id
    with pytest.raises(SemsegError, match=r"label values 1 \(1 px\)"):
        _decode([[1]], num_classes=2, label_map={10: 0, 20: 1})


def test_label_map_keys_from_yaml_strings_and_bad_entries():
    assert _decode([[5]], num_classes=2, label_map={"5": 1}).tolist() == [[1]]
    with pytest.raises(SemsegError, match=r"data.label_map': 5: 7 maps to neither a class id \(0..1\)"):
        _decode([[5]], num_classes=2, label_map={5: 7})
    with pytest.raises(SemsegError, match="key 'x' is not an integer"):
        _decode([[5]], num_classes=2, label_map={"x": 1})
    with pytest.raises(SemsegError, match="label_map' and 'data.reduce_zero_label' are both set"):
        _decode([[5]], num_classes=2, label_map={5: 1}, reduce_zero_label=True)
    with pytest.raises(SemsegError, match="data.label_map' applies to format 'folder' only"):
        _decode([[5]], format="camvid", label_map={5: 1})


def test_sixteen_bit_masks_decode(tmp_path):
    raw = np.array([[0, 300], [1000, 65535]], dtype=np.int64)
    write_label_png(tmp_path / "m16.png", raw)
    cfg = DataConfig(num_classes=2, label_map={0: 0, 300: 1, 1000: 1, 65535: 255})
    assert mask_decoder(cfg, 2).read(tmp_path / "m16.png").tolist() == [[0, 1], [1, 255]]
    with pytest.raises(SemsegError, match=r"m16.png: label values 300 \(1 px\), 1000 \(1 px\), 65535 \(1 px\)"):
        mask_decoder(DataConfig(num_classes=2), 2).read(tmp_path / "m16.png")


def test_palette_png_is_read_as_indices_not_colours(tmp_path):
    raw = np.array([[0, 1], [2, 255]], np.uint8)
    write_label_png(tmp_path / "p.png", raw, default_palette(256))
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert mask_decoder(DataConfig(format="voc"), 21).read(tmp_path / "p.png").tolist() == [[0, 1], [2, 255]]


# ---------------------------------------------------------------- colour masks
PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]


def _color_cfg(**kw):
    return DataConfig(num_classes=3, mask_mode="color", palette=PALETTE, **kw)


def test_color_masks_map_through_the_palette(tmp_path):
    rgb = np.array([[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [255, 0, 0]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert mask_decoder(_color_cfg(), 3).read(tmp_path / "c.png").tolist() == [[0, 1], [2, 1]]
    # a fourth palette entry is raw value 3, which the label map sends to ignore
    cfg = DataConfig(num_classes=3, mask_mode="color", palette=PALETTE + [[9, 9, 9]], label_map={0: 0, 1: 1, 2: 2, 3: 255})
    assert mask_decoder(cfg, 3).decode_colors(np.array([[[9, 9, 9], [0, 255, 0]]], np.uint8)).tolist() == [[255, 2]]


def test_unknown_colours_are_listed_with_pixel_counts_or_ignored():
    rgb = np.array([[[0, 0, 0], [1, 2, 3], [1, 2, 3], [7, 7, 7]]], np.uint8)
    with pytest.raises(SemsegError) as err:
        mask_decoder(_color_cfg(), 3).decode_colors(rgb, "c.png")
    assert str(err.value).startswith("c.png: colours not in data.palette: (1, 2, 3) (2 px), (7, 7, 7) (1 px)")
    ignored = mask_decoder(_color_cfg(unknown_color="ignore"), 3).decode_colors(rgb, "c.png")
    assert ignored.tolist() == [[0, 255, 255, 255]]


def test_color_mode_config_errors():
    with pytest.raises(SemsegError, match="data.palette' is required"):
        mask_decoder(DataConfig(num_classes=3, mask_mode="color"), 3)
    with pytest.raises(SemsegError, match=r"colour \[0, 0, 0\] appears more than once"):
        mask_decoder(DataConfig(num_classes=2, mask_mode="color", palette=[[0, 0, 0], [0, 0, 0]]), 2)
    with pytest.raises(SemsegError, match="is not an RGB colour"):
        mask_decoder(DataConfig(num_classes=1, mask_mode="color", palette=[[0, 0, 300]]), 1)
    with pytest.raises(SemsegError, match="color applies to format 'folder' only"):
        mask_decoder(DataConfig(format="camvid", mask_mode="color", palette=PALETTE), 11)
