"""Tables in pages: the Python side of the page cache.

The page cache itself is C++ (``csrc/page_cache.h`` states its contract): it keeps
table bytes on local disk in ``cache_page_size`` pages under the one byte bound of
``max_cache_bytes``, serves warm reads without Python, and calls back here for two
things only:

- ``describe``: whether a table is read in pages (it is once it is in the store, as
  exactly one object) and what identifies its content (the catalog's fingerprint:
  object key, size, ETag), so a page file is reused only for that exact content;
- ``fetch``: the bytes of a miss, one ranged GET.

This module also decides where the pages live: inside the writer's cache directory
(reused after a clean close, discarded after a crash), or in a private temporary
directory that a follower's generations share. May call the native page cache,
the layout, and (through the control path) its catalog, cache and store.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from ..errors import CorruptionError, Error, IOError, ObjectNotFound
from .layout import FileKind, kind_of

if TYPE_CHECKING:  # pragma: no cover
    from .cache import LocalCache
    from .catalog import Catalog
    from .control import EnvControl

log = logging.getLogger("levels3.cache")

PAGES_DIR = ".levels3-pages"  # inside a cache directory; LocalCache leaves it alone


class PageStore:
    """The page cache of one database: one per writer, shared by a follower's generations."""

    def __init__(self, directory: str, max_bytes: int, page_size: int, *, temporary: bool) -> None:
        from .._native import NativePageCache

        self.directory = directory
        self.temporary = temporary
        self.native = NativePageCache(directory, max_bytes, page_size)
        self._closed = False

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

    def close(self) -> None:
        """After LevelDB is gone: write the index a clean restart reuses, or remove it all.

        Never raises: the pages are disposable, and what closes after them (the
        whole-file cache, the store) must still close. An index that cannot be
        written only means the next run fetches its pages again."""
        if self._closed:
            return
        self._closed = True
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

    @property
    def native(self) -> Any:
        return self.store.native

    def describe(self, name: str, adopting: bool) -> tuple[int, str, str] | None:
        """(size, fingerprint, object key) of a table read in pages; None: read it whole.

        ``adopting``: the page cache takes over the local file LevelDB has just
        written (and this process uploaded), so the whole-file cache forgets it."""
        if kind_of(name) is not FileKind.TABLE:
            return None
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
            "pages_cached": s["pages"],
            "cache_mapped_bytes": s["mapped_bytes"],
            "pages_reused": s["reused_pages"],
            "page_requests": dict(s["requests"]),
            "page_bytes_fetched": dict(s["bytes_fetched"]),
        }
