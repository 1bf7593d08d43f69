"""The bounded local cache: LevelDB's files on local disk, evicted by bytes.

The cache directory is where LevelDB's data path reads and appends. It is
disposable: everything durable is in the store. Rules:

- least-recently-opened files are evicted first once the total passes
  ``max_bytes``; files LevelDB holds open (pinned) or is writing are never
  deleted under it, so the bound is ``max_bytes`` plus the open files;
- a directory left by an earlier run is trusted only file by file, when the
  fingerprint it recorded at a clean close matches what the store holds now;
- one live process per directory (an exclusive ``flock``).

Owns the files on local disk and their pins, except tables once they are read
in pages (PAGES_DIR holds those; the page cache validates them itself); knows
nothing of the store (the control path fetches and uploads). Imports only
levels3.errors and the name of the page directory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass

from ..errors import Error
from .pages import PAGES_DIR

log = logging.getLogger("levels3.cache")

_INDEX = ".levels3-cache.json"
_LOCKFILE = ".levels3-cache.lock"
_INDEX_VERSION = 1


@dataclass
class _Entry:
    size: int
    fingerprint: str  # "" while being written or for local-only files
    pins: int = 0
    writing: bool = False
    doomed: bool = False  # removed while pinned: delete on the last release


class LocalCache:
    def __init__(self, directory: str | None, max_bytes: int, *, parent: str | None = None) -> None:
        self.temporary = directory is None
        if directory is None:
            if parent is not None:
                os.makedirs(parent, mode=0o700, exist_ok=True)
            self.directory = tempfile.mkdtemp(prefix="levels3-cache-", dir=parent)
        else:
            self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # LRU order: oldest first
        self._lock = threading.RLock()
        self.bytes = 0
        self.peak_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._lock_fd = self._claim_directory()
        self._previous = self._read_index()

    # -- ownership -----------------------------------------------------------

    def _claim_directory(self) -> int:
        fd = os.open(os.path.join(self.directory, _LOCKFILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Error(f"cache directory {self.directory} is in use by another process; "
                        "give each open database its own cache_dir") from None
        return fd

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

    def adopt(self, current: dict[str, str]) -> None:
        """Keep files from an earlier run whose fingerprint matches ``current``
        (name -> fingerprint of what the store holds); delete everything else."""
        kept = 0
        pages = os.path.join(self.directory, PAGES_DIR)
        for root, dirs, files in os.walk(self.directory, topdown=False):
            if root == pages or root.startswith(pages + os.sep):
                continue  # the page cache validates its own files
            for filename in files:
                path = os.path.join(root, filename)
                name = os.path.relpath(path, self.directory)
                if name == _LOCKFILE:
                    continue
                recorded = self._previous.get(name)
                try:
                    size = os.path.getsize(path)
                except OSError:
                    continue
                if recorded and recorded.get("fingerprint") == current.get(name) and recorded.get("size") == size:
                    self._entries[name] = _Entry(size, recorded["fingerprint"])
                    self.bytes += size
                    kept += 1
                else:
                    os.unlink(path)
            for d in dirs:
                if os.path.join(root, d) == pages:
                    continue
                try:
                    os.rmdir(os.path.join(root, d))
                except OSError:
                    pass
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

    def open_cached(self, name: str, fingerprint: str) -> str | None:
        """Pin and return the local path if a copy of exactly this content is here."""
        with self._lock:
            entry = self._entries.get(name)
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
        """Pin a file that exists only here (being written, or local-only)."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.doomed:
                return None
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
        fd, path = tempfile.mkstemp(prefix=".fetch-", dir=self.directory)
        os.close(fd)
        return path

    def insert_downloaded(self, name: str, temp_path: str, size: int, fingerprint: str) -> str:
        """Move a completed download into place, pinned, and return its path."""
        with self._lock:
            target = self.path(name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            old = self._entries.get(name)
            if old is not None:
                if old.pins or old.writing:
                    # another thread fetched it meanwhile; use that copy
                    os.unlink(temp_path)
                    old.pins += 1
                    return target
                self._forget(name)
            os.replace(temp_path, target)
            self._entries[name] = _Entry(size, fingerprint, pins=1)
            self._account(size)
            return target

    def start_write(self, name: str) -> str:
        """Register a file LevelDB is about to create; pinned until finish_write."""
        with self._lock:
            if name in self._entries:
                self._forget(name)
            target = self.path(name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
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
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(self.path(src), target)
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
        """Remove a temporary cache, or record what a later run may reuse."""
        with self._lock:
            try:
                if self.temporary:
                    shutil.rmtree(self.directory, ignore_errors=True)
                else:
                    files = {name: {"size": e.size, "fingerprint": e.fingerprint}
                             for name, e in self._entries.items()
                             if e.fingerprint and not e.writing and not e.doomed}
                    tmp = os.path.join(self.directory, _INDEX + ".tmp")
                    with open(tmp, "w", encoding="utf-8") as f:
                        json.dump({"version": _INDEX_VERSION, "files": files}, f)
                    os.replace(tmp, os.path.join(self.directory, _INDEX))
            finally:
                if self._lock_fd >= 0:
                    os.close(self._lock_fd)
                    self._lock_fd = -1
