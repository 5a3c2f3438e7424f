"""``semseg demo``: the whole job on the street-scene sample shipped inside the package.

Train a small model from scratch for about two minutes, evaluate it with the
metric contract, predict the held-back frame and write a colour overlay. No
network and no file outside the package is needed.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from semseg.config import RunConfig, load_config
from semseg.engine.loop import fit
from semseg.errors import SemsegError
from semseg.io import encode_image_png, list_images, read_image, read_label_map, write_bytes_atomic, write_label_png
from semseg.metrics import collapse_warning
from semseg import checkpoint as checkpoint_module
from semseg.models import load_model
from semseg.predict import Predictor
from semseg.reports.viz import overlay, with_legend

log = logging.getLogger(__name__)

DEMO_ROOT = resources.files("semseg") / "assets" / "demo"

# A small model and crops that learn something in the demo's time budget (train.time_limit_minutes).
DEMO_SETTINGS = [
    "name=demo",
    "model.name=lraspp_mobilenet_v3_large",
    # torchvision's BatchNorm momentum of 0.01 leaves the running statistics far behind the
    # weights after a few hundred steps: the evaluated model then predicts one class everywhere
    "model.bn_momentum=0.1",
    "data.format=camvid",
    "data.crop_size=[176,240]",
    "data.scale_range=[0.75,1.5]",
    # ten small frames decode in milliseconds: a worker process started every epoch (the
    # loader's fresh workers keep resume exact) cost more than the two steps of an epoch
    "data.workers=0",
    "train.optimizer=adamw",
    "train.lr=0.003",
    "train.weight_decay=0.01",
    "train.batch_size=5",
    "train.epochs=300",  # a cap: the time budget ends the run, and the schedule follows it
    "train.warmup_epochs=2",
    "train.val_every=50",
    # last.pt with the validations only: an epoch here is two steps, and writing the 50 MB checkpoint every
    # epoch took a fifth of the two minutes (BENCHMARKS.md, "semseg demo: last.pt with its validations only")
    "train.checkpoint_every=50",
    # an average of the weights over the last few dozen steps (its warm-up makes that horizon in a run
    # this short): a few hundred steps at batch 5 on ten frames leave the raw weights noisy from step to
    # step, and the held-back frame's score with them (BENCHMARKS.md, "semseg demo: an EMA of the weights")
    "train.ema=true",
    "train.precision=auto",
]


def demo_config(minutes: float) -> RunConfig:
    return load_config(None, DEMO_SETTINGS + [f"data.root={DEMO_ROOT}", f"train.time_limit_minutes={minutes}"])


def run_demo(run_dir: str | Path = "runs/demo", minutes: float = 2.0) -> int:
    run_dir = Path(run_dir)
    if (run_dir / "last.pt").exists():
        raise SemsegError(f"{run_dir} already holds a demo run; remove it or pass --run-dir")
    cfg = demo_config(minutes)
    log.info("semseg demo: training %s from scratch on %s for up to %g min", cfg.model.name, DEMO_ROOT, minutes)
    start = time.monotonic()
    last = fit(cfg, run_dir)
    log.info("trained %s epochs in %.0f s", last.get("epoch"), time.monotonic() - start)

    frame = list_images(Path(str(DEMO_ROOT)) / "test")[0]
    out = run_dir / "prediction"
    overlay_path = _predict_frame(load_model(run_dir / "best.pt"), frame, out, "", "the demo model")
    if checkpoint_module.DEFAULT_MODEL_PATH.is_file():  # the same frame by the embedded default model (an hour of CamVid training)
        who = "semseg's default CamVid model (trained on CamVid train+val, which hold this frame)"
        _predict_frame(load_model(checkpoint_module.DEFAULT_MODEL_PATH), frame, out, "default_", who)
    log.info("look at: %s (colour overlay), %s (scores)", overlay_path, run_dir / "metrics.jsonl")
    return 0


def _predict_frame(model: Any, frame: Path, out: Path, prefix: str, who: str) -> Path:
    """Predict the held-back ``frame``, write its labels and overlay into ``out``, log the share of correct pixels."""
    labels = Predictor(model)(frame)
    palette = model.pretrained_cfg.palette
    write_label_png(out / f"{prefix}{frame.stem}_labels.png", labels.astype(np.uint8), palette)
    overlay_path = out / f"{prefix}{frame.stem}_overlay.png"
    names = model.pretrained_cfg.class_names
    picture = with_legend(overlay(read_image(frame), labels, palette), names, palette, labels)  # the classes it shows
    write_bytes_atomic(overlay_path, encode_image_png(picture))
    truth = read_label_map(Path(str(DEMO_ROOT)) / "testannot" / frame.name)
    valid = truth != 11  # CamVid's void
    agreement = float((labels[valid] == truth[valid]).mean())
    names = list(model.pretrained_cfg.class_names or [])
    predicted = np.bincount(labels.ravel(), minlength=len(names))
    log.info("held-back frame %s, %s: %.1f%% of labelled pixels correct, %d classes predicted (%s)", frame.name, who,
             100 * agreement, int((predicted > 0).sum()), overlay_path.name)
    if warning := collapse_warning(predicted, names, what=f"held-back frame {frame.name}"):
        log.warning(warning)
    return overlay_path
