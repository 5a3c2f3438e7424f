"""``semseg data check``: audit a dataset before training on it."""

from __future__ import annotations

import argparse


def add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    c = data_sub.add_parser(
        "check",
        help="audit a dataset before training on it",
        description="Decode every image and mask of a split, report bad files, class frequencies and "
        "suggested class weights. Settings: defaults, then --config, then KEY=VALUE, then --format/--root/--split.",
    )
    c.add_argument("--format", default=None, help="camvid, voc, cityscapes, ade20k or folder (default: folder)")
    c.add_argument("--root", default=None, help="dataset folder (default: data.root of --config)")
    c.add_argument("--split", default=None, help="split name (default: data.train_split, i.e. train)")
    c.add_argument("--config", default=None, help="a run config whose data section describes the dataset")
    c.add_argument("--json", default=None, help="write the report to this JSON file")
    c.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="data settings, e.g. num_classes=5 mask_mode=color")
    c.set_defaults(handler=_run_data_check)


def _run_data_check(args: argparse.Namespace) -> int:
    from semseg.data.audit import audit, format_report

    report = audit(
        fmt=args.format,
        root=args.root,
        split=args.split,
        config_path=args.config,
        json_path=args.json,
        overrides=args.overrides,
    )
    print(format_report(report))
    return 1 if report["errors"] else 0
