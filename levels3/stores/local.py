"""A local directory that behaves like an S3 prefix.

Objects are plain files (so a database moves between a directory and a bucket
unchanged).  Every replacement is a new file renamed into place, so readers see
the old or the new object, never a mix.  Conditional writes and deletes take an
``fcntl`` lock on ``.levels3-tmp/cas.lock``, which makes compare-and-swap atomic
across threads and processes on this host (not across hosts sharing NFS).
Imports only the store interface and levels3.errors.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import time
import uuid
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

from ..errors import ConfigurationError, ObjectNotFound, PlainLevelDBError, PreconditionFailed, StoreError
from .base import ObjectInfo, ObjectStore, PutCondition, PutMode

TMP_DIR = ".levels3-tmp"
DELETED_SUFFIX = ".deleted"  # objects delete_many has renamed out of the namespace, not yet freed
TEMP_SUFFIX = ".tmp"  # a put's data before it is linked into place
STALE_TEMP_AGE = 3600.0  # seconds after which a temp file can only be a crashed put's
log = logging.getLogger("levels3.store")


def validate_key(key: str, *, prefix: bool = False) -> str:
    """Reject keys that could escape the database or mean different things per backend.

    With ``prefix=True`` the empty string and a trailing '/' are allowed (listing).
    """
    if not isinstance(key, str):
        raise ConfigurationError(f"object key must be str, not {type(key).__name__}")
    if prefix and key == "":
        return key
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ConfigurationError(f"invalid object key {key!r}")
    parts = key.split("/")
    if prefix and parts[-1] == "":
        parts.pop()
    if any(part in ("", ".", "..") for part in parts) or parts[0] == TMP_DIR:
        raise ConfigurationError(f"invalid object key {key!r}")
    return key


def fsync_dir(path: str) -> None:
    """Make the directory's latest entries (a rename, a new or removed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Files that only a plain LevelDB directory has at its top (levels3 keeps tables, logs and
#: manifests under w<epoch>/, and its info log in the cache).
_PLAIN_LEVELDB_FILE = re.compile(r"MANIFEST-\d+|\d+\.(ldb|sst|log)|LOG|LOG\.old")


def plain_leveldb_files(root: str | os.PathLike[str]) -> list[str]:
    """The names at the top of ``root`` that mark a plain LevelDB directory (one plyvel or any
    LevelDB wrote), rather than levels3's object layout; empty when there are none."""
    try:
        with os.scandir(root) as entries:
            return sorted(e.name for e in entries if _PLAIN_LEVELDB_FILE.fullmatch(e.name) and e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return []


def refuse_plain_leveldb(root: str) -> None:
    """A plain LevelDB directory is not a levels3 store: say so, and how to bring it in, before
    anything touches it (its LOCK would read as a lease held by an unknown holder, its CURRENT
    would name a MANIFEST the store does not hold)."""
    found = plain_leveldb_files(root)
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise PlainLevelDBError(
            f"{root} is a plain LevelDB directory (it holds {shown}), not a levels3 database: copy it into "
            f"levels3's layout with `levels3 import {root} URL` (URL: another directory or s3://bucket/prefix), "
            "or open it with plyvel")


def remove_if_only_store_files(root: str | os.PathLike[str]) -> bool:
    """Remove the directory of a destroyed local store, as plyvel's destroy_db removes its own:
    only when nothing is left in it but this store's bookkeeping (the temp directory) and empty
    directories. Anything else (a file of the user's, an object a new writer just created) keeps
    it, untouched. True when the directory is gone."""
    root = os.path.abspath(os.fspath(root))
    tmp = os.path.join(root, TMP_DIR)
    directories = []
    for dirpath, dirnames, filenames in os.walk(root):
        inside_tmp = dirpath == tmp or dirpath.startswith(tmp + os.sep)
        if filenames and not inside_tmp:
            return False
        if any(os.path.islink(os.path.join(dirpath, d)) for d in dirnames):
            return False  # never follow or remove what a link points at
        directories.append(dirpath)
    for dirpath, _, filenames in os.walk(tmp):
        for name in filenames:
            try:
                os.unlink(os.path.join(dirpath, name))
            except FileNotFoundError:
                pass
    for directory in sorted(directories, key=len, reverse=True):  # deepest first
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError:
            return False  # something appeared meanwhile: it stays
    return True


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


class LocalDirStore(ObjectStore):
    """Objects as files under ``root``; keys are '/'-separated relative paths.

    A key cannot be both an object and a "directory" of other objects here
    (S3 allows ``a`` and ``a/b`` side by side); such a put fails with StoreError.
    """

    # Its only transient failure (the update lock's wait running out) comes before
    # anything changed, so a retry never races its own earlier attempt: conditional
    # PUTs need no token, which here would cost a metadata file per object.
    ambiguous_failures = False

    def __init__(self, root: str | os.PathLike[str], *, create: bool, lock_wait: float = 10.0) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.lock_wait = lock_wait
        self.url = f"file://{self.root}"
        refuse_plain_leveldb(self.root)
        if not os.path.isdir(self.root):
            if os.path.exists(self.root):
                raise StoreError(f"{self.root} exists but is not a directory", operation="open")
            if not create:
                raise ObjectNotFound(f"no database directory at {self.root}", operation="open")
            os.makedirs(self.root, exist_ok=True)
        self._tmp = os.path.join(self.root, TMP_DIR)
        self._meta = os.path.join(self._tmp, "meta")
        os.makedirs(self._meta, exist_ok=True)
        self._lock_path = os.path.join(self._tmp, "cas.lock")
        self._sweep_tmp()

    def __repr__(self) -> str:
        return f"LocalDirStore({self.root!r})"

    def _sweep_tmp(self) -> None:
        """Free what crashed processes left in the temp directory: objects a delete_many renamed away (nobody's
        any more), and temp files of puts that stopped over an hour ago (a live put is writing its own)."""
        stale_before = time.time() - STALE_TEMP_AGE
        leftovers = []
        for entry in os.scandir(self._tmp):
            try:
                if entry.name.endswith(DELETED_SUFFIX) or (
                        entry.name.endswith(TEMP_SUFFIX) and entry.stat().st_mtime < stale_before):
                    leftovers.append(entry.path)
            except FileNotFoundError:
                pass
        self._free(leftovers)

    # -- helpers -----------------------------------------------------------

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *validate_key(key).split("/"))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A fresh open file description per use: flock then excludes other threads
        # too, and a forked child never shares its parent's lock by inheritance.
        # The lock is held for microseconds; a holder that was stopped (SIGSTOP) or
        # hung must not hang everyone else, so waiting is bounded like a request.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_wait
            delay = 0.0005
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreError(f"{self.root}: the store's update lock has been held by another "
                                         f"process for over {self.lock_wait:g} s (stopped or hung?)",
                                         operation="lock", transient=True) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.005)  # a batch delete holds it ~0.1 ms a key: do not oversleep it
            yield
        finally:
            os.close(fd)

    def _fail(self, operation: str, key: str, exc: OSError) -> StoreError:
        return StoreError(f"{operation} {key!r} in {self.root} failed: {exc.strerror or exc}", operation=operation, key=key)

    def _write_temp(self, data: bytes) -> tuple[str, str]:
        """Write ``data`` durably to a new temp file; return its path and ETag."""
        tmp = os.path.join(self._tmp, uuid.uuid4().hex + TEMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # A full-precision mtime keeps ETags distinct even if an inode number is reused
            # within the file system's coarse timestamp tick.
            now = time.time_ns()
            os.utime(fd, ns=(now, now))
            os.fsync(fd)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        return tmp, _etag(st)

    def _current_etag(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not os.path.isfile(path):
            return None
        return _etag(st)

    def _meta_path(self, etag: str) -> str:
        # Metadata is named by the version it belongs to, so it never needs to change
        # atomically together with the data file.
        return os.path.join(self._meta, etag)

    def _drop_meta(self, etag: str | None) -> None:
        if etag is not None:
            try:
                os.unlink(self._meta_path(etag))
            except FileNotFoundError:
                pass

    def _unlink_version(self, path: str, etag: str) -> None:
        """Remove the object at path (whose current version is etag) and its metadata; lock held."""
        os.unlink(path)
        self._drop_meta(etag)

    def _settle_dir(self, directory: str) -> None:
        """After removals in directory: drop it (and parents) if empty, and make the
        removal durable by syncing the nearest directory that remains."""
        self._prune_empty_dirs(directory)
        while not os.path.isdir(directory):
            directory = os.path.dirname(directory)
        fsync_dir(directory)

    def _prune_empty_dirs(self, directory: str) -> None:
        while directory != self.root and directory.startswith(self.root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                return  # not empty (or gone): stop climbing
            directory = os.path.dirname(directory)

    # -- ObjectStore ---------------------------------------------------------

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        path = self._path(key)
        began = time.monotonic()
        try:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read() if end is None else f.read(max(0, end - start))
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.root}", operation="get", key=key) from None
        except OSError as exc:
            raise self._fail("get", key, exc) from exc
        log.debug("get %r bytes=%d latency=%.1fms", key, len(data), (time.monotonic() - began) * 1000)
        return data

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        # A put replaces the file by a rename: the open descriptor holds one version,
        # and its fstat gives that version's ETag.
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.root}", operation="get", key=key) from None
        except OSError as exc:
            raise self._fail("get", key, exc) from exc
        return data, self._info(key, st)

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"no object {key!r} in {self.root}", operation="head", key=key) from None
        except OSError as exc:
            raise self._fail("head", key, exc) from exc
        if not os.path.isfile(path):
            raise ObjectNotFound(f"no object {key!r} in {self.root}", operation="head", key=key)
        return self._info(key, st)

    def _info(self, key: str, st: os.stat_result) -> ObjectInfo:
        """The ObjectInfo of the version ``st`` describes (its metadata is named by its ETag)."""
        etag = _etag(st)
        metadata: dict[str, str] = {}
        try:
            with open(self._meta_path(etag), "r", encoding="utf-8") as f:
                metadata = json.load(f)
        except FileNotFoundError:
            pass
        return ObjectInfo(key=key, size=st.st_size, etag=etag, metadata=metadata, last_modified=st.st_mtime)

    def put(
        self,
        key: str,
        data: bytes,
        *,
        mode: PutMode = PutMode.OVERWRITE,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        path = self._path(key)
        began = time.monotonic()
        try:
            tmp, etag = self._write_temp(bytes(data) if not isinstance(data, bytes) else data)
        except OSError as exc:
            raise self._fail("put", key, exc) from exc
        try:
            if metadata:
                with open(self._meta_path(etag), "w", encoding="utf-8") as f:
                    json.dump(dict(metadata), f)
            with self._locked():
                parent = os.path.dirname(path)
                os.makedirs(parent, exist_ok=True)
                old = self._current_etag(path)
                if os.path.isdir(path):
                    raise StoreError(f"put {key!r}: a directory of objects has that name", operation="put", key=key)
                if mode.condition is PutCondition.CREATE:
                    try:
                        os.link(tmp, path)  # fails if the name exists: create-if-absent
                    except FileExistsError:
                        raise PreconditionFailed(
                            f"put {key!r}: object already exists", operation="put", key=key
                        ) from None
                else:
                    if mode.condition is PutCondition.REPLACE and old != mode.etag:
                        what = "does not exist" if old is None else "was changed"
                        raise PreconditionFailed(f"put {key!r}: object {what}", operation="put", key=key)
                    os.replace(tmp, path)
                    self._drop_meta(old)
                fsync_dir(parent)
        except StoreError:
            self._drop_meta(etag)
            raise
        except OSError as exc:
            self._drop_meta(etag)
            if exc.errno in (errno.ENOTDIR, errno.EEXIST):
                raise StoreError(f"put {key!r}: an object is named like one of its directories", operation="put", key=key) from exc
            raise self._fail("put", key, exc) from exc
        finally:
            try:
                os.unlink(tmp)  # still there after os.link or a refusal
            except FileNotFoundError:
                pass
        log.debug("put %r bytes=%d latency=%.1fms", key, len(data), (time.monotonic() - began) * 1000)
        return etag

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        path = self._path(key)
        try:
            with self._locked():
                old = self._current_etag(path)
                if if_match is not None and old != if_match:
                    what = "does not exist" if old is None else "was changed"
                    raise PreconditionFailed(f"delete {key!r}: object {what}", operation="delete", key=key)
                if old is None:
                    return
                self._unlink_version(path, old)
                self._settle_dir(os.path.dirname(path))
        except StoreError:
            raise  # ours (levels3 errors are OSErrors too, as plyvel's IOError is)
        except OSError as exc:
            raise self._fail("delete", key, exc) from exc
        log.debug("delete %r", key)

    def delete_many(self, keys: Sequence[str]) -> None:
        """Like one DeleteObjects request: one hold of the update lock renames the
        objects out of the namespace and syncs each directory once; freeing their
        blocks, the slow part (about 0.5 ms a file on a VM disk), comes after the
        lock, so a batch of hundreds never stalls a put for long."""
        paths = [self._path(key) for key in keys]  # every key validated before any is removed
        parents: set[str] = set()
        removed: list[str] = []
        try:
            with self._locked():
                for path in paths:
                    old = self._current_etag(path)
                    if old is not None:
                        removed.append(os.path.join(self._tmp, uuid.uuid4().hex + DELETED_SUFFIX))
                        os.rename(path, removed[-1])
                        self._drop_meta(old)
                        parents.add(os.path.dirname(path))
                for parent in sorted(parents, reverse=True):  # deepest first, so pruning climbs once
                    self._settle_dir(parent)
        except StoreError:
            raise
        except OSError as exc:
            raise self._fail("delete", keys[0] if keys else "", exc) from exc
        finally:
            self._free(removed)
        log.debug("delete %d objects", len(keys))

    def _free(self, removed: list[str]) -> None:
        """Unlink files already renamed out of the namespace (no lock: nobody else knows them)."""
        for path in removed:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # another process opening the store swept it first
            except OSError as exc:  # only space is lost; the objects are gone either way
                log.warning("could not free %s: %s", path, exc.strerror or exc)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_key(prefix, prefix=True)
        # Walk only the deepest directory that the prefix names completely.
        base_parts = prefix.split("/")[:-1]
        base = os.path.join(self.root, *base_parts)
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            if dirpath == self.root:
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]
            rel = os.path.relpath(dirpath, self.root)
            rel_prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                key = rel_prefix + name
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while walking
                found.append(ObjectInfo(key=key, size=st.st_size, etag=_etag(st), last_modified=st.st_mtime))
        # S3 orders keys by UTF-8 bytes, which is code-point order.
        found.sort(key=lambda info: info.key)
        log.debug("list %r objects=%d", prefix, len(found))
        yield from found
