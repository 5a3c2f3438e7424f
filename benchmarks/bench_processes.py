"""Training on a CPU: one process using every thread against one process per thread (``semseg train --processes``).

Runs the same ``semseg train`` command line both ways, in turns (``--rounds``), for
``train.epochs`` epochs each with no time budget, and reads the training images/s each
epoch logged to ``metrics.jsonl`` (startup, class statistics and validation are outside
that figure). The threads are this process's (``$OMP_NUM_THREADS``, else its CPUs).

    OMP_NUM_THREADS=2 python benchmarks/bench_processes.py --root ../shared/camvid --config camvid --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from semseg.runtime.onnx import cpu_threads
from semseg.runtime.precision import cpu_has_bf16


def train_images_per_s(command: list[str], env: dict[str, str], run_dir: Path) -> float:
    done = subprocess.run([*command, "--run-dir", str(run_dir)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seen = sum(e["images_per_s"] * e["train_time_s"] for e in epochs)
    return seen / sum(e["train_time_s"] for e in epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="data.root of the config")
    parser.add_argument("--config", default="camvid")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="further key=value overrides for both runs")
    args = parser.parse_args()

    threads = cpu_threads()
    print(f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_bf16()}, threads: {threads}")
    base = [sys.executable, "-m", "semseg", "-q", "train", "--config", args.config, f"data.root={args.root}",
            "data.val_split=", f"train.epochs={args.epochs}", "train.time_limit_minutes=null", "train.reports=false",
            *args.overrides]
    variants = {
        f"1 process x {threads} threads": base,
        f"{threads} processes x 1 thread": [*base, "--processes", str(threads)],
    }
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    rates: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for name, command in variants.items():
                rate = train_images_per_s(command, env, Path(scratch) / f"{round_index}-{len(rates[name])}-{name[0]}")
                rates[name].append(rate)
                print(f"round {round_index + 1}: {name}: {rate:.2f} images/s", flush=True)
    one, many = (sum(values) / len(values) for values in rates.values())
    print(f"| variant | training images/s |\n|---|---:|\n| {list(rates)[0]} | {one:.2f} |\n"
          f"| {list(rates)[1]} | {many:.2f} ({many / one:.2f}x) |")


if __name__ == "__main__":
    main()
