"""Shared fixtures: a tiny CamVid-layout sample with a fast training recipe (engine and report tests), and a
headless Chromium driven by Selenium (the report and app browser tests)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

DEMO = Path(__file__).resolve().parents[1] / "semseg" / "assets" / "demo"

# A fast, fully specified run on a tiny CamVid-layout sample (64x80 frames).
FAST = [
    "model.name=lraspp_mobilenet_v3_large",
    "data.format=camvid",
    "data.crop_size=[48,64]",
    "data.scale_range=[0.75,1.25]",
    "data.workers=0",
    "train.batch_size=2",
    "train.epochs=3",
    "train.lr=0.01",
    "train.precision=fp32",
    "train.device=cpu",
]


@pytest.fixture(scope="module")
def tiny_camvid(tmp_path_factory) -> Path:
    """4 train and 2 val frames of the demo sample, downscaled to 80x64."""
    root = tmp_path_factory.mktemp("camvid")
    for split, count in (("train", 4), ("val", 2)):
        for folder, resample in ((split, Image.Resampling.BOX), (split + "annot", Image.Resampling.NEAREST)):
            (root / folder).mkdir()
            for path in sorted((DEMO / folder).glob("*.png"))[:count]:
                with Image.open(path) as img:
                    img.resize((80, 64), resample).save(root / folder / path.name)
    return root


# Debian's chromium and chromium-driver packages (.ci/run installs them); never a browser download
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _need_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        if os.environ.get("CI"):  # CI installs them: a missing piece there is a failure, not a skip
            pytest.fail(f"browser tests need {', '.join(missing)} (.ci/run installs chromium and chromium-driver)")
        pytest.skip(f"browser tests need {', '.join(missing)}: apt-get install chromium chromium-driver")


@pytest.fixture
def browser(tmp_path) -> Iterator[object]:
    """A headless Chromium (Selenium WebDriver) with a fresh profile, 1280x1600, closed afterwards."""
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1600"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def _cache_in_a_temporary_folder(tmp_path_factory, monkeypatch):
    """Models converted by prediction backends go to one folder per test session, never to the user's cache."""
    monkeypatch.setenv("SEMSEG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "semseg-cache"))
