"""A tour of levels3 on the embedded local-directory store (no S3 account needed).

    python -m levels3.demo [DIRECTORY]

The same calls work unchanged on ``s3://bucket/prefix``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import levels3


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    where = args[0] if args else os.path.join(tempfile.mkdtemp(prefix="levels3-demo-"), "db")
    print(f"levels3 {levels3.__version__} (LevelDB {levels3.__leveldb_version__}); database at file://{where}")

    with levels3.DB(where, create_if_missing=True) as db:
        db.put(b"greeting", b"hello, object storage", sync=True)  # in the store when put returns
        print("get:", db.get(b"greeting"))

        started = time.perf_counter()
        with db.write_batch() as batch:
            for i in range(100_000):
                batch.put(b"user:%06d" % i, b"%d" % (i * i))
        print(f"wrote 100,000 keys in one batch in {time.perf_counter() - started:.2f} s")

        users = db.prefixed_db(b"user:")
        print("first three users:", list(users.iterator(include_value=False))[:3])
        with db.snapshot() as snap:
            db.delete(b"user:000000")
            print("deleted user:000000; the snapshot still has it:", snap.get(b"user:000000"))
        stats = db.stats()
        print(f"store requests: {stats['requests']}; uploaded {stats['bytes_uploaded']:,} bytes")

    with levels3.DB(where, cache_dir=None) as db:  # a fresh, empty cache: everything comes from the store
        print("reopened with an empty cache:", db.get(b"greeting"), "/", sum(1 for _ in db), "keys")
        print(f"fetched {db.stats()['bytes_downloaded']:,} bytes from the store")
    return 0


if __name__ == "__main__":
    sys.exit(main())
