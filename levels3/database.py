"""levels3.DB: opening a database as its writer or as a follower, and what runs beside it.

DB is the native core (levels3._native.NativeDB, whose get/put/delete,
iterators and batches are C methods called directly) plus the policy around
it, in Python: which control path to open (engine.writer or engine.follower),
the follower's retries when the store changed under its LIST, the flush and
refresh threads, a follower's refresh, checkpoints, and closing every open
database before the interpreter finalises (in the process that opened it only:
a forked child runs nothing on its parent's behalf). May call the bridge, the
engine, levels3.options and levels3.leveldb_options.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Any, Callable

from . import _native
from .engine.control import EnvControl
from .engine.follower import FollowerControl
from .engine.writer import WriterControl
from .errors import CorruptionError, Error, StaleVersionError
from .leveldb_options import LevelDBOptions
from .options import DB_NUMBER_RULES, StoreOptions

log = logging.getLogger("levels3.leveldb")

#: A follower's open lists the store again this often at most when the store changed under its LIST.
FOLLOWER_OPEN_ATTEMPTS = 3

# Open databases are closed before the interpreter finalises: afterwards a
# LevelDB thread asking for the GIL would be killed and hang the process.
_open_databases: "weakref.WeakSet[DB]" = weakref.WeakSet()


# A forked child does not own its parent's databases: it must not close them at exit
# (the bridge makes each inherited handle refuse every use).
os.register_at_fork(after_in_child=_open_databases.clear)


@atexit.register
def _close_open_databases() -> None:
    for db in list(_open_databases):
        try:
            db.close()
        except BaseException:
            log.exception("closing %r at exit failed", db)
    _native.stop_callbacks()


def _close_quietly(control: EnvControl) -> None:
    try:
        control.close()
    except BaseException:
        log.exception("cleaning up after a failed open")


def _open_follower(new_control: Callable[[], FollowerControl], config: LevelDBOptions) -> tuple[FollowerControl, Any]:
    """A follower generation: (control path, native handle). A LIST is no snapshot, so
    list again when the writer changed the store under it: an object we listed was
    deleted before we read it (segments a merge replaced go within seconds), or the
    MANIFEST we read names a table the LIST had already passed. Only the last
    attempt's error is raised."""
    for attempt in range(1, FOLLOWER_OPEN_ATTEMPTS + 1):
        control = new_control()
        try:
            return control, _native.open_handle(control, config)
        except (StaleVersionError, CorruptionError) as exc:
            behind = isinstance(exc, StaleVersionError) or control.listing_missed_tables()
            _close_quietly(control)
            if not behind or attempt == FOLLOWER_OPEN_ATTEMPTS or control.checkpoint is not None:
                raise
            log.info("%s changed while opening a follower on it; listing again", control.location.url)
        except BaseException:
            _close_quietly(control)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _lease_loss_flagger(db_ref: "weakref.ref[DB]") -> Callable[[str], None]:
    """The lease's on_lost callback: flags the DB (if still alive) for its next write."""
    def flag(reason: str) -> None:
        db = db_ref()
        if db is not None:
            db._flag_lease_lost()
    return flag


class DB(_native.NativeDB):
    """A LevelDB database stored in an object store (drop-in for plyvel.DB).

    ``name`` is ``s3://bucket/prefix``, ``file:///path`` or a plain path. The
    keyword arguments before ``read_only`` are LevelDB's (as in plyvel);
    ``read_only=True`` opens a follower, ``checkpoint=`` a checkpoint, and the
    remaining keywords (or ``options=``) are store options (StoreOptions).

    Threads may share one DB. ``close()`` waits for the calls in flight, then
    closes; any call that starts later raises RuntimeError, and so does any later
    use of an iterator or snapshot.

    A custom ``comparator(a, b)`` must return a negative, zero or positive int
    for any two keys. It is tried on a few sample keys at open: a result that is
    not an int, or raising on every sample, is a TypeError there. A comparison
    that fails later (raises, or returns a non-int) aborts the process, as in
    plyvel, after printing the exception and the comparator's name and repr to
    stderr: LevelDB cannot continue without the order, and a wrong one would
    corrupt the database.

    A DB belongs to the process that opened it. After ``os.fork()`` (and so in
    a ``multiprocessing`` worker started by fork), every use of an inherited DB
    in the child raises levels3.Error naming the opening process, and nothing
    of it runs there (no close at exit, no clean-up): open the database again
    in the child, after the fork.
    """

    # No instance __dict__: a method lookup on the hot path (db.get) then skips it.
    __slots__ = ("name", "_control", "_config", "_close_lock", "_threads")

    def __init__(self, name: Any, *, create_if_missing: bool = False, error_if_exists: bool = False,
                 paranoid_checks: bool | None = None, write_buffer_size: int | None = None,
                 max_open_files: int | None = None, lru_cache_size: int | None = None,
                 block_size: int | None = None, block_restart_interval: int | None = None,
                 max_file_size: int | None = None, compression: str | None = "snappy",
                 bloom_filter_bits: int = 10, comparator: Callable[[bytes, bytes], int] | None = None,
                 comparator_name: bytes | None = None, read_only: bool = False, checkpoint: str | None = None,
                 refresh_interval: float | None = None, options: StoreOptions | None = None,
                 **store_options: Any) -> None:
        if not self.closed:
            raise RuntimeError("DB.__init__ called twice")
        refresh_interval = DB_NUMBER_RULES["refresh_interval"].check("refresh_interval", refresh_interval)
        config = LevelDBOptions(
            create_if_missing=create_if_missing, error_if_exists=error_if_exists, paranoid_checks=paranoid_checks,
            write_buffer_size=write_buffer_size, max_open_files=max_open_files, lru_cache_size=lru_cache_size,
            block_size=block_size, block_restart_interval=block_restart_interval, max_file_size=max_file_size,
            compression=compression, bloom_filter_bits=bloom_filter_bits, comparator=comparator,
            comparator_name=comparator_name)
        self._close_lock = threading.Lock()
        self._threads: list[tuple[threading.Event, threading.Thread]] = []
        self._config = config
        read_only = bool(read_only) or checkpoint is not None or refresh_interval is not None
        control: EnvControl
        if read_only:
            control, handle = _open_follower(
                lambda: FollowerControl.open(name, options, store_options, checkpoint=checkpoint), config)
        else:
            control = WriterControl.open(name, options, store_options, create_if_missing=config.create_if_missing)
            try:
                handle = _native.open_handle(control, config)
            except BaseException:
                _close_quietly(control)
                raise
        self._control = control
        self._attach(handle, read_only, control.lease)
        if control.lease is not None:
            control.lease.on_lost = _lease_loss_flagger(weakref.ref(self))
        self.name = name  # as given, like plyvel (the store URL is in repr and messages)
        _open_databases.add(self)
        if refresh_interval is not None:
            self._start("levels3-refresh", self._refresh_periodically, refresh_interval)
        interval = control.options.flush_interval
        if interval is not None and not read_only:
            self._start("levels3-flush", self._flush_periodically, interval)

    # -- background threads ----------------------------------------------------

    def _start(self, name: str, loop: Callable[[threading.Event, float], None], interval: float) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=loop, args=(stop, interval), name=name, daemon=True)
        self._threads.append((stop, thread))
        thread.start()

    def _flush_periodically(self, stop: threading.Event, interval: float) -> None:
        # Bounds what a crash can lose of unsynced writes to about one interval.
        while not stop.wait(interval):
            try:
                if isinstance(self._control, WriterControl) and self._control.wal_has_unsent_bytes():
                    self.sync()
            except RuntimeError:
                return  # closed meanwhile
            except BaseException:
                log.exception("periodic WAL flush failed")

    def _refresh_periodically(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self.refresh()
            except RuntimeError:
                return  # closed meanwhile
            except BaseException:
                log.exception("periodic refresh failed")

    # -- followers and checkpoints ----------------------------------------------

    def refresh(self) -> None:
        """Follow the writer: move this read-only view to its newest committed state,
        synced writes still in the WAL included. Iterators and snapshots taken
        before keep reading the state they were made from."""
        self._check_process()  # first: in a forked child, the lock may be held by a thread that did not survive
        if not self.read_only or self._control.checkpoint is not None:
            raise Error("refresh() is for followers opened with read_only=True")
        with self._close_lock:
            if self.closed:
                raise RuntimeError("Database is closed")
            old = self._control
            assert isinstance(old, FollowerControl)
            control, handle = _open_follower(old.next_generation, self._config)
            control.owns_store, old.owns_store = True, False  # the store passes on
            self._control = control
            self._swap_handle(handle)  # the old generation closes once nothing reads it

    def checkpoint(self, name: str) -> None:
        """Record the current state as checkpoint ``name`` in the store (no data copied).

        Every write made before the call is part of it; the objects it needs are
        kept by the writer's deletion. Open it with DB(url, checkpoint=name)."""
        self.sync()  # raises ReadOnlyError or LeaseLostError where the database cannot write
        assert isinstance(self._control, WriterControl)
        self._control.create_checkpoint(name)

    def stats(self) -> dict[str, Any]:
        """Request counters, bytes moved and cache state (see README)."""
        self._check_process()
        return self._control.stats()

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Close the database: upload what is left, release the lock, drop the cache.

        Calls in flight in other threads finish first (close() waits for them
        without holding the GIL); calls that start after close() began raise
        RuntimeError. Called from inside a call on this thread (a comparator, or a
        signal handler that ran during a call), it cannot wait for that call: it
        refuses new calls at once and leaves the rest of the closing to a
        thread of its own, which the interpreter waits for at exit. In a forked
        child it raises levels3.Error and does nothing (see the class docstring).
        """
        if getattr(self, "_close_lock", None) is None:
            return  # __init__ failed before anything was opened
        self._check_process()
        if _native.calls_in_flight_on_this_thread():
            self._refuse_calls()
            threading.Thread(target=self._close_now, name="levels3-close").start()
            return
        self._close_now()

    def _close_now(self) -> None:
        for stop, thread in getattr(self, "_threads", ()):
            stop.set()
            if thread is not threading.current_thread():
                thread.join()
        with self._close_lock:
            _open_databases.discard(self)
            self._close_handle()

    def __enter__(self) -> "DB":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        parent = self._inherited_from
        state = f"inherited from process {parent}: unusable here" if parent else "closed" if self.closed else "open"
        control = getattr(self, "_control", None)
        url = control.location.url if control is not None else getattr(self, "name", None)
        return f"<levels3.DB {url!r} ({state})>"

    def __del__(self) -> None:
        if not self.closed:
            try:
                self.close()
            except BaseException:
                pass
