"""The console: library log records become the command's output; -q keeps warnings and errors only."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from semseg.cli.console import setup_logging


def test_info_goes_to_stdout_warnings_to_stderr_prefixed(capsys):
    log = logging.getLogger("semseg.some.module")
    setup_logging(0)
    log.info("epoch 1/3 | loss 0.5")
    log.debug("not shown")
    log.warning("skipped %s", "a.png")
    captured = capsys.readouterr()
    assert captured.out == "epoch 1/3 | loss 0.5\n"
    assert captured.err == "semseg: warning: skipped a.png\n"


def test_quiet_keeps_warnings_and_verbose_adds_debug(capsys):
    log = logging.getLogger("semseg.some.module")
    setup_logging(-1)
    log.info("progress")
    log.warning("careful")
    captured = capsys.readouterr()
    assert captured.out == "" and "careful" in captured.err
    setup_logging(1)
    log.debug("detail")
    assert capsys.readouterr().err == "semseg: debug: detail\n"
    setup_logging(0)
    assert len(logging.getLogger("semseg").handlers) == 1  # set up again, never twice


def test_a_closed_pipe_ends_the_command_quietly():
    # `semseg configs camvid | true`: the reader is gone before the first line is written
    command = f"{sys.executable} -m semseg configs camvid | true; echo ${{PIPESTATUS[0]}}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=300)
    assert result.stdout.strip() == "141"  # 128 + SIGPIPE, as a tool killed by the signal
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
