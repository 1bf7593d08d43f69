"""python -m levels3.demo: argparse, a URL the command line accepts, figures after close, no leftovers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import levels3

# The directory holding the levels3 under test, so that a run from another directory imports the same one.
IMPORT_ROOT = str(Path(levels3.__file__).resolve().parent.parent)


def run(*args: str, cwd: Path, tmpdir: Path | None = None, module: str = "levels3.demo") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (IMPORT_ROOT, os.environ.get("PYTHONPATH")) if p))
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def test_help_prints_usage_and_creates_nothing(tmp_path: Path) -> None:
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m levels3.demo")
    assert os.listdir(tmp_path) == []  # no database named --help
    bad = run("--frobnicate", cwd=tmp_path)
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr
    assert os.listdir(tmp_path) == []


def test_a_relative_directory_gets_a_url_the_command_line_opens(tmp_path: Path) -> None:
    result = run("demo-rel", "--keys", "2000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    url = re.search(r"database at (\S+)", result.stdout).group(1)
    assert url == (tmp_path / "demo-rel").resolve().as_uri()
    scan = run("scan", url, "--prefix", "user:", "--limit", "2", cwd=tmp_path / "demo-rel", module="levels3")
    assert scan.returncode == 0, scan.stderr
    assert scan.stdout == "user:000001\t1\nuser:000002\t4\n"  # user:000000 was deleted by the demo
    assert f"levels3 scan {url}" in result.stdout  # and it says how


def test_the_figures_after_close_show_the_unsynced_batch_uploaded(tmp_path: Path) -> None:
    result = run(str(tmp_path / "db"), "--keys", "20000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    before = int(re.search(r"before close: .*?([\d,]+) bytes uploaded", result.stdout).group(1).replace(",", ""))
    after = int(re.search(r"after close: .*?([\d,]+) bytes uploaded", result.stdout).group(1).replace(",", ""))
    assert before < 20_000  # the batch is not in the store yet (and the output says why)
    assert "not synced" in result.stdout
    assert after > 20_000 * len(b"user:000000")  # close uploaded the batch's log bytes


def test_a_run_without_directory_leaves_nothing_in_the_temporary_directory(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = run("--keys", "2000", cwd=tmp_path, tmpdir=scratch)
    assert result.returncode == 0, result.stderr
    assert "removed" in result.stdout
    assert os.listdir(scratch) == []
