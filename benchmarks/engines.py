"""The engines under test, behind one small interface the workloads drive.

Each engine opens a named database in its store, and runs whole loops (fill, read, scan, synced writes) so
that the loop overhead is the same Python ``for`` for every engine (SlateDB's API is async: its loops run as
one coroutine each on one event loop).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, Iterable, Sequence

REQUEST_KINDS = ("get", "put", "list", "delete", "head")


def _synced_threads(put_sync, keys: Sequence[bytes], value: bytes, threads: int, seconds: float) -> int:
    """Synced puts from `threads` threads for `seconds`; returns how many completed."""
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(t: int) -> None:
        start.wait()
        i, n = t, 0
        while time.perf_counter() < deadline[0]:
            put_sync(keys[i % len(keys)], value)
            i += threads
            n += 1
        counts[t] = n

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    deadline[0] = time.perf_counter() + seconds
    start.wait()
    for th in pool:
        th.join()
    return sum(counts)


class Levels3:
    """levels3 on the local-directory store (`root` a directory) or on S3 (`root` an s3:// URL)."""

    def __init__(self, root: str, **store_options: Any) -> None:
        import levels3

        self.levels3, self.root, self.options = levels3, root, store_options
        self.db: Any = None  # the open database of whichever engine

    def open(self, name: str, cache_dir: str) -> None:
        self.db = self.levels3.DB(f"{self.root}/{name}", create_if_missing=True, cache_dir=cache_dir, **self.options)

    def close(self) -> None:
        self.db.close()

    def fill(self, keys: Iterable[bytes], values: Sequence[bytes]) -> None:
        put = self.db.put
        for i, key in enumerate(keys):
            put(key, values[i & 1023])

    def read(self, keys: Iterable[bytes]) -> int:
        get = self.db.get
        return sum(get(key) is not None for key in keys)

    def scan(self) -> int:
        n = 0
        for _ in self.db.iterator():
            n += 1
        return n

    def synced(self, keys: Sequence[bytes], value: bytes, threads: int, seconds: float) -> int:
        put = self.db.put
        return _synced_threads(lambda k, v: put(k, v, sync=True), keys, value, threads, seconds)

    def stats(self) -> dict[str, Any]:
        return self.db.stats()

    def leveldb_stats(self) -> str:
        return (self.db.get_property(b"leveldb.stats") or b"").decode()


class Plyvel(Levels3):
    """plyvel (LevelDB) on the local disk; no store, so no requests."""

    def __init__(self, root: str) -> None:
        import plyvel

        self.plyvel, self.root = plyvel, root
        self.db = None

    def open(self, name: str, cache_dir: str) -> None:
        self.db = self.plyvel.DB(f"{self.root}/{name}", create_if_missing=True)

    def stats(self) -> dict[str, Any]:
        return {}


class SlateDB:
    """slatedb (PyPI, async uniffi bindings) on a local directory or an S3 endpoint; requests from its metrics."""

    def __init__(self, root: str, endpoint_url: str | None = None, bucket: str | None = None) -> None:
        import slatedb.uniffi as sdb

        self.sdb, self.root, self.endpoint_url, self.bucket = sdb, root, endpoint_url, bucket
        self.loop = asyncio.new_event_loop()
        self.db: Any = None
        self.recorder: Any = None

    def _store(self):
        sdb = self.sdb
        if self.endpoint_url is None:
            builder = sdb.ObjectStoreBuilder(sdb.ObjectStoreType.LOCAL)
            builder.with_config("local_path", self.root)
        else:
            builder = sdb.ObjectStoreBuilder(sdb.ObjectStoreType.S3)
            for key, value in {
                "bucket": self.bucket,
                "endpoint": self.endpoint_url,
                "allow_http": "true",
                "region": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                "access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
                "secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
                "virtual_hosted_style_request": "false",
            }.items():
                builder.with_config(key, value)
        return builder.build()

    def open(self, name: str, cache_dir: str) -> None:
        # SlateDB keeps its block cache in memory (no disk cache by default), so a new handle is a cold cache.
        builder = self.sdb.DbBuilder(name, self._store())
        self.recorder = self.sdb.DefaultMetricsRecorder()
        builder.with_metrics_recorder(self.recorder)
        self.db = self.loop.run_until_complete(builder.build())

    def close(self) -> None:
        self.loop.run_until_complete(self.db.shutdown())

    def fill(self, keys: Iterable[bytes], values: Sequence[bytes]) -> None:
        async def run() -> None:
            put = self.db.put
            for i, key in enumerate(keys):
                await put(key, values[i & 1023])

        self.loop.run_until_complete(run())

    def read(self, keys: Iterable[bytes]) -> int:
        async def run() -> int:
            get, n = self.db.get, 0
            for key in keys:
                n += (await get(key)) is not None
            return n

        return self.loop.run_until_complete(run())

    def scan(self) -> int:
        async def run() -> int:
            it = await self.db.scan(self.sdb.KeyRange(start=None, start_inclusive=True, end=None, end_inclusive=False))
            n = 0
            while batch := await it.next_batch(1024):
                n += len(batch)
            return n

        return self.loop.run_until_complete(run())

    def synced(self, keys: Sequence[bytes], value: bytes, threads: int, seconds: float) -> int:
        async def worker(t: int, deadline: float) -> int:
            i, n = t, 0
            while time.perf_counter() < deadline:
                handle = await self.db.put(keys[i % len(keys)], value)
                await handle.await_durable()
                i, n = i + threads, n + 1
            return n

        async def run() -> int:
            deadline = time.perf_counter() + seconds
            return sum(await asyncio.gather(*(worker(t, deadline) for t in range(threads))))

        return self.loop.run_until_complete(run())

    def stats(self) -> dict[str, Any]:
        requests = dict.fromkeys(REQUEST_KINDS, 0)
        for metric in self.recorder.metrics_by_name("slatedb.object_store.request_count"):
            api = {label.key: label.value for label in metric.labels}.get("api")
            if api in requests:
                requests[api] += metric.value[0]
        return {"requests": requests}

    def leveldb_stats(self) -> str:
        return ""
