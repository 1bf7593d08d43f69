"""The bounded local cache: LevelDB's files on local disk, evicted by bytes.

The cache directory is where LevelDB's data path reads and appends. It is
disposable: everything durable is in the store. Rules:

- least-recently-opened files are evicted first once the total passes
  ``max_bytes``; files LevelDB holds open (pinned) or is writing are never
  deleted under it, so the bound is ``max_bytes`` plus the open files;
- a directory left by an earlier run is trusted only file by file, when the
  fingerprint it recorded at a clean close matches what the store holds now;
- one live process per directory (an exclusive ``flock``), and one open
  database: each owns exactly one directory (OwnedDirectory), whose lock file
  records who holds it. Nothing else deletes in a directory another database
  owns: a writer's adoption passes over them, even inside its own cache_dir;
- a temporary directory whose owner is provably gone (levels3.liveness: same
  host, boot and pid namespace, and the pid is gone or reused), whose flock is
  free and which is older than RECLAIM_AGE is removed by the next open that
  makes a temporary directory beside it (``reclaim_abandoned``);
- a directory that cannot be used, or that vanished under an open database, is
  a local problem: levels3.IOError naming the path, never a bare OSError.

Owns the files on local disk and their pins, except tables once they are read
in pages (PAGES_DIR holds those; the page cache validates them itself); knows
nothing of the store (the control path fetches and uploads). Imports only
levels3.errors, levels3.liveness and the name of the page directory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from .. import liveness
from ..errors import IOError
from .pages import PAGES_DIR

log = logging.getLogger("levels3.cache")

_INDEX = ".levels3-cache.json"
_LOCKFILE = ".levels3-cache.lock"
_INDEX_VERSION = 1
TEMPORARY_PREFIX = "levels3-cache-"  # a temporary directory of one open database
#: Seconds a temporary directory must have been left alone before it may be reclaimed:
#: longer than any open takes between making its directory and recording its owner.
RECLAIM_AGE = 60.0


def local_error(path: str, exc: OSError, doing: str) -> IOError:
    """A local file problem as levels3 reports it: the path, what failed, and why."""
    return IOError(f"cache {path}: cannot {doing}: {exc.strerror or exc}")


def _lock_record(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class OwnedDirectory:
    """A directory one open database owns: an exclusive flock on its lock file. A
    temporary one's lock file records the owner (liveness.identity()), so that a
    later process can tell when the owner is provably gone; it is removed at release."""

    def __init__(self, path: str, *, temporary: bool) -> None:
        self.path = os.path.abspath(path)
        self.temporary = temporary
        self._pid = os.getpid()  # a forked child removes nothing on its parent's behalf
        lock_path = os.path.join(self.path, _LOCKFILE)
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise local_error(self.path, exc, "use it as a cache directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IOError(f"cache directory {self.path} is in use by another open database; "
                          "give each open database its own cache_dir") from None
        except OSError as exc:
            os.close(fd)
            raise local_error(lock_path, exc, "lock it") from None
        try:
            os.ftruncate(fd, 0)
            if temporary:  # only a temporary directory is ever reclaimed; a named one keeps no record
                os.pwrite(fd, json.dumps({"owner": liveness.identity(), "temporary": True}).encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise local_error(lock_path, exc, "record its owner") from None
        self._fd = fd

    @classmethod
    def make_temporary(cls, parent: str | None) -> "OwnedDirectory":
        """A fresh temporary directory in ``parent`` (the system's temporary directory
        by default), after reclaiming the abandoned ones beside it."""
        where = parent if parent is not None else tempfile.gettempdir()
        try:
            os.makedirs(where, mode=0o700, exist_ok=True)
            reclaim_abandoned(where)
            path = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, dir=where)
        except OSError as exc:
            raise local_error(where, exc, "make a cache directory in it") from None
        try:
            return cls(path, temporary=True)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def owned_here(self) -> bool:
        """False in a forked child: it does nothing to the directory on its parent's behalf."""
        return self._fd >= 0 and os.getpid() == self._pid

    def exists(self) -> bool:
        """Whether the directory is still there (an operator may remove it under us)."""
        return os.path.isdir(self.path)

    def release(self) -> None:
        """Give the directory up (and remove it, if temporary). Never raises: the
        cache is disposable."""
        if not self.owned_here():
            return
        try:
            if self.temporary:
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            os.close(self._fd)
            self._fd = -1


def _reclaim_if_abandoned(path: str, now: float) -> bool:
    """Remove the directory at ``path`` if it is provably abandoned, holding its flock meanwhile."""
    lock_path = os.path.join(path, _LOCKFILE)
    try:
        if now - max(os.stat(path).st_mtime, os.stat(lock_path).st_mtime) < RECLAIM_AGE:
            return False
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False  # no lock file: nobody recorded an owner, so nobody is provably gone

    def reclaimable() -> bool:
        record = _lock_record(fd)
        return record is not None and record.get("temporary") is True and liveness.provably_gone(record.get("owner"))

    try:
        if not reclaimable():  # asked first without the flock, so a live owner is never disturbed
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: its owner (or a forked child of it) is alive
        if not reclaimable():
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def reclaim_abandoned(parent: str) -> list[str]:
    """Remove the temporary cache directories in ``parent`` whose owner is provably
    gone (a crashed process's): returns their paths. A directory of a live process,
    of another host, boot or pid namespace, or with no owner recorded is left alone."""
    reclaimed: list[str] = []
    now = time.time()
    try:
        entries = [e.path for e in os.scandir(parent)
                   if e.name.startswith(TEMPORARY_PREFIX) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return reclaimed
    for path in entries:
        if _reclaim_if_abandoned(path, now):
            reclaimed.append(path)
    if reclaimed:
        log.info("removed %d cache directories of processes that are gone: %s", len(reclaimed), ", ".join(reclaimed))
    return reclaimed


@dataclass
class _Entry:
    size: int
    fingerprint: str  # "" while being written or for local-only files
    pins: int = 0
    writing: bool = False
    doomed: bool = False  # removed while pinned: delete on the last release


class LocalCache:
    """``directory`` None: a temporary directory of its own in ``parent``. Else that
    directory, kept for a clean restart unless ``temporary``."""

    def __init__(self, directory: str | None, max_bytes: int, *, parent: str | None = None,
                 temporary: bool = False) -> None:
        if directory is None:
            self._owned = OwnedDirectory.make_temporary(parent)
        else:
            self._owned = OwnedDirectory(directory, temporary=temporary)
            if not temporary:
                reclaim_abandoned(self._owned.path)  # followers given the same cache_dir that crashed
        self.temporary = self._owned.temporary
        self.directory = self._owned.path
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # LRU order: oldest first
        self._lock = threading.RLock()
        self.bytes = 0
        self.peak_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._previous = self._read_index()

    # -- ownership -----------------------------------------------------------

    def _read_index(self) -> dict[str, dict]:
        """What a clean close recorded; the index is removed at once, so a crash
        leaves none and every file of that run is discarded."""
        path = os.path.join(self.directory, _INDEX)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            os.unlink(path)
            if data.get("version") != _INDEX_VERSION:
                return {}
            return dict(data.get("files", {}))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache index in %s: %s", self.directory, exc)
            return {}

    def _own_tree(self) -> tuple[list[str], list[str]]:
        """The files and subdirectories of this cache, passing over the page cache's
        directory and every directory another open database owns (a follower given
        the same cache_dir makes its own directory in it)."""
        files: list[str] = []
        subdirectories: list[str] = []
        pages = os.path.join(self.directory, PAGES_DIR)
        for root, dirs, names in os.walk(self.directory):
            dirs[:] = [d for d in dirs if os.path.join(root, d) != pages
                       and not os.path.lexists(os.path.join(root, d, _LOCKFILE))]
            subdirectories.extend(os.path.join(root, d) for d in dirs)
            files.extend(os.path.join(root, n) for n in names if not (root == self.directory and n == _LOCKFILE))
        return files, subdirectories

    def adopt(self, current: dict[str, str]) -> None:
        """Keep files from an earlier run whose fingerprint matches ``current``
        (name -> fingerprint of what the store holds); delete the rest of its own."""
        kept = 0
        files, subdirectories = self._own_tree()
        for path in files:
            name = os.path.relpath(path, self.directory)
            recorded = self._previous.get(name)
            try:
                size = os.path.getsize(path)
                if recorded and recorded.get("fingerprint") == current.get(name) and recorded.get("size") == size:
                    self._entries[name] = _Entry(size, recorded["fingerprint"])
                    self.bytes += size
                    kept += 1
                else:
                    os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise local_error(path, exc, "clear it out of the cache") from None
        for path in reversed(subdirectories):  # deepest first
            try:
                os.rmdir(path)
            except OSError:
                pass  # not empty: someone else's
        self._previous = {}
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        if kept:
            log.info("reusing %d cached files (%d bytes) in %s", kept, self.bytes, self.directory)
        self._evict()

    def adopt_links(self, previous: "LocalCache", current: dict[str, str]) -> None:
        """Hard-link from an earlier generation's cache every file whose content
        (fingerprint) is still what the store holds: a refresh re-downloads nothing."""
        with previous._lock:
            candidates = [(name, e.size) for name, e in previous._entries.items()
                          if e.fingerprint and not e.writing and not e.doomed and current.get(name) == e.fingerprint]
        with self._lock:
            for name, size in candidates:
                target = self.path(name)
                try:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.link(previous.path(name), target)
                except OSError:
                    continue  # evicted meanwhile: fetched again on demand
                self._entries[name] = _Entry(size, current[name])
                self._account(size)
        self._evict()

    # -- paths and pins --------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def vanished(self) -> bool:
        """Whether the directory was removed under the open database."""
        return not self._owned.exists()

    def open_cached(self, name: str, fingerprint: str) -> str | None:
        """Pin and return the local path if a copy of exactly this content is here."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and not entry.writing and not entry.pins and not os.path.exists(self.path(name)):
                self._forget(name)  # removed under us (the cache is disposable): fetched again
                entry = None
            if entry is None or entry.doomed or (not entry.writing and entry.fingerprint != fingerprint):
                if entry is not None and not entry.writing and not entry.pins:
                    self._delete(name)  # stale content
                self.misses += 1
                return None
            entry.pins += 1
            self._entries.move_to_end(name)
            self.hits += 1
            return self.path(name)

    def pin_local(self, name: str) -> str | None:
        """Pin a file that exists only here (being written, or local-only); one that
        vanished from disk is a local problem (levels3.IOError naming its path)."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.doomed:
                return None
            if not os.path.exists(self.path(name)):
                raise local_error(self.path(name), FileNotFoundError(2, os.strerror(2)), "read it")
            entry.pins += 1
            self._entries.move_to_end(name)
            return self.path(name)

    def release(self, name: str) -> None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return
            entry.pins = max(0, entry.pins - 1)
            if entry.pins == 0 and entry.doomed:
                self._delete(name)
            else:
                self._evict()

    # -- adding content ----------------------------------------------------------

    def temp_path(self, name: str) -> str:
        """A fresh path to download into before ``insert_downloaded``."""
        try:
            fd, path = tempfile.mkstemp(prefix=".fetch-", dir=self.directory)
        except OSError as exc:
            raise local_error(self.directory, exc, f"make room to fetch {name}") from None
        os.close(fd)
        return path

    @contextmanager
    def downloading(self, name: str) -> Iterator[str]:
        """A fresh temp path to download ``name`` into; removed if the block fails (on
        success the block hands it to insert_downloaded, which moves it into place)."""
        temp = self.temp_path(name)
        try:
            yield temp
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise

    def keep_bytes(self, name: str, data: bytes, fingerprint: str) -> None:
        """Keep ``data``, read from the store some other way, as the cached copy of that
        content of ``name`` (unpinned): the next open_cached of it is a hit."""
        with self.downloading(name) as temp:
            try:
                with open(temp, "wb") as f:
                    f.write(data)
            except OSError as exc:
                raise local_error(temp, exc, f"keep {name}") from None
            self.insert_downloaded(name, temp, len(data), fingerprint)
        self.release(name)

    def insert_downloaded(self, name: str, temp_path: str, size: int, fingerprint: str) -> str:
        """Move a completed download into place, pinned, and return its path."""
        with self._lock:
            target = self.path(name)
            old = self._entries.get(name)
            if old is not None:
                if old.pins or old.writing:
                    # another thread fetched it meanwhile; use that copy
                    os.unlink(temp_path)
                    old.pins += 1
                    return target
                self._forget(name)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(temp_path, target)
            except OSError as exc:
                raise local_error(target, exc, "store a fetched file") from None
            self._entries[name] = _Entry(size, fingerprint, pins=1)
            self._account(size)
            return target

    def start_write(self, name: str) -> str:
        """Register a file LevelDB is about to create; pinned until finish_write."""
        with self._lock:
            if name in self._entries:
                self._forget(name)
            target = self.path(name)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
            except OSError as exc:
                raise local_error(target, exc, "create it") from None
            self._entries[name] = _Entry(0, "", writing=True)
            return target

    def finish_write(self, name: str, size: int, fingerprint: str) -> None:
        """The file is complete (and durable where it has to be): it becomes evictable."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or not entry.writing:
                return
            entry.writing = False
            entry.fingerprint = fingerprint
            self._account(size - entry.size)
            entry.size = size
            self._entries.move_to_end(name)
            self._evict()

    def written_size(self, name: str) -> int | None:
        """Current local size of a file being written (None if not being written)."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or not entry.writing:
                return None
        try:
            return os.path.getsize(self.path(name))
        except FileNotFoundError:
            return 0

    def knows(self, name: str) -> bool:
        """Whether this cache holds (or is writing) a file of that name."""
        with self._lock:
            return name in self._entries

    def local_size(self, name: str) -> int | None:
        with self._lock:
            if name not in self._entries:
                return None
        try:
            return os.path.getsize(self.path(name))
        except FileNotFoundError:
            return None

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            entry = self._entries.pop(src, None)
            if entry is None:
                raise FileNotFoundError(src)
            if dst in self._entries:
                self._forget(dst)
            target = self.path(dst)
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(self.path(src), target)
            except OSError as exc:
                self._entries[src] = entry
                raise local_error(self.path(src), exc, f"rename it to {dst}") from None
            self._entries[dst] = entry

    def set_fingerprint(self, name: str, fingerprint: str) -> None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                entry.fingerprint = fingerprint

    def hand_over(self, name: str) -> None:
        """The page cache takes this file over (engine/pages.py): forget it, keep it on disk."""
        with self._lock:
            if name in self._entries:
                self._forget(name)

    def discard(self, name: str) -> None:
        """The file is gone from the database: delete now, or on the last release."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return
            if entry.pins:
                entry.doomed = True
            else:
                self._delete(name)

    # -- accounting --------------------------------------------------------------

    def _account(self, delta: int) -> None:
        self.bytes += delta
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def _forget(self, name: str) -> None:
        entry = self._entries.pop(name)
        if not entry.writing:
            self.bytes -= entry.size

    def _delete(self, name: str) -> None:
        self._forget(name)
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            pass

    def _evict(self) -> None:
        if self.bytes <= self.max_bytes:
            return
        for name in list(self._entries):
            if self.bytes <= self.max_bytes:
                break
            entry = self._entries[name]
            if entry.pins or entry.writing or not entry.fingerprint:
                continue
            self._delete(name)
            self.evictions += 1

    # -- closing -----------------------------------------------------------------

    def close(self) -> None:
        """Remove a temporary cache, or record what a later run may reuse.

        Never raises: the cache is disposable, and what closes after it (the lease,
        the store) must still close. An index that cannot be written (the directory
        vanished, the disk is full) only means the next run fetches again."""
        with self._lock:
            if not self._owned.owned_here():
                return
            try:
                if not self.temporary and self._owned.exists():
                    self._write_index()
            except OSError as exc:
                log.warning("the cache in %s could not record its files for the next run: %s", self.directory, exc)
            finally:
                self._owned.release()

    def _write_index(self) -> None:
        files = {name: {"size": e.size, "fingerprint": e.fingerprint}
                 for name, e in self._entries.items()
                 if e.fingerprint and not e.writing and not e.doomed}
        tmp = os.path.join(self.directory, _INDEX + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"version": _INDEX_VERSION, "files": files}, f)
        os.replace(tmp, os.path.join(self.directory, _INDEX))
