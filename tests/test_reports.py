"""Reports: figures, the gallery's frame choice, the report folder of training and ``semseg val``, report.html in Chromium."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FAST
from semseg.cli import main
from semseg.errors import SemsegError
from semseg.metrics import ConfusionMatrix, report
from semseg.reports.figures import class_iou_figure, class_pixels_figure, confusion_figure, results_figure
from semseg.reports.gallery import FramePicker, GalleryRow, error_map, frame_iou, gallery
from semseg.reports.html import render_html
from semseg.reports.report import CSV_KEYS, ReportInputs, write_report, write_results_csv

NAMES = ["road", "sky", "car"]
PALETTE = [[128, 64, 128], [70, 130, 180], [0, 0, 142]]


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def _history() -> list[dict]:
    return [
        {"epoch": 1, "train_loss": 1.2, "lr": 0.01, "batches": 2, "miou": 0.3, "per_class_iou": {"road": 0.5, "sky": 0.4, "car": None}},
        {"epoch": 2, "train_loss": 0.9, "lr": 0.005, "batches": 2},  # not validated that epoch
        {"epoch": 3, "train_loss": 0.7, "lr": 0.0, "batches": 2, "miou": 0.5, "per_class_iou": {"road": 0.7, "sky": 0.6, "car": 0.2}},
    ]


def test_figures_are_pngs_and_svg_keeps_the_class_names_as_text():
    matrix = np.array([[50, 3, 0], [2, 40, 1], [0, 0, 0]])
    for data in (results_figure(_history(), NAMES, PALETTE), confusion_figure(matrix, NAMES),
                 confusion_figure(matrix, NAMES, normalize=True), class_iou_figure({"road": 0.7, "sky": None, "car": 0.1}, PALETTE),
                 class_pixels_figure(NAMES, PALETTE, {"train": [10, 5, 1], "val": [3, 0, 1]})):
        width, height = _png_size(data)
        assert width >= 400 and height >= 200
    svg = confusion_figure(matrix, NAMES, normalize=True, fmt="svg").decode()
    assert all(f">{name}<" in svg for name in NAMES)  # the axes carry the class names
    assert "0.94" in svg  # 50 / 53: the row-normalized cell, written in it


def test_figures_refuse_mismatched_inputs():
    with pytest.raises(SemsegError, match="shape \\[2, 2\\] for 3 class names"):
        confusion_figure(np.zeros((2, 2)), NAMES)
    with pytest.raises(SemsegError, match="3 class names but only 2 palette colours"):
        results_figure(_history(), NAMES, PALETTE[:2])
    with pytest.raises(SemsegError, match="'val': 2 values for 3 classes"):
        class_pixels_figure(NAMES, PALETTE, {"val": [1, 2]})
    with pytest.raises(SemsegError, match="png or svg"):
        class_iou_figure({"road": 0.5}, PALETTE, fmt="jpg")


def test_frame_picker_matches_a_brute_force_choice():
    rng = np.random.default_rng(0)
    total, count = 23, 3
    ious = rng.random(total)
    ious[[4, 9]] = np.nan  # frames without labelled pixels: never among the worst
    ious[7] = ious[12]  # a tie: the earlier frame ranks first
    picker = FramePicker(total, count)
    order = rng.permutation(total)  # frames may arrive in any order (DDP shards)
    for index in order:
        picker.offer(int(index), float(ious[index]), np.full((2, 2), index))
    frames = picker.frames()
    spread = [int(total * (k + 0.5) / count) for k in range(count)]
    assert [f.index for f in frames if f.kind == "spread"] == spread
    ranked = sorted((i for i in range(total) if not math.isnan(ious[i]) and i not in spread), key=lambda i: (ious[i], i))
    assert [f.index for f in frames if f.kind == "worst"] == ranked[:count]
    assert all((f.prediction == f.index).all() for f in frames)  # each kept with its own prediction


@pytest.mark.parametrize("ranks", [2, 3])
def test_frame_pickers_of_ddp_shares_merge_into_the_whole_sets_choice(ranks):
    rng = np.random.default_rng(1)
    total, count = 31, 4
    ious = rng.random(total)
    ious[[3, 16]] = np.nan
    whole = FramePicker(total, count)
    shares = [FramePicker(total, count) for _ in range(ranks)]
    for index in range(total):  # rank r evaluates frames r, r + ranks, ... (semseg.engine.setup.eval_loader)
        for picker in (whole, shares[index % ranks]):
            picker.offer(index, float(ious[index]), np.full((2, 2), index))
    merged = FramePicker(total, count)
    for share in shares:
        merged.merge(share.candidates())
    def chosen(picker):  # NaN compares unequal to itself: None stands for it
        return [(f.kind, f.index, None if math.isnan(f.iou) else f.iou) for f in picker.frames()]

    assert chosen(merged) == chosen(whole)
    assert all((f.prediction == f.index).all() for f in merged.frames())


def test_frame_picker_on_a_set_smaller_than_its_count():
    picker = FramePicker(2, 4)
    for index in range(2):
        picker.offer(index, 0.5, np.zeros((1, 1)))
    assert [(f.kind, f.index) for f in picker.frames()] == [("spread", 0), ("spread", 1)]
    assert FramePicker(10, 0).frames() == []
    with pytest.raises(SemsegError, match="non-negative"):
        FramePicker(10, -1)


def test_frame_iou_and_error_map_against_hand_counts():
    truth = np.array([[0, 0, 1], [1, 255, 2]])
    prediction = np.array([[0, 1, 1], [1, 2, 0]])
    matrix = ConfusionMatrix(3, 255)
    matrix.update(torch.from_numpy(prediction), torch.from_numpy(truth))
    # road: 1 / (2 + 2 - 1) = 1/3; sky: 2 / (2 + 3 - 2) = 2/3; car: 0 / (1 + 0) = 0 (the void pixel is not counted)
    assert frame_iou(matrix.matrix) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    errors = error_map(truth, prediction, 255)
    assert errors[0, 0].tolist() == [225, 225, 225] and errors[0, 1].tolist() == [220, 20, 60]
    assert errors[1, 1].tolist() == [0, 0, 0]
    with pytest.raises(SemsegError, match="one size"):
        error_map(truth, prediction[:, :2], 255)


def test_gallery_has_a_row_per_frame_and_a_legend_of_the_classes_shown():
    truth = np.zeros((40, 60), np.int64)
    truth[20:] = 1
    rows = [GalleryRow("spread 1: a.png, IoU 50.0%", np.full((40, 60, 3), 90, np.uint8), truth, np.zeros_like(truth)),
            GalleryRow("worst 1: b.png, IoU 10.0%", None, truth, np.ones_like(truth))]
    picture = gallery(rows, NAMES, PALETTE, tile_width=60)
    assert picture.dtype == np.uint8 and picture.shape[1] >= 4 * 60
    colours = {tuple(c) for c in picture.reshape(-1, 3).tolist()}
    assert tuple(PALETTE[0]) in colours and tuple(PALETTE[1]) in colours
    assert tuple(PALETTE[2]) not in colours  # "car" appears in no frame: not in the legend either
    with pytest.raises(SemsegError, match="at least one frame"):
        gallery([], NAMES, PALETTE)
    with pytest.raises(SemsegError, match="differ in size"):
        gallery([GalleryRow("x", None, truth, truth[:10])], NAMES, PALETTE)


def test_results_csv_has_a_row_per_epoch_and_a_column_per_class(tmp_path):
    write_results_csv(tmp_path / "results.csv", _history(), NAMES)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert list(rows[0])[: len(CSV_KEYS)] == list(CSV_KEYS)
    assert rows[2]["iou/car"] == "0.2" and rows[0]["iou/car"] == "" and rows[1]["miou"] == ""


def test_write_report_is_self_contained_and_names_its_files(tmp_path):
    matrix = ConfusionMatrix(3, 255)
    matrix.update(torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 1, 0, 255]]))
    scores = report(matrix, NAMES)
    picture = np.zeros((30, 40, 3), np.uint8)
    inputs = ReportInputs("a <title>", NAMES, PALETTE, scores, _history(), {"train (audit)": [5, 4, 1]}, picture,
                          {"model": "unet", "best_miou": 0.5})
    page = write_report(tmp_path, inputs)
    expected = {"results.csv", "results.png", "confusion_matrix.png", "confusion_matrix_normalized.png", "class_iou.png",
                "class_pixels.png", "val_gallery.png", "summary.json", "report.html"}
    assert {p.name for p in tmp_path.iterdir()} == expected
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["files"]) == expected and summary["model"] == "unet"
    assert summary["scores"]["confusion_matrix"] == scores["confusion_matrix"]
    text = page.read_text()
    assert "a &lt;title&gt;" in text  # escaped
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched: it opens offline
    assert all(name in text for name in NAMES)


def test_report_html_marks_the_pred_to_gt_ratios_two_times_off():
    matrix = ConfusionMatrix(3, 255)  # GT pixels 2, 1, 0; predicted 1, 2 (the ignored pixel is not counted)
    matrix.update(torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 1, 0, 255]]))
    page = render_html("t", {}, report(matrix, NAMES), PALETTE, {})
    cells = re.findall(r'<td class="(num(?: flag)?)">([^<]*)</td></tr>', page)  # each row's last cell
    assert cells == [("num flag", "0.50x"), ("num flag", "2.00x"), ("num", "&ndash;")]
    assert f"over-predicted (pred/GT pixels &gt;= 2x): {NAMES[1]} 2.00x" in page
    assert f"under-predicted (pred/GT pixels &lt;= 0.5x): {NAMES[0]} 0.50x" in page
    balanced = ConfusionMatrix(2, 255)
    balanced.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 0, 1]]))  # ratios 0.5x and 2x are the edges
    balanced.update(torch.tensor([[0, 0, 1]]), torch.tensor([[0, 0, 1]]))  # now 3/4 and 3/2: nothing flagged
    page = render_html("t", {}, report(balanced, NAMES[:2]), PALETTE, {})
    assert "flag" not in page.split("</style>")[1] and "0.75x" in page and "1.50x" in page


@pytest.fixture(scope="module")
def trained_run(tiny_camvid, tmp_path_factory) -> Path:
    """A 2-epoch training on the tiny CamVid sample (reports on, as by default)."""
    run = tmp_path_factory.mktemp("reports") / "run"
    assert main(["train", "--run-dir", str(run), f"data.root={tiny_camvid}", *FAST, "train.epochs=2",
                 "train.gallery_frames=1"]) == 0
    return run


def test_training_leaves_the_report_folder(trained_run):
    for name in ("results.csv", "results.png", "confusion_matrix.png", "confusion_matrix_normalized.png", "class_iou.png",
                 "class_pixels.png", "val_gallery.png", "summary.json", "report.html", "best.pt", "last.pt",
                 "metrics.jsonl", "config.yaml"):
        assert (trained_run / name).is_file(), name
    rows = list(csv.DictReader((trained_run / "results.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"] and "iou/Sky" in rows[0] and rows[1]["miou"]
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == "2 of 2"
    assert summary["run_dir"] == str(trained_run.resolve())
    assert list(summary["scores"]["per_class"])[:2] == ["Sky", "Building"]  # CamVid's class names, from the format
    # the gallery: 2 val frames, one spread and one worst, each a titled row
    with Image.open(trained_run / "val_gallery.png") as picture:
        assert picture.width >= 4 * 64


def test_best_pt_keeps_weights_and_scores_and_last_pt_the_resume_state(trained_run):
    best = torch.load(trained_run / "best.pt", weights_only=True)
    last = torch.load(trained_run / "last.pt", weights_only=True)
    for key in ("optimizer", "scheduler", "rng"):
        assert key not in best and key in last, key
    assert best["model_meta"]["class_names"][0] == "Sky"
    assert best["best_scores"]["miou"] == best["best_miou"]
    assert (trained_run / "best.pt").stat().st_size < (trained_run / "last.pt").stat().st_size
    # best.pt predicts and evaluates on its own
    assert main(["val", "--checkpoint", str(trained_run / "best.pt")]) == 0


def test_report_html_renders_in_chromium_with_its_images(trained_run, browser, tmp_path):
    browser.get((trained_run / "report.html").resolve().as_uri())
    images = browser.find_elements("tag name", "img")
    assert len(images) == 6
    for image in images:  # every embedded figure decoded
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 100
    body = browser.find_element("tag name", "body").text
    assert "Sky" in body and "Building" in body and "mIoU" in body and "pred/GT" in body
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as picture:
        assert picture.size[0] >= 1000 and len(set(picture.convert("L").getdata())) > 50  # not a blank page


def test_val_writes_the_same_report_folder(trained_run, tiny_camvid, tmp_path, capsys):
    folder = tmp_path / "val-report"
    assert main(["val", "--checkpoint", str(trained_run / "best.pt"), f"data.root={tiny_camvid}", "--report", str(folder),
                 "--json", str(tmp_path / "val.json")]) == 0
    names = {p.name for p in folder.iterdir()}
    assert names == {"confusion_matrix.png", "confusion_matrix_normalized.png", "class_iou.png", "class_pixels.png",
                     "val_gallery.png", "summary.json", "report.html"}
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["scores"] == json.loads((tmp_path / "val.json").read_text())
    assert summary["command"] == "semseg val"
    assert str((folder / "report.html").resolve()) in capsys.readouterr().out


def test_val_save_examples_shows_a_spread_and_the_worst(trained_run, tmp_path):
    out = tmp_path / "examples"
    assert main(["val", "--checkpoint", str(trained_run / "best.pt"), "--save-examples", "1", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 2 and names[0].startswith("spread_") and names[1].startswith("worst_")


def test_val_without_a_dataset_names_the_key(tmp_path, capsys):
    assert main(["val", f"data.root={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert "data.root" in err and "nowhere" in err and "folder not found" in err and len(err.strip().splitlines()) == 1


def test_val_on_the_default_model_needs_only_data_root(tmp_path, capsys):
    demo = Path(__file__).resolve().parents[1] / "semseg" / "assets" / "demo"
    assert main(["val", f"data.root={demo}", "--report", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "test split" in out and "mIoU" in out
    assert (tmp_path / "r" / "report.html").is_file()


def test_reports_can_be_turned_off(tiny_camvid, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), f"data.root={tiny_camvid}", *FAST, "train.epochs=1", "train.reports=false"]) == 0
    assert (run / "best.pt").is_file() and not (run / "report.html").exists() and not (run / "results.png").exists()


def test_training_console_banner_progress_and_closing_table(tiny_camvid, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), f"data.root={tiny_camvid}", *FAST, "train.epochs=1", "train.reports=false"]) == 0
    out = capsys.readouterr().out
    # the banner, before the first epoch line: the absolute run folder, model, device, data sizes, schedule
    banner = out[: out.index("epoch 1/1")]
    assert f"run folder {run.resolve()}" in banner
    assert "lraspp_mobilenet_v3_large" in banner and "M parameters, 11 classes (Sky, Building" in banner
    assert "device   cpu, fp32" in banner and "4 train images" in banner and "2 val images (val)" in banner
    assert "validate: 2/2 img" in out  # validation progress: one line per 10% when not on a terminal
    closing = out[out.index("per-class scores of best.pt"):]
    assert "Sky" in closing and "Bicyclist" in closing and "mIoU" in closing


def test_ctrl_c_prints_the_exact_resume_command(tiny_camvid, tmp_path, monkeypatch, capsys):
    from semseg.engine import loop

    real = loop.train_one_epoch

    def interrupted_in_epoch_2(trainer, forward):
        if trainer.epoch == 1:
            raise KeyboardInterrupt
        return real(trainer, forward)

    monkeypatch.setattr(loop, "train_one_epoch", interrupted_in_epoch_2)
    run = tmp_path / "a run"  # a space: the printed command must quote it
    assert main(["train", "--run-dir", str(run), f"data.root={tiny_camvid}", *FAST, "train.reports=false"]) == 130
    err = capsys.readouterr().err
    assert f"continue this run with: semseg train --resume '{run.resolve()}'" in err
    monkeypatch.setattr(loop, "train_one_epoch", real)
    assert main(["train", "--resume", str(run)]) == 0  # and that command works
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 3


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(tiny_camvid, tmp_path, monkeypatch, capsys):
    from semseg.engine import loop

    def interrupt(trainer, forward):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_one_epoch", interrupt)
    assert main(["train", "--run-dir", str(tmp_path / "run"), f"data.root={tiny_camvid}", *FAST]) == 130
    assert "holds nothing to resume" in capsys.readouterr().err


def test_tensorboard_logs_per_class_tags(tiny_camvid, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(["train", "--run-dir", str(run), f"data.root={tiny_camvid}", *FAST, "train.epochs=1", "train.reports=false"]) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/miou", "val/iou/Sky", "val/iou/Bicyclist", "time/eval_s"} <= tags
    (value,) = events.Scalars("val/miou")
    assert value.value == pytest.approx(json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["miou"])


def test_data_check_and_score_show_progress_in_a_log(tiny_camvid, tmp_path, capsys):
    # not a terminal (captured): one line per 10% through the log, none with -q
    assert main(["data", "check", "--format", "camvid", "--root", str(tiny_camvid), "--split", "train"]) == 0
    assert "data check: 4/4 img (100%)" in capsys.readouterr().out
    gt, pred = tiny_camvid / "valannot", tmp_path / "pred"
    pred.mkdir()
    for path in gt.glob("*.png"):  # the truth as prediction, void (11) predicted as Sky
        labels = np.asarray(Image.open(path))
        Image.fromarray(np.where(labels == 11, 0, labels).astype(np.uint8)).save(pred / path.name)
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--format", "camvid"]) == 0
    out = capsys.readouterr().out
    assert "score: 1/2 img (50%)" in out and "score: 2/2 img (100%)" in out
    assert main(["-q", "score", "--pred", str(pred), "--gt", str(gt), "--format", "camvid"]) == 0
    assert "score:" not in capsys.readouterr().out
