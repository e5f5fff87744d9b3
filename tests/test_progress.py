"""Progress output: plain lines in logs, elapsed time on terminals, and `done in` always on its own line."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from smlp_deploy.samples import sample_images

from .reliability import ROOT, export_command

STEP_SCRIPT = """
import time
from smlp_deploy.progress import Steps, progress_bar
steps = Steps(total=2)
with steps.step("waiting"):
    time.sleep(2.5)
with steps.step("counting"):
    for _ in progress_bar(range(3), desc="items"):
        time.sleep(0.5)
    steps.say("counted")
"""


def test_logs_get_one_plain_line_per_event(tmp_path):
    """stderr to a file or pipe (CI, logs): no carriage return, no bar, each `done in` on its own line."""
    calib = str(sample_images()[0].parent)
    done = subprocess.run(export_command(tmp_path / "out", "--int8", "--calib-dir", calib), capture_output=True,
                          text=True, cwd=ROOT, check=True)
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    lines = done.stderr.splitlines()
    assert [line for line in lines if "done in" in line] == [
        line for line in lines if re.fullmatch(r" {6}done in \d+\.\d s", line)]
    steps = [line for line in lines if re.match(r"\[\d+/\d+\] ", line)]
    assert len(steps) >= 8 and len([line for line in lines if "done in" in line]) == len(steps)  # one per step


def test_a_terminal_sees_elapsed_time_and_clean_step_ends():
    main, child = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", STEP_SCRIPT], stderr=child, stdout=child, cwd=ROOT)
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=60)
    os.close(main)
    text = output.decode()
    assert "\r      elapsed 1 s" in text and "\r      elapsed 2 s" in text  # redrawn in place while waiting
    # The elapsed-time line is erased before anything else is printed, so every line starts clean.
    assert re.search(r"\r\x1b\[K {6}done in 2\.\d s", text)
    assert "counted" in text and text.count("done in") == 2
