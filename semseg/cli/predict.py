"""``semseg predict``: label maps, overlays (and confidence, probabilities) for images, folders and globs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from semseg.cli.args import add_model_source, check_outputs
from semseg.errors import SemsegError


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict label maps for images, folders or globs")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders and glob patterns")
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/labels, DIR/overlays (and confidence, probs)")
    add_model_source(p)
    p.add_argument("--onnx", default=None, metavar="FILE",
                   help="an exported model: an ONNX graph, run with ONNX Runtime (OpenVINO with --backend openvino), "
                   "or an OpenVINO IR (NAME.xml), run with OpenVINO")
    p.add_argument("--backend", choices=["auto", "torch", "onnxruntime", "openvino"], default="auto",
                   help="what runs the model: auto (default) converts it once and uses the fastest of PyTorch and the "
                   "installed runtimes whose labels equal PyTorch fp32's on 99.9%% of pixels; torch; onnxruntime; openvino")
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
    p.add_argument("--workers", type=int, default=1, help="image-decoding threads (0: decode each image when its turn comes)")
    p.add_argument("--streams", type=int, default=None,
                   help="images predicted at once, each in a thread with its share of the CPU's threads, where an "
                   "exported graph predicts whole images without TTA (default: one per CPU thread; 1: one image at a "
                   "time using them all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--confidence", action="store_true", help="also write DIR/confidence/<name>.png (max probability)")
    p.add_argument("--probs", action="store_true", help="also write DIR/probs/<name>.npy (float32 [C, H, W])")
    p.add_argument("--format", choices=["semseg", "cityscapes"], default="semseg", dest="label_format",
                   help="DIR/labels as class-id palette PNGs (semseg) or as the Cityscapes benchmark's labelId PNGs")
    p.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    # no torch imported up to the model: an exported or cached graph run once per image never needs it
    from semseg.predict.backends import open_exported
    from semseg.predict.loading import load_for_prediction
    from semseg.predict.files import check_label_format, predict_files, resolve_sources
    from semseg.predict.prediction import describe_tta

    files = resolve_sources(args.sources)
    check_label_format(args.label_format, files)  # the names before the model loads; the class count once it has
    if args.workers < 0:
        raise SemsegError(f"--workers must be 0 or more image-decoding threads, got {args.workers}")
    if args.streams is not None and args.streams < 1:
        raise SemsegError(f"--streams must be 1 or more images predicted at once, got {args.streams}")
    check_outputs(folders=[args.out])  # before the model loads
    if args.onnx is not None:
        if args.checkpoint or args.model:
            raise SemsegError("--onnx FILE runs an exported model; it does not combine with --checkpoint or --model")
        model: Any = open_exported(args.onnx, args.backend, args.device)
    else:
        model, _ = load_for_prediction(args.checkpoint, args.model, args.weights, args.num_classes, args.backend,
                                       args.precision, args.device)
    predictor = _predictor(model, args, len(files))
    failed = predict_files(predictor, files, args.out, args.confidence, args.probs, args.workers, args.label_format)
    print(f"predicted {len(files) - len(failed)} of {len(files)} images into {args.out} ({args.mode} mode, "
          f"{predictor.backend} {predictor.precision}, {describe_tta(predictor, args.tta)})")
    if failed:
        print(f"semseg: {len(failed)} image(s) could not be read: {', '.join(str(f) for f in failed)}", file=sys.stderr)
        return 1
    return 0


def _predictor(model: Any, args: argparse.Namespace, file_count: int) -> Any:
    """The Predictor for ``args``, or for a graph run once per image at native size its NumPy path
    (:mod:`semseg.predict.exported`), which builds the Predictor only for what it does not do, predicting
    ``--streams`` images at once (default: one per CPU thread, no more than there are files)."""
    from semseg.predict.exported import GraphPredictor, default_streams, runs_without_torch

    def full() -> Any:
        from semseg.predict import Predictor

        return Predictor(model, mode=args.mode, size=args.size, crop=args.crop, stride=args.stride, blend=args.blend,
                         tta=args.tta, scales=args.scales, flip=not args.no_flip, precision=args.precision,
                         device=args.device, batch_size=args.batch_size)

    # options only the Predictor reads (and checks); with any of them it predicts
    predictor_options = args.crop or args.stride or args.scales or args.no_flip or args.blend != "uniform"
    if not predictor_options and runs_without_torch(model, args.mode, args.size, args.tta, args.precision,
                                                    args.confidence, args.probs):
        streams = args.streams or default_streams(file_count)
        return GraphPredictor(model, full, args.batch_size, streams=streams)
    return full()

