"""bench: run the benchmark suite's quick mode (``python -m benchmarks --quick``)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from typing import Any

from ._common import CommandError


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bench", parents=[parent], help="run the benchmark suite's quick mode",
        description="Run `python -m benchmarks --quick` (the suite lives in the benchmarks/ directory of a "
                    "levels3 source checkout). Arguments after `--` are passed on to the suite.")
    p.add_argument("--full", action="store_true", help="run the full suite instead of --quick")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments for the suite (after --)")
    p.set_defaults(func=cmd_bench)


def _checkout_root() -> str:
    # levels3/cli/bench.py -> the directory holding levels3/ (a source checkout or editable install)
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def find_suite() -> tuple[str | None, dict[str, str]]:
    """(directory to add to PYTHONPATH or '' if importable as is, env); (None, env) when missing."""
    env = dict(os.environ)
    try:
        if importlib.util.find_spec("benchmarks.__main__") is not None:
            return "", env
    except (ImportError, ValueError):
        pass
    root = _checkout_root()
    if os.path.isfile(os.path.join(root, "benchmarks", "__main__.py")):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        return root, env
    return None, env


def cmd_bench(args: argparse.Namespace) -> int:
    where, env = find_suite()
    if where is None:
        raise CommandError("the benchmark suite is not available: `python -m benchmarks` was not found "
                           "(it lives in benchmarks/ of a levels3 source checkout; run from there)")
    extra = [a for a in args.extra if a != "--"] if args.extra else []
    command = [sys.executable, "-m", "benchmarks"] + ([] if args.full else ["--quick"]) + extra
    sys.stdout.flush()
    result = subprocess.run(command, env=env, cwd=where or None)
    if result.returncode != 0:
        raise CommandError(f"the benchmark suite exited with status {result.returncode}")
    return 0
