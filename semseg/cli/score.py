"""``semseg score``: score a folder of predicted label PNGs against ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from semseg.cli.args import check_outputs
from semseg.errors import SemsegError

FORMAT_NAMES = ("ade20k", "camvid", "cityscapes", "voc")  # semseg.data.formats.FORMATS (imported when used: it loads torch)


def add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a folder of predicted label PNGs against ground truth")
    p.add_argument("--pred", required=True, help="folder of predicted label PNGs")
    p.add_argument("--gt", required=True, help="folder of ground-truth label PNGs")
    p.add_argument("--format", default=None, choices=FORMAT_NAMES,
                   help="a dataset format: its class names, palette and class count (ground truth as class ids)")
    p.add_argument("--num-classes", type=int, default=None, help="the class count (required without --format)")
    p.add_argument("--ignore-index", type=int, default=None,
                   help="label value left out of the scores (default: the format's void value where its masks hold "
                        "class ids, as CamVid's 11; else 255)")
    p.add_argument("--class-names", default=None, help="comma-separated class names, in class order")
    p.add_argument("--json", default=None, help="write the scores to this JSON file")
    p.add_argument("--allow-missing", action="store_true", help="skip ground truths that have no prediction")
    p.add_argument("--boundary", type=float, nargs="?", const=0.02, default=None, metavar="RATIO",
                   help="also boundary IoU (Cheng et al. 2021): bands of RATIO x the image diagonal (default 0.02)")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write the report folder (report.html, confusion matrices, per-class charts, summary.json) into DIR")
    p.set_defaults(handler=_run_score)


def _classes(args: argparse.Namespace) -> tuple[int, int, list[str] | None, list[list[int]] | None]:
    """Class count, ignore index, names and palette: from the flags, the format filling in what they leave out."""
    names = args.class_names.split(",") if args.class_names else None
    if args.format is None:
        if args.num_classes is None:
            raise SemsegError("semseg score needs --num-classes N, or --format NAME (e.g. --format camvid)")
        return args.num_classes, 255 if args.ignore_index is None else args.ignore_index, names, None
    from semseg.data.formats import FORMATS

    fmt = FORMATS[args.format]
    if args.num_classes is not None and args.num_classes != fmt.num_classes:
        raise SemsegError(f"--num-classes {args.num_classes} disagrees with --format {fmt.name} ({fmt.num_classes} classes)")
    # masks whose raw values are the class ids (CamVid, VOC) keep their void value; others are scored as class ids
    identity = all(raw == c for raw, c in fmt.classes.items()) and len(fmt.void) == 1
    ignore = args.ignore_index if args.ignore_index is not None else fmt.void[0] if identity else 255
    return fmt.num_classes, ignore, names or list(fmt.class_names), [list(c) for c in fmt.palette]


def _run_score(args: argparse.Namespace) -> int:
    from semseg.metrics import format_report, score

    num_classes, ignore_index, names, palette = _classes(args)
    check_outputs(files=[args.json], folders=[args.report])
    scores = score(
        pred_dir=args.pred,
        gt_dir=args.gt,
        num_classes=num_classes,
        ignore_index=ignore_index,
        class_names=names,
        json_path=args.json,
        allow_missing=args.allow_missing,
        boundary_ratio=args.boundary,
    )
    print(format_report(scores))
    if args.json is not None:
        print(f"scores written to {args.json}")
    if args.report is not None:
        from semseg.reports.report import ReportInputs, write_report
        from semseg.reports.viz import generate_palette

        facts = {"command": "semseg score", "predictions": str(Path(args.pred).resolve()),
                 "ground_truth": str(Path(args.gt).resolve()), "format": args.format, "ignore_index": ignore_index}
        inputs = ReportInputs(f"semseg score: {Path(args.pred).name} against {Path(args.gt).name}", list(scores["per_class"]),
                              palette or generate_palette(num_classes), scores, facts=facts)
        print(f"report: {write_report(args.report, inputs).resolve()}")
    return 0
