"""Tables in pages: the Python side of the page cache.

The page cache itself is C++ (``csrc/page_cache.h`` states its contract): it keeps
table bytes on local disk in ``cache_page_size`` pages under the one byte bound of
``max_cache_bytes``, serves warm reads without Python, and calls back here for two
things only:

- ``describe``: whether a table is read in pages (it is once it is in the store, as
  exactly one object) and what identifies its content (the catalog's fingerprint:
  object key, size, ETag), so a page file is reused only for that exact content;
- ``fetch``: the bytes of a miss, one ranged GET.

A cold open also prefetches table tails (footer, index, filter) in parallel, in the
order a get reads tables (level 0 newest first, then level by level, as the MANIFEST
says), up to a share of the bound: LevelDB's first reads open one table per level,
each of which would otherwise cost a round trip in a row. The first get goes first: the
bridge tells the prefetch its key, its own tails are fetched at once, and the deeper
levels' other tails wait until it has been served.

This module also decides where the pages live: inside the writer's cache directory
(reused after a clean close, discarded after a crash), or in a private temporary
directory that a follower's generations share. May call the native page cache,
the layout, manifest's file_number, and (through the control path) its catalog,
cache and store.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CorruptionError, Error, IOError, ObjectNotFound
from ..parallel import submit
from .layout import FileKind, kind_of
from .manifest import file_number

if TYPE_CHECKING:  # pragma: no cover
    from .cache import LocalCache
    from .catalog import Catalog
    from .control import EnvControl

log = logging.getLogger("levels3.cache")

PAGES_DIR = ".levels3-pages"  # inside a cache directory; LocalCache leaves it alone

#: The table tails a cold open prefetches may take this share of max_cache_bytes at most.
TAIL_PREFETCH_SHARE = 0.25
#: Ranged GETs of tails in flight at once, per open (of the shared pool's 16 threads; a get's own
#: tails go out beyond it). More than a few levels' worth only slows the first ones, where the
#: store's CPU is what runs out.
TAIL_PREFETCH_REQUESTS = 8


class PageStore:
    """The page cache of one database: one per writer, shared by a follower's generations."""

    def __init__(self, directory: str, max_bytes: int, page_size: int, *, temporary: bool) -> None:
        from .._native import NativePageCache

        self.directory = directory
        self.temporary = temporary
        self.native = NativePageCache(directory, max_bytes, page_size)
        self.max_bytes = max_bytes
        self._closed = False
        self._prefetches: list[_TailPrefetch] = []
        self._lock = threading.Lock()

    @classmethod
    def in_cache(cls, cache: "LocalCache", max_bytes: int, page_size: int) -> "PageStore":
        """Pages inside the writer's cache directory: kept across a clean restart
        unless the cache itself is temporary."""
        return cls(os.path.join(cache.directory, PAGES_DIR), max_bytes, page_size, temporary=cache.temporary)

    @classmethod
    def private(cls, parent: str | None, max_bytes: int, page_size: int) -> "PageStore":
        """A temporary directory of its own (followers: their caches are temporary too)."""
        if parent is not None:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        directory = tempfile.mkdtemp(prefix="levels3-pages-", dir=parent)
        try:
            return cls(directory, max_bytes, page_size, temporary=True)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def retain(self, catalog: "Catalog") -> None:
        """Keep only the pages of tables whose content the store still holds."""
        self.native.retain(r.fingerprint for r in catalog.records()
                           if r.objects and kind_of(r.name) is FileKind.TABLE)

    def start_prefetch(self, prefetch: "_TailPrefetch") -> None:
        with self._lock:
            if self._closed:
                return
            self._prefetches = [p for p in self._prefetches if not p._done.is_set()]
            self._prefetches.append(prefetch)
        prefetch.start()

    def close(self) -> None:
        """After LevelDB is gone: write the index a clean restart reuses, or remove it all.

        Never raises: the pages are disposable, and what closes after them (the
        whole-file cache, the store) must still close. An index that cannot be
        written only means the next run fetches its pages again."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            prefetches, self._prefetches = self._prefetches, []
        for prefetch in prefetches:
            prefetch.stop()  # waits for its GETs: none may land in a closed page cache
        try:
            self.native.close(not self.temporary)
        except Error as exc:
            log.warning("the page cache in %s could not record its pages for the next run: %s",
                        self.directory, exc)
        finally:
            if self.temporary:
                shutil.rmtree(self.directory, ignore_errors=True)


class PagedTables:
    """One control path generation's answers to the page cache's callbacks."""

    def __init__(self, control: "EnvControl", store: PageStore) -> None:
        self.control = control
        self.store = store
        # A writer's prefetch starts once LevelDB has opened (WriterControl.finish_open): during
        # the open its GETs would only compete with recovery's requests, which are all in a row.
        # A follower's catalog is loaded after this: its first table open starts the prefetch.
        self._prefetching = False
        self._started_by_open = getattr(control, "lease", None) is not None
        #: The running tail prefetch, if any: the bridge tells it of the first gets (reading()).
        self.prefetch: _TailPrefetch | None = None

    def prefetch_tails(self) -> None:
        """Fetch the tails of the version's tables in the background, in parallel, in the
        order a get reads them, until a share of the bound is claimed. Once per generation;
        a tail already present costs nothing, and one LevelDB asks for meanwhile is fetched
        once (its read waits for the prefetch). A prefetch that fails leaves the tail to
        LevelDB's own read."""
        if self._prefetching:
            return
        budget = int(self.store.max_bytes * TAIL_PREFETCH_SHARE)
        if budget <= 0:
            return
        records = {file_number(r.name) or 0: r for r in self.control.catalog.records()
                   if kind_of(r.name) is FileKind.TABLE and len(r.objects) == 1
                   and not (r.writing or r.unsent_tail or r.local)}
        live = self.control.live_tables()
        if live is not None:
            # In the order a get reads them: level 0 newest first, then level by level. Tables
            # the version no longer holds (waiting out deletion_grace) are not read at all.
            metas = sorted((m for n, m in live.items() if n in records), key=lambda m: (m.level, -m.number))
            tails = [_Tail(records[m.number], m.level, m.smallest[:-8], m.largest[:-8]) for m in metas]
        else:
            tails = [_Tail(records[n], 0) for n in sorted(records, reverse=True)]
        if not tails:
            return
        self._prefetching = True
        log.debug("prefetching the tails of up to %d tables", len(tails))
        self.prefetch = _TailPrefetch(self, tails, budget)
        self.store.start_prefetch(self.prefetch)

    @property
    def native(self) -> Any:
        return self.store.native

    def describe(self, name: str, adopting: bool) -> tuple[int, str, str] | None:
        """(size, fingerprint, object key) of a table read in pages; None: read it whole.

        ``adopting``: the page cache takes over the local file LevelDB has just
        written (and this process uploaded), so the whole-file cache forgets it."""
        if kind_of(name) is not FileKind.TABLE:
            return None
        if not self._prefetching and not self._started_by_open:
            self.prefetch_tails()  # a follower: its catalog is complete once LevelDB opens tables
        record = self.control.catalog.get(name)
        if record is None or record.writing or record.unsent_tail or record.local or len(record.objects) != 1:
            return None
        if adopting:
            self.control.cache.hand_over(name)
        return record.size, record.fingerprint, record.objects[0].key

    def fetch(self, name: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of a paged table: one ranged GET."""
        record = self.control.catalog.get(name)
        if record is None or len(record.objects) != 1:
            raise IOError(f"{name} is not a table in the store any more")
        obj = record.objects[0]
        end = offset + length
        if end > obj.size:
            raise CorruptionError(f"{obj.key}: bytes up to {end} asked of an object the catalog says holds {obj.size}")
        try:
            data = self.control.store.get(obj.key, offset, end)
        except ObjectNotFound:
            self.control._object_missing(obj)  # a follower's version is stale: raises that
            raise
        if len(data) != length:
            raise CorruptionError(f"{obj.key}: a ranged GET of bytes {offset}-{end - 1} returned {len(data)} bytes, "
                                  f"but the catalog says the object holds {obj.size}")
        return data

    def stats(self) -> dict[str, Any]:
        """The page cache's figures, as db.stats() keys (see README)."""
        s = self.native.stats()
        return {
            "cache_bytes": s["bytes"],
            "cache_peak_bytes": s["peak_bytes"],
            "cache_page_size": s["page_size"],
            "cache_whole_file_bytes": s["whole_file_bytes"],
            "page_hits": s["hits"],
            "page_misses": s["misses"],
            "page_evictions": s["evictions"],
            "page_readahead_wasted_bytes": s["readahead_wasted_bytes"],
            "pages_cached": s["pages"],
            "cache_mapped_bytes": s["mapped_bytes"],
            "pages_reused": s["reused_pages"],
            "page_requests": dict(s["requests"]),
            "page_bytes_fetched": dict(s["bytes_fetched"]),
            "page_requests_by_compaction": dict(s["compaction_requests"]),
            "page_bytes_fetched_by_compaction": dict(s["compaction_bytes_fetched"]),
            "tails_prefetched": s["tails_prefetched"],
            "compaction_inputs_fetched_ahead": s["compaction_inputs_fetched_ahead"],
        }


@dataclass
class _Tail:
    """A table whose tail a prefetch may fetch: its catalog record, its level and its range of
    user keys (None when not known: no get's key then picks it)."""

    record: Any
    level: int
    smallest: bytes | None = None
    largest: bytes | None = None
    wanted: bool = False  # a get reads it now: fetched even past the budget

    def holds(self, key: bytes) -> bool:
        return self.smallest is not None and self.largest is not None and self.smallest <= key <= self.largest


class _Task:
    """One tail for the pool to fetch (None: a task that only starts the first ones). Taken once:
    by the thread that runs it, or dropped when it could not be submitted, so it is counted out once."""

    __slots__ = ("tail", "taken")

    def __init__(self, tail: _Tail | None) -> None:
        self.tail = tail
        self.taken = False


class _TailPrefetch:
    """One generation's tail prefetch: tasks on the shared request pool, one tail each.

    Level 0 goes first: a get reads every level-0 table its key falls in, whatever the key.
    Below it a get reads one table per level, so the other tails wait until level 0's are in
    and, if a get has begun by then, until it has returned: the tails that get does not need
    would only compete with it for the store and for this process's CPU (with all 12 tails of
    a 300k-key database sent at once, its data block waited behind 4 of them). The gets that
    begin before the first one returns tell the prefetch their key (reading()), and their own
    tails go out at once, ahead of the rest; later gets cost the prefetch nothing. A task
    claims its tail only when it runs: no claim waits in the pool's queue.
    """

    def __init__(self, tables: PagedTables, tails: list[_Tail], budget: int) -> None:
        self.tables = tables
        self.first = [t for t in tails if t.level == 0]
        self.later = [t for t in tails if t.level != 0]
        self.budget = budget
        self._lock = threading.Lock()  # the lists and the counts; taken by the first gets
        self._claiming = threading.Lock()  # claims and the budget (a claim may wait for the disk)
        self._stopped = False
        self._done = threading.Event()
        self._done.set()  # until started
        self._tasks = 0  # counted in, not yet counted out (waiting in the pool, or running)
        self._first_tasks = 0  # of them, level 0's
        self._gets = 0  # gets in progress that reading() was told of
        self._served = False  # the first get has returned: the deeper levels no longer wait for one

    def start(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._done.clear()
            tasks = [self._task_locked(None)]
        # The first tasks are submitted from a pool thread, not the opening one: the pool starts
        # its threads as they are needed, and each start waits for the GIL behind the tasks
        # already parsing responses (with 16 of them, 200 ms of the open).
        self._submit(tasks)

    def reading(self, key: bytes | None) -> bool:
        """A get of ``key`` is about to run (None: its tables cannot be told from its key, under a
        custom comparator): fetch its own tails now. False once the prefetch is over or its first
        get has returned: then the caller stops telling, and calls no read_done(). Raises no
        Exception."""
        try:
            with self._lock:
                if self._served or self._done.is_set():
                    return False
                own = [] if key is None else [t for t in self.first + self.later if t.holds(key)]
                for tail in own:
                    (self.first if tail.level == 0 else self.later).remove(tail)
                    tail.wanted = True
                tasks = [self._task_locked(tail) for tail in own]
                self._gets += 1
            self._submit(tasks)
            return True
        except Exception as exc:  # noqa: BLE001 - a get must not fail for its prefetch
            log.debug("telling the tail prefetch of a get failed: %s", exc)
            return False

    def read_done(self) -> None:
        """The get reading() was told of has returned. Raises no Exception."""
        try:
            with self._lock:
                self._gets -= 1
                self._served = True
                tasks = self._next_locked()
            self._submit(tasks)
        except Exception as exc:  # noqa: BLE001
            log.debug("resuming the tail prefetch failed: %s", exc)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._tasks == 0:
                self._done.set()
        self._done.wait()

    # -- tasks ---------------------------------------------------------------------

    def _task_locked(self, tail: _Tail | None) -> _Task:
        self._tasks += 1
        self._first_tasks += tail is not None and tail.level == 0
        return _Task(tail)

    def _uncount_locked(self, task: _Task) -> None:
        self._tasks -= 1
        self._first_tasks -= task.tail is not None and task.tail.level == 0

    def _next_locked(self) -> list[_Task]:
        """The tasks to start now (counted); sets _done when none ever will be."""
        starting: list[_Task] = []
        while not self._stopped and self.budget > 0 and self._tasks < TAIL_PREFETCH_REQUESTS:
            if self.first:
                tail = self.first.pop(0)
            elif self.later and self._first_tasks == 0 and (self._served or self._gets == 0):
                tail = self.later.pop(0)
            else:
                break
            starting.append(self._task_locked(tail))
        if self._tasks == 0 and (self._stopped or self.budget <= 0 or not (self.first or self.later)):
            self._done.set()
        return starting

    def _submit(self, tasks: list[_Task]) -> None:
        for task in tasks:
            try:
                submit(self._run, task)
            except Exception as exc:  # noqa: BLE001 - RuntimeError: the interpreter is exiting, or no thread starts
                # The prefetch ends here (LevelDB reads the other tails itself). The task may still
                # run, if the pool queued it before failing: it then finds itself taken.
                log.debug("the tail prefetch stops: %s", exc)
                with self._lock:
                    self._stopped = True
                    if not task.taken:
                        task.taken = True
                        self._uncount_locked(task)
                    if self._tasks == 0:
                        self._done.set()

    def _run(self, task: _Task) -> None:
        """Fetch the task's tail, then start what may go next, running one of them here."""
        with self._lock:
            if task.taken:
                return
            task.taken = True
        while True:
            try:
                if task.tail is not None:
                    self._fetch(task.tail)
            except Exception as exc:  # noqa: BLE001 - counted out all the same, or close would wait forever
                log.debug("prefetching a tail failed: %s", exc)
            with self._lock:
                self._uncount_locked(task)
                starting = self._next_locked()
                if starting:
                    starting[0].taken = True  # run here, next
            if not starting:
                return
            self._submit(starting[1:])
            task = starting[0]

    def _fetch(self, tail: _Tail) -> None:
        record = tail.record
        obj = record.objects[0]
        with self._claiming:  # one claim at a time, so the budget holds; the fetches run in parallel
            if self._stopped or self.budget <= 0 and not tail.wanted:
                return
            try:
                claim = self.tables.native.claim_tail(record.fingerprint, obj.key, obj.size)
            except Error:
                return  # the page cache is closing
            if claim is None:  # present already, or LevelDB is reading it
                return
            self.budget -= claim.length
        data = None
        try:
            if not self._stopped:
                got = self.tables.control.store.get(obj.key, claim.offset, claim.offset + claim.length)
                data = got if len(got) == claim.length else None
        except Exception as exc:  # noqa: BLE001 - LevelDB's own read fetches it again and reports
            log.debug("prefetching the tail of %s failed: %s", obj.key, exc)
        try:
            claim.complete(data)
        except Error as exc:
            log.debug("keeping the prefetched tail of %s failed: %s", obj.key, exc)
