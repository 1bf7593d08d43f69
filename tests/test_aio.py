"""levels3.aio: the asyncio API, run with asyncio.run on every store kind."""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import levels3
import levels3.aio

STUB = Path(levels3.__file__).resolve().parent / "_native.pyi"


class SlowWalStore:
    """Delegates to the real store; each WAL upload (a synced write's PUT) takes `delay` seconds."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.wal_puts = 0
        self.opening_delay = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        if ".log/" in key:
            self.wal_puts += 1
            time.sleep(self.delay)
        return self.inner.put(key, data, **kwargs)

    def head(self, key: str) -> Any:
        time.sleep(self.opening_delay)
        return self.inner.head(key)


def test_get_put_delete_sync_and_close(db_location) -> None:
    async def main() -> None:
        db = await levels3.aio.open(db_location.url, create_if_missing=True, **db_location.options)
        assert isinstance(db, levels3.aio.AsyncDB) and not db.closed
        await db.put(b"a", b"1")
        await db.put(b"b", bytearray(b"2"), sync=True)
        assert await db.get(b"a") == b"1"
        assert await db.get(b"b") == b"2"
        assert await db.get(b"missing") is None
        assert await db.get(b"missing", b"default") == b"default"
        await db.delete(b"a", sync=True)
        assert await db.get(b"a") is None
        await db.sync()
        stats = await db.stats()
        assert stats["requests"]["put"] > 0
        assert (await db.get_property(b"leveldb.num-files-at-level0")) is not None
        assert await db.approximate_sizes((b"a", b"z")) == [await db.approximate_size(b"a", b"z")]
        await db.compact_range()
        await db.close()
        assert db.closed and db.db.closed
        await db.close()  # idempotent

    asyncio.run(main())
    with db_location.open() as db:  # what the async API wrote is in the store
        assert list(db) == [(b"b", b"2")]


def test_async_with_and_write_batches(tmp_path) -> None:
    url = str(tmp_path / "db")

    async def main() -> None:
        async with levels3.aio.open(url, create_if_missing=True) as db:
            async with db.write_batch(sync=True) as batch:
                batch.put(b"a", b"1")
                batch.put(b"b", b"2")
                batch.delete(b"a")
                assert batch.approximate_size() > 0
            assert [k async for k, _ in db.iterator()] == [b"b"]
            with pytest.raises(ZeroDivisionError):
                async with db.write_batch(transaction=True) as batch:
                    batch.put(b"c", b"3")
                    1 / 0
            assert await db.get(b"c") is None  # a transaction that raised wrote nothing
            batch = db.write_batch()
            batch.put(b"d", b"4")
            other = db.write_batch()
            other.put(b"e", b"5")
            batch.append(other)
            await batch.write()
            assert await db.get(b"d") == b"4" and await db.get(b"e") == b"5"
        assert db.closed

    asyncio.run(main())


ITERATOR_CASES = [
    {},
    {"reverse": True},
    {"start": b"k00100", "stop": b"k02000"},
    {"start": b"k00100", "stop": b"k02000", "include_start": False, "include_stop": True},
    {"start": b"k00100", "stop": b"k02000", "reverse": True, "include_stop": True},
    {"prefix": b"k01"},
    {"prefix": b"k01", "reverse": True},
    {"include_value": False},
    {"include_key": False},
    {"include_key": False, "include_value": False},
    {"verify_checksums": True, "fill_cache": False},
    {"start": b"zzz"},
]


def test_iterator_yields_what_the_sync_iterator_yields_for_every_keyword(tmp_path) -> None:
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True) as db:
        for i in range(3000):  # several batches
            db.put(b"k%05d" % i, b"v%d" % i)
        expected = [list(db.iterator(**case)) for case in ITERATOR_CASES]

    async def main() -> list[list[Any]]:
        async with levels3.aio.open(url) as db:
            results = []
            for case in ITERATOR_CASES:
                results.append([item async for item in db.iterator(**case)])
            results.append([item async for item in db])  # __aiter__: the whole database
            return results

    results = asyncio.run(main())
    assert results[:-1] == expected
    assert results[-1] == expected[0]


def test_an_iterator_left_early_is_closed_by_async_with(tmp_path) -> None:
    async def main() -> None:
        async with levels3.aio.open(str(tmp_path / "db"), create_if_missing=True) as db:
            for i in range(100):
                await db.put(b"k%03d" % i, b"v")
            async with db.iterator(include_value=False) as it:
                async for key in it:
                    assert key == b"k000"
                    break
            with pytest.raises(RuntimeError, match="closed"):
                await it.__anext__()  # as a closed sync iterator
            await it.close()  # idempotent
            it = db.iterator(start=b"k098")
            assert [k async for k, _ in it] == [b"k098", b"k099"]
            assert [k async for k, _ in it] == []  # exhausted stays exhausted, as in a `for`

    asyncio.run(main())


def test_iterator_keywords_are_those_of_the_sync_api() -> None:
    tree = ast.parse(STUB.read_text())
    db_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "NativeDB")
    sync = next(f for f in db_class.body if isinstance(f, ast.FunctionDef) and f.name == "iterator")
    sync_keywords = [(a.arg, ast.literal_eval(d)) for a, d in zip(sync.args.kwonlyargs, sync.args.kw_defaults)]
    import inspect

    for cls in (levels3.aio.AsyncDB, levels3.aio.AsyncPrefixedDB, levels3.aio.AsyncSnapshot):
        params = inspect.signature(cls.iterator).parameters
        assert [(p.name, p.default) for p in params.values() if p.kind is p.KEYWORD_ONLY] == sync_keywords


class CountingPool(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that counts the calls handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.calls = 0

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


def test_iterator_steps_are_batched_not_one_thread_hop_per_key(tmp_path) -> None:
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True) as db:
        for i in range(20_000):
            db.put(b"k%06d" % i, b"v")

    async def main(pool: CountingPool) -> int:
        db = levels3.aio.AsyncDB(levels3.DB(url), executor=pool)
        before = pool.calls
        count = 0
        async for _ in db.iterator():
            count += 1
        hops = pool.calls - before
        assert count == 20_000
        await db.close()
        return hops

    with CountingPool() as pool:
        hops = asyncio.run(main(pool))
    assert hops <= 25, hops  # 16, 64, 256, then 1,024 entries per hop: 24 hops for 20,000 keys


def test_large_values_are_fetched_in_smaller_batches(tmp_path) -> None:
    """Entries are read ahead by about 1 MiB at most (after the first 16), not 1,024 whatever their size."""
    url = str(tmp_path / "db")
    value = b"x" * (256 * 1024)
    with levels3.DB(url, create_if_missing=True) as db:
        for i in range(40):
            db.put(b"k%03d" % i, value)

    async def main(pool: CountingPool) -> int:
        async with levels3.aio.AsyncDB(levels3.DB(url), executor=pool) as db:
            before = pool.calls
            assert len([k async for k, _ in db.iterator()]) == 40
            return pool.calls - before

    with CountingPool() as pool:
        hops = asyncio.run(main(pool))
    assert hops >= 7, hops  # 16 entries, then 4 per hop (1 MiB): 7 hops and the one that finds the end


def test_the_event_loop_runs_while_a_synced_write_waits_for_the_store(tmp_path) -> None:
    stores: list[SlowWalStore] = []

    def wrap(inner: Any) -> SlowWalStore:
        stores.append(SlowWalStore(inner, delay=0.3))
        return stores[-1]

    async def main() -> int:
        async with levels3.aio.open(str(tmp_path / "db"), create_if_missing=True, wrap_store=wrap) as db:
            ticks = 0

            async def heartbeat() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            beat = asyncio.ensure_future(heartbeat())
            await db.put(b"k", b"v", sync=True)  # one WAL PUT of 0.3 s
            beat.cancel()
            return ticks

    assert asyncio.run(main()) >= 5  # a blocked loop would tick once, after the put


def test_concurrent_synced_writes_from_tasks_share_uploads(tmp_path) -> None:
    stores: list[SlowWalStore] = []

    def wrap(inner: Any) -> SlowWalStore:
        stores.append(SlowWalStore(inner, delay=0.05))
        return stores[-1]

    url = str(tmp_path / "db")

    async def main() -> int:
        async with levels3.aio.open(url, create_if_missing=True, wrap_store=wrap) as db:
            before = stores[0].wal_puts
            await asyncio.gather(*(db.put(b"k%02d" % i, b"v", sync=True) for i in range(32)))
            return stores[0].wal_puts - before

    puts = asyncio.run(main())
    assert puts <= 8, puts  # 32 synced writes in flight together: a few group commits, not 32 PUTs
    with levels3.DB(url) as db:
        assert sum(1 for _ in db) == 32


def test_snapshots_and_prefixed_views(tmp_path) -> None:
    async def main() -> None:
        async with levels3.aio.open(str(tmp_path / "db"), create_if_missing=True) as db:
            await db.put(b"user:1", b"ann")
            await db.put(b"user:2", b"bob")
            snap = await db.snapshot()
            async with db.snapshot() as snap2:
                await db.delete(b"user:1")
                await db.put(b"user:3", b"cy")
                assert await snap.get(b"user:1") == b"ann"
                assert await snap2.get(b"user:3") is None
                assert [k async for k, _ in snap2.iterator(prefix=b"user:")] == [b"user:1", b"user:2"]
                assert [k async for k in snap2.iterator(include_value=False, reverse=True)] == [b"user:2", b"user:1"]
            with pytest.raises(RuntimeError):
                await snap2.get(b"user:2")  # released on leaving `async with`, as the sync snapshot
            await snap.release()

            users = db.prefixed_db(b"user:")
            assert users.prefix == b"user:" and users.db is db
            await users.put(b"4", b"dee")
            assert await db.get(b"user:4") == b"dee"
            assert [k async for k in users.iterator(include_value=False)] == [b"2", b"3", b"4"]
            async with users.write_batch() as batch:
                batch.delete(b"2")
            await users.delete(b"3")
            assert [v async for v in users.iterator(include_key=False)] == [b"dee"]
            async with users.snapshot() as view:
                await users.put(b"5", b"eve")
                assert await view.get(b"5") is None and await users.get(b"5") == b"eve"
            assert await users.prefixed_db(b"5").get(b"") == b"eve"

    asyncio.run(main())


def test_errors_are_those_of_the_sync_api(tmp_path) -> None:
    url = str(tmp_path / "db")

    async def main() -> None:
        with pytest.raises(levels3.Error, match="does not exist"):
            await levels3.aio.open(str(tmp_path / "missing"))
        async with levels3.aio.open(url, create_if_missing=True) as db:
            with pytest.raises(TypeError):
                await db.get("text")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                await db.put(b"k", None)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                async for _ in db.iterator(start="a"):  # type: ignore[arg-type]
                    pass
            with pytest.raises(levels3.LockError):
                await levels3.aio.open(url)  # one writer at a time
            await db.put(b"k", b"v", sync=True)
            async with levels3.aio.open(url, read_only=True) as follower:
                assert await follower.get(b"k") == b"v"
                with pytest.raises(levels3.ReadOnlyError):
                    await follower.put(b"k", b"w")
            it = db.iterator()
            assert await it.__anext__() == (b"k", b"v")
        for call in (db.get(b"k"), db.put(b"k", b"v"), db.delete(b"k"), db.sync()):
            with pytest.raises(RuntimeError, match="closed"):
                await call
        with pytest.raises(RuntimeError, match="closed"):
            db.iterator()
        with pytest.raises(RuntimeError, match="closed"):
            await it.__anext__()  # an iterator open at close is closed with the database
        with pytest.raises(RuntimeError, match="closed"):
            await db.snapshot()
        with pytest.raises(RuntimeError, match="closed"):
            db.write_batch()
        with pytest.raises(ValueError):
            levels3.aio.AsyncDB(levels3.DB(url), max_workers=0)

    asyncio.run(main())


def test_close_waits_for_calls_in_flight_and_refuses_later_ones(tmp_path) -> None:
    stores: list[SlowWalStore] = []

    def wrap(inner: Any) -> SlowWalStore:
        stores.append(SlowWalStore(inner, delay=0.1))
        return stores[-1]

    url = str(tmp_path / "db")

    async def main() -> tuple[list[Any], list[Any]]:
        db = await levels3.aio.open(url, create_if_missing=True, wrap_store=wrap)
        early = [asyncio.ensure_future(db.put(b"early%02d" % i, b"v", sync=True)) for i in range(10)]
        await asyncio.sleep(0)  # the puts are in the pool
        closing = asyncio.ensure_future(db.close())
        await asyncio.sleep(0)
        late = [asyncio.ensure_future(db.put(b"late%02d" % i, b"v")) for i in range(3)]
        await closing
        return (await asyncio.gather(*early, return_exceptions=True),
                await asyncio.gather(*late, return_exceptions=True))

    early, late = asyncio.run(main())
    assert early == [None] * 10
    assert all(isinstance(r, RuntimeError) for r in late), late
    with levels3.DB(url) as db:
        assert [k for k, _ in db] == [b"early%02d" % i for i in range(10)]


def test_a_cancelled_open_does_not_leave_the_database_locked(tmp_path) -> None:
    url = str(tmp_path / "db")
    levels3.DB(url, create_if_missing=True).close()
    opened = threading.Event()

    class SlowOpen(SlowWalStore):
        def get_with_info(self, key: str) -> Any:  # the open's read of CURRENT
            opened.set()
            time.sleep(0.3)
            return self.inner.get_with_info(key)

    async def main() -> None:
        task = asyncio.ensure_future(levels3.aio.open(url, wrap_store=lambda s: SlowOpen(s, 0)))
        deadline = time.monotonic() + 20
        while not opened.is_set():
            assert time.monotonic() < deadline, "the open never read CURRENT"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # The open finished in its thread after the cancel and was closed there, releasing the lock.
    with levels3.DB(url, lock_timeout=20) as db:
        assert not db.closed


def test_a_pool_of_your_own_is_used_and_left_running(tmp_path) -> None:
    async def main(pool: CountingPool) -> None:
        async with levels3.aio.open(str(tmp_path / "db"), create_if_missing=True, executor=pool) as db:
            await db.put(b"k", b"v")
        assert pool.calls >= 3  # open, put, close
        assert pool.submit(lambda: 42).result() == 42  # not shut down by close()

    with CountingPool() as pool:
        asyncio.run(main(pool))
