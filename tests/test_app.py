"""``semseg app``: what the page computes, its API through gradio_client, and the page in headless Chromium."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semseg.app.segment import DEFAULT_MODEL, ModelChoices, segment
from semseg.errors import SemsegError
from semseg.io import read_label_map
from semseg.models.factory import DEFAULT_MODEL_PATH

DEMO = Path(DEFAULT_MODEL_PATH).parent / "demo"
SAMPLE = sorted((DEMO / "val").glob("*.png"))[0]


@pytest.fixture(scope="module")
def models() -> ModelChoices:
    return ModelChoices()


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_segment_gives_overlay_legend_areas_and_label_png(models):
    image = _rgb(SAMPLE)
    predictor = models.predictor(DEFAULT_MODEL)
    result = segment(predictor, image)
    assert np.array_equal(result.labels, predictor(image))  # the Predictor's labels, unchanged
    assert result.overlay.shape == image.shape and result.overlay.dtype == np.uint8
    counts = np.bincount(result.labels.ravel(), minlength=11)
    assert [row[0] for row in result.areas] == [c for c in np.argsort(-counts, kind="stable") if counts[c]]
    assert all(row[2] == counts[row[0]] for row in result.areas)
    assert sum(row[3] for row in result.areas) == pytest.approx(100, abs=0.1)
    assert result.areas[0][1] in predictor.meta.class_names
    with Image.open(io.BytesIO(result.label_png)) as png:  # palette indices are the class ids
        assert png.mode == "P" and np.array_equal(np.asarray(png), result.labels)
    assert result.legend.shape[0] >= 16 * len(result.areas)  # a row per class present
    grey = segment(predictor, image[..., 0])  # a greyscale image is made RGB
    assert grey.overlay.shape == image.shape


def test_model_choices_refuse_what_they_cannot_run(models, tmp_path):
    with pytest.raises(SemsegError, match="unknown model 'nope'; choose one of: default model"):
        models.predictor("nope")
    with pytest.raises(SemsegError, match="unknown backend 'tensorrt'"):
        models.predictor(DEFAULT_MODEL, "tensorrt")
    with pytest.raises(SemsegError, match="missing.pt: checkpoint file not found"):
        ModelChoices([tmp_path / "missing.pt"])
    with pytest.raises(SemsegError, match="no model to offer"):
        ModelChoices(default_model=False)
    with pytest.raises(SemsegError, match="uint8 RGB"):
        segment(models.predictor(DEFAULT_MODEL), np.zeros((4, 4, 3), np.float32))


def test_onnxruntime_backend_agrees_with_pytorch(models, tmp_path):
    pytest.importorskip("onnxruntime")
    image = _rgb(SAMPLE)
    torch_labels = segment(models.predictor(DEFAULT_MODEL, "pytorch"), image).labels
    onnx_labels = segment(models.predictor(DEFAULT_MODEL, "onnxruntime"), image).labels
    assert (torch_labels == onnx_labels).mean() > 0.999
    # an exported file is offered on onnxruntime only
    exported = next(iter(models._exported.values()))
    choices = ModelChoices(onnx=[exported], default_model=False)
    (label,) = choices.labels
    assert choices.backends(label) == ("onnxruntime",)
    with pytest.raises(SemsegError, match="runs on onnxruntime only"):
        choices.predictor(label, "pytorch")


@pytest.fixture(scope="module")
def server(models):
    """The page served on 127.0.0.1 (a free port) for the module's tests."""
    pytest.importorskip("gradio")
    from semseg.app.web import build_app

    page = build_app(models)
    _, url, _ = page.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, footer_links=["api"])
    assert url.startswith("http://127.0.0.1:")
    yield url
    page.close()


def test_app_api_segments_an_uploaded_image(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False, download_files=str(tmp_path))
    pair, legend_file, areas, label_file, about = client.predict(
        handle_file(str(SAMPLE)), DEFAULT_MODEL, False, "pytorch", api_name="/segment")
    expected = segment(ModelChoices().predictor(DEFAULT_MODEL), _rgb(SAMPLE))
    assert np.array_equal(read_label_map(label_file), expected.labels)  # the download is the label map
    assert [row[1] for row in areas["data"]] == [row[1] for row in expected.areas]
    assert areas["headers"] == ["id", "class", "pixels", "share %"]
    shown = [Image.open(p if isinstance(p, str) else p["path"]) for p in pair]
    assert all(picture.size == expected.labels.shape[::-1] for picture in shown)  # the image and its overlay, full size
    assert "11 classes" in about
    with pytest.raises(Exception, match="upload an image"):
        client.predict(None, DEFAULT_MODEL, False, "pytorch", api_name="/segment")


def test_app_page_in_chromium_uploads_and_shows_the_overlay(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server)
    wait = WebDriverWait(browser, 60)
    upload = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#input-image input[type=file]")))
    upload.send_keys(str(SAMPLE))
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#input-image img")))
    browser.find_element(By.CSS_SELECTOR, "#segment").click()
    # the overlay: the slider's two images, decoded; the legend image; the area table's rows
    wait.until(lambda driver: len(driver.find_elements(By.CSS_SELECTOR, "#overlay img")) >= 2)
    wait.until(lambda driver: all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
                                  for img in driver.find_elements(By.CSS_SELECTOR, "#overlay img, #legend img")))
    wait.until(lambda driver: "Road" in driver.find_element(By.CSS_SELECTOR, "#areas").text)
    assert "Building" in browser.find_element(By.CSS_SELECTOR, "#areas").text
    assert browser.find_elements(By.CSS_SELECTOR, "#labels a")  # the label PNG to download
    shot = tmp_path / "app.png"
    time.sleep(0.5)  # let the last image paint
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as picture:
        assert len(set(picture.convert("L").getdata())) > 50  # the page with its pictures, not a blank one


def test_app_without_gradio_says_which_extra_to_install(monkeypatch, capsys):
    import sys

    from semseg.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now fails
    assert main(["app"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'semseg[app]'" in err and len(err.strip().splitlines()) == 1
    assert main(["app", "--checkpoint", "missing.pt"]) == 2
    assert "semseg[app]" in capsys.readouterr().err  # the missing extra is named first, before anything loads
