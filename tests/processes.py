"""Running the risky part of a test in a real Python process, so that a crash fails the test
instead of killing pytest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(script: str, *args: Any, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``script`` (dedented) in a fresh interpreter with ``args`` as sys.argv[1:]
    (JSON-encoded when not str); stdout and stderr captured as text. A process that
    does not finish within ``timeout`` is killed and reported as hung."""
    argv = [sys.executable, "-c", textwrap.dedent(script)]
    argv += [a if isinstance(a, str) else json.dumps(a) for a in args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise AssertionError(f"the process hung (killed after {timeout} s)\nstdout: {out[-2000:]}\n"
                             f"stderr: {err[-2000:]}") from None


def how_it_ended(result: subprocess.CompletedProcess) -> str:
    """'exit 0', 'exit 1' or the signal that killed it ('SIGSEGV'), with the output's tails."""
    if result.returncode < 0:
        ending = signal.Signals(-result.returncode).name
    else:
        ending = f"exit {result.returncode}"
    return f"{ending}\nstdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}"


def assert_clean_exit(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, how_it_ended(result)
    return result


#: A command prefix that runs a process as pid 1 of a new pid namespace (and kills it with its parent).
IN_NEW_PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def can_make_pid_namespaces() -> bool:
    """Whether IN_NEW_PID_NAMESPACE works here (it needs CAP_SYS_ADMIN)."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*IN_NEW_PID_NAMESPACE, "true"], capture_output=True, check=False).returncode == 0
