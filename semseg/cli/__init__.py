"""The ``semseg`` command: parse, call one typed library function, print. The only place that prints.

One module per command (``cli/predict.py``, ``cli/export.py``, ...), each with
``add_<command>(subparsers)`` and a handler that turns the parsed arguments
into a library call; a new command is a new module and one line in
:data:`COMMANDS`. Errors a user can fix (a bad file, a bad key) are
:class:`SemsegError`: the command prints the message alone and exits with
status 2. Library log records reach the console through :mod:`semseg.cli.console`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator, Sequence

from semseg.cli.app import add_app
from semseg.cli.args import ERROR_PREFIX
from semseg.cli.benchmark import add_benchmark
from semseg.cli.configs import add_configs
from semseg.cli.console import setup_logging
from semseg.cli.data import add_data
from semseg.cli.export import add_export
from semseg.cli.predict import add_predict
from semseg.cli.score import add_score
from semseg.cli.train import add_demo, add_train, add_val
from semseg.errors import SemsegError

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_train, add_val, add_predict, add_score, add_data, add_export, add_demo, add_configs, add_app, add_benchmark,
]
ACCEPTS_OVERRIDES = {"train", "val"}


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


def error_message(exc: SemsegError) -> str:
    """The message of ``exc``; for one re-raised by a DataLoader worker, the original message without its traceback."""
    text = str(exc)
    if text.startswith("Caught ") and "SemsegError: " in text:  # torch's ExceptionWrapper: "Caught ... Original Traceback ..."
        return text.rsplit("SemsegError: ", 1)[1].strip()
    return text


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` runs (atomic writes remove their temporaries)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler's timeout) raises :class:`Terminated` for the block, in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    with terminate_as_interrupt():
        return _main(parser, argv)


def _main(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    try:
        command = next((arg for arg in argv if not arg.startswith("-")), None)
        if command in ACCEPTS_OVERRIDES:
            args, extra = parser.parse_known_args(argv)
        else:
            args, extra = parser.parse_args(argv), []
        args.extra = extra
        args.argv = argv  # the command line as given, for a command that starts copies of itself
        setup_logging(-1 if args.quiet else 1 if args.verbose else 0)
        return int(args.handler(args) or 0)
    except SemsegError as exc:
        print(f"{ERROR_PREFIX}{error_message(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print("semseg: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("semseg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout left (`semseg configs | head`): stop quietly, as tools killed by SIGPIPE do;
        # stdout goes to /dev/null so that the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
