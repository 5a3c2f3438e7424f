"""The progress helper: a line every N steps where there is no terminal, nothing when INFO is off or disabled."""

from __future__ import annotations

import logging

from semseg.progress import Progress


def test_without_a_terminal_a_line_comes_every_n_steps(caplog):
    log = logging.getLogger("semseg.test_progress")
    with caplog.at_level(logging.INFO, logger="semseg.test_progress"), Progress(25, "work", unit="img", logger=log, every=10) as bar:
        for step in range(25):
            bar.update(1, loss=f"{step:.1f}")
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["work: 10/25 img (40%), loss 9.0", "work: 20/25 img (80%), loss 19.0", "work: 25/25 img (100%), loss 24.0"]


def test_by_default_every_tenth_and_never_when_info_is_off_or_disabled(caplog):
    log = logging.getLogger("semseg.test_progress")
    with caplog.at_level(logging.INFO, logger="semseg.test_progress"):
        with Progress(30, "work", logger=log) as bar:
            bar.update(30)  # one big step crosses every mark once: one line
        with Progress(30, "work", logger=log, enabled=False) as bar:
            bar.update(30)
    assert [record.getMessage() for record in caplog.records] == ["work: 30/30 it (100%)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="semseg.test_progress"), Progress(30, "work", logger=log) as bar:
        bar.update(30)
    assert not caplog.records
