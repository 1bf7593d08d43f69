"""bench: run the benchmark suite shipped as ``levels3.bench`` (the top-level ``benchmarks/`` of a checkout)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType
from typing import Any

from ._common import CommandError


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bench", parents=[parent], help="run the benchmark suite's quick mode",
        description="Run the benchmark suite (levels3 against plyvel and slatedb, on the local store and a "
                    "moto S3 server on 127.0.0.1), in its quick mode unless --full; --aio compares levels3.aio "
                    "with the sync API instead. Arguments after `--` go to the suite "
                    "(`levels3 bench -- --help` lists them). Needs `pip install 'levels3[bench]'`.")
    p.add_argument("--full", action="store_true", help="the full sizes (about 10 minutes on 2 cores)")
    p.add_argument("--aio", action="store_true", help="levels3.aio against the sync API, from one event loop")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="arguments for the suite (after --)")
    p.set_defaults(func=cmd_bench)


def _checkout_root() -> str:
    # levels3/cli/bench.py -> the directory holding levels3/ (and benchmarks/ in a source checkout)
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_suite(module: str) -> ModuleType:
    """levels3.bench.<module>; in a checkout installed before the suite was packaged, benchmarks.<module>."""
    try:
        return importlib.import_module(f"levels3.bench.{module}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("levels3.bench", f"levels3.bench.{module}"):
            raise
    root = _checkout_root()
    if not os.path.isfile(os.path.join(root, "benchmarks", f"{module}.py")):
        raise CommandError("the benchmark suite is missing from this installation (levels3.bench); "
                           "reinstall levels3")
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"benchmarks.{module}")


def cmd_bench(args: argparse.Namespace) -> int:
    extra = [a for a in args.extra if a != "--"] if args.extra else []
    suite = load_suite("aio" if args.aio else "suite")
    sys.stdout.flush()
    # The suite reports its own failures (one line each); its status is ours.
    return int(suite.main(([] if args.full else ["--quick"]) + extra) or 0)
