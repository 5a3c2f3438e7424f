"""Whole-process prediction speed: ``semseg predict`` beside the plain PyTorch recipe, and ONNX Runtime.

Each variant runs as its own process over one folder of CamVid frames, writing
label PNGs, and is timed from start to exit (imports, model building, decoding,
prediction, writing):

- ``plain``: the recipe of the torchvision docs, image by image: PIL, ToTensor,
  Normalize, model, argmax, save;
- ``semseg``: ``semseg predict`` with its defaults (``--backend auto``: ONNX
  Runtime where its labels equal PyTorch fp32's and it was faster);
- ``semseg-streams1``: the same, one image at a time (``--streams 1``; the default
  predicts one image per CPU thread at once where an exported graph runs whole images);
- ``semseg-torch``: ``semseg predict --backend torch`` (PyTorch, channels_last);
- ``semseg-onnxruntime``: ``semseg predict --backend onnxruntime`` (where ``auto`` picks another);
- ``semseg-fp32``: ``semseg predict --precision fp32`` (bit-identical to plain);
- ``onnxruntime``: ``semseg predict --onnx`` on the model exported by ``semseg export``.

``semseg predict`` converts given weights once and caches the result (keyed by
the weights' hash, here in a fresh cache folder under the work dir); that first
run is timed on its own ("first run, converting"), and the timed rounds are
the later runs a user makes.

Repeats are interleaved (the CPU is shared and noisy) and the median is
reported, with the speed-up over ``plain`` and the share of pixels whose label
agrees with ``plain``. With ``--checkpoint`` (a trained model) and ``--gt`` (its
ground-truth label folder) it also reports each variant's mIoU.

    .venv/bin/python benchmarks/bench_predict.py --repeats 3
    .venv/bin/python benchmarks/bench_predict.py --checkpoint runs/camvid/best.pt --gt /work/shared/camvid/valannot --count 101
    .venv/bin/python benchmarks/bench_predict.py --models lraspp_mobilenet_v3_large --weights lraspp_camvid.pth \
        --gt /work/shared/camvid/valannot --count 101
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PLAIN_RECIPE = r"""
import sys
from pathlib import Path
import torch
from PIL import Image
from torchvision import transforms
from semseg.models import create_model, load_model, load_weights

frames, out, source, name, num_classes = sys.argv[1:6]
if name == "-":
    model = load_model(source)
else:
    model = create_model(name, int(num_classes))
    load_weights(model, source)
model.eval()
cfg = model.pretrained_cfg
to_input = transforms.Compose([transforms.ToTensor(), transforms.Normalize(cfg.mean, cfg.std)])
Path(out).mkdir(parents=True, exist_ok=True)
for path in sorted(Path(frames).iterdir()):
    image = Image.open(path).convert("RGB")
    with torch.no_grad():
        labels = model(to_input(image)[None]).argmax(1)[0]
    Image.fromarray(labels.byte().numpy()).save(Path(out) / f"{path.stem}.png")
"""


def model_args(weights: Path | None, checkpoint: str | None, name: str, num_classes: int) -> list[str]:
    if checkpoint:
        return ["--checkpoint", checkpoint]
    return ["--model", name, "--weights", str(weights), "--num-classes", str(num_classes)]


def variants(work: Path, frames: Path, name: str, weights: Path | None, checkpoint: str | None, num_classes: int) -> dict[str, list[str]]:
    """Command line of each variant; each writes label PNGs into work/<name>/<variant>."""
    predict = [sys.executable, "-m", "semseg", "predict", str(frames), "--workers", "1"]
    source = model_args(weights, checkpoint, name, num_classes)
    out = work / name
    return {
        "plain": [sys.executable, "-c", PLAIN_RECIPE, str(frames), str(out / "plain"),
                  checkpoint or str(weights), "-" if checkpoint else name, str(num_classes)],
        "semseg": predict + source + ["--out", str(out / "semseg")],
        "semseg-streams1": predict + source + ["--streams", "1", "--out", str(out / "semseg-streams1")],
        "semseg-torch": predict + source + ["--backend", "torch", "--out", str(out / "semseg-torch")],
        "semseg-onnxruntime": predict + source + ["--backend", "onnxruntime", "--out", str(out / "semseg-onnxruntime")],
        "semseg-fp32": predict + source + ["--precision", "fp32", "--out", str(out / "semseg-fp32")],
        "onnxruntime": predict + ["--onnx", str(out / "model.onnx"), "--out", str(out / "onnxruntime")],
    }


def labels_of(folder: Path) -> dict[str, np.ndarray]:
    """The label maps a variant wrote: the plain recipe into ``folder``, semseg predict into ``folder/labels``."""
    from semseg.io import read_label_map

    if (folder / "labels").is_dir():
        folder = folder / "labels"
    return {p.stem: read_label_map(p) for p in sorted(folder.glob("*.png"))}


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    same = sum(int((a[k] == b[k]).sum()) for k in b)
    return same / sum(v.size for v in b.values())


def miou(pred: dict[str, np.ndarray], gt_dir: Path, num_classes: int, ignore_index: int) -> float:
    from semseg.io import read_label_map
    from semseg.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(num_classes, ignore_index)
    for stem, labels in pred.items():
        matrix.update(labels, read_label_map(gt_dir / f"{stem}.png"))
    return float(matrix.compute()["miou"])


def prepare(work: Path, frames: Path, name: str, checkpoint: str | None, num_classes: int,
            trained: str | None = None) -> Path | None:
    """Weights as a raw state dict (``trained``, else random-init; none with a checkpoint) and the ONNX export."""
    import torch

    from semseg.models import create_model

    (work / name).mkdir(parents=True, exist_ok=True)
    weights = Path(trained) if trained else None
    if not checkpoint and not trained:
        torch.manual_seed(0)
        weights = work / name / "weights.pth"
        torch.save(create_model(name, num_classes).state_dict(), weights)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "semseg", "export", *model_args(weights, checkpoint, name, num_classes),
                    "--size", "360", "480", "--out", str(work / name / "model.onnx")], check=True)
    print(f"  {name}: ONNX export + parity check {time.perf_counter() - start:.0f} s", flush=True)
    one = work / name / "one-frame"
    one.mkdir()
    shutil.copy(sorted(frames.iterdir())[0], one)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "semseg", "predict", str(one), *model_args(weights, checkpoint, name, num_classes),
                    "--out", str(work / name / "first-run")], check=True)
    print(f"  {name}: first semseg predict run, converting for --backend auto (one frame) "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="/work/shared/camvid/val")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--models", nargs="+", default=["deeplabv3_resnet50", "lraspp_mobilenet_v3_large"])
    parser.add_argument("--num-classes", type=int, default=11)
    parser.add_argument("--checkpoint", default=None, help="a trained semseg checkpoint (replaces --models)")
    parser.add_argument("--weights", default=None,
                        help="trained raw weights (a state dict) for the one model of --models, used as --model --weights")
    parser.add_argument("--gt", default=None, help="ground-truth label folder: report mIoU per variant")
    parser.add_argument("--ignore-index", type=int, default=11, help="CamVid's void")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], help="variants to leave out")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    os.environ["SEMSEG_CACHE_DIR"] = str(work / "cache")  # a fresh conversion cache, inherited by every run
    frames = work / "frames"
    frames.mkdir()
    for path in sorted(Path(args.frames).glob("*.png"))[: args.count]:
        shutil.copy(path, frames / path.name)
    names = ["checkpoint"] if args.checkpoint else args.models
    import torch
    from bench_int8 import cpu_flags

    print(f"{len(list(frames.iterdir()))} frames from {args.frames}; {os.cpu_count()} CPUs "
          f"({torch.backends.cpu.get_cpu_capability()}; {cpu_flags()}); OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"work dir {work}")

    commands = {}
    for name in names:
        weights = prepare(work, frames, name, args.checkpoint, args.num_classes, args.weights)
        for variant, command in variants(work, frames, name, weights, args.checkpoint, args.num_classes).items():
            if variant not in args.skip:
                commands[(name, variant)] = command

    times: dict[tuple[str, str], list[float]] = {key: [] for key in commands}
    for repeat in range(args.repeats):
        for key, command in commands.items():  # interleaved: every variant once per round
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            times[key].append(time.perf_counter() - start)
            print(f"  round {repeat + 1}: {key[0]} {key[1]} {times[key][-1]:.1f} s", flush=True)

    print("\n| model | variant | median s (process) | s/frame | speed-up vs plain | pixels = plain |" + (" mIoU |" if args.gt else ""))
    print("|---|---|---:|---:|---:|---:|" + ("---:|" if args.gt else ""))
    count = len(list(frames.iterdir()))
    for name in names:
        plain = labels_of(work / name / "plain") if (name, "plain") in times else None
        base = statistics.median(times[(name, "plain")]) if plain is not None else None
        for (model, variant), runs in times.items():
            if model != name:
                continue
            median = statistics.median(runs)
            labels = labels_of(work / name / variant)
            speed = f"{base / median:.2f}x" if base else "-"
            agree = f"{100 * agreement(labels, plain):.3f}%" if plain is not None else "-"
            row = f"| {name} | {variant} | {median:.1f} | {median / count:.2f} | {speed} | {agree} |"
            if args.gt:
                row += f" {100 * miou(labels, Path(args.gt), args.num_classes, args.ignore_index):.2f} |"
            print(row)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
