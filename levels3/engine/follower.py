"""A follower's control path: a read-only view of the newest committed state, or of a checkpoint.

FollowerControl takes no lock, claims no epoch and never writes to the
store. LevelDB still recovers on open (replays the WAL, writes a new
MANIFEST); those files live only in the follower's private cache directory.
A refresh is a new generation on the same store, reusing the cached files
whose content is unchanged. A follower owns one temporary directory (in
cache_dir, if given): each generation's cache and the page cache they share
are inside it, so that no other database's cache touches them. May call the store interface and the engine's
catalog, cache, checkpoints, layout and manifest parser.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from ..errors import Error, ObjectNotFound, ReadOnlyError, StaleVersionError
from ..options import StoreOptions
from ..parallel import run_parallel
from .cache import LocalCache, OwnedDirectory
from .catalog import Catalog, FileRecord, StoredObject
from .checkpoints import read_checkpoint
from .control import EnvControl, connect
from .layout import CURRENT_NAME, FileKind, kind_of
from .pages import PagedTables, PageStore

log = logging.getLogger("levels3.backend")


class FollowerControl(EnvControl):
    """The control path of a read-only follower."""

    owns_store = True  # a refresh passes the store on to the next generation
    _recovered = False  # LevelDB's recovery committed its local version: later tables are compactions
    home: OwnedDirectory  # the follower's one directory, passed on with the store
    generation = 1

    @classmethod
    def open(cls, name: Any, options: StoreOptions | None, overrides: Mapping[str, Any], *,
             checkpoint: str | None = None, previous: "FollowerControl | None" = None) -> "FollowerControl":
        """List the store (or read the checkpoint): ready for DB::Open on a private cache."""
        if previous is not None:
            location, opts, store, counters = previous.location, previous.options, previous.store, previous.counters
        else:
            location, opts, store, counters = connect(name, options, overrides, create=False)
        home: OwnedDirectory | None = previous.home if previous is not None else None
        cache: LocalCache | None = None
        pages: PageStore | None = None
        try:
            if home is None:
                home = OwnedDirectory.make_temporary(opts.cache_dir)
            generation = previous.generation + 1 if previous is not None else 1
            cache = LocalCache(os.path.join(home.path, f"generation-{generation}"), opts.max_cache_bytes,
                               temporary=True)
            control = cls(location, opts, store, counters, cache)
            control.home, control.generation = home, generation
            # One page cache (one bound) for every generation: a refresh passes it on with the store.
            pages = previous.pages.store if previous is not None and previous.pages is not None else \
                PageStore.private(home.path, opts.max_cache_bytes, opts.cache_page_size)
            control.pages = PagedTables(control, pages)
            if checkpoint is not None:
                data = read_checkpoint(store, checkpoint)
                control.checkpoint = checkpoint
                control.catalog = Catalog.from_checkpoint(data["files"])
                control._write_local(CURRENT_NAME, data["current"].encode())
            else:
                current_body, control.catalog = control._read_current_and_list()
                control._write_local(CURRENT_NAME, current_body)
            current = {r.name: r.fingerprint for r in control.catalog.records() if not r.local}
            if previous is not None:
                cache.adopt_links(previous.cache, current)
                control.owns_store = False  # until the refresh that made it succeeds
            if checkpoint is None:
                control.prefetch_for_recovery(current_body)
            log.info("opened %s read-only%s (cache %s)", location.url,
                     f" at checkpoint {checkpoint!r}" if checkpoint else "", cache.directory)
            return control
        except BaseException:
            if pages is not None and previous is None:
                pages.close()
            if cache is not None:
                cache.close()
            if previous is None:
                if home is not None:
                    home.release()
                store.close()
            raise

    def _read_current_and_list(self) -> tuple[bytes, Catalog]:
        """CURRENT and the LIST, at once. A CURRENT read before the LIST names a MANIFEST the
        LIST holds (uploaded before it was committed, kept for deletion_grace after it is
        replaced); one read after it may be a newer commit, naming a MANIFEST the LIST had
        passed (a writer reopening meanwhile): then the store is listed again. A table such
        a LIST missed fails LevelDB's open, and database.py lists again (listing_missed_tables)."""
        def current() -> bytes:
            try:
                return self.store.get(CURRENT_NAME)
            except ObjectNotFound:
                raise Error(f"{self.location.url} does not exist (no CURRENT): nothing to follow") from None

        body, catalog = run_parallel(current, lambda: Catalog.load(self.store))
        if catalog.get(body.decode("utf-8", "replace").strip()) is None:
            log.debug("%s: the LIST predates the MANIFEST CURRENT names; listing again", self.location.url)
            catalog = Catalog.load(self.store)
        return body, catalog

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._owns_store():  # the last generation: its directory goes with the store
                self.home.release()

    def next_generation(self) -> "FollowerControl":
        """A refresh: a new view of the store's newest committed state."""
        return FollowerControl.open(None, None, {}, previous=self)

    def listing_missed_tables(self) -> bool:
        """Whether the MANIFEST that CURRENT names lists a table this follower's LIST did
        not see: the writer created it after the LIST had passed its key (a LIST of many
        pages is no snapshot). LevelDB's open then reports the table missing; listing
        again finds it. So may a file that looked damaged: a LIST that paged past a
        merge's key before it landed, and past its segments after they were deleted,
        sees a gap that is not there."""
        if self.damaged_reads:
            return True
        tables = self.live_tables()
        if tables is None:
            return False
        listed = {name for name in self.catalog.names() if kind_of(name) is FileKind.TABLE}
        return any(f"{n:06d}.ldb" not in listed and f"{n:06d}.sst" not in listed for n in tables)

    def _owns_store(self) -> bool:
        return self.owns_store

    # -- Env callbacks -------------------------------------------------------------

    def create(self, name: str) -> str:
        if kind_of(name) is FileKind.TABLE and self._recovered:
            # Only a compaction makes a table once recovery is done. A follower's tables would
            # live in its cache alone, outside the bound (nothing in the store to evict them
            # to), and the writer compacts the same data: the first compaction fails here, and
            # LevelDB, holding that as its background error, schedules no other; reads go on.
            log.debug("%s: a follower does not compact (%s refused)", self.location.url, name)
            raise ReadOnlyError(f"a read-only follower does not compact (it would write {name})")
        if not kind_of(name).local_only:
            self.catalog.put(FileRecord(name, writing=True, local=True))
        return self.cache.start_write(name)

    def _persist_durable(self, record: FileRecord, kind: FileKind, size: int, final: bool) -> None:
        raise ReadOnlyError(f"a read-only follower cannot write {record.name}")

    def _rename_durable(self, src: str, dst: str) -> None:
        if kind_of(dst) is not FileKind.CURRENT:
            raise ReadOnlyError(f"a read-only follower cannot rename {src} to {dst}")
        self.cache.rename(src, dst)
        self.catalog.put(FileRecord(dst, local=True))
        self._recovered = True  # DB::Open's recovery ends with this commit (LevelDB's new MANIFEST)

    def _object_missing(self, obj: StoredObject) -> None:
        raise StaleVersionError(f"{obj.key} was deleted by the writer: this follower's version is older than "
                                "deletion_grace; call refresh()") from None
