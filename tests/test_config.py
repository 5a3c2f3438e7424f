"""Typed config: YAML + key=value overrides, clear errors, validate()."""

from __future__ import annotations

from pathlib import Path

import pytest

from semseg.config import RunConfig, load_config, parse_overrides, to_yaml, valid_keys, validate
from semseg.errors import SemsegError


def test_yaml_sections_flat_keys_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: camvid\nmodel:\n  name: unet_resnet18\ndata.format: camvid\ntrain:\n  epochs: 3\n  lr: 1\n")
    cfg = load_config(path, ["train.epochs=5", "data.crop_size=[360, 480]", "model.pretrained=w.pth"])
    assert cfg.name == "camvid"
    assert cfg.model.name == "unet_resnet18"
    assert cfg.data.format == "camvid"
    assert cfg.train.epochs == 5  # the command line wins over the file
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int accepted for a float
    assert cfg.data.crop_size == [360, 480]
    assert cfg.model.pretrained == "w.pth"


def test_exponent_floats_without_a_dot(tmp_path):
    # PyYAML reads 1e-4 as a string (YAML 1.1); a float key must still accept it
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  weight_decay: 1e-4\n")
    cfg = load_config(path, ["train.lr=1e-9"])
    assert (cfg.train.weight_decay, cfg.train.lr) == (1e-4, 1e-9)


def test_saved_yaml_round_trips(tmp_path):
    cfg = load_config(None, ["train.epochs=7", "train.class_weights=[1.0, 2.0]", "train.clip_grad=1.5"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_base_then_file_then_overrides():
    base = {"train": {"epochs": 9, "lr": 0.5}}
    cfg = load_config(None, ["train.lr=0.1"], base=base)
    assert (cfg.train.epochs, cfg.train.lr) == (9, 0.1)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=5", "unknown config key 'train.epoch'. Valid keys: train.epochs"),
        ("trian.epochs=5", "unknown config key 'trian.epochs'"),
        ("train.epochs=five", "config key 'train.epochs': expected an integer, got 'five'"),
        ("train.precision=fp8", "config key 'train.precision': 'fp8' is not one of"),
        ("train.ema=yes please", "config key 'train.ema': expected true or false"),
        ("data.crop_size=512", "config key 'data.crop_size': expected a list"),
        ("train.epochs", "is not key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(SemsegError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, [override])


def test_bad_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(SemsegError, match=r"unknown config key 'train.epocs'.*bad.yaml"):
        load_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SemsegError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(SemsegError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")


def test_override_values_are_yaml():
    values = parse_overrides(["a.b=3", "a.c=0.5", "a.d=[1,2]", "a.e=null", "a.f=text", "a.g=true"])
    assert values == {"a.b": 3, "a.c": 0.5, "a.d": [1, 2], "a.e": None, "a.f": "text", "a.g": True}


def test_bare_on_and_off_are_the_words_not_booleans(tmp_path):
    # YAML 1.1 reads on/off as true/false; for an auto|on|off key the user meant the word
    assert load_config(None, ["train.channels_last=off"]).train.channels_last == "off"
    assert load_config(None, ["train.channels_last=on"]).train.channels_last == "on"
    (tmp_path / "c.yaml").write_text("train:\n  channels_last: off\n")
    assert load_config(tmp_path / "c.yaml").train.channels_last == "off"
    with pytest.raises(SemsegError, match="'train.compile'"):  # a plain boolean key keeps its type check
        load_config(None, ["train.compile=sometimes"])


@pytest.mark.parametrize(
    "overrides, num_classes, message",
    [
        (["data.num_classes=12"], 11, "'data.num_classes' is 12 but the folder dataset has 11"),
        (["data.ignore_index=3"], 11, "'data.ignore_index' \\(3\\) is a class id"),
        (["data.class_names=[a, b]"], 11, "has 2 names for 11 classes"),
        (["train.class_weights=[1.0, 2.0]"], 11, "has 2 values for 11 classes"),
        (["train.class_weights=inverse"], None, "expected median_freq, sqrt_median_freq, enet"),
        (["data.crop_size=[0, 10]"], None, "data.crop_size"),
        (["data.scale_range=[2.0, 0.5]"], None, "data.scale_range"),
        (["data.brightness=1.5"], None, "'data.brightness': expected a number in \\[0, 1\\)"),
        (["data.brightness=-0.1"], None, "'data.brightness'"),
        (["data.contrast=1.0"], None, "'data.contrast': expected a number in \\[0, 1\\)"),
        (["data.saturation=-0.5"], None, "'data.saturation': expected a number in \\[0, 1\\)"),
        (["data.hue=0.6"], None, "'data.hue': expected a number in \\[0, 0.5\\]"),
        (["data.blur=1.5"], None, "'data.blur': expected a probability in \\[0, 1\\]"),
        (["data.class_mix=1.5"], None, "'data.class_mix': expected a probability in \\[0, 1\\]"),
        (["data.class_mix=0.5", "train.batch_size=1"], None, "'data.class_mix' mixes the samples of a batch"),
        (["train.batch_size=0"], None, "train.batch_size"),
        (["train.checkpoint_every=0"], None, "'train.checkpoint_every' must be >= 1, got 0"),
        (["train.freeze_encoder_epochs=10", "train.epochs=5"], None, "freeze_encoder_epochs"),
        (["model.bn_momentum=0"], None, "model.bn_momentum"),
    ],
)
def test_validate_rejects_disagreeing_settings(overrides, num_classes, message):
    cfg = load_config(None, overrides)
    with pytest.raises(SemsegError, match=message):
        validate(cfg, num_classes)


def test_defaults_validate_and_required_keys_exist():
    validate(RunConfig(), 11)
    keys = set(valid_keys())
    for key in ("model.name", "model.pretrained", "data.format", "data.root", "data.crop_size",
                "train.epochs", "train.batch_size", "train.seed"):
        assert key in keys


def test_bundled_configs_by_name(tmp_path, capsys):
    from semseg.cli import main
    from semseg.config import BUNDLED_CONFIGS, bundled_configs, config_path

    top = Path(__file__).resolve().parents[1] / "configs"
    # installed with the package (package data), and the same files as the clone's configs/ folder
    assert sorted(p.name for p in BUNDLED_CONFIGS.glob("*.yaml")) == sorted(p.name for p in top.glob("*.yaml"))
    assert BUNDLED_CONFIGS.parent.name == "semseg"
    assert config_path("camvid") == config_path("camvid.yaml") == BUNDLED_CONFIGS / "camvid.yaml"
    by_name = load_config("camvid")
    assert by_name == load_config(top / "camvid.yaml") and by_name.data.format == "camvid"
    assert "CamVid" in bundled_configs()["camvid"]
    local = tmp_path / "camvid.yaml"  # a file of that name in the working folder wins over the bundled one
    local.write_text("name: mine\n")
    assert load_config(local).name == "mine"

    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("camvid", "camvid_baseline", "cityscapes", "voc", "ade20k"))
    assert main(["configs", "voc"]) == 0 and "name: voc" in capsys.readouterr().out
    assert main(["train", "--config", "camvdi"]) == 2
    err = capsys.readouterr().err
    assert "camvdi: config file not found" in err and "camvid_baseline" in err and len(err.strip().splitlines()) == 1


def test_pyproject_ships_the_bundled_configs():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"configs/*.yaml"' in text  # package data: semseg/configs (a link to configs/) goes into the wheel
