"""Loaded by a test's child process (this directory on its PYTHONPATH) to pause it once.

Without ``RMTEST_PAUSE_DIR`` and ``RMTEST_PAUSE_AT`` in the environment it does nothing.
At the moment ``RMTEST_PAUSE_AT`` names, the process creates ``paused`` in
``RMTEST_PAUSE_DIR`` and waits (at most ``RESUME_TIMEOUT_S``) until the test creates
``resume`` there. The moments:

- ``exit``: the last atexit callback, so all of the program's own code has run, its
  shutdown included, and only the interpreter's teardown is left;
- ``open:NAME``: the first time the process opens a file named NAME (an audit hook), for
  instance its settings file, which a command reads before its event loop starts.

A test can then send a signal at a moment it could otherwise only hit by luck.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from pathlib import Path
from typing import Any

RESUME_TIMEOUT_S = 60.0
_POLL_S = 0.01


def _pause(directory: Path) -> None:
    (directory / "paused").touch()
    deadline = time.monotonic() + RESUME_TIMEOUT_S
    # The test, not a timer, decides when to go on; the deadline only bounds a lost test.
    while not (directory / "resume").exists() and time.monotonic() < deadline:
        time.sleep(_POLL_S)


def _pause_at_open(directory: Path, name: str) -> None:
    done = False

    def hook(event: str, args: tuple[Any, ...]) -> None:
        nonlocal done
        if done or event != "open" or not args or isinstance(args[0], int):
            return
        try:
            path = os.fsdecode(args[0])
        except TypeError:
            return
        if os.path.basename(path) == name:
            done = True  # first, so the files _pause opens do not pause again
            _pause(directory)

    sys.addaudithook(hook)


def _install() -> None:
    directory = os.environ.get("RMTEST_PAUSE_DIR")
    at = os.environ.get("RMTEST_PAUSE_AT", "")
    if not directory or not at:
        return
    if at == "exit":
        atexit.register(_pause, Path(directory))  # registered first, so it runs last
    elif at.startswith("open:"):
        _pause_at_open(Path(directory), at.removeprefix("open:"))
    else:
        raise SystemExit(f"RMTEST_PAUSE_AT: unknown moment {at!r}")


_install()
