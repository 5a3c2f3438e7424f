"""``semseg app``: the local web page to try models on images (Gradio; ``pip install 'semseg[app]'``)."""

from __future__ import annotations

import argparse


def add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="a local web page: segment uploaded or sample images (pip install 'semseg[app]')")
    p.add_argument("--checkpoint", action="append", default=[], metavar="FILE", help="a checkpoint to offer (repeatable)")
    p.add_argument("--onnx", action="append", default=[], metavar="FILE", help="an exported ONNX model to offer (repeatable)")
    p.add_argument("--no-default-model", action="store_true", help="do not offer the embedded default model")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    p.set_defaults(handler=_run_app)


def _run_app(args: argparse.Namespace) -> int:
    from semseg.app.web import launch

    launch(args.checkpoint, args.onnx, host=args.host, port=args.port, device=args.device,
           default_model=not args.no_default_model)
    return 0
