"""The Env's control path for one open database: what the native Env asks of Python.

The native Env (csrc/object_env.h) calls one method of an EnvControl per
control operation: open_read, release_read, create, persist, remove, rename,
list, size, lock, unlock. The data path (Append, Read) never comes here. A
method raises on failure; the bridge records the exception with
``failures.note`` and puts the token it returns into the LevelDB Status, and
the call whose Status reports it re-raises it (``error_for``), even when the
callback ran on LevelDB's compaction thread and the Status surfaces later on
another thread.

Callbacks come concurrently from the caller's threads and LevelDB's
compaction thread, some while LevelDB holds its DB mutex: they answer from the
catalog and the cache and do store work only where LevelDB syncs or closes a
file. This module holds what a writer and a follower do alike; WriterControl
(engine.writer) uploads, fences and deletes, FollowerControl (engine.follower)
never writes to the store. May call the store interface, the cache, the
catalog, the layout and manifest (to salvage a damaged log for repair, and to
read the levels of the version LevelDB opened).
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import threading
from collections import OrderedDict
from typing import Any, Mapping

from ..errors import (CorruptionError, Error, IOError, LeaseLostError, ObjectNotFound, ReadOnlyError, StaleVersionError,
                      StoreError)
from ..lock import LeaseLock
from ..options import Location, StoreOptions, parse_location
from ..parallel import POOL_THREADS, run_parallel
from ..stores.assembly import build_store, resolve_options
from ..stores.base import ObjectStore
from ..stores.counting import CountingStore
from .cache import LocalCache, local_error
from .catalog import Catalog, FileRecord, StoredObject
from .layout import CURRENT_NAME, FileKind, kind_of
from .pages import PAGES_DIR, PagedTables
from .manifest import LOG_BLOCK, ManifestError, TableMeta, file_number, parse_manifest, unreadable_from

log = logging.getLogger("levels3.backend")


def connect(name: Any, options: StoreOptions | None, overrides: Mapping[str, Any], *,
            create: bool) -> tuple[Location, StoreOptions, ObjectStore, CountingStore]:
    """Parse the name and options and build the layered store for them."""
    location = parse_location(name)
    opts = resolve_options(options, overrides)
    try:
        store, counters = build_store(location, opts, create=create)
    except ObjectNotFound as exc:
        raise Error(f"{location.url} does not exist (create_if_missing is false)") from exc
    return location, opts, store, counters


class FailureRegistry:
    """Exceptions the Env's callbacks raised, each under the short token its Status message carries.

    LevelDB keeps a background error (a failed compaction upload) and returns
    it from every later write, so a token is looked up, not consumed; the last
    ``capacity`` exceptions are kept. The class of the exception a caller gets
    never depends on the message's other text.
    """

    _TOKEN = re.compile(r"\[levels3 failure (\d+)\] ")

    def __init__(self, capacity: int = 256) -> None:
        self._entries: OrderedDict[int, BaseException] = OrderedDict()
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._capacity = capacity

    def note(self, exc: BaseException) -> str:
        """Keep ``exc``; the message for its Status, starting with its token.

        Kept without tracebacks (on it and the exceptions it chains to): a
        traceback holds the frames of the thread that called into LevelDB, and
        with them whatever those frames hold (a refreshed-away generation, say).
        """
        chained: BaseException | None = exc
        seen: set[int] = set()
        while chained is not None and id(chained) not in seen:
            seen.add(id(chained))
            chained.__traceback__ = None
            chained = chained.__cause__ or chained.__context__
        number = next(self._numbers)
        with self._lock:
            self._entries[number] = exc
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return f"[levels3 failure {number}] {type(exc).__name__}: {exc}"

    def take(self, message: str) -> tuple[str, BaseException | None]:
        """The message without its token(s), and the exception the first one names (if still kept)."""
        original = None
        match = self._TOKEN.search(message)
        if match is not None:
            with self._lock:
                original = self._entries.get(int(match.group(1)))
        return self._TOKEN.sub("", message), original


_NOT_FOUND_PREFIX = re.compile(r"^NotFound: ")

#: Exceptions whose class tells the caller what to do next (stop writing; refresh; write
#: elsewhere): re-raised as such when a callback raised them. Anything else takes the
#: class of the Status that reported it, chained to what the callback raised.
_ACTIONABLE = (LeaseLostError, StaleVersionError, ReadOnlyError)


class EnvControl:
    """Control path of one open database: its store, catalog, cache, and the Env's callbacks."""

    #: The lease a writer holds; a follower holds none.
    lease: LeaseLock | None = None
    #: The checkpoint a follower shows, if any.
    checkpoint: str | None = None
    #: Tables read in pages (engine/pages.py); set by the subclass's open.
    pages: PagedTables | None = None
    #: The heaviest single write accepted (engine.sizing); None: no limit (a follower writes nothing).
    max_write_bytes: int | None = None
    #: Read damaged files as far as they go instead of refusing them (repair_db sets it).
    salvage = False

    def __init__(self, location: Location, options: StoreOptions, store: ObjectStore, counters: CountingStore,
                 cache: LocalCache) -> None:
        self.location = location
        self.options = options
        self.store = store
        self.counters = counters
        self.cache = cache
        self.catalog = Catalog()
        self.failures = FailureRegistry()
        self.closing = False
        self._closed = False
        self._unread_logs: list[tuple[str, BaseException]] = []  # WAL fetches that failed (see _refuse_version_without_logs)
        self._opening = True  # until LevelDB's DB::Open returns (finish_open)
        self.damaged_reads: list[str] = []  # files LevelDB asked for that the catalog found damaged

    # -- the bridge's side ------------------------------------------------------

    @property
    def local_dir(self) -> str:
        return self.cache.directory

    def error_for(self, status_class: type[Exception], message: str) -> Exception:
        """The exception for a failed LevelDB Status whose class the bridge chose from its kind.

        The exception a callback raised for it (named by the message's token)
        becomes its cause. LevelDB names the private cache directory; users know
        the database by its URL.
        """
        if self.cache.vanished():
            # Every local file is gone: a local problem, named by its local path, not
            # something missing from the store.
            message, original = self.failures.take(message)
            message = _NOT_FOUND_PREFIX.sub("IO error: ", message)
            message += f" (the cache directory {self.local_dir} was removed while the database was open)"
            if status_class is Error:
                status_class = IOError
        else:
            # The page cache's own files keep their local path: they are not database files.
            message = re.sub(re.escape(self.local_dir) + "(?!/" + re.escape(PAGES_DIR) + ")", self.location.url,
                             message)
            message, original = self.failures.take(message)
        cls = next((c for c in _ACTIONABLE if isinstance(original, c)), status_class)
        error = cls(message)
        if original is not None:
            error.__cause__ = original
        return error

    def finish_open(self) -> None:
        self._opening = False

    def leveldb_options(self, config: Any) -> Any:
        """The LevelDB options to open with (levels3.leveldb_options.LevelDBOptions):
        a writer fits its table sizes to max_object_size; a follower uploads nothing."""
        return config

    def refuse_write(self, weight: int) -> None:
        """Called by the bridge for a write heavier than max_write_bytes: raises why."""
        raise Error(f"a write weighing {weight} bytes is above the limit of {self.max_write_bytes} bytes")

    def flush_at_close(self) -> bool:
        """Whether LevelDB should write its memtable to a table before it is deleted
        (a writer's WAL holds writes): the next open then replays no log."""
        return False

    def begin_close(self) -> None:
        """LevelDB is about to be deleted: its last WAL tail must now be uploaded."""
        self.closing = True

    def close(self) -> None:
        """After LevelDB is gone: tidy the cache and release the store."""
        if self._closed:
            return
        self._closed = True
        self.closing = True
        try:
            self._finish()
        finally:
            if self.pages is not None and self._owns_store():  # the page cache goes with the store
                self.pages.store.close()
            self.cache.close()
            if self._owns_store():
                self.store.close()

    def _finish(self) -> None:
        """What a closing database still has to do in the store (a writer's last uploads)."""

    def _owns_store(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        counters = self.counters.snapshot()
        counters.update(
            cache_hits=self.cache.hits,
            cache_misses=self.cache.misses,
            cache_bytes=self.cache.bytes,
            cache_peak_bytes=self.cache.peak_bytes,
            cache_evictions=self.cache.evictions,
            lease_puts=self.lease.writes if self.lease is not None else 0,
        )
        if self.pages is not None:
            counters.update(self.pages.stats())
        return counters

    # -- Env callbacks -------------------------------------------------------------

    def open_read(self, name: str) -> str:
        record = self.catalog.get(name)
        if record is None or record.writing or record.unsent_tail or record.local:
            path = self.cache.pin_local(name)
            if path is None:
                raise ObjectNotFound(f"{name} does not exist", operation="open", key=name)
            return path
        try:
            if record.damage is not None:
                return self._open_damaged(record)
            path = self.cache.open_cached(name, record.fingerprint)
            if path is not None:
                return path
            return self._fetch(record)
        except BaseException as exc:
            if kind_of(name) is FileKind.WAL:
                self._unread_logs.append((name, exc))
            raise

    def release_read(self, name: str) -> None:
        self.cache.release(name)

    def create(self, name: str) -> str:
        raise NotImplementedError

    def persist(self, name: str, size: int, final: bool) -> None:
        kind = kind_of(name)
        if kind.local_only:
            if final:
                self.cache.finish_write(name, size, "")
            return
        record = self.catalog.get(name)
        if record is None:
            raise IOError(f"{name} was removed while it was being written")
        if record.local:
            if final:
                record.writing = False
                self.cache.finish_write(name, size, "")
            return
        self._persist_durable(record, kind, size, final)

    def _persist_durable(self, record: FileRecord, kind: FileKind, size: int, final: bool) -> None:
        raise NotImplementedError

    def remove(self, name: str) -> None:
        if kind_of(name) is FileKind.LOCK:
            return  # a writer's lease is released at close, after the last upload
        record = self.catalog.pop(name)
        if record is None and not self.cache.knows(name):
            raise ObjectNotFound(f"{name} does not exist", operation="delete", key=name)
        if record is not None and record.objects:
            self._drop_objects(record)
        self.cache.discard(name)

    def _drop_objects(self, record: FileRecord) -> None:
        """LevelDB no longer needs the objects of a file it removed."""

    def rename(self, src: str, dst: str) -> None:
        src_kind, dst_kind = kind_of(src), kind_of(dst)
        if src_kind.local_only and dst_kind.local_only:
            self.cache.rename(src, dst)
            return
        if dst_kind is FileKind.CURRENT:
            self._refuse_version_without_logs()
        self._rename_durable(src, dst)

    def _rename_durable(self, src: str, dst: str) -> None:
        raise NotImplementedError

    def list(self, directory: str) -> list[str]:
        return self.catalog.names(directory)

    def size(self, name: str) -> int:
        record = self.catalog.get(name)
        if record is not None and not record.writing and not record.unsent_tail and not record.local:
            return record.size
        local = self.cache.local_size(name)
        if local is None:
            raise ObjectNotFound(f"{name} does not exist", operation="size", key=name)
        return local

    def lock(self) -> None:
        self._check_lease()

    def unlock(self) -> None:
        """LevelDB unlocks before its last uploads run; a writer releases its lease in close()."""

    # -- helpers -----------------------------------------------------------------

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def _object_missing(self, obj: StoredObject) -> None:
        """An object the catalog lists is gone from the store: raise what that means here
        (the ObjectNotFound itself follows if this returns)."""

    def _fetch(self, record: FileRecord) -> str:
        """Download every object of the file into the cache; returns the pinned path.
        A file of many objects (a WAL's segments, after a crash) is fetched several
        objects at a time, each written at its offset."""
        with self.cache.downloading(record.name) as temp:
            with open(temp, "wb") as f:
                f.truncate(record.size)
            for batch in _fetch_batches(record.objects):
                run_parallel(*(functools.partial(self._copy_object_to, temp, obj) for obj in batch))
            return self.cache.insert_downloaded(record.name, temp, record.size, record.fingerprint)

    def prefetch_for_recovery(self, current_body: bytes) -> None:
        """Fetch together what LevelDB's recovery reads one after another: the MANIFEST
        that CURRENT names and the newest WAL (the one a recovery always replays; an
        older one it may not need). Over a far store this saves a round trip of every
        open. A file that is cached already, is large next to the bound, or fails to
        fetch is left to LevelDB's own read, which reports any failure."""
        wanted = []
        for name in (current_body.decode("utf-8", "replace").strip(), self._newest_log()):
            record = self.catalog.get(name) if name else None
            if (record is None or record.writing or record.unsent_tail or record.local or record.damage is not None
                    or record.size > self.options.max_cache_bytes // 4):
                continue
            if self.cache.open_cached(record.name, record.fingerprint) is not None:
                self.cache.release(record.name)
                continue
            wanted.append(record)

        def fetch(record: FileRecord) -> None:
            try:
                self._fetch(record)
            except Exception as exc:  # noqa: BLE001 - LevelDB's read of it reports the failure
                log.debug("prefetching %s for recovery failed: %s", record.name, exc)
                return
            self.cache.release(record.name)

        run_parallel(*(functools.partial(fetch, record) for record in wanted))

    def _newest_log(self) -> str | None:
        logs = [name for name in self.catalog.names() if kind_of(name) is FileKind.WAL]
        return max(logs, key=lambda name: file_number(name) or 0, default=None)

    def _copy_object_to(self, path: str, obj: StoredObject) -> None:
        with open(path, "r+b") as f:
            f.seek(obj.offset)
            self._copy_object(obj, f)

    def _copy_object(self, obj: StoredObject, f: Any) -> None:
        """Write one object's bytes to ``f``, checked against the size the LIST gave. No
        GET asks for more than max_object_size: an object above it (stored under a
        larger cap, or by an earlier version) is read in ranges, one at a time."""
        step = self.options.max_object_size
        ranges = [(0, None)] if obj.size <= step else [
            # the last range asks for one byte more: an object grown since the LIST shows
            (start, min(obj.size + 1, start + step)) for start in range(0, obj.size, step)]
        copied = 0
        try:
            for start, end in ranges:
                data = self.store.get(obj.key, start, end)
                f.write(data)
                copied += len(data)
        except ObjectNotFound:
            self._object_missing(obj)
            raise
        if copied != obj.size:
            message = f"{obj.key} changed size while being read (it holds {copied} bytes, listed with {obj.size})"
            if obj.key == CURRENT_NAME:  # the one object that is replaced in place
                raise StoreError(message, operation="get", key=obj.key)
            raise CorruptionError(message + ": objects are written once, so it was damaged or replaced")

    def _open_damaged(self, record: FileRecord) -> str:
        """A file whose objects do not cover it (catalog): refused, unless salvaging."""
        if not self.salvage:
            self.damaged_reads.append(record.name)
            raise CorruptionError(f"{record.damage}. Nothing was changed; levels3.repair_db salvages what is "
                                  "readable (and reports what is lost)")
        fingerprint = f"salvaged|{record.fingerprint}"
        path = self.cache.open_cached(record.name, fingerprint)
        if path is not None:
            return path
        with self.cache.downloading(record.name) as temp:
            with open(temp, "r+b") as f:
                for obj in record.objects:  # overlapping objects hold the same bytes
                    f.seek(obj.offset)
                    self._copy_object(obj, f)
                f.truncate(record.size)  # what no object holds reads as zeros
                lost = _mask_unreadable(record, f)
            log.warning("salvaging %s: %s; %s", record.name, record.damage,
                        "; ".join(f"bytes [{a}, {b}) are lost" for a, b in lost))
            return self.cache.insert_downloaded(record.name, temp, record.size, fingerprint)

    def _refuse_version_without_logs(self) -> None:
        """Without paranoid_checks, LevelDB's recovery skips a log it cannot open
        and then commits a version past it: the log's writes would be lost for
        good. A WAL that could not be fetched therefore fails the commit (and so
        DB::Open), and its objects stay in the store for the next attempt. It fails
        as the fetch did: a follower whose log was deleted under it has a stale version."""
        if self._unread_logs:
            causes = [exc for _, exc in self._unread_logs]
            cause = next((e for e in causes if isinstance(e, StaleVersionError)),
                         next((e for e in causes if isinstance(e, CorruptionError)), causes[0]))
            cls = (StaleVersionError if isinstance(cause, StaleVersionError)
                   else CorruptionError if isinstance(cause, CorruptionError) else IOError)
            raise cls("not committing a version without the write-ahead log(s) that could not be read: "
                      + "; ".join(f"{name}: {exc}" for name, exc in self._unread_logs)) from cause

    def _read_local(self, name: str, start: int, end: int) -> bytes:
        path = self.cache.path(name)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(end - start)
        except OSError as exc:
            raise local_error(path, exc, "read it for upload") from None
        if len(data) != end - start:
            raise IOError(f"{name}: local file is shorter than the {end} bytes LevelDB wrote")
        return data

    def _write_local(self, name: str, data: bytes) -> None:
        """A file that exists only in this cache (a follower's checkpoint CURRENT)."""
        path = self.cache.start_write(name)
        with open(path, "wb") as f:
            f.write(data)
        self.cache.finish_write(name, len(data), "")
        self.catalog.put(FileRecord(name, local=True))

    def live_tables(self) -> dict[int, TableMeta] | None:
        """Every table (by file number) of the version CURRENT names, with its level and key
        range, read from the local CURRENT and MANIFEST; None if they cannot be read or parsed."""
        try:
            manifest = self.read_whole(self.read_whole(CURRENT_NAME).decode().strip())
            return parse_manifest("MANIFEST", manifest, check_crc=False).tables
        except (OSError, Error, ManifestError, UnicodeDecodeError):
            return None

    def read_whole(self, name: str) -> bytes:
        """A file's bytes, as LevelDB would read them (fetched if need be)."""
        path = self.open_read(name)
        try:
            with open(path, "rb") as f:
                return f.read()
        finally:
            self.release_read(name)

    def _current_text(self) -> str:
        with open(self.cache.path(CURRENT_NAME), "rb") as f:
            return f.read().decode()


#: Bytes of a many-object file fetched at once, at most (the objects of one batch are in flight together).
_FETCH_BATCH_BYTES = 32 << 20


def _fetch_batches(objects: list[StoredObject]) -> list[list[StoredObject]]:
    """The objects in batches of at most POOL_THREADS objects and _FETCH_BATCH_BYTES (or one object)."""
    batches: list[list[StoredObject]] = []
    size = 0
    for obj in objects:
        if not batches or len(batches[-1]) >= POOL_THREADS or size + obj.size > _FETCH_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(obj)
        size += obj.size
    return batches


def _mask_unreadable(record: FileRecord, f: Any) -> list[tuple[int, int]]:
    """Zero the records a missing range cuts into, so that LevelDB's log reader (which
    repair runs without checksums) resumes at the next 32 KiB block instead of reading
    a record half made of zeros. Returns the byte ranges lost, merged."""
    lost: list[tuple[int, int]] = []
    log_format = kind_of(record.name).segmented
    for start, end in record.missing:
        if log_format:
            begin = unreadable_from(f, start)
            f.seek(begin)
            f.write(bytes(start - begin))
            end = min(record.size, -(-end // LOG_BLOCK) * LOG_BLOCK)  # the reader resumes at the next block
        else:
            begin = start
        if lost and begin <= lost[-1][1]:
            lost[-1] = (lost[-1][0], max(end, lost[-1][1]))
        else:
            lost.append((begin, end))
    return lost
