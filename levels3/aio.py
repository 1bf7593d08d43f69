"""levels3 for asyncio: the same database, awaited.

    import levels3.aio

    async with levels3.aio.open("s3://bucket/db", create_if_missing=True) as db:
        await db.put(b"key", b"value", sync=True)
        value = await db.get(b"key")
        async with db.write_batch(transaction=True) as batch:
            batch.put(b"a", b"1")           # buffered in memory: no await
        async for key, value in db.iterator(prefix=b"user:"):
            ...
        async with db.snapshot() as snap:
            await snap.get(b"key")

``open`` takes every keyword of :class:`levels3.DB` and returns an :class:`AsyncDB`, both awaitable
(``db = await levels3.aio.open(...)``) and usable with ``async with``.

How it runs: every LevelDB call already runs without the GIL, so the blocking ones (open, get, put, delete,
a batch's write, sync, iterator steps, snapshot creation, compaction, close) go to a thread pool and the
event loop keeps running. Each ``AsyncDB`` has its own bounded pool (``max_workers`` threads, default
:data:`DEFAULT_MAX_WORKERS`), so a store that is slow for one database never holds up another's calls, and
``close()`` knows exactly which calls are still running: it waits for them, then closes the database.
Pass ``executor=`` to use a pool of your own instead (it is then left running at close). Concurrent synced
writes from many tasks share one upload (LevelDB's group commit), up to the pool's size at a time.

A thread hop costs far more than a warm LevelDB read (tens of microseconds against one or two), so hops are
shared: an iterator fetches its entries in batches (16 first, then up to 1,024 entries or about 1 MiB per
hop) and closes the LevelDB iterator as soon as the range is exhausted; the gets that tasks make in the same
turn of the event loop go to the pool together, 8 per hop (hops still run side by side, so gets that wait
for the store overlap). Reading ahead changes nothing: a LevelDB iterator reads the state the database had
when it was created. Puts and deletes take one hop each, so that synced ones can form groups.

Exceptions are those of the synchronous API (``levels3.IOError``, ``LockError``, ``TypeError``, and
``RuntimeError`` on a closed database, ...). Cancelling an ``await`` does not stop the LevelDB call already
running in the pool; ``close()`` still waits for it. One iterator is stepped by one task at a time (a second
task stepping it meanwhile gets RuntimeError); everything else may overlap.
An ``AsyncDB`` belongs to one event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from itertools import islice
from types import TracebackType
from typing import TYPE_CHECKING, Any, AsyncGenerator, Awaitable, Callable, Generator, Generic, Protocol, TypeVar

from ._native import Iterator, PrefixedDB, Snapshot, WriteBatch
from .database import DB

if TYPE_CHECKING:
    from typing_extensions import Buffer, ParamSpec, Self

    P = ParamSpec("P")

T = TypeVar("T")


class _Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)

#: Threads of an AsyncDB's own pool: enough for many concurrent synced writers to share an upload, while an
#: idle pool costs nothing (ThreadPoolExecutor starts threads only when calls wait for one).
DEFAULT_MAX_WORKERS = 32

_FIRST_BATCH = 16  # entries of an iterator's first hop: `async for ...: break` reads little ahead
_MAX_BATCH = 1024  # entries per hop at most
_BATCH_BYTES = 1 << 20  # about this many key and value bytes per hop at most
_GETS_PER_HOP = 8  # concurrent gets sent to the pool together (see _Runner.get)

__all__ = ["open", "AsyncDB", "AsyncPrefixedDB", "AsyncSnapshot", "AsyncWriteBatch", "AsyncIterator",
           "DEFAULT_MAX_WORKERS"]


class _Runner:
    """Runs a database's blocking calls in its pool, and lets close() wait for the ones in flight."""

    def __init__(self, db: DB, executor: concurrent.futures.Executor, owns_executor: bool) -> None:
        self.db = db
        self.executor = executor
        self.owns_executor = owns_executor
        self.pending: set[concurrent.futures.Future[Any]] = set()
        self.closing: asyncio.Future[None] | None = None
        self.gets: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]] = []

    def _submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        future = self.executor.submit(fn, *args, **kwargs)
        self.pending.add(future)
        future.add_done_callback(self.pending.discard)
        return future

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.closing is not None:
            # Closing or closed: wait for the close, then let the synchronous object raise its own error
            # (a closed levels3 object refuses at once, without blocking).
            await asyncio.shield(self.closing)
            return fn(*args, **kwargs)
        return await asyncio.wrap_future(self._submit(fn, *args, **kwargs))

    async def get(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A get, sent to the pool together with the others made in the same turn of the event loop.

        A warm get takes microseconds, a thread hop much longer: concurrent tasks' gets go up to
        _GETS_PER_HOP per hop (hops still run side by side, so gets that wait for the store overlap).
        """
        if self.closing is not None:
            return await self.call(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        result = loop.create_future()
        if not self.gets:
            loop.call_soon(self._send_gets, loop)
        self.gets.append((fn, args, kwargs, result))
        return await result

    def _send_gets(self, loop: asyncio.AbstractEventLoop) -> None:
        gets, self.gets = self.gets, []
        for start in range(0, len(gets), _GETS_PER_HOP):
            chunk = gets[start:start + _GETS_PER_HOP]
            if self.closing is not None:  # close() began in this turn: its rules, one by one
                for fn, args, kwargs, result in chunk:
                    _chain(asyncio.ensure_future(self.call(fn, *args, **kwargs)), result)
                continue
            done = self._submit(_run_gets, [(fn, args, kwargs) for fn, args, kwargs, _ in chunk])
            done.add_done_callback(functools.partial(_hand_back_gets, loop, chunk))

    def check_open(self) -> None:
        """Raise the synchronous API's error at once if the database is closed (or closing)."""
        if self.closing is not None or self.db.closed:
            raise RuntimeError("Database is closed")

    async def close(self) -> None:
        if self.closing is None:
            self.closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self.closing)

    async def _close(self) -> None:
        in_flight = [asyncio.wrap_future(f) for f in list(self.pending)]
        if in_flight:
            await asyncio.wait(in_flight)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.db.close)
        finally:
            if self.owns_executor:
                self.executor.shutdown(wait=False)


def _run_gets(calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]) -> list[tuple[bool, Any]]:
    """In a pool thread: each get's (succeeded, value or exception), so one failure fails only its caller."""
    outcomes: list[tuple[bool, Any]] = []
    for fn, args, kwargs in calls:
        try:
            outcomes.append((True, fn(*args, **kwargs)))
        except Exception as exc:  # noqa: BLE001 - handed to the caller that made this get
            outcomes.append((False, exc))
    return outcomes


def _hand_back_gets(loop: asyncio.AbstractEventLoop, chunk: list[tuple[Any, Any, Any, asyncio.Future[Any]]],
                    done: concurrent.futures.Future[list[tuple[bool, Any]]]) -> None:
    """In the pool thread that ran the gets: one wake-up of the loop for the whole chunk."""
    try:
        loop.call_soon_threadsafe(_deliver_gets, chunk, done)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting any more


def _deliver_gets(chunk: list[tuple[Any, Any, Any, asyncio.Future[Any]]],
                  done: concurrent.futures.Future[list[tuple[bool, Any]]]) -> None:
    try:
        outcomes = done.result()
    except BaseException as exc:  # noqa: BLE001 - the hop itself failed (pool shut down): every caller sees it
        outcomes = [(False, exc)] * len(chunk)
    for (_, _, _, result), (ok, value) in zip(chunk, outcomes):
        if result.cancelled():
            continue
        if ok:
            result.set_result(value)
        else:
            result.set_exception(value)


def _chain(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    def copy(f: asyncio.Future[Any]) -> None:
        if target.cancelled():
            return
        if f.cancelled():
            target.cancel()
        elif f.exception() is not None:
            target.set_exception(f.exception())  # type: ignore[arg-type]
        else:
            target.set_result(f.result())

    source.add_done_callback(copy)


class _Opener(Generic[C]):
    """The result of a call that opens something: awaitable, or an async context manager closing it."""

    def __init__(self, opening: Callable[[], Awaitable[C]]) -> None:
        self._opening = opening
        self._value: C | None = None

    def __await__(self) -> Generator[Any, None, C]:
        return self._opening().__await__()

    async def __aenter__(self) -> C:
        self._value = await self._opening()
        return self._value

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        value, self._value = self._value, None
        if value is not None:
            await value.close()


def _item_bytes(item: Any) -> int:
    if isinstance(item, tuple):
        return len(item[0]) + len(item[1])
    return len(item) if item is not None else 0


class AsyncIterator:
    """``async for`` over a key range; made by ``iterator()`` of a database, prefixed view or snapshot.

    Forward only (no ``seek``/``prev``: entries are read ahead in batches). Yields what the synchronous
    iterator yields for the same keywords: ``(key, value)``, ``key``, ``value`` or ``None``. Close it (or use
    ``async with``) when you stop before the end; at the end it closes itself. One task steps it at a time.
    """

    def __init__(self, runner: _Runner, make: Callable[[], Iterator]) -> None:
        self._runner = runner
        self._make = make
        self._it: Iterator | None = None
        self._closed = False
        # An async generator steps fastest (about half the cost of an `async def __anext__` per entry here),
        # and refuses to be stepped by two tasks at once, as the LevelDB iterator under it must be.
        self._entries = self._generate()

    def _fetch(self, limit: int) -> tuple[list[Any], bool, BaseException | None]:
        """In a pool thread: up to `limit` entries, whether the range is exhausted, and an error met after them."""
        if self._it is None:
            self._it = self._make()
        items: list[Any] = []
        try:
            items.extend(islice(self._it, limit))  # entries read before an error are kept, as in a `for`
        except Exception as exc:  # noqa: BLE001 - raised after the entries before it, as the sync loop would
            return items, True, exc
        exhausted = len(items) < limit
        if exhausted:
            self._it.close()  # frees LevelDB's iterator (and the version it pins) now, not at GC
        return items, exhausted, None

    async def _generate(self) -> AsyncGenerator[Any, None]:
        runner, limit = self._runner, _FIRST_BATCH
        while True:
            if self._closed or runner.closing is not None or runner.db.closed:
                raise RuntimeError("Database or iterator is closed")  # as the sync iterator's next()
            items, exhausted, error = await runner.call(self._fetch, limit)
            for item in items:
                if self._closed or runner.closing is not None:
                    raise RuntimeError("Database or iterator is closed")
                yield item
            if error is not None:
                raise error
            if exhausted:
                if self._closed or runner.closing is not None:
                    raise RuntimeError("Database or iterator is closed")
                return
            per_entry = max(1, (_item_bytes(items[0]) + _item_bytes(items[-1])) // 2)
            limit = max(1, min(_MAX_BATCH, limit * 4, _BATCH_BYTES // per_entry))

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        return self._entries

    def __anext__(self) -> Awaitable[Any]:
        return self._entries.__anext__()

    async def close(self) -> None:
        """Release the LevelDB iterator (idempotent); stepping it afterwards raises RuntimeError."""
        self._closed = True
        if self._it is not None:
            it, self._it = self._it, None
            await self._runner.call(it.close)

    aclose = close

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class _Reader:
    """get and iterator over a synchronous DB, PrefixedDB or Snapshot."""

    _runner: _Runner
    _target: DB | PrefixedDB | Snapshot

    async def get(self, key: bytes, default: Any = None, *, verify_checksums: bool = False,
                  fill_cache: bool = True) -> Any:
        """The value stored under key, or default."""
        return await self._runner.get(self._target.get, key, default, verify_checksums=verify_checksums,
                                      fill_cache=fill_cache)

    def iterator(self, *, reverse: bool = False, start: bytes | None = None, stop: bytes | None = None,
                 include_start: bool = True, include_stop: bool = False, prefix: bytes | None = None,
                 include_key: bool = True, include_value: bool = True, verify_checksums: bool = False,
                 fill_cache: bool = True) -> AsyncIterator:
        """An async iterator over a key range, with the keywords (and meaning) of the synchronous one."""
        self._runner.check_open()  # as the synchronous call: a closed database refuses here
        target = self._target

        def make() -> Iterator:
            return target.iterator(reverse=reverse, start=start, stop=stop, include_start=include_start,
                                   include_stop=include_stop, prefix=prefix, include_key=include_key,
                                   include_value=include_value, verify_checksums=verify_checksums,
                                   fill_cache=fill_cache)

        return AsyncIterator(self._runner, make)

    def __aiter__(self) -> AsyncIterator:
        return self.iterator()


class AsyncWriteBatch:
    """Puts and deletes buffered in memory (no await), applied atomically by ``await write()`` or on leaving
    ``async with`` (as the synchronous batch: a ``transaction=True`` batch that raised writes nothing)."""

    def __init__(self, runner: _Runner, batch: WriteBatch) -> None:
        self._runner = runner
        self._batch = batch

    def put(self, key: bytes, value: Buffer) -> None:
        self._batch.put(key, value)

    def delete(self, key: bytes) -> None:
        self._batch.delete(key)

    def clear(self) -> None:
        self._batch.clear()

    def append(self, source: AsyncWriteBatch | WriteBatch) -> None:
        self._batch.append(source._batch if isinstance(source, AsyncWriteBatch) else source)

    def approximate_size(self) -> int:
        return self._batch.approximate_size()

    async def write(self) -> None:
        """Apply the batch atomically; it stays filled (as in plyvel)."""
        await self._runner.call(self._batch.write)

    async def __aenter__(self) -> Self:
        self._batch.__enter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._runner.call(self._batch.__exit__, exc_type, exc, tb)


class _Writer:
    """put, delete and write_batch over a synchronous DB or PrefixedDB."""

    _runner: _Runner
    _writable: DB | PrefixedDB

    async def put(self, key: bytes, value: Buffer, *, sync: bool = False) -> None:
        await self._runner.call(self._writable.put, key, value, sync=sync)

    async def delete(self, key: bytes, *, sync: bool = False) -> None:
        await self._runner.call(self._writable.delete, key, sync=sync)

    def write_batch(self, *, transaction: bool = False, sync: bool = False) -> AsyncWriteBatch:
        return AsyncWriteBatch(self._runner, self._writable.write_batch(transaction=transaction, sync=sync))


class AsyncSnapshot(_Reader):
    """A consistent read-only view (``await db.snapshot()`` or ``async with db.snapshot() as snap``)."""

    def __init__(self, runner: _Runner, snapshot: Snapshot) -> None:
        self._runner = runner
        self._target = self._snapshot = snapshot

    async def close(self) -> None:
        """Release the snapshot (idempotent)."""
        await self._runner.call(self._snapshot.close)

    release = close

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def _snapshot_opener(runner: _Runner, make: Callable[[], Snapshot]) -> _Opener[AsyncSnapshot]:
    async def opening() -> AsyncSnapshot:
        # GetSnapshot takes LevelDB's DB mutex, which a compaction may hold for a while: not on the loop.
        return AsyncSnapshot(runner, await runner.call(make))

    return _Opener(opening)


class AsyncPrefixedDB(_Reader, _Writer):
    """The keys of a database that start with ``prefix``, with the prefix stripped (``db.prefixed_db(p)``)."""

    def __init__(self, runner: _Runner, prefixed: PrefixedDB, db: AsyncDB) -> None:
        self._runner = runner
        self._target = self._writable = self._prefixed = prefixed
        self._db = db

    @property
    def db(self) -> AsyncDB:
        return self._db

    @property
    def prefix(self) -> bytes:
        return self._prefixed.prefix

    def snapshot(self) -> _Opener[AsyncSnapshot]:
        return _snapshot_opener(self._runner, self._prefixed.snapshot)

    def prefixed_db(self, prefix: bytes) -> AsyncPrefixedDB:
        return AsyncPrefixedDB(self._runner, self._prefixed.prefixed_db(prefix), self._db)


class AsyncDB(_Reader, _Writer):
    """An open :class:`levels3.DB`, awaited. Made by :func:`open`, or around a DB you opened yourself.

    ``max_workers`` sizes the pool this AsyncDB makes for itself; ``executor`` is a pool of your own to use
    instead (not shut down by ``close()``). ``close()`` closes the database.
    """

    def __init__(self, db: DB, *, max_workers: int | None = None,
                 executor: concurrent.futures.Executor | None = None) -> None:
        if not isinstance(db, DB):
            raise TypeError(f"AsyncDB wraps a levels3.DB, not {type(db).__name__}")
        if executor is not None and max_workers is not None:
            raise ValueError("pass max_workers or executor, not both")
        owns = executor is None
        if executor is None:
            executor = _new_pool(max_workers)
        self._runner = _Runner(db, executor, owns)
        self._target = self._writable = self._db = db

    @property
    def db(self) -> DB:
        """The synchronous database underneath (for calls without an async form, such as raw_iterator)."""
        return self._db

    @property
    def name(self) -> Any:
        return self._db.name

    @property
    def closed(self) -> bool:
        return self._runner.closing is not None or self._db.closed

    @property
    def read_only(self) -> bool:
        return self._db.read_only

    def snapshot(self) -> _Opener[AsyncSnapshot]:
        """``await db.snapshot()``, or ``async with db.snapshot() as snap:`` to release it on the way out."""
        return _snapshot_opener(self._runner, self._db.snapshot)

    def prefixed_db(self, prefix: bytes) -> AsyncPrefixedDB:
        return AsyncPrefixedDB(self._runner, self._db.prefixed_db(prefix), self)

    async def sync(self) -> None:
        """Upload every write made so far (see DB.sync)."""
        await self._runner.call(self._db.sync)

    async def refresh(self) -> None:
        """A follower: move to the writer's newest committed state (see DB.refresh)."""
        await self._runner.call(self._db.refresh)

    async def checkpoint(self, name: str) -> None:
        await self._runner.call(self._db.checkpoint, name)

    async def get_property(self, name: bytes) -> bytes | None:
        return await self._runner.call(self._db.get_property, name)

    async def compact_range(self, *, start: bytes | None = None, stop: bytes | None = None) -> None:
        await self._runner.call(self._db.compact_range, start=start, stop=stop)

    async def approximate_size(self, start: bytes, stop: bytes) -> int:
        return await self._runner.call(self._db.approximate_size, start, stop)

    async def approximate_sizes(self, *ranges: tuple[bytes, bytes]) -> list[int]:
        return await self._runner.call(self._db.approximate_sizes, *ranges)

    async def stats(self) -> dict[str, Any]:
        """Request counters, bytes moved and cache state (see DB.stats); in memory, so no hop to the pool."""
        return self._db.stats()

    async def close(self) -> None:
        """Wait for the calls in flight, then close the database (upload what is left, release the lock)."""
        await self._runner.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<levels3.aio.AsyncDB of {self._db!r}>"


def _new_pool(max_workers: int | None) -> concurrent.futures.ThreadPoolExecutor:
    if max_workers is None:
        max_workers = DEFAULT_MAX_WORKERS
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ValueError(f"max_workers must be a positive integer, not {max_workers!r}")
    return concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="levels3-aio")


def _discard_opened(opened: concurrent.futures.Future[DB], pool: concurrent.futures.Executor | None) -> None:
    try:
        if not opened.cancelled() and opened.exception() is None:
            opened.result().close()
    finally:
        if pool is not None:
            pool.shutdown(wait=False)


def open(name: Any, *, max_workers: int | None = None,  # noqa: A001 - levels3.aio.open, as the issue asks
         executor: concurrent.futures.Executor | None = None, **keywords: Any) -> _Opener[AsyncDB]:
    """Open a database as :class:`levels3.DB` does (same name and keywords) without blocking the loop.

    ``db = await levels3.aio.open(...)``, or ``async with levels3.aio.open(...) as db:`` to close it on
    the way out. ``max_workers``/``executor``: see :class:`AsyncDB`.
    """
    if executor is not None and max_workers is not None:
        raise ValueError("pass max_workers or executor, not both")

    async def opening() -> AsyncDB:
        owned = executor is None
        pool = executor if executor is not None else _new_pool(max_workers)
        opened = pool.submit(DB, name, **keywords)
        try:
            db = await asyncio.wrap_future(opened)
        except asyncio.CancelledError:
            # The open may still be running in the pool: close what it opens rather than leave it locked.
            opened.add_done_callback(lambda f: _discard_opened(f, pool if owned else None))
            raise
        except BaseException:
            if owned:
                pool.shutdown(wait=False)
            raise
        async_db = AsyncDB(db, executor=pool)
        async_db._runner.owns_executor = owned
        return async_db

    return _Opener(opening)
