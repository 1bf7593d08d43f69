"""A tour of levels3 on the embedded local-directory store (no S3 account needed).

    python -m levels3.demo [DIRECTORY] [--keys N]

Without DIRECTORY the database lives in a temporary directory, removed at the end; with one, it stays there
for the ``levels3`` command line to look at. The same calls work unchanged on ``s3://bucket/prefix``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import levels3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m levels3.demo",
        description="A tour of levels3 on the local-directory store: writes, a batch, a snapshot, then a reopen "
                    "with an empty cache, printing the store requests each step made.",
    )
    parser.add_argument("directory", nargs="?",
                        help="where to keep the database (default: a temporary directory, removed at the end)")
    parser.add_argument("--keys", type=int, default=100_000, help="keys written by the batch (default 100,000)")
    args = parser.parse_args(argv)
    if args.keys < 1:
        parser.error("--keys must be at least 1")
    return args


def _requests(stats: dict[str, Any]) -> str:
    return ", ".join(f"{n} {kind.upper()}" for kind, n in stats["requests"].items() if n) or "none"


def tour(where: Path, keys: int) -> None:
    url = where.resolve().as_uri()  # file:///absolute/path: what the levels3 command line accepts
    print(f"levels3 {levels3.__version__} (LevelDB {levels3.__leveldb_version__}); database at {url}")

    with levels3.DB(str(where), create_if_missing=True) as db:
        db.put(b"greeting", b"hello, object storage", sync=True)  # in the store when put returns
        print("get:", db.get(b"greeting"))

        started = time.perf_counter()
        with db.write_batch() as batch:
            for i in range(keys):
                batch.put(b"user:%06d" % i, b"%d" % (i * i))
        print(f"wrote {keys:,} keys in one batch in {time.perf_counter() - started:.2f} s")

        users = db.prefixed_db(b"user:")
        print("first three users:", list(users.iterator(include_value=False))[:3])
        with db.snapshot() as snap:
            db.delete(b"user:000000")
            print("deleted user:000000; the snapshot still has it:", snap.get(b"user:000000"))
        stats = db.stats()
        print(f"before close: {_requests(stats)}, {stats['bytes_uploaded']:,} bytes uploaded: the lock, the "
              "database's first version and the synced put. The batch was not synced: its keys are in the local "
              "write-ahead log, uploaded at the next sync, memtable flush or close.")
    stats = db.stats()
    print(f"after close: {_requests(stats)}, {stats['bytes_uploaded']:,} bytes uploaded in all: close uploaded "
          "what was left (the log's unsynced bytes, and any table a memtable flush wrote) and released the lock.")

    with levels3.DB(str(where)) as db:  # a fresh, empty cache: everything comes from the store
        print("reopened with an empty cache:", db.get(b"greeting"), "/", sum(1 for _ in db), "keys")
        print(f"fetched {db.stats()['bytes_downloaded']:,} bytes from the store")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.directory is not None:
        where = Path(args.directory)
        tour(where, args.keys)
        url = where.resolve().as_uri()
        print(f"the database stays in {where}; look at it with:\n"
              f"  levels3 info {shlex.quote(url)}\n  levels3 scan {shlex.quote(url)} --prefix user: --limit 3")
        return 0
    with tempfile.TemporaryDirectory(prefix="levels3-demo-") as scratch:
        tour(Path(scratch) / "db", args.keys)
    print("the temporary database was removed; give a DIRECTORY to keep one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
