"""BatchNorm synchronized over CPU processes (``model.norm=syncbn`` under ``--processes``): what it costs.

A training step (forward, cross-entropy, backward, AdamW) of one model on random data, timed
four ways in one run: one process with PyTorch's BatchNorm and with semseg's cross-process
BatchNorm made to run its synchronized path alone (the arithmetic's cost, no other process to
wait for), then two gloo DDP processes of one thread each with their own BatchNorm (each
normalizes over its share of the batch) and with the cross-process BatchNorm (statistics over
both shares, as one process over the whole batch). Median step time after one warm-up step.

    python benchmarks/bench_sync_bn.py --batch 2 --crop 360 480 --steps 6
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from semseg.models import convert_norm, create_model
from semseg.models import norms
from semseg.runtime.precision import cpu_has_bf16


def median_step_s(model: torch.nn.Module, args: argparse.Namespace) -> float:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, *args.crop, generator=generator).contiguous(memory_format=torch.channels_last)
    masks = torch.randint(0, args.classes, (args.batch, *args.crop), generator=generator)
    model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        out = model(images)
        loss = torch.nn.functional.cross_entropy(out["out"] if isinstance(out, dict) else out, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    timed = sorted(times[1:])
    return timed[len(timed) // 2]


def build(args: argparse.Namespace, norm: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(args.model, args.classes)
    return convert_norm(model, "syncbn", "cpu") if norm == "syncbn" else model


def ddp_worker(rank: int, store: str, norm: str, args: argparse.Namespace, results: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        seconds = median_step_s(DistributedDataParallel(build(args, norm)), args)
        if rank == 0:
            results[norm] = seconds
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="lraspp_mobilenet_v3_large")
    parser.add_argument("--classes", type=int, default=11)
    parser.add_argument("--batch", type=int, default=2, help="images per process")
    parser.add_argument("--crop", type=int, nargs=2, default=[360, 480])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    print(f"model {args.model}, {args.batch} images of {args.crop[0]}x{args.crop[1]} per process, "
          f"capability {torch.backends.cpu.get_cpu_capability()}, CPU bf16: {cpu_has_bf16()}, torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as scratch:
        # one process, one thread: the cross-process path runs in a group of one, forced on
        torch.set_num_threads(1)
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        dist.init_process_group("gloo", init_method=f"file://{scratch}/single", rank=0, world_size=1)
        single = {"bn": median_step_s(build(args, "bn"), args)}
        synchronized = norms._synchronized
        norms._synchronized = lambda bn: bn.training
        try:
            single["syncbn"] = median_step_s(build(args, "syncbn"), args)
        finally:
            norms._synchronized = synchronized
            dist.destroy_process_group()

        two: dict = mp.Manager().dict()
        for norm in ("bn", "syncbn"):
            mp.spawn(ddp_worker, args=(f"{scratch}/{norm}", norm, args, two), nprocs=2, join=True)

    rows = [
        ("1 process, PyTorch's BatchNorm", single["bn"]),
        ("1 process, cross-process BatchNorm's arithmetic", single["syncbn"]),
        ("2 processes, each its own BatchNorm", two["bn"]),
        ("2 processes, cross-process BatchNorm", two["syncbn"]),
    ]
    print("| step | ms/step | x the first |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1000:.0f} | {seconds / single['bn']:.2f} |")


if __name__ == "__main__":
    main()
