"""A real display for the panel's tests: the machine's own, else an Xvfb server started here
(Debian's xvfb, installed by .ci/run), else Qt's offscreen platform. Set before pytest-qt
creates the QApplication."""

from __future__ import annotations

import os
import shutil
import subprocess

_xvfb: subprocess.Popen | None = None

if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
    if shutil.which("Xvfb"):
        read, write = os.pipe()
        _xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(write)
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()
        os.environ["DISPLAY"] = f":{number}"
    else:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"


def pytest_unconfigure(config) -> None:
    if _xvfb is not None:
        _xvfb.terminate()
        _xvfb.wait(5)
