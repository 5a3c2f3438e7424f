"""``semseg score``: score a folder of predicted label PNGs against ground truth."""

from __future__ import annotations

import argparse


def add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a folder of predicted label PNGs against ground truth")
    p.add_argument("--pred", required=True, help="folder of predicted label PNGs")
    p.add_argument("--gt", required=True, help="folder of ground-truth label PNGs")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--ignore-index", type=int, default=255)
    p.add_argument("--class-names", default=None, help="comma-separated class names, in class order")
    p.add_argument("--json", default=None, help="write the scores to this JSON file")
    p.add_argument("--allow-missing", action="store_true", help="skip ground truths that have no prediction")
    p.add_argument("--boundary", type=float, nargs="?", const=0.02, default=None, metavar="RATIO",
                   help="also boundary IoU (Cheng et al. 2021): bands of RATIO x the image diagonal (default 0.02)")
    p.set_defaults(handler=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from semseg.metrics import format_report, score

    scores = score(
        pred_dir=args.pred,
        gt_dir=args.gt,
        num_classes=args.num_classes,
        ignore_index=args.ignore_index,
        class_names=args.class_names.split(",") if args.class_names else None,
        json_path=args.json,
        allow_missing=args.allow_missing,
        boundary_ratio=args.boundary,
    )
    print(format_report(scores))
    if args.json is not None:
        print(f"scores written to {args.json}")
    return 0
