"""``semseg benchmark``: every backend this machine has, side by side on a folder: size, speed, agreement, mIoU."""

from __future__ import annotations

import argparse

from semseg.cli.args import add_model_source


def add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="compare the backends this machine can run a model with, on a folder of images")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders and glob patterns")
    add_model_source(p)
    p.add_argument("--labels", default=None, metavar="DIR",
                   help="ground-truth label maps named like the images: adds each backend's mIoU")
    p.add_argument("--ignore-index", type=int, default=None,
                   help="the label value left out of the mIoU (default: the model's; CamVid's void is 11)")
    p.add_argument("--out", default="benchmark", metavar="DIR",
                   help="writes DIR/benchmark.csv and DIR/benchmark.json (default: ./benchmark)")
    p.set_defaults(handler=_run_benchmark)


def _run_benchmark(args: argparse.Namespace) -> int:
    from semseg.predict.benchmark import benchmark, format_benchmark, write_benchmark

    rows = benchmark(args.sources, args.labels, args.checkpoint, args.model, args.weights, args.num_classes,
                     args.ignore_index)
    print(format_benchmark(rows))
    csv_path, json_path = write_benchmark(rows, args.out)
    print(f"written to {csv_path} and {json_path}")
    return 0
