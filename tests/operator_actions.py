"""What an operator does to a cache directory under an open database, done as a shell would."""

from __future__ import annotations

import os
import shutil
import time


def remove_tree(path: str, timeout: float = 10) -> None:
    """`rm -rf path` until it is gone. The open database may be writing files into it at that
    moment (a background prefetch), which makes a single rmtree fail with "Directory not empty";
    an operator would run rm again."""
    deadline = time.monotonic() + timeout
    while True:
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        assert time.monotonic() < deadline, f"{path} could not be removed"
        time.sleep(0.01)
