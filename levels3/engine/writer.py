"""A writer's control path: the lease, the fence, uploads, commits and deferred deletion.

WriterControl is the EnvControl of the one process that writes a database.
It takes the lease, claims an epoch (engine.commit), uploads tables whole and
the WAL and MANIFEST as segments (engine.segments plans the merges), commits
CURRENT, and hands what LevelDB drops to the reaper. Every upload checks the
lease first, and a synced write is acknowledged only if the lease still held
when its segment landed. May call the stores (assembly included), the lock,
and the engine's catalog, cache, reaper, checkpoints, layout, segments and
sizing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Any, Iterator, Mapping

from ..errors import (Error, IOError, LeaseLostError, ObjectNotFound, PreconditionFailed, StoreError,
                      WriteTooLargeError)
from ..lock import LeaseLock, database_lease
from ..options import Location, StoreOptions
from ..parallel import run_parallel
from ..stores.assembly import ensure_conditional_writes
from ..stores.base import ObjectStore, PutMode
from ..stores.counting import CountingStore
from .cache import LocalCache
from .catalog import Catalog, FileRecord, StoredObject
from .checkpoints import checkpoint_key, needed_keys, read_checkpoint, write_checkpoint
from .commit import CurrentVersion, claim_epoch, commit_current, read_current
from .control import EnvControl, connect
from .layout import CURRENT_NAME, FileKind, kind_of, object_key
from .pages import PagedTables, PageStore
from .reaper import Reaper
from .segments import MERGE_MAX_BYTES, MERGED_SEGMENT_GRACE, plan_segment_upload, seal_plan, split_tail
from .sizing import table_limits

log = logging.getLogger("levels3.backend")


def _current_record(epoch: int, size: int, etag: str) -> FileRecord:
    """The catalog's record of a CURRENT this writer fenced or committed."""
    return FileRecord(CURRENT_NAME, epoch, [StoredObject(CURRENT_NAME, 0, size, etag)])


class WriterControl(EnvControl):
    """The control path of a database's single writer."""

    lease: LeaseLock

    def __init__(self, location: Location, options: StoreOptions, store: ObjectStore, counters: CountingStore,
                 cache: LocalCache, lease: LeaseLock) -> None:
        super().__init__(location, options, store, counters, cache)
        self.lease = lease
        self.epoch = 0  # this writer's epoch, set by fence()
        self.current_etag: str | None = None  # the CURRENT version we committed or fenced
        self._failures: list[str] = []  # uploads that failed where LevelDB cannot report them
        # Objects LevelDB deleted wait there for deletion_grace, for followers on older versions.
        self.reaper = Reaper(store, options.deletion_grace, self._check_lease)
        self._wal_lock = threading.Lock()  # a rolled WAL's tail upload vs. its removal
        self._inherited_garbage: list[StoredObject] = []  # what earlier writers left (see retire_inherited_garbage)

    @classmethod
    def open(cls, name: Any, options: StoreOptions | None, overrides: Mapping[str, Any], *,
             create_if_missing: bool) -> "WriterControl":
        """Take the lease, fence earlier writers and list the store: ready for DB::Open.

        Round trips, in order: the LOCK PUT; the GET of CURRENT (with its ETag and epoch);
        the fence (a PUT of CURRENT), with the LIST beside it; the MANIFEST and the newest
        WAL together (prefetch_for_recovery). LevelDB's own read of CURRENT is answered
        from the fence's copy.

        CURRENT is read only once the lease is held. Read earlier, it could predate the
        fence of a writer that held the lease meanwhile: a fence rewrites CURRENT's bytes
        unchanged, and S3's ETag is a hash of the bytes, so the If-Match would not refuse
        the stale read, and two writers would claim the same epoch."""
        location, opts, store, counters = connect(name, options, overrides, create=create_if_missing)
        cache: LocalCache | None = None
        lease: LeaseLock | None = None
        pages: PageStore | None = None
        try:
            ensure_conditional_writes(store, location, opts)
            lease = database_lease(store, opts)
            lease.acquire()
            cache = LocalCache(opts.cache_dir, opts.max_cache_bytes)
            control = cls(location, opts, store, counters, cache, lease)
            fenced = control._fence_and_list(read_current(store))
            if fenced is None:
                # A new database: no CURRENT to fence; stay above anything a failed creation left.
                control.epoch = control.catalog.max_epoch + 1
            for checkpoint in control.catalog.checkpoints:
                control._protect_checkpoint(checkpoint)
            control._inherited_garbage, control.catalog.garbage = control.catalog.garbage, []
            cache.adopt({r.name: r.fingerprint for r in control.catalog.records()})
            if fenced is not None:
                # LevelDB's recovery starts by reading CURRENT: the fence's copy answers it.
                current = control.catalog.get(CURRENT_NAME)
                assert current is not None  # _fence_and_list recorded the version it fenced
                cache.keep_bytes(CURRENT_NAME, fenced.body, current.fingerprint)
                control.prefetch_for_recovery(fenced.body)
            pages = PageStore.in_cache(cache, opts.max_cache_bytes, opts.cache_page_size)
            pages.retain(control.catalog)
            control.pages = PagedTables(control, pages)
            log.info("opened %s as writer epoch %d (cache %s)", location.url, control.epoch, cache.directory)
            return control
        except BaseException:
            if pages is not None:
                pages.close()
            if cache is not None:
                cache.close()
            if lease is not None:
                lease.release()
            store.close()
            raise

    def finish_open(self) -> None:
        super().finish_open()
        if self.pages is not None:
            self.pages.prefetch_tails()
        self.retire_inherited_garbage()

    def retire_inherited_garbage(self) -> None:
        """Hand what earlier writers left to the reaper, once LevelDB has opened (or
        repaired) the database: an open that fails (a damaged WAL, say) deletes nothing.
        It was dropped at the latest when the newest object was uploaded."""
        garbage, self._inherited_garbage = self._inherited_garbage, []
        self._retire(garbage, dropped_ago=self._time_since_last_upload())

    def leveldb_options(self, config: Any) -> Any:
        """LevelDB's options with table sizes that keep every table within max_object_size
        (engine.sizing); also fixes the largest write this writer accepts."""
        limits = table_limits(self.options.max_object_size, write_buffer_size=config.write_buffer_size,
                              max_file_size=config.max_file_size, block_size=config.block_size)
        self.max_write_bytes = limits.max_write_bytes
        return dataclasses.replace(config, write_buffer_size=limits.write_buffer_size,
                                   max_file_size=limits.max_file_size)

    def refuse_write(self, weight: int) -> None:
        """The bridge found a write heavier than max_write_bytes (engine.sizing.write_weight)."""
        raise WriteTooLargeError(
            f"a single write weighing {weight} bytes (its keys counted twice) is above the {self.max_write_bytes} "
            f"bytes one write may take with max_object_size={self.options.max_object_size}: the table that "
            "receives it must fit in one object; split the write, or open with a larger max_object_size")

    def _fence_and_list(self, seen: CurrentVersion | None) -> CurrentVersion | None:
        """Claim the next writer epoch (engine.commit.claim_epoch) and load the catalog,
        at once; returns CURRENT as fenced (None: a new database).

        The LIST starts after ``seen`` was read, so it holds the MANIFEST ``seen`` names
        (uploaded before it was committed), and after the lease was ours, so it holds
        everything an earlier writer had acknowledged (its lease had ended first). If the
        fence had to read CURRENT again (a writer it fenced out committed meanwhile), that
        LIST may predate the version fenced, and the store is listed again; so it is when
        CURRENT was absent when read but is in the LIST."""
        fence, catalog = run_parallel(lambda: claim_epoch(self.store, self._check_lease, seen),
                                      lambda: Catalog.load(self.store))
        if fence.current is None and catalog.get(CURRENT_NAME) is not None:
            fence = claim_epoch(self.store, self._check_lease, read_current(self.store))
            catalog = Catalog.load(self.store)
        elif fence.replaced is not seen:
            catalog = Catalog.load(self.store)
        self.catalog = catalog
        if fence.current is None:
            return None
        self.epoch, self.current_etag = fence.epoch, fence.current.etag
        # The LIST may have seen CURRENT before the fence replaced it.
        self.catalog.put(_current_record(self.epoch, len(fence.current.body), fence.current.etag))
        return fence.current

    def _time_since_last_upload(self) -> float:
        """Seconds since an earlier writer last uploaded anything (0 if unknown); the
        LIST's LastModified has a resolution of one second, hence the margin."""
        return max(0.0, self.catalog.idle_seconds - 1.0 + time.monotonic() - self.catalog.listed_at)

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        """After LevelDB is gone: send rolled-over WAL tails, release the lease, tidy the cache."""
        if self._closed:
            return
        super().close()
        if self._failures:
            raise IOError("data written since the last sync could not be uploaded at close: "
                          + "; ".join(self._failures))

    def _finish(self) -> None:
        for record in self.catalog.records():
            if record.unsent_tail:
                try:
                    self._send_rolled_tail(record)
                except BaseException as exc:
                    self._failures.append(f"{record.name}: {exc}")
        self.reaper.stop()
        self.reaper.reap()
        self.lease.release()

    def flush_at_close(self) -> bool:
        """A clean close writes the memtable to a table when the WAL being written holds
        anything: two PUTs now (the table, a MANIFEST segment) instead of, at the next open,
        fetching the WAL, replaying it and uploading the same table before the database
        can be used. Not once the lease is lost: nothing could be uploaded."""
        if not self.lease.valid:
            return False
        return any(size > 0 for _, size in self._wal_being_written())

    def wal_has_unsent_bytes(self) -> bool:
        """Whether the WAL being written holds bytes the store does not have yet."""
        return any(size > record.size for record, size in self._wal_being_written())

    def _wal_being_written(self) -> Iterator[tuple[FileRecord, int]]:
        """The WAL LevelDB is appending to, with its local size."""
        for record in self.catalog.records():
            if record.writing and kind_of(record.name) is FileKind.WAL:
                size = self.cache.written_size(record.name)
                if size is not None:
                    yield record, size

    # -- Env callbacks -------------------------------------------------------------

    def create(self, name: str) -> str:
        if not kind_of(name).local_only:
            self._check_lease()
            older = self.catalog.get(name)
            if older is not None and older.objects:
                # An earlier epoch's object of this name was never committed (LevelDB
                # never reuses a live file number). It is left alone: never read, and
                # removed later by gc.
                log.info("%s from writer epoch %d is superseded", name, older.epoch)
                self.catalog.garbage.extend(older.objects)
            self.catalog.put(FileRecord(name, self.epoch, writing=True))
        return self.cache.start_write(name)

    def _persist_durable(self, record: FileRecord, kind: FileKind, size: int, final: bool) -> None:
        if kind is FileKind.WAL and final and not self.closing:
            # A WAL rolls over when its memtable goes to a table: that table will
            # carry these bytes to the store, so the unsynced tail is not uploaded
            # now (it would be deleted moments later). close() sends it if the
            # table did not make it first.
            record.writing = False
            record.unsent_tail = size > record.size
            return
        if self._opening and (kind.segmented or final):
            # LevelDB's recovery went past a log it could not read: it must not get as far as a commit.
            self._refuse_version_without_logs()
        try:
            if kind is FileKind.WAL:
                # A sync makes every earlier write durable, as in LevelDB: first the
                # tail of a rolled WAL whose table has not landed yet.
                for older in self.catalog.records():
                    if older.unsent_tail:
                        self._send_rolled_tail(older)
            if kind.segmented:
                self._upload_tail(record, size, seal=final and self.closing)
            elif final:
                self._upload_whole(record, size)
        except BaseException as exc:
            if final and kind.segmented:
                # From a destructor LevelDB cannot report this; close() will.
                self._failures.append(f"{record.name}: {exc}")
            raise
        if final:
            record.writing = False
            self.cache.finish_write(record.name, size, record.fingerprint)

    def _drop_objects(self, record: FileRecord) -> None:
        self._check_lease()
        if kind_of(record.name) is FileKind.WAL:
            # Only an open reads a WAL (whole, to replay it), and an open that finds a listed
            # object gone lists again; kept, a dropped WAL would be fetched for nothing by the
            # next open, which takes the newest WAL listed to be the live one.
            with self._wal_lock:
                self._retire(record.objects, grace=MERGED_SEGMENT_GRACE)
            return
        dropped_ago = 0.0
        if self._opening and kind_of(record.name) is FileKind.TABLE and record.epoch < self.epoch:
            # Obsolete when this writer opened: an earlier writer dropped it, at the
            # latest when it last uploaded (its MANIFEST edit saying so).
            dropped_ago = self._time_since_last_upload()
        with self._wal_lock:
            self._retire(record.objects, dropped_ago=dropped_ago)

    def _rename_durable(self, src: str, dst: str) -> None:
        if kind_of(dst) is FileKind.CURRENT:
            self._commit_current(src)
        elif kind_of(src).local_only:
            self._publish(src, dst)
        else:
            self._move(src, dst)

    # -- uploads -------------------------------------------------------------------

    def _send_rolled_tail(self, record: FileRecord) -> None:
        """Upload what a rolled-over WAL never sent, unless LevelDB dropped it meanwhile
        (its table is committed then, and the bytes are not needed)."""
        with self._wal_lock:
            if not record.unsent_tail or self.catalog.get(record.name) is not record:
                return
            self._upload_tail(record, os.path.getsize(self.cache.path(record.name)), seal=self.closing)
            record.unsent_tail = False

    def _upload_tail(self, record: FileRecord, size: int, *, seal: bool = False) -> None:
        """Upload the bytes since the last upload as one new object, merged with
        the objects before it when plan_segment_upload says so. ``seal`` (the
        file's last upload, at close) folds in every trailing object that fits,
        so the next cold open reads the file in one object. No object exceeds
        max_object_size: a tail above it goes as several segments, unmerged."""
        start = record.size
        cap = self.options.max_object_size
        merge_limit = min(MERGE_MAX_BYTES, cap)
        if size - start > cap:
            for offset, end in split_tail(start, size, cap):
                self._put_segment(record, offset, end, absorbed=0, level=0)
            return
        if seal:
            absorbed = seal_plan(record.objects, size - start, max_bytes=merge_limit)
            level = 1 + max((o.level for o in record.objects[len(record.objects) - absorbed:]), default=-1)
        else:
            absorbed, level = plan_segment_upload(record.objects, size - start, max_bytes=merge_limit)
        if size <= start and not absorbed:
            return
        merged = record.objects[len(record.objects) - absorbed:] if absorbed else []
        self._put_segment(record, merged[0].offset if merged else start, size, absorbed=absorbed, level=level)
        if merged:
            self._retire(merged, grace=MERGED_SEGMENT_GRACE)  # readers prefer the merged object already

    def _put_segment(self, record: FileRecord, offset: int, end: int, *, absorbed: int, level: int) -> None:
        """One object holding bytes [offset, end), replacing the last ``absorbed`` objects."""
        self._check_lease()
        key = object_key(record.name, record.epoch, offset, end=end, level=level)
        etag = self.store.put(key, self._read_local(record.name, offset, end), mode=PutMode.CREATE)
        record.objects[len(record.objects) - absorbed:] = [StoredObject(key, offset, end - offset, etag, level, end)]
        # A sync is acknowledged only if the lease was still ours when the segment
        # landed: then no successor can have listed the store before it did.
        self._check_lease()

    def _upload_whole(self, record: FileRecord, size: int) -> None:
        if record.objects:
            return  # already uploaded (Close after an earlier final persist)
        self._check_lease()
        if size > self.options.max_object_size:
            # engine.sizing keeps LevelDB's tables below the cap; this is the last line.
            raise StoreError(f"{record.name} is {size} bytes, above max_object_size={self.options.max_object_size}",
                             operation="put", key=record.name)
        key = object_key(record.name, record.epoch)
        data = self._read_local(record.name, 0, size)
        try:
            etag = self.store.put(key, data, mode=PutMode.CREATE)
        except PreconditionFailed:
            raise IOError(f"{key} already exists in the store: another writer used this epoch") from None
        record.objects.append(StoredObject(key, 0, size, etag))

    def _publish(self, temp_name: str, name: str) -> None:
        """A local temp file becomes a durable file (repair writes its MANIFEST this way)."""
        self._check_lease()
        size = self.cache.local_size(temp_name)
        if size is None:
            raise ObjectNotFound(f"{temp_name} does not exist", operation="rename", key=temp_name)
        record = FileRecord(name, self.epoch)
        self.cache.rename(temp_name, name)
        if kind_of(name).segmented:
            self._upload_tail(record, size)
        else:
            self._upload_whole(record, size)
        self.cache.set_fingerprint(name, record.fingerprint)
        self.catalog.put(record)

    def _commit_current(self, temp_name: str) -> None:
        """Publish a new CURRENT: the single atomic PUT that commits a version,
        conditional on the version this writer fenced or last committed."""
        self._check_lease()
        size = self.cache.local_size(temp_name)
        if size is None:
            raise ObjectNotFound(f"{temp_name} does not exist", operation="rename", key=temp_name)
        data = self._read_local(temp_name, 0, size)
        try:
            etag = commit_current(self.store, data, epoch=self.epoch, replacing=self.current_etag)
        except PreconditionFailed:
            raise LeaseLostError(f"CURRENT of {self.location.url} was changed by another writer; "
                                 "this writer has been fenced out") from None
        self.current_etag = etag
        self.cache.rename(temp_name, CURRENT_NAME)
        record = _current_record(self.epoch, size, etag)
        self.cache.set_fingerprint(CURRENT_NAME, record.fingerprint)
        self.catalog.put(record)

    def _move(self, src: str, dst: str) -> None:
        """A general rename (repair archives files into lost/): copy, then delete."""
        self._check_lease()
        record = self.catalog.get(src)
        if record is None:
            raise ObjectNotFound(f"{src} does not exist", operation="rename", key=src)
        path = self.open_read(src)
        try:
            with open(path, "rb") as f:
                data = f.read()
        finally:
            self.release_read(src)
        key = object_key(dst, self.epoch)
        etag = self.store.put(key, data)
        self.catalog.put(FileRecord(dst, self.epoch, [StoredObject(key, 0, len(data), etag)]))
        self.catalog.pop(src)
        self.reaper.delete_now([o.key for o in record.objects])  # keeps what a checkpoint needs
        self.cache.discard(src)

    # -- deletion and checkpoints ----------------------------------------------------

    def _retire(self, objects: list[StoredObject], *, dropped_ago: float = 0.0, grace: float | None = None) -> None:
        self.reaper.retire((o.key for o in objects), dropped_ago=dropped_ago, grace=grace)

    def _protect_checkpoint(self, name: str) -> None:
        try:
            data = read_checkpoint(self.store, name)
        except Error as exc:
            # What it needs is unknown, so nothing may go: garbage waits for a writer that can read it.
            self.reaper.hold(f"checkpoint {name!r} cannot be read ({exc})")
            return
        self.reaper.protect(needed_keys(data))

    def create_checkpoint(self, name: str) -> None:
        """Record the committed state (CURRENT's content and every object of every
        live file) as checkpoints/<name>.json; nothing is copied."""
        self._check_lease()
        checkpoint_key(name)  # a bad name fails before anything is protected
        current = self._current_text()
        with self.reaper.paused():  # nothing it names can be deleted between the snapshot and its protection
            live = {r.name: list(r.objects) for r in self.catalog.records() if r.objects and r.name != CURRENT_NAME}
            self.reaper.protect(o.key for objects in live.values() for o in objects)
        write_checkpoint(self.store, name, epoch=self.epoch, current=current, files=live)

    def delete_all(self) -> None:
        """After DestroyDB: remove every object of ours that is left (CURRENT, superseded ones)."""
        self._check_lease()
        self.reaper.forget_protection()  # destroying the database takes its checkpoints too
        self.retire_inherited_garbage()
        self.reaper.reap(everything=True)
        keys = [o.key for record in self.catalog.records() for o in record.objects]
        for record in self.catalog.records():
            self.catalog.pop(record.name)
        self.reaper.delete_now(keys + [checkpoint_key(name) for name in self.catalog.checkpoints])

