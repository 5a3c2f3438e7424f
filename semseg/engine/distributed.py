"""DDP helpers: start a group of processes on this machine, set up from torchrun's environment, reduce values.

``torchrun --nproc-per-node N -m semseg train ...`` (or ``semseg train --processes N``,
which starts the processes itself: :func:`launch_local`) sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything runs as a single process (rank 0 of 1).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from semseg.errors import SemsegError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launch_rank() -> int:
    """This process's rank in a launched group (0 without one), known before the process group starts."""
    return int(os.environ.get("RANK", "0"))


def launched() -> bool:
    """Whether this process is one of a group that torchrun or :func:`launch_local` started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); no-op without torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            if info.local_rank >= torch.cuda.device_count():
                raise SemsegError(f"{world_size} processes on this machine, {torch.cuda.device_count()} CUDA device(s) "
                                  "visible: start at most one process per GPU")
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def mean_across_ranks(value: float, device: torch.device) -> float:
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision (e.g. stop early) for every rank."""
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def broadcast_value(value: float, device: torch.device) -> float:
    """Rank 0's ``value`` (e.g. the spent share of the time budget) for every rank, so all ranks decide alike."""
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def gather_objects(value: object) -> list[object]:
    """Every rank's ``value`` (picklable), in rank order, on every rank; ``[value]`` without DDP."""
    if not dist.is_initialized():
        return [value]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


@dataclass(frozen=True)
class RankExit:
    """How one process of a :func:`launch_local` group ended: its exit status, whether it was stopped because
    another process failed first, and what it wrote (rank 0's is not kept: it went to the console as it ran)."""

    rank: int
    returncode: int
    stopped: bool
    output: str


# after one process fails, how long the others get to end on their own (they usually hit the same error), and then
# how long after SIGTERM, before they are killed
_SETTLE_S = 5.0
_GRACE_S = 30.0


def launch_local(command: Sequence[str], processes: int, threads_per_process: int) -> list[RankExit]:
    """Run ``command`` as ``processes`` DDP ranks on this machine, the way ``torchrun --standalone`` does.

    Each process gets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT (a free local port)
    and ``OMP_NUM_THREADS=threads_per_process``. Rank 0 writes to this process's console;
    the others' output is kept (it would repeat rank 0's lines) and returned. When one
    process fails, the others get a few seconds to end, then SIGTERM (a rank blocked in a
    collective would otherwise wait for its peer until gloo's 30-minute timeout). Returns
    one :class:`RankExit` per rank, in the order the processes ended. Ctrl-C reaches the
    processes by themselves (one process group); an interrupt of another kind (the CLI
    raises SIGTERM as a ``KeyboardInterrupt`` subclass) is passed on as SIGTERM; both wait
    for the processes to end, then re-raise.

    Written here rather than calling ``torch.distributed.run``: its agent reports a failed
    worker with a traceback and an error summary of its own, where a semseg command prints
    one message.
    """
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(processes),
               LOCAL_WORLD_SIZE=str(processes), OMP_NUM_THREADS=str(threads_per_process))
    running: dict[int, tuple[subprocess.Popen, object]] = {}
    stopped: set[int] = set()
    ended: list[RankExit] = []
    try:
        for rank in range(processes):
            log = None if rank == 0 else tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
            process = subprocess.Popen(list(command), env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
                                       stdout=log, stderr=log)
            running[rank] = (process, log)
        while running:
            for rank, (process, log) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[rank]
                ended.append(RankExit(rank, process.returncode, rank in stopped, _read_back(log)))
                if process.returncode != 0 and not stopped:
                    stopped.update(_stop(running, signal.SIGTERM, settle_s=_SETTLE_S))
            time.sleep(0.1)
        return ended
    except KeyboardInterrupt as stop:
        _stop(running, None if type(stop) is KeyboardInterrupt else signal.SIGTERM)
        raise
    finally:
        _stop(running, signal.SIGKILL)  # empty unless starting a process failed part-way or an interrupt came


def _stop(running: dict[int, tuple[subprocess.Popen, object]], sig: int | None, settle_s: float = 0.0) -> set[int]:
    """Wait ``settle_s`` for the processes still running to end, send ``sig`` (None: none) to the rest, wait up to
    the grace period, then kill what is left. Returns the ranks that were signalled."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline and any(process.poll() is None for process, _ in running.values()):
        time.sleep(0.1)
    signalled = set()
    for rank, (process, _) in running.items():
        if sig is not None and process.poll() is None:
            process.send_signal(sig)
            signalled.add(rank)
    deadline = time.monotonic() + _GRACE_S
    for process, _ in running.values():
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return signalled


def _read_back(log: object) -> str:
    if log is None:
        return ""
    log.seek(0)
    text = log.read()
    log.close()
    return text


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
