"""``semseg train``, ``semseg val`` and ``semseg demo``: the commands of the training engine."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from semseg.cli.args import ERROR_PREFIX, check_outputs, split_overrides
from semseg.errors import SemsegError


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a config (key=value overrides follow)")
    p.add_argument("--config", default=None, help="YAML config file, or a bundled config's name (semseg configs)")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<name>-<time>)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the previous run in --run-dir (its last.pt, best.pt, metrics.jsonl and config.yaml are deleted)")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="train as N processes on this machine (DDP, as torchrun --nproc-per-node N), each with an equal "
                        "share of the CPU threads; on a CPU, one process per core trains faster than one process using "
                        "every core (docs/training.md). train.batch_size stays the global batch")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from semseg.engine.distributed import launch_rank, launched
    from semseg.engine.loop import TrainingInterrupted, train

    if args.resume and (args.run_dir or args.overwrite):
        raise SemsegError("--resume DIR continues the run in DIR: leave out --run-dir and --overwrite")
    if args.processes != 1:
        return _train_in_processes(args)
    try:
        run_dir = train(config_path=args.config, overrides=split_overrides(args.extra), run_dir=args.run_dir,
                        resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as stop:
        if stop.resumable:
            again = f" --processes {os.environ['WORLD_SIZE']}" if launched() else ""
            print(f"semseg: interrupted; continue this run with: semseg train --resume {shlex.quote(str(stop.run_dir))}"
                  f"{again}", file=sys.stderr)
        else:
            print(f"semseg: interrupted before the first epoch ended: {stop.run_dir} holds nothing to resume",
                  file=sys.stderr)
        return 130
    if launch_rank() == 0:  # under DDP the other ranks would repeat it
        print(f"run folder: {run_dir.resolve()} (report.html, best.pt, last.pt, results.csv, metrics.jsonl, config.yaml)")
    return 0


def _train_in_processes(args: argparse.Namespace) -> int:
    """``--processes N``: the same command line without the option, as N DDP processes; one message if one fails."""
    from semseg.config import load_config
    from semseg.engine.distributed import launch_local, launched
    from semseg.runtime.onnx import cpu_threads

    processes = args.processes
    if processes < 1:
        raise SemsegError(f"--processes must be 1 or more, not {processes}")
    if launched():
        raise SemsegError("--processes starts its own group of processes: under torchrun leave it out")
    if not args.resume:
        load_config(args.config, split_overrides(args.extra))  # a bad config key: one message, before any process starts
    threads = cpu_threads()
    if processes > threads:
        raise SemsegError(f"--processes {processes} is more than the {threads} CPU thread(s) this command may use "
                          "($OMP_NUM_THREADS or the CPUs it may run on): at most one process per thread")
    command = [sys.executable, "-m", "semseg", *_without_option(args.argv, "--processes")]
    try:
        exits = launch_local(command, processes, threads // processes)
    except KeyboardInterrupt as stop:
        if type(stop) is not KeyboardInterrupt:
            raise  # SIGTERM: the command's own message
        return 130  # Ctrl-C: rank 0 said how to resume
    failed = [end for end in exits if end.returncode != 0]
    rank_zero = next(end for end in exits if end.rank == 0)
    if not failed:
        return 0
    if rank_zero.returncode != 0 and not rank_zero.stopped:
        return rank_zero.returncode  # its message is on the console already
    first = next((end for end in failed if not end.stopped), failed[0])  # the process whose failure stopped the rest
    lines = first.output.strip().splitlines()
    if lines and lines[-1].startswith(ERROR_PREFIX):  # a message of its own: that line alone
        print(f"{ERROR_PREFIX}process {first.rank} of {processes}: {lines[-1][len(ERROR_PREFIX):]}", file=sys.stderr)
    else:  # a crash: the end of what it wrote
        tail = "\n".join(lines[-20:])
        print(f"semseg: process {first.rank} of {processes} failed (exit status {first.returncode}); its last lines:\n"
              f"{tail}", file=sys.stderr)
    return first.returncode


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    kept: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            kept.append(item)
    return kept


def add_val(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("val", help="evaluate a checkpoint (config overrides follow, e.g. data.root=DIR)")
    p.add_argument("--checkpoint", default=None, help="checkpoint to evaluate (default: the embedded default model)")
    p.add_argument("--json", default=None, help="write the scores to this JSON file")
    p.add_argument("--save-examples", type=int, default=0, metavar="N",
                   help="save image|truth|prediction|error panels of N frames spread over the split and of the N worst")
    p.add_argument("--out", default=None, help="folder for the example panels (default: beside the checkpoint)")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write the report folder (report.html, confusion matrices, per-class charts, gallery) into DIR")
    p.set_defaults(handler=_run_val)


def _run_val(args: argparse.Namespace) -> int:
    from semseg.engine.evaluate import evaluate_checkpoint
    from semseg.metrics import format_report

    check_outputs(files=[args.json], folders=[args.out, args.report])
    scores, examples = evaluate_checkpoint(
        checkpoint=args.checkpoint,
        overrides=split_overrides(args.extra),
        json_path=args.json,
        save_examples=args.save_examples,
        out_dir=args.out,
        report_dir=args.report,
    )
    print(format_report(scores))
    if examples is not None:
        print(f"example panels: {examples}")
    return 0


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, evaluate and predict on the embedded street-scene sample")
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--minutes", type=float, default=2.0, help="training time budget")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from semseg.engine.demo import run_demo

    return run_demo(run_dir=args.run_dir, minutes=args.minutes)
