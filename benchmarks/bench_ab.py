"""Before/after: the same probe run on two source trees of semseg, interleaved, as ratios after/before.

For changes that should not change speed (a restructuring): each round runs one
process per tree (ABBA order, so that both see the same machine load), each
process times its probe through semseg's public API, and each key's ratio is
the median of the per-round ratios. Run it once with the same tree on both
sides to see the noise of the machine (an A/A control).

Probes: ``metrics`` (``ConfusionMatrix.update`` on the label maps of bench_metrics.py,
uint8 and int64), ``predict`` (``semseg.Predictor`` on CamVid-sized frames:
whole mode at the default precision and at fp32, and flip + 3-scale TTA; CPU
time, one thread), ``process`` (``semseg predict`` end to end, torch and ONNX
Runtime, wall time), ``decode`` (``semseg.io.read_image`` of PNG and JPEG frames:
the header checks, EXIF and mode handling every image goes through; CPU time).

    git worktree add --detach /tmp/before <rev>
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ab.py --before /tmp/before --after . --rounds 8 predict
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

METRICS = r"""
import json, statistics, sys, time
import torch
from semseg.metrics import ConfusionMatrix

out = {}
for (batch, h, w, c), (pred, target) in torch.load(f"{sys.argv[1]}/maps.pt"):  # bench_metrics.py's cases
    for kind, (p, t) in (("uint8", (pred, target)), ("int64", (pred.long(), target.long()))):
        cm = ConfusionMatrix(c, 255)
        cm.update(p, t)  # compiles on first use
        start = time.perf_counter(); cm.update(p, t); calls = max(1, round(0.2 / (time.perf_counter() - start)))
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(calls):
                cm.update(p, t)
            samples.append((time.perf_counter() - start) / calls)
        out[f"update {batch}x{h}x{w} C={c} {kind}"] = statistics.median(samples)
print(json.dumps(out))
"""

PREDICT = r"""
import json, statistics, sys, time
import numpy as np, torch
import semseg

torch.manual_seed(0)
model = semseg.create_model("lraspp_mobilenet_v3_large", 11)
rng = np.random.default_rng(0)
frames = [np.repeat(np.repeat(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), 4, 0), 4, 1) for _ in range(8)]
out = {}
for name, kwargs, count in (("whole, default precision", {}, 8), ("whole, fp32", {"precision": "fp32"}, 8),
                            ("TTA 1, 1.25, 1.5 + flip", {"tta": True, "scales": (1, 1.25, 1.5)}, 3)):
    predictor = semseg.Predictor(model, **kwargs)
    predictor(frames[0])
    samples = []
    for _ in range(2):
        for frame in frames[:count]:
            start = time.process_time()
            predictor(frame)
            samples.append(time.process_time() - start)
    out[f"predict 360x480 frame, {name}"] = statistics.median(samples)
print(json.dumps(out))
"""

PROCESS = r"""
import json, shutil, subprocess, sys, tempfile, time
work = sys.argv[1]
out = {}
for name, source in (("semseg predict, torch", ["--model", "lraspp_mobilenet_v3_large", "--weights", f"{work}/w.pth",
                                                 "--num-classes", "11"]),
                     ("semseg predict --onnx", ["--onnx", f"{work}/model.onnx"])):
    target = tempfile.mkdtemp(dir=work)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "semseg", "predict", f"{work}/frames", "--workers", "0", *source,
                    "--out", target], check=True, capture_output=True)
    out[f"{name}, 8 frames, whole process"] = time.perf_counter() - start
    shutil.rmtree(target)
print(json.dumps(out))
"""

PREPARE = r"""
import sys, numpy as np, torch
from pathlib import Path
from PIL import Image
import semseg
from semseg.export import export_checked
work = Path(sys.argv[1])
(work / "frames").mkdir()
rng = np.random.default_rng(0)
for i in range(8):
    Image.fromarray(np.repeat(np.repeat(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), 4, 0), 4, 1)).save(work / "frames" / f"{i}.png")
torch.manual_seed(0)
model = semseg.create_model("lraspp_mobilenet_v3_large", 11)
torch.save(model.state_dict(), work / "w.pth")
export_checked(model, work / "model.onnx", (360, 480), dynamic=True)
print("{}")
"""

DECODE = r"""
import json, statistics, tempfile, time
import numpy as np
from PIL import Image
from semseg.io import read_image

rng = np.random.default_rng(0)
out = {}
with tempfile.TemporaryDirectory() as folder:
    for height, width in ((360, 480), (720, 960)):
        image = np.repeat(np.repeat(rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8), 4, 0), 4, 1)
        for fmt in ("png", "jpg"):
            path = f"{folder}/frame.{fmt}"
            Image.fromarray(image).save(path)
            read_image(path)
            samples = []
            for _ in range(15):
                start = time.process_time()
                read_image(path)
                samples.append(time.process_time() - start)
            out[f"read_image {height}x{width} {fmt.upper()}"] = statistics.median(samples)
print(json.dumps(out))
"""

PROBES = {"metrics": METRICS, "predict": PREDICT, "process": PROCESS, "decode": DECODE}


def run(tree: Path, code: str, *args: str) -> dict[str, float]:
    """The probe's JSON output, in a process that imports semseg from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree}: the probe failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=sorted(PROBES))
    parser.add_argument("--before", type=Path, required=True, help="a source tree of semseg (e.g. a git worktree)")
    parser.add_argument("--after", type=Path, default=Path("."), help="the other tree (default: this one)")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    with tempfile.TemporaryDirectory() as work:
        extra = [work]
        if args.probe == "process":
            run(trees["after"], PREPARE, work)
        if args.probe == "metrics":
            from bench_metrics import CASES, label_maps  # the same label maps as the metrics benchmark

            torch.save([(case, label_maps(*case, seed=case[1] + case[3])) for case in CASES], f"{work}/maps.pt")
        results: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for round_ in range(args.rounds):
            for side in ("before", "after") if round_ % 2 == 0 else ("after", "before"):
                results[side].append(run(trees[side], PROBES[args.probe], *extra))
    print(f"{args.rounds} interleaved rounds, load average {os.getloadavg()[0]:.1f}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; seconds (medians), after/before")
    print(f"{'':<48} {'before':>9} {'after':>9} {'after/before':>13} {'range':>13}")
    for key in results["before"][0]:
        before = [r[key] for r in results["before"]]
        after = [r[key] for r in results["after"]]
        ratios = [a / b for a, b in zip(after, before)]
        print(f"{key:<48} {statistics.median(before):>9.5f} {statistics.median(after):>9.5f} "
              f"{statistics.median(ratios):>13.3f} {min(ratios):>6.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    main()
