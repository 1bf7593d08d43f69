"""`levels3 scan URL | head -1`: the reader going away is not an error (issue 17, item 4)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import levels3

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scan_into_a_closed_pipe_exits_quietly_as_unix_tools_do(tmp_path) -> None:
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True) as db:
        with db.write_batch() as batch:
            for i in range(50_000):  # ~1 MB of output: far more than a pipe holds
                batch.put(b"key%06d" % i, b"value")
    proc = subprocess.Popen([sys.executable, "-m", "levels3", "scan", url], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"key000000\tvalue\n"
    proc.stdout.close()  # what `head -1` does after its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr  # 128 + SIGPIPE, what the shell reports for `seq 1e9 | head -1`
    assert stderr == ""


def test_shell_pipeline_into_head(tmp_path) -> None:
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True) as db:
        with db.write_batch() as batch:
            for i in range(50_000):
                batch.put(b"k%06d" % i, b"v")
    script = f"set -o pipefail; {shlex.quote(sys.executable)} -m levels3 scan {shlex.quote(url)} | head -1"
    result = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout == "k000000\tv\n"
    assert result.stderr == ""
    assert result.returncode == 141
