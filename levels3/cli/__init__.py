"""The ``levels3`` command line: look into, move, check and clean a database in a store.

Exit codes: 0 success, 1 operational error (one line on stderr), 2 usage error,
141 (128 + SIGPIPE, quietly) when the reader of its output went away, as in
``levels3 scan URL | head -1``. ``main(argv)`` returns the exit code;
``python -m levels3`` and the ``levels3`` script call it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from ._common import CommandError, add_store_options

EPILOG = """\
URL is s3://bucket/prefix, file:///path or a plain path (a local directory in levels3's object layout;
a plain LevelDB directory comes in with `levels3 import`). Commands that only read (get, scan, info, verify,
export, checkpoints, lock, a gc dry run) take no lock and write nothing: they work beside a live writer.
Commands that write take the writer lock (--lock-timeout waits for it).
Credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
shared files or an instance role. Exit codes: 0 ok, 1 error (message on stderr), 2 bad usage.

examples:
  levels3 put s3://bucket/db greeting hello --create --region eu-west-1
  levels3 scan s3://bucket/db --prefix user: --limit 10
  levels3 import ./plyvel-dir s3://bucket/db --endpoint-url http://localhost:9000 --path-style
  levels3 info s3://bucket/db --json
  levels3 gc s3://bucket/db --grace 86400 --delete
  levels3 checkpoint s3://bucket/db nightly && levels3 restore s3://bucket/db nightly s3://bucket/db-copy
"""


def _common_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log levels3 activity to stderr: -v INFO, -vv DEBUG (every store request)")
    add_store_options(parent)
    return parent


def build_parser() -> argparse.ArgumentParser:
    from . import bench, checkpoints, data, inspect, transfer

    parser = argparse.ArgumentParser(
        prog="levels3",
        description="levels3: LevelDB with its data in S3-compatible object storage. Read and write keys, "
                    "inspect, verify and clean a database, move plain LevelDB directories in and out, and make "
                    "databases from checkpoints.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log levels3 activity to stderr: -v INFO, -vv DEBUG (every store request)")
    parser.add_argument("--version", action="version", version=_version())
    parent = _common_parent()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    data.register(sub, parent)
    inspect.register(sub, parent)
    transfer.register(sub, parent)
    checkpoints.register(sub, parent)
    bench.register(sub, parent)
    return parser


def _version() -> str:
    try:
        import levels3

        return f"levels3 {levels3.__version__} (LevelDB {levels3.__leveldb_version__})"
    except Exception:  # pragma: no cover - the native module failed to import
        return "levels3"


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("levels3")
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _error(message: str) -> None:
    print(f"levels3: error: {message}", file=sys.stderr)


SIGPIPE_EXIT = 128 + 13  # what a shell reports for a command killed by SIGPIPE


def _reader_gone() -> int:
    """stdout's reader closed the pipe: exit as Unix tools do, without a message.

    The rest of the output can go nowhere; pointing stdout at /dev/null keeps Python's flush at exit from
    reporting the same broken pipe again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return SIGPIPE_EXIT


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    verbosity = getattr(args, "verbose", 0) or 0
    _setup_logging(verbosity)
    from ..errors import ConfigurationError, Error

    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that went away shows here, not later at exit
        return code
    except BrokenPipeError:  # before OSError: `levels3 scan ... | head` is not an error
        return _reader_gone()
    except CommandError as exc:
        if exc.code == 2:
            parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")
        _error(str(exc))
        return exc.code
    except ConfigurationError as exc:
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")
    except (Error, OSError) as exc:
        if verbosity >= 2:
            logging.getLogger("levels3.cli").debug("details", exc_info=True)
        _error(str(exc) or type(exc).__name__)
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:  # anything unexpected: one line, details only with -vv
        if verbosity >= 2:
            logging.getLogger("levels3.cli").debug("details", exc_info=True)
        _error(f"{type(exc).__name__}: {exc}")
        return 1
    return 0  # pragma: no cover


__all__ = ["main", "build_parser"]
