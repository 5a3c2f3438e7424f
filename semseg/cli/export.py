"""``semseg export``: an ONNX graph or an inference checkpoint, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from semseg.cli.args import add_model_source
from semseg.errors import SemsegError


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX and check its outputs against PyTorch")
    add_model_source(p)
    p.add_argument("--format", default="onnx",
                   help="onnx: an ONNX graph; semseg: an inference checkpoint (weights and metadata, no training state)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--half", action="store_true", help="semseg format: store the weights in float16 (half the size)")
    p.add_argument("--tta-scales", type=float, nargs="+", default=None, metavar="S",
                   help="record in the model's metadata that it is best predicted with multi-scale + flip TTA at these "
                   "scales (semseg predict and Predictor then use them unless told otherwise)")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--dynamic", action="store_true", default=None,
                       help="accept any height and width (the default, where the model allows it)")
    shape.add_argument("--fixed", dest="dynamic", action="store_false",
                       help="accept --size only (prediction then tiles images at native resolution, padding small ones)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="export (and check) size")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from semseg.checkpoint import load_checkpoint
    from semseg.export import check_export_options, export_model
    from semseg.io import check_not_an_input, check_writable_file
    from semseg.models import load_torch_model

    check_export_options(args.format, args.half, args.dynamic)  # before the model loads
    if args.checkpoint is None and args.model is None:
        raise SemsegError("say what to export: --checkpoint FILE, or --model NAME --weights FILE --num-classes N")
    check_not_an_input(args.out, [args.checkpoint, args.weights])
    check_writable_file(args.out, "--out file")
    model = load_torch_model(args.checkpoint, args.model, args.weights, args.num_classes)
    provenance = load_checkpoint(args.checkpoint) if args.checkpoint and args.format == "semseg" else None
    report = export_model(model, args.out, args.format, args.size, args.dynamic, args.opset, args.half,
                          args.tta_scales, provenance)
    agreement = (f"on {report['batches']} sample batches: argmax agreement {100 * report['agreement']:.3f}%, "
                 f"max logit difference {report['max_abs_diff']:.2e}")
    if args.format == "semseg":
        kind = "float16" if args.half else "float32"
        print(f"exported {model.model_name} to {args.out} ({kind} weights, {Path(args.out).stat().st_size / 1e6:.1f} MB)")
        print(f"parity with the original weights {agreement}")
    else:
        size = report["size"]
        shape = "dynamic height and width" if report["dynamic"] else f"{size[0]}x{size[1]} inputs"
        print(f"exported {model.model_name} to {args.out} ({shape}, opset {args.opset})")
        print(f"parity with PyTorch {agreement}")
        workflow = f"semseg predict --onnx on {report['workflow_frames']} street frames at native size: labels equal to"
        if "graph_agreement" in report:
            print(f"{workflow} the PyTorch model in the same tiles on {100 * report['graph_agreement']:.3f}% of pixels, "
                  f"to semseg predict on the PyTorch model on {100 * report['workflow_agreement']:.3f}%")
        else:
            print(f"{workflow} semseg predict on the PyTorch model on {100 * report['workflow_agreement']:.3f}% of pixels")
    return 0
