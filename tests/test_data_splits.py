"""Leakage-aware splits: groups from a pattern, validation held out by whole groups, the leakage warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from semseg.cli import main
from semseg.config import Holdout, load_config, parse_holdout, validate
from semseg.data import build_dataset, check_dataset
from semseg.data.splits import assign_folds, grouping, leakage_warning
from semseg.errors import SemsegError
from test_data_datasets import make_folder, write_image, write_mask
from test_engine import FAST

# sequence -> frames in train / in val: "B" is in both, as CamVid's 0016E5
SEQUENCES = {"A": (3, 0), "B": (4, 2), "C": (2, 0), "D": (1, 0)}


@pytest.fixture
def video_camvid(tmp_path) -> Path:
    """A CamVid-layout tree whose frames are named SEQUENCE_frame.png (32x40, a few classes)."""
    root = tmp_path / "camvid"
    for seq, counts in SEQUENCES.items():
        for split, count in zip(("train", "val"), counts):
            for i in range(count):
                name = f"{seq}_{split}{i:03d}.png"
                write_image(root / split / name, 32, 40)
                mask = np.zeros((32, 40), np.uint8)
                mask[16:] = 3  # road below sky
                mask[:, :8] = 1 + i % 3
                write_mask(root / f"{split}annot" / name, mask)
    return root


def _data(root: Path, *overrides: str):
    return load_config(None, ["data.format=camvid", f"data.root={root}", *overrides]).data


def _groups(dataset) -> list[str]:
    return sorted({Path(image).name.split("_")[0] for image, _ in dataset.samples})


# ---------------------------------------------------------------- the val_split forms
@pytest.mark.parametrize("value, expected", [
    ("val", None),
    ("train+val", None),
    ("groups:0006R0", Holdout(groups=("0006R0",))),
    ("groups: A , B", Holdout(groups=("A", "B"))),
    ("fold:2/3", Holdout(fold=2, folds=3)),
])
def test_parse_holdout(value, expected):
    assert parse_holdout(value) == expected


@pytest.mark.parametrize("value, message", [
    ("groups:", "name at least one group"),
    ("fold:0/3", "fold:K/N"),
    ("fold:4/3", "fold:K/N"),
    ("fold:1/1", "fold:K/N"),
    ("fold:a/b", "fold:K/N"),
    ("folds:1/3", "expected a split name, groups:NAME"),
])
def test_malformed_holdout_is_a_clear_error(value, message):
    with pytest.raises(SemsegError, match="data.val_split") as err:
        parse_holdout(value)
    assert message in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("data.group_by=[unclosed", "is not a regular expression"),
    ("data.group_by=(a)_(b)", "2 capture groups"),
    ("data.val_split=groups:A+val", "cannot be joined"),
])
def test_config_validation_of_groups(override, message):
    with pytest.raises(SemsegError, match=message):
        validate(load_config(None, [override]))


# ---------------------------------------------------------------- folds
def test_folds_are_balanced_deterministic_and_cover_each_group_once():
    sizes = {"0016E5": 305, "0006R0": 101, "0001TP": 62, "Seq05VD": 171}
    folds = assign_folds(sizes, 2)
    assert folds == {"0016E5": 1, "Seq05VD": 2, "0006R0": 2, "0001TP": 2}
    assert assign_folds(dict(reversed(sizes.items())), 2) == folds  # input order does not matter
    assert assign_folds(sizes, 4) == {"0016E5": 1, "Seq05VD": 2, "0006R0": 3, "0001TP": 4}
    with pytest.raises(SemsegError, match="5 folds need at least 5 groups; the training split has 4"):
        assign_folds(sizes, 5)


# ---------------------------------------------------------------- datasets
def test_camvid_sequences_are_its_groups(video_camvid):
    groups_of = grouping(_data(video_camvid))
    assert not groups_of.strict
    assert groups_of.sizes(build_dataset(_data(video_camvid), "train").samples) == {"A": 3, "B": 4, "C": 2, "D": 1}


def test_held_out_groups_leave_the_training_set(video_camvid):
    data = _data(video_camvid, "data.val_split=groups:B,D")
    train, val = build_dataset(data, data.train_split), build_dataset(data, data.val_split)
    assert _groups(train) == ["A", "C"] and _groups(val) == ["B", "D"]
    assert len(train) + len(val) == 10


def test_folds_partition_the_training_split(video_camvid):
    seen = []
    for k in (1, 2, 3):
        data = _data(video_camvid, "data.train_split=train+val", f"data.val_split=fold:{k}/3")
        train, val = build_dataset(data, data.train_split), build_dataset(data, data.val_split)
        assert not set(_groups(train)) & set(_groups(val))
        assert len(train) + len(val) == 12
        seen += [Path(image).name for image, _ in val.samples]
    assert sorted(seen) == sorted(p.name for split in ("train", "val") for p in (video_camvid / split).iterdir())


def test_unknown_group_names_the_groups_there_are(video_camvid):
    data = _data(video_camvid, "data.val_split=groups:Z")
    with pytest.raises(SemsegError, match=r"group\(s\) Z not in the training split; its groups: A \(3\), B \(4\)"):
        build_dataset(data, data.val_split)


def test_holding_out_every_group_is_refused(video_camvid):
    data = _data(video_camvid, "data.val_split=groups:A,B,C,D")
    with pytest.raises(SemsegError, match="holds out every training image"):
        build_dataset(data, data.train_split)


def test_a_users_pattern_is_strict_and_matches_the_path_below_the_root(tmp_path):
    root = make_folder(tmp_path / "f", [np.zeros((6, 8), np.uint8)] * 3)
    data = load_config(None, ["data.num_classes=2", f"data.root={root}", r"data.group_by=s(\d)"]).data
    assert grouping(data).strict
    assert grouping(data).sizes(build_dataset(data, "train").samples) == {"0": 1, "1": 1, "2": 1}
    data = load_config(None, ["data.num_classes=2", f"data.root={root}", "data.group_by=^masks/"]).data
    with pytest.raises(SemsegError, match=r"s0.png: data.group_by '\^masks/' does not match 'images/train/s0.png'"):
        grouping(data).sizes(build_dataset(data, "train").samples)


def test_holding_out_groups_of_a_format_without_groups_says_how(tmp_path):
    root = make_folder(tmp_path / "f", [np.zeros((6, 8), np.uint8)] * 2)
    data = load_config(None, ["data.num_classes=2", f"data.root={root}", "data.val_split=fold:1/2"]).data
    with pytest.raises(SemsegError, match="has no groups: set data.group_by"):
        build_dataset(data, data.val_split)


# ---------------------------------------------------------------- the leakage warning
def test_data_check_warns_when_train_and_val_share_groups(video_camvid, capsys):
    report = check_dataset(_data(video_camvid), "train", workers=0)
    assert report["groups"] == {"A": 3, "B": 4, "C": 2, "D": 1}
    assert any("share group(s) B (4 train / 2 val images)" in w for w in report["warnings"])
    assert main(["data", "check", "--format", "camvid", "--root", str(video_camvid)]) == 0
    out = capsys.readouterr().out
    assert "4 group(s) by data.group_by" in out and "warning: the train and val splits share group(s) B" in out


def test_no_warning_for_group_disjoint_validation(video_camvid):
    assert leakage_warning(_data(video_camvid, "data.val_split=groups:B")) is None
    report = check_dataset(_data(video_camvid, "data.val_split=fold:2/2"), "fold:2/2", workers=0)
    assert not [w for w in report["warnings"] if "share" in w]
    assert report["groups"] == {"A": 3, "C": 2}  # by size: B -> 1, A -> 2, C -> 2 (3 < 4), D -> 1 (4 < 5)


def test_auditing_a_held_out_fold_judges_that_fold_not_the_configured_val(video_camvid):
    # data.val_split is still the default 'val' (which shares B with train); the audited fold does not
    report = check_dataset(_data(video_camvid, "data.train_split=train+val"), "fold:2/2", workers=0)
    assert not [w for w in report["warnings"] if "share" in w]


def test_training_logs_the_leakage_warning(video_camvid, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="semseg"):
        assert main(["train", "--run-dir", str(tmp_path / "run"), f"data.root={video_camvid}", *FAST,
                     "train.epochs=1"]) == 0
    assert any("share group(s) B" in r.getMessage() for r in caplog.records)
