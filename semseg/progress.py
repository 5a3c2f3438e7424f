"""Progress of a long loop, the one way library code shows it.

>>> with Progress(len(files), "predict", unit="img", logger=log) as bar:
...     for file in files:
...         ...
...         bar.update(1, loss="0.4312")      # optional status, shown beside the count

On a terminal (stderr is a TTY) it draws a tqdm bar that disappears when done.
Elsewhere (a log file, CI) it logs one INFO line through ``logger`` each time
another ``every`` steps are done (default: every 10% of ``total``) and at the last step. Nothing is shown while ``logger`` is not enabled for INFO, which is how
the CLI's ``-q`` silences it, or when ``enabled`` is False (e.g. on every DDP
rank but the first).
"""

from __future__ import annotations

import logging
import math
import sys
from types import TracebackType
from typing import Any

_LOG = logging.getLogger("semseg")


class Progress:
    """A progress display over ``total`` steps; see the module docstring. Use it as a context manager."""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "it",
        logger: logging.Logger | None = None,
        every: int | None = None,
        enabled: bool = True,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.logger = logger or _LOG
        self.every = every or max(1, math.ceil(total / 10))
        self.done = 0
        self._next_line = self.every
        self._bar = None
        self._shown = enabled and self.logger.isEnabledFor(logging.INFO)
        if self._shown and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, **status: Any) -> None:
        """``n`` more steps done; ``status`` (name -> value) is shown beside the count."""
        self.done += n
        if self._bar is not None:
            if status:
                self._bar.set_postfix(status, refresh=False)
            self._bar.update(n)
        elif self._shown and (self.done >= self._next_line or self.done == self.total):  # the last step is always shown
            while self._next_line <= self.done:
                self._next_line += self.every
            extra = "".join(f", {key} {value}" for key, value in status.items())
            share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            self.logger.info("%s: %d/%d %s%s%s", self.desc, self.done, self.total, self.unit, share, extra)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

