"""The console: library log records become the command's output.

Library modules log to ``logging.getLogger(__name__)`` (under ``semseg``); the
CLI routes those records here. INFO lines go to stdout as they are; debug
lines, warnings and errors to stderr as ``semseg: warning: ...``. ``-q`` shows warnings and
errors only, ``-v`` debug messages too.
"""

from __future__ import annotations

import logging
import sys


class Console(logging.Handler):
    """Library log records as the command's output: INFO on stdout as is, the others on stderr, prefixed.

    Streams are looked up at each record (tests and callers swap sys.stdout); with a
    progress bar on screen the line goes through tqdm so that the bar is redrawn below it.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno != logging.INFO:
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
    for handler in [h for h in logger.handlers if isinstance(h, Console)]:
        logger.removeHandler(handler)
    logger.addHandler(Console())
    logger.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG))
