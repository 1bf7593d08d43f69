"""The Python side of the Env: what each control operation does to the store.

The native Env calls one method here per control operation (see
csrc/object_env.h). The data path never comes here. Methods raise on failure;
the bridge turns the exception into a LevelDB Status.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any, Mapping

from ..errors import (
    Error,
    IOError,
    LeaseLostError,
    ObjectNotFound,
    PreconditionFailed,
    ReadOnlyError,
    StaleVersionError,
    StoreError,
)
from ..lock import LeaseLock
from ..options import Location, StoreOptions, parse_location
from ..stores.assembly import build_store, ensure_conditional_writes, resolve_options
from ..stores.base import ObjectStore, PutMode
from ..stores.counting import CountingStore
from .cache import LocalCache
from .catalog import Catalog, FileRecord, StoredObject
from .checkpoints import FORMAT_VERSION, checkpoint_key, needed_keys, read_checkpoint
from .reaper import Reaper
from .segments import MERGED_SEGMENT_GRACE, plan_segment_upload, seal_plan
from .layout import CURRENT_NAME, EPOCH_METADATA, LOCK_KEY, FileKind, kind_of, object_key

log = logging.getLogger("levels3.backend")


class Backend:
    """Control path of one open database: store, catalog, cache and lease."""

    def __init__(self, location: Location, options: StoreOptions, store: ObjectStore, counters: CountingStore,
                 cache: LocalCache, lease: LeaseLock | None) -> None:
        self.location = location
        self.options = options
        self.store = store
        self.counters = counters
        self.cache = cache
        self.lease = lease
        self.catalog = Catalog()
        self.epoch = 0  # this writer's epoch, set by fence()
        self.current_etag: str | None = None  # the CURRENT version we committed or fenced
        self.closing = False
        self._closed = False
        self._failures: list[str] = []  # uploads that failed where LevelDB cannot report them
        self.read_only = lease is None
        self.checkpoint: str | None = None  # the checkpoint a follower shows, if any
        self.owns_store = True  # a follower's generations pass the store on to the next one
        self.stale = False  # a follower found an object it listed deleted: its version is gone
        self._unread_logs: list[str] = []  # WAL files whose fetch failed (see _refuse_version_without_logs)
        self._opening = True  # until LevelDB's DB::Open returns (finish_open)
        # Objects LevelDB deleted wait there for deletion_grace, for followers on older versions.
        self.reaper = Reaper(store, options.deletion_grace, self._check_lease)
        self._wal_lock = threading.Lock()  # a rolled WAL's tail upload vs. its removal

    # -- opening and closing ---------------------------------------------------

    @staticmethod
    def _connect(name: Any, options: StoreOptions | None, overrides: Mapping[str, Any], *,
                 create: bool) -> tuple[Location, StoreOptions, ObjectStore, CountingStore]:
        """Parse the name and options and build the layered store for them."""
        location = parse_location(name)
        opts = resolve_options(options, overrides)
        try:
            store, counters = build_store(location, opts, create=create)
        except ObjectNotFound as exc:
            raise Error(f"{location.url} does not exist (create_if_missing is false)") from exc
        return location, opts, store, counters

    @classmethod
    def open(cls, name: Any, options: StoreOptions | None, overrides: Mapping[str, Any], *,
             create_if_missing: bool) -> "Backend":
        location, opts, store, counters = cls._connect(name, options, overrides, create=create_if_missing)
        cache: LocalCache | None = None
        lease: LeaseLock | None = None
        try:
            ensure_conditional_writes(store, location, opts)
            lease = LeaseLock(store, key=LOCK_KEY, lease_duration=opts.lease_duration,
                              lease_renewal=opts.lease_renewal, lock_timeout=opts.lock_timeout)
            lease.acquire()
            cache = LocalCache(opts.cache_dir, opts.max_cache_bytes)
            backend = cls(location, opts, store, counters, cache, lease)
            backend.fence()
            backend.catalog = Catalog.load(store)
            if backend.current_etag is None:
                # A new database: no CURRENT to fence; stay above anything a failed creation left.
                backend.epoch = backend.catalog.max_epoch + 1
            for name in backend.catalog.checkpoints:
                backend._protect_checkpoint(name)
            # What earlier writers left: dropped at the latest when the newest object was uploaded.
            backend._retire(backend.catalog.garbage, dropped_ago=backend._time_since_last_upload())
            backend.catalog.garbage = []
            cache.adopt({r.name: r.fingerprint for r in backend.catalog.records()})
            log.info("opened %s as writer epoch %d (cache %s)", location.url, backend.epoch, cache.directory)
            return backend
        except BaseException:
            if cache is not None:
                cache.close()
            if lease is not None:
                lease.release()
            store.close()
            raise

    @classmethod
    def open_follower(cls, name: Any, options: StoreOptions | None, overrides: Mapping[str, Any], *,
                      checkpoint: str | None = None, previous: "Backend | None" = None) -> "Backend":
        """A read-only view: no lock, no fence, nothing ever written to the store.

        LevelDB still recovers (replays the WAL, writes a new MANIFEST) on open;
        those files live only in this follower's private cache directory.
        """
        if previous is not None:
            location, opts, store, counters = previous.location, previous.options, previous.store, previous.counters
        else:
            location, opts, store, counters = cls._connect(name, options, overrides, create=False)
        cache: LocalCache | None = None
        try:
            cache = LocalCache(None, opts.max_cache_bytes, parent=opts.cache_dir)
            backend = cls(location, opts, store, counters, cache, None)
            if checkpoint is not None:
                data = read_checkpoint(store, checkpoint)
                backend.checkpoint = checkpoint
                backend.catalog = Catalog.from_checkpoint(data["files"])
                backend._write_local(CURRENT_NAME, data["current"].encode())
            else:
                backend.catalog = Catalog.load(store)
                if backend.catalog.get(CURRENT_NAME) is None:
                    raise Error(f"{location.url} does not exist (no CURRENT): nothing to follow")
            current = {r.name: r.fingerprint for r in backend.catalog.records() if not r.local}
            if previous is not None:
                cache.adopt_links(previous.cache, current)
                backend.owns_store = False  # until the refresh that made it succeeds (see DB.refresh)
            log.info("opened %s read-only%s (cache %s)", location.url,
                     f" at checkpoint {checkpoint!r}" if checkpoint else "", cache.directory)
            return backend
        except BaseException:
            if cache is not None:
                cache.close()
            if previous is None:
                store.close()
            raise

    def next_generation(self) -> "Backend":
        """A follower's refresh: a new view of the store's newest committed state."""
        return Backend.open_follower(None, None, {}, previous=self)

    def _write_local(self, name: str, data: bytes) -> None:
        """A file that exists only in this follower's cache (a checkpoint's CURRENT)."""
        path = self.cache.start_write(name)
        with open(path, "wb") as f:
            f.write(data)
        self.cache.finish_write(name, len(data), "")
        self.catalog.put(FileRecord(name, local=True))

    def finish_open(self) -> None:
        self._opening = False

    def _time_since_last_upload(self) -> float:
        """Seconds since an earlier writer last uploaded anything (0 if unknown); the
        LIST's LastModified has a resolution of one second, hence the margin."""
        return max(0.0, self.catalog.idle_seconds - 1.0 + time.monotonic() - self.catalog.listed_at)

    def fence(self) -> None:
        """Claim the next writer epoch by rewriting CURRENT with If-Match.

        Epochs form a compare-and-swap chain on CURRENT, so each writer's is unique
        and higher than every earlier writer's; and from here on a writer that lost
        its lease can no longer commit (its If-Match on CURRENT fails).
        """
        while True:
            self._check_lease()
            try:
                info = self.store.head(CURRENT_NAME)
            except ObjectNotFound:
                self.current_etag = None
                return
            body = self.store.get(CURRENT_NAME)
            epoch = int(info.metadata.get(EPOCH_METADATA, "0") or 0) + 1
            try:
                self.current_etag = self.store.put(CURRENT_NAME, body, mode=PutMode.replace(info.etag),
                                                   metadata={EPOCH_METADATA: str(epoch)})
            except PreconditionFailed:
                log.info("CURRENT changed while fencing %s; retrying", self.location.url)
                continue
            self.epoch = epoch
            return

    @property
    def local_dir(self) -> str:
        return self.cache.directory

    @property
    def lease_lost(self) -> bool:
        return self.lease is not None and not self.lease.valid

    def begin_close(self) -> None:
        """LevelDB is about to be deleted: its last WAL tail must now be uploaded."""
        self.closing = True

    def close(self) -> None:
        """After LevelDB is gone: send rolled-over WAL tails, release the lease, tidy the cache."""
        if self._closed:
            return
        self._closed = True
        self.closing = True
        try:
            for record in self.catalog.records():
                if record.unsent_tail:
                    self._send_tail(record)
            if self.lease is not None:
                self.reaper.stop()
                self.reaper.reap()
                self.lease.release()
        finally:
            self.cache.close()
            if self.owns_store:
                self.store.close()
        if self._failures:
            raise IOError("data written since the last sync could not be uploaded at close: "
                          + "; ".join(self._failures))

    def _send_tail(self, record: FileRecord) -> None:
        try:
            self._send_rolled_tail(record)
        except BaseException as exc:
            self._failures.append(f"{record.name}: {exc}")

    def _send_rolled_tail(self, record: FileRecord) -> None:
        """Upload what a rolled-over WAL never sent, unless LevelDB dropped it meanwhile
        (its table is committed then, and the bytes are not needed)."""
        with self._wal_lock:
            if not record.unsent_tail or self.catalog.get(record.name) is not record:
                return
            self._upload_tail(record, os.path.getsize(self.cache.path(record.name)), seal=self.closing)
            record.unsent_tail = False

    def wal_has_unsent_bytes(self) -> bool:
        """Whether the WAL being written holds bytes the store does not have yet."""
        for record in self.catalog.records():
            if record.writing and kind_of(record.name) is FileKind.WAL:
                size = self.cache.written_size(record.name)
                if size is not None and size > record.size:
                    return True
        return False

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
        return counters

    # -- helpers -----------------------------------------------------------------

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def _read_local(self, name: str, start: int, end: int) -> bytes:
        with open(self.cache.path(name), "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        if len(data) != end - start:
            raise IOError(f"{name}: local file is shorter than the {end} bytes LevelDB wrote")
        return data

    def _check_size(self, name: str, size: int) -> None:
        if size > self.options.max_object_size:
            raise StoreError(f"{name} is {size} bytes, above max_object_size={self.options.max_object_size}",
                             operation="put", key=name)

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
        key = checkpoint_key(name)
        with open(self.cache.path(CURRENT_NAME), "rb") as f:
            current = f.read().decode()
        with self.reaper.paused():  # nothing it names can be deleted between the snapshot and its protection
            live = {r.name: list(r.objects) for r in self.catalog.records() if r.objects and r.name != CURRENT_NAME}
            self.reaper.protect(o.key for objects in live.values() for o in objects)
        files = {name: [[o.key, o.offset, o.size, o.etag, o.level] for o in objects]
                 for name, objects in live.items()}
        body = json.dumps({"version": FORMAT_VERSION, "name": name, "epoch": self.epoch, "created": time.time(),
                           "current": current, "files": files}, sort_keys=True).encode()
        try:
            self.store.put(key, body, mode=PutMode.CREATE)
        except PreconditionFailed:
            raise Error(f"a checkpoint named {name!r} already exists in {self.location.url}") from None

    def _fetch(self, record: FileRecord) -> str:
        """Download every object of the file into the cache; returns the pinned path."""
        self._check_size(record.name, record.size)
        temp = self.cache.temp_path(record.name)
        try:
            with open(temp, "wb") as f:
                for obj in record.objects:
                    try:
                        data = self.store.get(obj.key)
                    except ObjectNotFound:
                        if not self.read_only:
                            raise
                        self.stale = True
                        raise StaleVersionError(
                            f"{obj.key} was deleted by the writer: this follower's version is older than "
                            "deletion_grace; call refresh()") from None
                    if len(data) != obj.size:
                        raise StoreError(f"{obj.key} changed size while being read ({len(data)} != {obj.size})",
                                         operation="get", key=obj.key)
                    f.write(data)
            return self.cache.insert_downloaded(record.name, temp, record.size, record.fingerprint)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise

    # -- Env callbacks -------------------------------------------------------------

    def open_read(self, name: str) -> str:
        record = self.catalog.get(name)
        if record is None or record.writing or record.unsent_tail or record.local:
            path = self.cache.pin_local(name)
            if path is None:
                raise ObjectNotFound(f"{name} does not exist", operation="open", key=name)
            return path
        path = self.cache.open_cached(name, record.fingerprint)
        if path is not None:
            return path
        try:
            return self._fetch(record)
        except BaseException as exc:
            if kind_of(name) is FileKind.WAL:
                self._unread_logs.append(f"{name}: {exc}")
            raise

    def release_read(self, name: str) -> None:
        self.cache.release(name)

    def create(self, name: str) -> str:
        kind = kind_of(name)
        if self.read_only:
            if not kind.local_only:
                self.catalog.put(FileRecord(name, writing=True, local=True))
            return self.cache.start_write(name)
        if not kind.local_only:
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
        if kind is FileKind.WAL and final and not self.closing:
            # A WAL rolls over when its memtable goes to a table: that table will
            # carry these bytes to the store, so the unsynced tail is not uploaded
            # now (it would be deleted moments later). close() sends it if the
            # table did not make it first.
            record.writing = False
            record.unsent_tail = size > record.size
            return
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
                self._failures.append(f"{name}: {exc}")
            raise
        if final:
            record.writing = False
            self.cache.finish_write(name, size, record.fingerprint)

    def _upload_tail(self, record: FileRecord, size: int, *, seal: bool = False) -> None:
        """Upload the bytes since the last upload as one new object, merged with
        the objects before it when plan_segment_upload says so. ``seal`` (the
        file's last upload, at close) folds in every trailing object that fits in
        MERGE_MAX_BYTES, so the next cold open reads the file in one object."""
        start = record.size
        if seal:
            absorbed = seal_plan(record.objects, size - start)
            level = 1 + max((o.level for o in record.objects[len(record.objects) - absorbed:]), default=-1)
        else:
            absorbed, level = plan_segment_upload(record.objects, size - start)
        if size <= start and not absorbed:
            return
        self._check_lease()
        merged = record.objects[len(record.objects) - absorbed:] if absorbed else []
        offset = merged[0].offset if merged else start
        key = object_key(record.name, record.epoch, offset, end=size, level=level)
        etag = self.store.put(key, self._read_local(record.name, offset, size), mode=PutMode.CREATE)
        record.objects[len(record.objects) - absorbed:] = [StoredObject(key, offset, size - offset, etag, level)]
        # A sync is acknowledged only if the lease was still ours when the segment
        # landed: then no successor can have listed the store before it did.
        self._check_lease()
        if merged:
            self._retire(merged, grace=MERGED_SEGMENT_GRACE)  # readers prefer the merged object already

    def _upload_whole(self, record: FileRecord, size: int) -> None:
        if record.objects:
            return  # already uploaded (Close after an earlier final persist)
        self._check_lease()
        self._check_size(record.name, size)
        key = object_key(record.name, record.epoch)
        data = self._read_local(record.name, 0, size)
        try:
            etag = self.store.put(key, data, mode=PutMode.CREATE)
        except PreconditionFailed:
            raise IOError(f"{key} already exists in the store: another writer used this epoch") from None
        record.objects.append(StoredObject(key, 0, size, etag))

    def remove(self, name: str) -> None:
        kind = kind_of(name)
        if kind is FileKind.LOCK:
            return  # the lease is released at close, after the last upload
        record = self.catalog.pop(name)
        in_cache = self.cache.local_size(name) is not None
        if record is None and not in_cache:
            raise ObjectNotFound(f"{name} does not exist", operation="delete", key=name)
        if record is not None and record.objects and not self.read_only:
            self._check_lease()
            dropped_ago = 0.0
            if self._opening and kind is FileKind.TABLE and record.epoch < self.epoch:
                # Obsolete when this writer opened: an earlier writer dropped it, at the
                # latest when it last uploaded (its MANIFEST edit saying so).
                dropped_ago = self._time_since_last_upload()
            with self._wal_lock:
                self._retire(record.objects, dropped_ago=dropped_ago)
        self.cache.discard(name)

    def rename(self, src: str, dst: str) -> None:
        src_kind, dst_kind = kind_of(src), kind_of(dst)
        if src_kind.local_only and dst_kind.local_only:
            self.cache.rename(src, dst)
            return
        if dst_kind is FileKind.CURRENT:
            self._refuse_version_without_logs()
        if self.read_only:
            if dst_kind is not FileKind.CURRENT:
                raise ReadOnlyError(f"a read-only follower cannot rename {src} to {dst}")
            self.cache.rename(src, dst)
            self.catalog.put(FileRecord(dst, local=True))
            return
        if dst_kind is FileKind.CURRENT:
            self._commit_current(src)
            return
        if src_kind.local_only:
            self._publish(src, dst)
            return
        self._move(src, dst)

    def _refuse_version_without_logs(self) -> None:
        """Without paranoid_checks, LevelDB's recovery skips a log it cannot open
        and then commits a version past it: the log's writes would be lost for
        good. A WAL that could not be fetched therefore fails the commit (and so
        DB::Open), and its objects stay in the store for the next attempt."""
        if self._unread_logs:
            raise IOError("not committing a version without the write-ahead log(s) that could not be read: "
                          + "; ".join(self._unread_logs))

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
        """Publish a new CURRENT: the single atomic PUT that commits a version.

        If-Match on the version this writer fenced or last committed: a writer
        that lost the database to another can never commit again.
        """
        self._check_lease()
        size = self.cache.local_size(temp_name)
        if size is None:
            raise ObjectNotFound(f"{temp_name} does not exist", operation="rename", key=temp_name)
        data = self._read_local(temp_name, 0, size)
        metadata = {EPOCH_METADATA: str(self.epoch)}
        try:
            mode = PutMode.CREATE if self.current_etag is None else PutMode.replace(self.current_etag)
            etag = self.store.put(CURRENT_NAME, data, mode=mode, metadata=metadata)
        except PreconditionFailed:
            raise LeaseLostError(f"CURRENT of {self.location.url} was changed by another writer; "
                                 "this writer has been fenced out") from None
        self.current_etag = etag
        self.cache.rename(temp_name, CURRENT_NAME)
        record = FileRecord(CURRENT_NAME, self.epoch, [StoredObject(CURRENT_NAME, 0, size, etag)])
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
        if self.lease is not None:
            self.lease.check()  # a follower holds no lock: it never writes to the store

    def unlock(self) -> None:
        """LevelDB unlocks before its last uploads run; the lease is released in close()."""

    def delete_all(self) -> None:
        """After DestroyDB: remove every object of ours that is left (CURRENT, superseded ones)."""
        self._check_lease()
        self.reaper.forget_protection()  # destroying the database takes its checkpoints too
        self.reaper.reap(everything=True)
        keys = [o.key for record in self.catalog.records() for o in record.objects]
        for record in self.catalog.records():
            self.catalog.pop(record.name)
        self.reaper.delete_now(keys + [checkpoint_key(name) for name in self.catalog.checkpoints])
