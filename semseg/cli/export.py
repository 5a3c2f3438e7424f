"""``semseg export``: an ONNX graph, an OpenVINO IR (float32 or int8) or an inference checkpoint, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from semseg.cli.args import add_model_source
from semseg.errors import SemsegError


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX or OpenVINO and check its outputs against PyTorch")
    add_model_source(p)
    p.add_argument("--format", default="onnx",
                   help="onnx: an ONNX graph; openvino: an OpenVINO IR (--out NAME.xml, weights in NAME.bin); "
                   "semseg: an inference checkpoint (weights and metadata; no training state, no training-only heads)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--int8", action="store_true",
                   help="onnx, openvino: quantize to int8 (NNCF), calibrated on --calib and refused when its mIoU on "
                   "--labels is more than --max-drop points below float32's; semseg: store the large convolution "
                   "weights in int8 (one scale per output channel) and the rest in float16, run in float32 after "
                   "loading, refused below the parity check's argmax agreement")
    p.add_argument("--calib", nargs="+", default=None, metavar="SOURCE",
                   help="--int8: calibration images (files, folders, globs), also scored against --labels")
    p.add_argument("--labels", default=None, metavar="DIR", help="--int8: label maps named like the --calib images")
    p.add_argument("--ignore-index", type=int, default=None,
                   help="--int8: the label value left out of the mIoU (default: the model's; CamVid's void is 11)")
    p.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                   help="--int8: the most mIoU points the int8 model may lose (default 1)")
    p.add_argument("--no-gate", action="store_true",
                   help="--int8: write the int8 model whatever it loses (the drop is still measured and printed)")
    p.add_argument("--half", action="store_true", help="semseg format: store the weights in float16 (half the size)")
    p.add_argument("--tta-scales", type=float, nargs="+", default=None, metavar="S",
                   help="record in the model's metadata that it is best predicted with multi-scale + flip TTA at these "
                   "scales (semseg predict and Predictor then use them unless told otherwise)")
    p.add_argument("--logit-adjust", type=float, default=None, metavar="ALPHA",
                   help="--checkpoint trained with class weights: add -ALPHA * log(weight) to each class's logits "
                   "(0..1: the share of the weights' pull toward rare classes taken back; recorded in the metadata)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--dynamic", action="store_true", default=None,
                       help="accept any height and width (the default, where the model allows it)")
    shape.add_argument("--fixed", dest="dynamic", action="store_false",
                       help="accept --size only (prediction then tiles images at native resolution, padding small ones)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="export (and check) size")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from semseg.checkpoint import default_model_path, load_checkpoint
    from semseg.export import DEFAULT_MAX_DROP, check_export_options, export_model
    from semseg.io import check_not_an_input, check_writable_file
    from semseg.models import load_torch_model

    if not args.int8 and (args.max_drop is not None or args.no_gate or args.ignore_index is not None):
        raise SemsegError("--max-drop, --no-gate and --ignore-index gate an int8 export: add --int8")
    if args.format == "semseg" and (args.max_drop is not None or args.no_gate or args.ignore_index is not None):
        raise SemsegError("--max-drop, --no-gate and --ignore-index gate an onnx or openvino int8 graph on labelled "
                          "images; --format semseg --int8 is gated by the parity check alone")
    check_export_options(args.format, args.half, args.dynamic, args.int8, args.calib, args.labels, args.out)  # before the model loads
    if args.checkpoint is None and args.model is None and args.weights is None and args.num_classes is None:
        print(f"exporting the embedded default model ({default_model_path()}); --checkpoint or --model names another")
    check_not_an_input(args.out, [args.checkpoint, args.weights])
    check_writable_file(args.out, "--out file")
    if args.logit_adjust is not None and not args.checkpoint:
        raise SemsegError("--logit-adjust reads the class weights a training run stored: give --checkpoint")
    model = load_torch_model(args.checkpoint, args.model, args.weights, args.num_classes)
    state = load_checkpoint(args.checkpoint) if args.checkpoint and (args.format == "semseg" or args.logit_adjust is not None) else None
    provenance = state if args.format == "semseg" else None
    offset = None
    if args.logit_adjust is not None:
        from semseg.losses.weights import logit_adjustment

        if not state.get("class_weights"):
            raise SemsegError(f"{args.checkpoint}: trained without class weights (train.class_weights), so there is "
                              "no prior to take back; drop --logit-adjust")
        offset = logit_adjustment(state["class_weights"], args.logit_adjust)
    max_drop = DEFAULT_MAX_DROP if args.max_drop is None else args.max_drop
    report = export_model(model, args.out, args.format, args.size, args.dynamic, args.opset, args.half,
                          args.tta_scales, provenance, args.int8, args.calib, args.labels, max_drop, not args.no_gate,
                          args.ignore_index, offset)
    agreement = (f"on {report['batches']} sample batches: argmax agreement {100 * report['agreement']:.3f}%, "
                 f"max logit difference {report['max_abs_diff']:.2e}")
    if args.format == "semseg":
        kind = "int8 and float16" if args.int8 else "float16" if args.half else "float32"
        print(f"exported {model.model_name} to {args.out} ({kind} weights, {Path(args.out).stat().st_size / 1e6:.1f} MB)")
        print(f"parity with the original weights {agreement}")
    else:
        size = report["size"]
        shape = "dynamic height and width" if report["dynamic"] else f"{size[0]}x{size[1]} inputs"
        kind = "int8, " if args.int8 else ""
        runtime = "OpenVINO" if args.format == "openvino" else "ONNX Runtime"
        print(f"exported {model.model_name} to {args.out} ({kind}{shape}, opset {args.opset})")
        print(f"parity of the float32 graph in {runtime} with PyTorch {agreement}")
        workflow = f"semseg predict --onnx on {report['workflow_frames']} street frames at native size: labels equal to"
        if "graph_agreement" in report:
            print(f"{workflow} the PyTorch model in the same tiles on {100 * report['graph_agreement']:.3f}% of pixels, "
                  f"to semseg predict on the PyTorch model on {100 * report['workflow_agreement']:.3f}%")
        else:
            print(f"{workflow} semseg predict on the PyTorch model on {100 * report['workflow_agreement']:.3f}% of pixels")
        if args.int8:
            _print_int8(report, runtime)
    return 0


def _print_int8(report: dict, runtime: str) -> None:
    fp32, int8 = report["fp32"], report["int8"]
    print(f"int8 (calibrated on {report['calibration_images']} images) against float32 in {runtime} on the "
          f"{report['scored_images']} labelled images (whole images, no TTA):")
    print(f"  mIoU {100 * int8['miou']:.2f} vs {100 * fp32['miou']:.2f} ({-report['miou_drop']:+.2f} points), "
          f"labels equal on {100 * int8['agreement']:.2f}% of pixels")
    print(f"  {int8['ms_per_image']:.1f} vs {fp32['ms_per_image']:.1f} ms per image "
          f"({fp32['ms_per_image'] / int8['ms_per_image']:.2f}x)")
