"""The ``semseg`` command. Each subcommand parses its arguments, then calls one library function.

Errors a user can fix (a bad file, a bad key) are :class:`SemsegError`: the
command prints the message alone and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from semseg.errors import SemsegError


def _split_overrides(extra: list[str]) -> list[str]:
    """Turn ``key=value``, ``--key value`` and ``--key=value`` leftovers into ``key=value``."""
    overrides: list[str] = []
    i = 0
    while i < len(extra):
        item = extra[i]
        if item.startswith("--"):
            item = item[2:]
            if "=" not in item:
                if i + 1 >= len(extra):
                    raise SemsegError(f"option --{item} needs a value")
                item = f"{item}={extra[i + 1]}"
                i += 1
        if "=" not in item:
            raise SemsegError(f"unexpected argument {item!r}: overrides are written key=value (e.g. train.epochs=5)")
        overrides.append(item)
        i += 1
    return overrides


# ---------------------------------------------------------------- score
def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a folder of predicted label PNGs against ground truth")
    p.add_argument("--pred", required=True, help="folder of predicted label PNGs")
    p.add_argument("--gt", required=True, help="folder of ground-truth label PNGs")
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--ignore-index", type=int, default=255)
    p.add_argument("--class-names", default=None, help="comma-separated class names, in class order")
    p.add_argument("--json", default=None, help="write the scores to this JSON file")
    p.add_argument("--allow-missing", action="store_true", help="skip ground truths that have no prediction")
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
    )
    print(format_report(scores))
    if args.json is not None:
        print(f"scores written to {args.json}")
    return 0


# ---------------------------------------------------------------- data check
def _add_data(sub: argparse._SubParsersAction) -> None:
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


# ---------------------------------------------------------------- train / val / demo
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a config (key=value overrides follow)")
    p.add_argument("--config", default=None, help="YAML config file")
    p.add_argument("--run-dir", default=None, help="run folder (default runs/<name>-<time>)")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run in DIR from its last.pt")
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from semseg.engine.loop import train

    run_dir = train(config_path=args.config, overrides=_split_overrides(args.extra), run_dir=args.run_dir, resume=args.resume)
    print(f"run folder: {run_dir} (best.pt, last.pt, metrics.jsonl, config.yaml)")
    return 0


def _add_val(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("val", help="evaluate a checkpoint (config overrides follow, e.g. --data.root DIR)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--json", default=None, help="write the scores to this JSON file")
    p.add_argument("--save-examples", type=int, default=0, metavar="N", help="save N image|truth|prediction panels")
    p.add_argument("--out", default=None, help="folder for the example panels (default: beside the checkpoint)")
    p.set_defaults(handler=_run_val)


def _run_val(args: argparse.Namespace) -> int:
    from semseg.engine.evaluate import evaluate_checkpoint
    from semseg.metrics import format_report

    scores, examples = evaluate_checkpoint(
        checkpoint=args.checkpoint,
        overrides=_split_overrides(args.extra),
        json_path=args.json,
        save_examples=args.save_examples,
        out_dir=args.out,
    )
    print(format_report(scores))
    if examples is not None:
        print(f"example panels: {examples}")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, evaluate and predict on the embedded street-scene sample")
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--minutes", type=float, default=2.0, help="training time budget")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from semseg.engine.demo import run_demo

    return run_demo(run_dir=args.run_dir, minutes=args.minutes)


# ---------------------------------------------------------------- predict / export
def _add_model_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, metavar="FILE", help="a semseg checkpoint")
    p.add_argument("--model", default=None, metavar="NAME", help="a zoo architecture, with --weights and --num-classes")
    p.add_argument("--weights", default=None, metavar="FILE", help="a raw state dict for --model (e.g. torchvision's .pth)")
    p.add_argument("--num-classes", type=int, default=None, metavar="N")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict label maps for images, folders or globs")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders and glob patterns")
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/labels, DIR/overlays (and confidence, probs)")
    _add_model_source(p)
    p.add_argument("--onnx", default=None, metavar="FILE", help="an exported model, run with ONNX Runtime")
    p.add_argument("--mode", choices=["whole", "slide"], default="whole")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="run the model at this size")
    p.add_argument("--crop", type=int, nargs=2, default=None, metavar=("H", "W"), help="slide mode tile size")
    p.add_argument("--stride", type=int, nargs=2, default=None, metavar=("H", "W"), help="slide mode step (default 2/3 crop)")
    p.add_argument("--blend", choices=["uniform", "gaussian"], default="uniform", help="slide mode tile weights")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="multi-scale + flip test-time augmentation (default: as the model's metadata recommends)")
    p.add_argument("--scales", type=float, nargs="+", default=None,
                   help="TTA scales (default: the model's recommended scales, else 0.75 1 1.25)")
    p.add_argument("--no-flip", action="store_true", help="TTA without the mirrored views")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images (whole) or tiles (slide) per forward pass (default: 1 on the CPU, 4 on a GPU)")
    p.add_argument("--workers", type=int, default=1, help="image-decoding processes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--confidence", action="store_true", help="also write DIR/confidence/<name>.png (max probability)")
    p.add_argument("--probs", action="store_true", help="also write DIR/probs/<name>.npy (float32 [C, H, W])")
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from semseg.models import load_torch_model
    from semseg.predict import Predictor, describe_tta, predict_files, resolve_sources
    from semseg.runtime import OnnxModel

    files = resolve_sources(args.sources)
    if args.onnx is not None:
        if args.checkpoint or args.model:
            raise SemsegError("--onnx FILE runs an exported model; it does not combine with --checkpoint or --model")
        model: Any = OnnxModel(args.onnx, device=args.device)
    else:
        model = load_torch_model(args.checkpoint, args.model, args.weights, args.num_classes)
    predictor = Predictor(
        model,
        mode=args.mode,
        size=args.size,
        crop=args.crop,
        stride=args.stride,
        blend=args.blend,
        tta=args.tta,
        scales=args.scales,
        flip=not args.no_flip,
        precision=args.precision,
        device=args.device,
        batch_size=args.batch_size,
    )
    failed = predict_files(predictor, files, args.out, args.confidence, args.probs, args.workers)
    print(f"predicted {len(files) - len(failed)} of {len(files)} images into {args.out} ({args.mode} mode, "
          f"{predictor.precision}, {describe_tta(predictor, args.tta)})")
    if failed:
        print(f"semseg: {len(failed)} image(s) could not be read: {', '.join(str(f) for f in failed)}", file=sys.stderr)
        return 1
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX and check its outputs against PyTorch")
    _add_model_source(p)
    p.add_argument("--format", default="onnx",
                   help="onnx: an ONNX graph; semseg: an inference checkpoint (weights and metadata, no training state)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--half", action="store_true", help="semseg format: store the weights in float16 (half the size)")
    p.add_argument("--tta-scales", type=float, nargs="+", default=None, metavar="S",
                   help="record in the model's metadata that it is best predicted with multi-scale + flip TTA at these "
                   "scales (semseg predict and Predictor then use them unless told otherwise)")
    p.add_argument("--dynamic", action="store_true", help="accept any height and width (else only --size)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="export (and check) size")
    p.add_argument("--opset", type=int, default=17)
    p.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from semseg.checkpoint import load_checkpoint
    from semseg.export import export_model
    from semseg.models import load_torch_model

    if args.checkpoint is None and args.model is None:
        raise SemsegError("say what to export: --checkpoint FILE, or --model NAME --weights FILE --num-classes N")
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
        shape = "dynamic height and width" if args.dynamic else f"{size[0]}x{size[1]} inputs"
        print(f"exported {model.model_name} to {args.out} ({shape}, opset {args.opset})")
        print(f"parity with PyTorch {agreement}")
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train, _add_val, _add_predict, _add_score, _add_data, _add_export, _add_demo,
]
ACCEPTS_OVERRIDES = {"train", "val"}


class _Console(logging.Handler):
    """Library log records as the command's output: INFO on stdout as is, warnings and errors on stderr, prefixed.

    Streams are looked up at each record (tests and callers swap sys.stdout); with a
    progress bar on screen the line goes through tqdm so that the bar is redrawn below it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"semseg: {record.levelname.lower()}: {text}"
            stream = sys.stdout if record.levelno == logging.INFO else sys.stderr
            if "tqdm" in sys.modules:
                sys.modules["tqdm"].tqdm.write(text, file=stream)
            else:
                print(text, file=stream, flush=True)
        except Exception:  # a logging handler never raises into the library
            self.handleError(record)


def setup_logging(verbosity: int = 0) -> None:
    """Route the ``semseg`` loggers to the console: -1 warnings only, 0 info, 1 debug."""
    logger = logging.getLogger("semseg")
    for handler in [h for h in logger.handlers if isinstance(h, _Console)]:
        logger.removeHandler(handler)
    logger.addHandler(_Console())
    logger.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG))
    logger.propagate = False


def build_parser() -> argparse.ArgumentParser:
    from semseg import __version__

    parser = argparse.ArgumentParser(prog="semseg", description="semantic segmentation toolkit")
    parser.add_argument("--version", action="version", version=f"semseg {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="print warnings and errors only")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debug messages too")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ACCEPTS_OVERRIDES:
            args, extra = parser.parse_known_args(argv)
        else:
            args, extra = parser.parse_args(argv), []
        args.extra = extra
        setup_logging(-1 if args.quiet else 1 if args.verbose else 0)
        return int(args.handler(args) or 0)
    except SemsegError as exc:
        print(f"semseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("semseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
