"""Compare CamVid recipe variants on the sequence-disjoint holdouts at the step budget the CPU gives each (issue 15).

Every variant is `semseg train --config camvid` with a few overrides, trained on
train+val minus one held-out sequence (0006R0 or 0001TP) and scored on it. The
runs are given the optimizer steps that the 60-minute budget buys *on the 2-core
CPU* (train.time_limit_minutes is replaced by a fixed epoch count), so they can
run anywhere, a GPU included, and still answer the CPU question: which recipe
wins within the hour. The budgets come from measurements on that CPU:

- LR-ASPP at 288x384 crops: 2370 steps (the shipped run: 40.5 epochs of 468 frames, batch 8, 2 threads)
- 360x480 crops: 1.6x the CPU time per step (BENCHMARKS.md), so 2370 / 1.6 steps
- DDRNet-23-slim: about LR-ASPP's time per step (BENCHMARKS.md, real-time table)
- OHEM cross-entropy: its hard-pixel selection costs about 1.08x per step at 360x480 (one thread, 23 epochs in
  the hour against 25 on 0006R0, 22 against 23 on 0001TP: BENCHMARKS.md, "OHEM cross-entropy on both folds")
- batch 4 (and 2): the CPU's time per image is the same at batch 2, 4 and 8 (one thread, 360x480), so 2x (4x) the steps

The budgets are therefore counted in steps of 8 images (the batch of every sweep before configs/camvid.yaml
took batch 4): a run at batch B gets the same images in 8 / B times the steps. The variants that repeat a
recorded sweep pin batch 8, so they train as they did then; `batch4_crop360` is the recipe now.

`--steps` gives every variant the same budget (in steps of 8 images) instead (what the brightness sweep did, where the
variants cost the same per step).

Runs go through a pool of concurrent processes; each run's metrics.jsonl is read
at the end and summarized (last epoch, and the mean over the last 15% of the
schedule) per variant, fold and seed, also as JSON.

    python benchmarks/recipe_sweep.py --root ../shared/camvid --out sweep --variants crop288 crop360 \\
        --seeds 0 1 --concurrent 4 --workers 3 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from semseg.config import load_config

STEPS_288 = 2370
STEPS_360 = round(STEPS_288 / 1.6)
# each variant names its crop size: configs/camvid.yaml moved from 288x384 to 360x480 crops after this sweep
CROP_288, CROP_360 = "data.crop_size=[288,384]", "data.crop_size=[360,480]"
# every sweep recorded in BENCHMARKS.md ran at batch 8, before configs/camvid.yaml took batch 4
BATCH_8 = "train.batch_size=8"
BATCH_4 = "train.batch_size=4"  # the recipe's since configs/camvid.yaml took it; pinned so the variants stay comparable
# LR-ASPP's low-level branch: every sweep before s4_batch4_crop360 ran at torchvision's stride 8 (and DDRNet takes no
# such argument), before configs/camvid.yaml took stride 4
STRIDE_8, STRIDE_4 = "model.kwargs={}", "model.kwargs={low_level_stride: 4}"
EMA = ["train.ema=true", "train.ema_decay=0.995"]
VARIANTS: dict[str, tuple[list[str], int]] = {
    "crop288": ([CROP_288, BATCH_8, STRIDE_8], STEPS_288),
    "crop360": ([CROP_360, BATCH_8, STRIDE_8], STEPS_360),
    "ema_crop288": ([CROP_288, BATCH_8, *EMA, STRIDE_8], STEPS_288),
    "ema_crop360": ([CROP_360, BATCH_8, *EMA, STRIDE_8], STEPS_360),
    "ddrnet_crop288": ([CROP_288, BATCH_8, "model.name=ddrnet_23_slim", STRIDE_8], STEPS_288),
    "bright04_crop360": ([CROP_360, BATCH_8, "data.brightness=0.4", STRIDE_8], STEPS_360),
    # camvid.yaml has had data.brightness 0.4 since the sweep above, so crop360 now equals bright04_crop360;
    # this is the other side of that sweep, the brightness before it
    "bright0125_crop360": ([CROP_360, BATCH_8, "data.brightness=0.125", STRIDE_8], STEPS_360),
    # the recipe at batch 8 (data.brightness 0.4) with OHEM, at its equal-time budget
    "ohem_crop360": ([CROP_360, BATCH_8, "train.loss=ohem", STRIDE_8], round(STEPS_360 / 1.08)),
    # the recipe at batch 8 with mmsegmentation's and torchvision references' scale range (the resize is a small
    # part of a step)
    "scale2_crop360": ([CROP_360, BATCH_8, "data.scale_range=[0.5,2.0]", STRIDE_8], STEPS_360),
    # the recipe now (batch 4): twice crop360's optimizer steps over the same images, at the same learning rate
    "batch4_crop360": ([CROP_360, BATCH_4, STRIDE_8], STEPS_360),
    # the recipe at batch 2: twice batch 4's steps again, BatchNorm over 2 crops (what --processes 2 gives batch 4)
    "batch2_crop360": ([CROP_360, "train.batch_size=2", STRIDE_8], STEPS_360),
    # the recipe's learning rate (0.002, set at batch 8 and never swept) halved and doubled at batch 4
    "lr001_batch4_crop360": ([CROP_360, BATCH_4, "train.lr=0.001", STRIDE_8], STEPS_360),
    "lr004_batch4_crop360": ([CROP_360, BATCH_4, "train.lr=0.004", STRIDE_8], STEPS_360),
    # the recipe at batch 4 with label smoothing 0.1 in its cross-entropy
    "ls01_batch4_crop360": ([CROP_360, BATCH_4, "train.loss_kwargs={label_smoothing: 0.1}", STRIDE_8], STEPS_360),
    # the recipe at batch 4 with AdamW's weight decay 0.05 instead of 0.01
    "wd005_batch4_crop360": ([CROP_360, BATCH_4, "train.weight_decay=0.05", STRIDE_8], STEPS_360),
    # the low-level branch at stride 4 (same cost per step on the CPU)
    "s4_batch4_crop360": ([CROP_360, BATCH_4, STRIDE_4], STEPS_360),
    # the recipe now (stride 4) without the photometric distortion's hue shift (+-0.1 of the colour circle)
    "hue0_s4_batch4_crop360": ([CROP_360, BATCH_4, STRIDE_4, "data.hue=0.0"], STEPS_360),
    # the recipe now with deep supervision: an FCN aux head on MobileNetV3's stride-16 stage, weight 0.4
    "aux_s4_batch4_crop360": ([CROP_360, BATCH_4, "model.kwargs={low_level_stride: 4, aux_loss: true}",
                               "train.aux_weight=0.4"], STEPS_360),
    # the recipe now with ClassMix on half the samples (data.class_mix: half the classes of another crop of the
    # batch pasted, image and label; its cost per step: BENCHMARKS.md, "ClassMix between the crops of a batch")
    "classmix05_s4_batch4_crop360": ([CROP_360, BATCH_4, STRIDE_4, "data.class_mix=0.5"], STEPS_360),
}
# training frames of each holdout (train+val less the held-out sequence); batches drop_last
FOLDS = {"0006R0": 367, "0001TP": 406}
BUDGET_BATCH = 8


def batch_size(overrides: list[str]) -> int:
    """The batch size a variant trains with: configs/camvid.yaml with its overrides, read as `semseg train` reads them."""
    return load_config("camvid", overrides).train.batch_size


def epochs_for(steps_of_8: int, frames: int, batch: int) -> int:
    """Epochs that give a run at ``batch`` the images of ``steps_of_8`` steps of 8 images (drop_last batches)."""
    return max(1, round(steps_of_8 * BUDGET_BATCH / (batch * (frames // batch))))


def run_name(variant: str, fold: str, seed: int) -> str:
    return f"{variant}__{fold}__s{seed}"


def command(args: argparse.Namespace, variant: str, fold: str, seed: int) -> list[str]:
    overrides, steps = VARIANTS[variant]
    steps = args.steps or steps
    epochs = epochs_for(steps, FOLDS[fold], batch_size(overrides))
    return [sys.executable, "-m", "semseg", "train", "--config", "camvid", "--run-dir",
            str(args.out / run_name(variant, fold, seed)), f"data.root={args.root}", "data.train_split=train+val",
            f"data.val_split=groups:{fold}", "train.time_limit_minutes=null", f"train.epochs={epochs}",
            f"train.seed={seed}", f"data.workers={args.workers}", "train.val_every=4", "train.reports=false",
            f"train.device={args.device}", "train.precision=fp32", *overrides]


def run(args: argparse.Namespace, job: tuple[str, str, int], deadline: float) -> str:
    name = run_name(*job)
    left = deadline - time.monotonic()
    if left < 30:
        return f"{name}: not started (deadline)"
    with open(args.out / f"{name}.log", "w") as log:
        process = subprocess.Popen(command(args, *job), stdout=log, stderr=subprocess.STDOUT)
        try:
            return f"{name}: exit {process.wait(timeout=left)}"
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return f"{name}: stopped at the deadline"


def summarize(out: Path) -> dict[str, dict]:
    """Per run: the last validation, the mean mIoU over validations in the last 15% of the epochs, and whether it
    finished (a run stopped at the deadline is reported, but is not comparable)."""
    rows = {}
    for log in sorted(out.glob("*.log")):
        metrics = out / log.stem / "metrics.jsonl"
        if not metrics.is_file():
            continue
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        epochs = int(yaml.safe_load((out / log.stem / "config.yaml").read_text())["train"]["epochs"])
        scored = [r for r in records if "miou" in r]
        if not scored:
            continue
        late = [100 * r["miou"] for r in scored if r["epoch"] >= 0.85 * epochs]
        rows[log.stem] = {"epochs": epochs, "finished": scored[-1]["epoch"] == epochs,
                          "last_miou": 100 * scored[-1]["miou"], "late_mean_miou": statistics.mean(late) if late else None,
                          "per_class_iou": scored[-1]["per_class_iou"]}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the CamVid folder (train/, trainannot/, val/, valannot/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--folds", nargs="+", default=list(FOLDS), choices=list(FOLDS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--concurrent", type=int, default=1, help="runs at a time")
    parser.add_argument("--workers", type=int, default=2, help="data.workers of each run")
    parser.add_argument("--steps", type=int, default=None,
                        help="the budget of every run in steps of 8 images (default: each variant's CPU budget above)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--minutes", type=float, default=1e9, help="stop every run after this many minutes")
    parser.add_argument("--summarize", action="store_true", help="only summarize the runs already in --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summarize:
        deadline = time.monotonic() + 60 * args.minutes
        jobs = [(variant, fold, seed) for seed in args.seeds for variant in args.variants for fold in args.folds]
        with ThreadPoolExecutor(args.concurrent) as pool:
            for line in pool.map(lambda job: run(args, job, deadline), jobs):
                print(line, flush=True)
    rows = summarize(args.out)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    print(f"{'run':32s} {'epochs':>6s} {'last':>6s} {'late':>6s}")
    for name, row in rows.items():
        late = f"{row['late_mean_miou']:6.1f}" if row["late_mean_miou"] is not None else "     -"
        print(f"{name:32s} {row['epochs']:6d} {row['last_miou']:6.1f} {late}{'' if row['finished'] else '  (stopped)'}")
    for variant in args.variants:
        done = [row["last_miou"] for name, row in rows.items() if name.startswith(variant + "__") and row["finished"]]
        if done:
            print(f"{variant}: mean of the last epoch over {len(done)} finished runs {statistics.mean(done):.2f}")


if __name__ == "__main__":
    main()
