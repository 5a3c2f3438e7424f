"""``semseg data check``: audit a dataset before training on it; ``semseg data convert``: polygon labels to masks."""

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

    v = data_sub.add_parser(
        "convert",
        help="COCO polygon/RLE JSON or YOLO segmentation txt labels to index masks",
        description="Rasterize shape labels into index masks: OUT/masks/<image stem>.png, the list file "
        "OUT/<split>.txt and OUT/data.yaml (a data section that data check and train read with --config). "
        "Without --class-map, background is class 0 and the source classes follow (COCO categories by id, "
        "YOLO class k as k+1); COCO crowd regions become the ignore index.",
    )
    v.add_argument("source_format", choices=["coco", "yolo"], metavar="{coco,yolo}", help="the labels' format")
    v.add_argument("labels", help="coco: the annotation JSON; yolo: the folder of <image stem>.txt label files")
    v.add_argument("--images", required=True, help="the images folder (coco: what images[].file_name is relative to)")
    v.add_argument("--out", required=True, help="output folder")
    v.add_argument("--split", default="train", help="split name of the list file OUT/<split>.txt (default: train)")
    v.add_argument("--names", default=None, help="yolo: the dataset YAML whose 'names' are the class names")
    v.add_argument("--class-map", default=None,
                   help='JSON or YAML {source class name or id: class id or "ignore"} (default: background 0, then the source order)')
    v.add_argument("--background", choices=["class", "ignore"], default="class",
                   help="what unlabelled pixels become: class 0 'background' (default) or the ignore index")
    v.add_argument("--ignore-index", type=int, default=255, help="the label of ignored pixels (default: 255)")
    v.set_defaults(handler=_run_data_convert)


def _run_data_check(args: argparse.Namespace) -> int:
    from semseg.cli.args import check_outputs
    from semseg.data.audit import audit, format_report

    check_outputs(files=[args.json])
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


def _run_data_convert(args: argparse.Namespace) -> int:
    from semseg.data.convert import coco_to_masks, load_class_map, load_yolo_names, yolo_to_masks
    from semseg.errors import SemsegError

    class_map = load_class_map(args.class_map) if args.class_map else None
    options = {"split": args.split, "class_map": class_map, "background": args.background,
               "ignore_index": args.ignore_index}
    if args.source_format == "coco":
        if args.names:
            raise SemsegError("--names is for yolo labels; COCO JSON names its categories itself")
        report = coco_to_masks(args.labels, args.images, args.out, **options)
    else:
        names = load_yolo_names(args.names) if args.names else None
        report = yolo_to_masks(args.labels, args.images, args.out, names=names, **options)
    for where, problem in report.problems[:20]:
        print(f"{where}: {problem}")
    if len(report.problems) > 20:
        print(f"... and {len(report.problems) - 20} more problems")
    print(f"converted {report.shapes} shapes of {report.images} images into {report.out_dir / 'masks'} "
          f"({len(report.class_names)} classes: {', '.join(report.class_names[:8])}"
          f"{', ...' if len(report.class_names) > 8 else ''}); "
          f"check it with: semseg data check --config {report.config_path} --split {report.split}")
    return 1 if report.problems else 0
