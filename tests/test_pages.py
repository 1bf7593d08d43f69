"""Tables read in pages (issue 16): ranged GETs, single flight, the strict cache bound,
restart reuse, and the errors of a short read, a full disk and a bad page size."""

from __future__ import annotations

import os
import random
from collections import Counter
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Iterator, Sequence

import pytest

import levels3
from levels3.engine.manifest import file_number
from levels3.stores import LocalDirStore
from levels3.stores.base import ObjectInfo, ObjectStore

from .operator_actions import remove_tree
from .processes import assert_clean_exit, run_python

PAGE = 4096


class RecordingStore(ObjectStore):
    """Delegates to the bare store and records every GET of a table object as
    (key, start, end, object size); optionally slows those GETs down or cuts them short."""

    def __init__(self, inner: ObjectStore, *, delay: float = 0.0, short_by: int = 0) -> None:
        self.inner = inner
        self.url = inner.url
        self.ambiguous_failures = inner.ambiguous_failures
        self.delay = delay
        self.short_by = short_by
        self.gets: list[tuple[str, int, int]] = []
        self.threads: list[str] = []  # the thread of each of gets
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if not key.endswith((".ldb", ".sst")):
            return self.inner.get(key, start, end)
        with self._lock:
            self.gets.append((key, start, -1 if end is None else end))
            self.threads.append(threading.current_thread().name)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            data = self.inner.get(key, start, end)
        finally:
            with self._lock:
                self.in_flight -= 1
        return data[:len(data) - self.short_by] if self.short_by else data

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def put(self, key: str, data: bytes, **conditions: Any) -> str:
        return self.inner.put(key, data, **conditions)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self.inner.delete(key, if_match=if_match)

    def delete_many(self, keys: Sequence[str]) -> None:
        self.inner.delete_many(keys)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def close(self) -> None:
        self.inner.close()


def recorded(**kwargs) -> tuple[list[RecordingStore], dict]:
    holder: list[RecordingStore] = []

    def wrap(store: ObjectStore) -> ObjectStore:
        holder.append(RecordingStore(store, **kwargs))
        return holder[-1]

    return holder, {"wrap_store": wrap}


@pytest.fixture
def no_tail_prefetch(monkeypatch):
    """For tests of LevelDB's own reads: no tails fetched ahead of them at a cold open."""
    from levels3.engine import pages

    monkeypatch.setattr(pages, "TAIL_PREFETCH_SHARE", 0)


def key(i: int) -> bytes:
    return b"key-%08d" % i


def value(i: int, size: int = 100) -> bytes:
    return (b"%08d" % i) * (size // 8) + b"v" * (size % 8)


def fill(url: str, n: int, *, size: int = 100, **options) -> None:
    """n keys written in tables of the store (small write buffers: they leave the memtable)."""
    options.setdefault("write_buffer_size", 256 * 1024)
    with levels3.DB(url, create_if_missing=True, compression=None, **options) as db:
        for i in range(n):
            db.put(key(i), value(i, size))


def disk_bytes(path: str) -> int:
    """Blocks allocated under path (a page file's holes count for nothing); a file renamed
    while the walk runs (a new table becoming a page file) is counted once."""
    total, seen = 0, set()
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def table_sizes(db: levels3.DB) -> dict[str, int]:
    return {r.objects[0].key: r.size for r in db._control.catalog.records()
            if r.name.endswith(".ldb") and len(r.objects) == 1}


# -- misses -----------------------------------------------------------------------------


def test_a_miss_fetches_the_aligned_pages(tmp_path, no_tail_prefetch):
    url = str(tmp_path / "db")
    fill(url, 20_000)
    stores, wrap = recorded()
    with levels3.DB(url, cache_page_size=PAGE, **wrap) as db:
        rng = random.Random(1)
        for i in rng.sample(range(20_000), 200):
            assert db.get(key(i)) == value(i)
        sizes = table_sizes(db)
    gets = stores[0].gets
    assert len(gets) > 10
    for obj, start, end in gets:
        assert start % PAGE == 0, (obj, start, end)
        assert end % PAGE == 0 or end == sizes[obj], (obj, start, end)
        assert end - start < sizes[obj] or sizes[obj] <= 64 * 1024, "a whole table was fetched"


def test_adjacent_missing_pages_of_one_read_are_one_request(tmp_path, no_tail_prefetch):
    # 16 KiB blocks of 1000-byte values: one block read spans at least four 4 KiB pages.
    url = str(tmp_path / "db")
    fill(url, 6000, size=1000, block_size=16 * 1024, write_buffer_size=1 << 20)
    stores, wrap = recorded()
    with levels3.DB(url, cache_page_size=PAGE, lru_cache_size=1024, **wrap) as db:
        sizes = table_sizes(db)
        # the third block of a table, far from its tail (a read of the first starts a read-ahead)
        assert db.get(key(40)) == value(40, 1000)
    data = [(o, s, e) for o, s, e in stores[0].gets if e != sizes[o]]  # not the table's tail
    assert len(data) == 1, data
    _obj, start, end = data[0]
    assert start % PAGE == 0 and end - start >= 16 * 1024


def test_concurrent_misses_on_one_page_are_single_flight(tmp_path, no_tail_prefetch):
    url = str(tmp_path / "db")
    fill(url, 20_000)
    stores, wrap = recorded()
    with levels3.DB(url, cache_page_size=PAGE, lru_cache_size=1024, **wrap) as db:
        # opens the table holding key 150: its tail is local now (not key 0: a read of a
        # table's first block starts a read-ahead, whose GETs would land below)
        assert db.get(key(150)) == value(150)
        store = stores[0]
        store.delay = 0.3
        before = len(store.gets)
        barrier = threading.Barrier(8)
        results = []

        def reader():
            barrier.wait()
            results.append(db.get(key(300)))

        threads = [threading.Thread(target=reader) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [value(300)] * 8
        new = store.gets[before:]
    assert len(new) == 1, new  # eight readers of one missing page: one GET


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def table_tail_start(url: str, obj: str, size: int) -> int:
    """Where the metaindex or index block starts (from the table's footer, read straight from the store)."""
    footer = LocalDirStore(url, create=False).get(obj, size - 48, size)
    meta, pos = _varint(footer, 0)
    _meta_size, pos = _varint(footer, pos)
    index, _pos = _varint(footer, pos)
    return min(meta, index)


def opening_requests(gets: list[tuple[str, int, int]], tails: dict[str, int]) -> dict[str, int]:
    """Per table, the GETs that fetched part of its tail (index, metaindex, filter, footer)."""
    counts: dict[str, int] = {}
    for obj, _start, end in gets:
        if end > tails[obj]:
            counts[obj] = counts.get(obj, 0) + 1
    return counts


def test_opening_a_table_costs_one_request(tmp_path, no_tail_prefetch):
    url = str(tmp_path / "db")
    fill(url, 40_000, bloom_filter_bits=10)
    stores, wrap = recorded()
    with levels3.DB(url, cache_page_size=PAGE, bloom_filter_bits=10, **wrap) as db:
        rng = random.Random(8)
        for i in rng.sample(range(40_000), 300):
            assert db.get(key(i)) == value(i)
        tails = {obj: table_tail_start(url, obj, size) for obj, size in table_sizes(db).items()}
    opened = opening_requests(stores[0].gets, tails)
    assert len(opened) >= 10
    assert set(opened.values()) == {1}, opened


def test_a_larger_index_costs_one_more_request_and_teaches_the_tail(tmp_path, no_tail_prefetch):
    # 512-byte blocks of 1000-byte values: an index entry per value, an index far above
    # the 64 KiB a first table open fetches.
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True, compression=None, block_size=512, write_buffer_size=1 << 20,
                    max_file_size=8 << 20) as db:
        for i in random.Random(10).sample(range(16_000), 16_000):  # in random order: compaction merges
            db.put(key(i), value(i, 1000))
        db.compact_range()  # into 8 MiB tables
    stores, wrap = recorded()
    with levels3.DB(url, cache_page_size=PAGE, **wrap) as db:
        sizes = table_sizes(db)
        tails = {obj: table_tail_start(url, obj, size) for obj, size in sizes.items()}
        assert len(sizes) >= 2 and all(size - tails[obj] > 100_000 for obj, size in sizes.items())
        for i in random.Random(9).sample(range(16_000), 100):
            assert db.get(key(i)) == value(i, 1000)
    first_opened = stores[0].gets[0][0]
    opened = opening_requests(stores[0].gets, tails)
    assert opened.pop(first_opened) == 2  # the default tail, then the rest of the index
    assert opened and set(opened.values()) == {1}, opened  # later tables: the learned tail


# -- tails prefetched at a cold open ---------------------------------------------------------


def wait_for_prefetch(db: levels3.DB, timeout: float = 20.0) -> int:
    """Until the tail prefetch has settled (tails_prefetched stops growing); returns it."""
    deadline, last, stable = time.monotonic() + timeout, -1, 0
    while time.monotonic() < deadline:
        now = db.stats()["tails_prefetched"]
        stable = stable + 1 if now == last else 0
        if stable >= 5:
            return now
        last = now
        time.sleep(0.05)
    raise AssertionError("the tail prefetch did not settle")


def overlaps(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


def test_a_cold_open_prefetches_table_tails_in_parallel(tmp_path):
    url = str(tmp_path / "db")
    fill(url, 40_000)
    stores, wrap = recorded(delay=0.05)
    with levels3.DB(url, cache_page_size=PAGE, **wrap) as db:
        prefetched = wait_for_prefetch(db)
        tables = table_sizes(db)
        ahead = list(stores[0].gets)
        assert prefetched >= min(len(tables), 8) and len(tables) >= 8
        assert stores[0].max_in_flight > 1  # in parallel, not one round trip after another
        for i in random.Random(3).sample(range(40_000), 200):
            assert db.get(key(i)) == value(i)
        read = stores[0].gets[len(ahead):]
    # LevelDB's table opens found their tails present: no read fetched again what the prefetch did
    assert read and not [(r, a) for r in read for a in ahead if overlaps(r, a)]


def test_the_tail_prefetch_takes_a_quarter_of_the_bound_at_most(tmp_path):
    url = str(tmp_path / "db")
    fill(url, 40_000)
    bound = 128 * 1024
    stores, wrap = recorded()
    with levels3.DB(url, cache_page_size=PAGE, max_cache_bytes=bound, **wrap) as db:
        wait_for_prefetch(db)
        ahead = [end - start for _key, start, end in stores[0].gets]
        assert ahead and len(ahead) < len(table_sizes(db))
    # claims stop once the share is used: it may be passed by the last claim only
    assert sum(ahead) - max(ahead) < bound // 4


class _FailsPrefetches(RecordingStore):
    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if key.endswith(".ldb") and threading.current_thread().name.startswith("levels3-requests"):
            with self._lock:
                self.gets.append((key, start, -1 if end is None else end))
            raise levels3.IOError("injected: the prefetch's GET fails")
        return super().get(key, start, end)


def test_a_failed_prefetch_leaves_the_tail_to_leveldbs_own_read(tmp_path):
    url = str(tmp_path / "db")
    fill(url, 40_000)
    holder = []

    def wrap(store):
        holder.append(_FailsPrefetches(store))
        return holder[-1]

    with levels3.DB(url, cache_page_size=PAGE, wrap_store=wrap) as db:
        wait_for_prefetch(db)
        failed = len(holder[0].gets)
        assert failed >= 8
        for i in range(0, 40_000, 97):
            assert db.get(key(i)) == value(i)
        assert len(holder[0].gets) > failed  # LevelDB fetched the tails itself


def test_closing_during_a_tail_prefetch_waits_for_it(tmp_path):
    url = str(tmp_path / "db")
    fill(url, 40_000)
    stores, wrap = recorded(delay=0.3)
    db = levels3.DB(url, cache_page_size=PAGE, **wrap)
    time.sleep(0.05)
    assert stores[0].in_flight > 0
    db.close()
    assert stores[0].in_flight == 0  # no GET lands in a closed page cache
    with levels3.DB(url, cache_page_size=PAGE) as db:
        assert [v for _k, v in db.iterator()] == [value(i) for i in range(40_000)]


def test_a_followers_first_read_prefetches_the_tails(tmp_path):
    url = str(tmp_path / "db")
    fill(url, 40_000)
    with levels3.DB(url, read_only=True, cache_page_size=PAGE) as follower:
        assert follower.get(key(7)) == value(7)
        assert wait_for_prefetch(follower) >= 8


def three_levels(url: str, **options) -> None:
    """40,000 keys in tables of level 2, then two passes over the whole range, each a table of its
    own above them (with the bytewise comparator: written at close, in levels 1 and 0; with a custom
    one, which a close does not flush: replayed from the log into level 0 at the next open). Fewer
    than 4 in level 0, LevelDB's trigger: no compaction reads anything when the database reopens."""
    fill(url, 40_000, **options)
    for offset in range(2):
        with levels3.DB(url, write_buffer_size=1 << 20, compression=None, **options) as db:
            for i in range(offset + 1, 40_000, 13):
                db.put(key(i), value(i))


def table_number(object_key: str) -> int:
    return file_number(object_key.rsplit("/", 1)[-1]) or 0


@pytest.mark.parametrize("order", ["bytewise", "custom comparator"])
def test_the_first_get_after_a_cold_open_fetches_only_the_tails_it_reads(tmp_path, order):
    """Level 0's tails and the get's own go first; the other tables' tails wait until it has returned.
    Under a custom comparator levels3 cannot place the key in a level: LevelDB fetches the get's
    own tails below level 0 itself, and the rest still wait."""
    options = {} if order == "bytewise" else {"comparator": lambda a, b: (a > b) - (a < b),
                                               "comparator_name": b"test.bytewise-in-python"}
    url = str(tmp_path / "db")
    three_levels(url, **options)
    probe = key(100)  # in level 2's first table: the last one LevelDB's order of tails reaches there
    # Slow GETs: the get must begin before level 0's tails are in, or the rest would go out beside it.
    stores, wrap = recorded(delay=0.2)
    with levels3.DB(url, cache_page_size=PAGE, cache_dir=str(tmp_path / "empty"), **options, **wrap) as db:
        assert db.get(probe) == value(100)
        before = list(stores[0].gets)
        live = db._control.live_tables()
        own = {n for n, m in live.items() if m.level == 0 or m.smallest[:-8] <= probe <= m.largest[:-8]}
        levels = Counter(m.level for m in live.values())
        assert 0 < levels[0] < 4 and levels[2] > 8
        assert len(own) < 8 < len(live)  # sent 8 at once in LevelDB's order, other tables' would go too
        read = {table_number(k) for k, _s, _e in before}
        assert read <= own
        deepest = [i for i, (k, _s, _e) in enumerate(before) if live[table_number(k)].level == 2]
        assert deepest  # the table the value is in: its tail, then its page
        # Its tail came from the prefetch, beside level 0's, when the key could tell which it was.
        assert stores[0].threads[deepest[0]].startswith("levels3-requests") == (order == "bytewise")
        # Then the prefetch goes on: every table's tail comes in, but for the tables this writer has
        # just written (under a custom comparator its reopen replays the log into one: present).
        wait_for_prefetch(db)
        sizes = table_sizes(db)
        tails = {table_number(k) for k, _s, end in stores[0].gets if end == sizes[k]}
        written = {file_number(r.name) for r in db._control.catalog.records() if r.epoch == db._control.epoch}
        assert tails == set(live) - written


def test_a_tail_prefetch_whose_tasks_cannot_start_stops_and_leaves_the_tails_to_leveldb(tmp_path, monkeypatch):
    """The pool refuses work (no thread can start, or the interpreter is exiting) after two tasks:
    the prefetch stops there, every get still reads its value, and the close does not wait for it."""
    from levels3.engine import pages

    url = str(tmp_path / "db")
    three_levels(url)
    submitted, real_submit = [], pages.submit

    def refusing_submit(fn, *args):
        if len(submitted) >= 2:
            raise RuntimeError("can't start new thread")
        submitted.append(fn)
        return real_submit(fn, *args)

    monkeypatch.setattr(pages, "submit", refusing_submit)
    stores, wrap = recorded(delay=0.05)
    db = levels3.DB(url, cache_page_size=PAGE, cache_dir=str(tmp_path / "empty"), **wrap)
    for i in range(0, 40_000, 997):
        assert db.get(key(i)) == value(i)
    closing = threading.Thread(target=db.close)
    closing.start()
    closing.join(30)
    assert not closing.is_alive()
    assert len(submitted) == 2 and db.stats()["tails_prefetched"] <= 2


# -- the bound -------------------------------------------------------------------------------


def test_bound_holds_with_every_table_open(tmp_path, small_disk):
    url = str(tmp_path / "db")
    fill(url, 60_000, size=150, write_buffer_size=64 * 1024, max_file_size=64 * 1024)
    limit, slack = 256 * 1024, 16 * PAGE
    # The cache on a file system of its own, so that one statvfs is an atomic sample of its disk use (a walk
    # over the page files counts a page evicted from a file already counted and fetched into a later one twice).
    cache_dir = os.path.join(small_disk, "cache")
    peaks = []
    with levels3.DB(url, cache_dir=cache_dir, max_cache_bytes=limit, cache_page_size=PAGE,
                    max_open_files=5000, lru_cache_size=8 * 1024) as db:
        tables = len(table_sizes(db))
        assert tables > 100  # far more than the bound can hold, all of them kept open by LevelDB
        assert sum(table_sizes(db).values()) > 20 * limit
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                st = os.statvfs(small_disk)
                peaks.append((st.f_blocks - st.f_bfree) * st.f_frsize)
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            rng = random.Random(1)
            for _ in range(3000):
                i = rng.randrange(60_000)
                assert db.get(key(i)) == value(i, 150)
        finally:
            stop.set()
            sampler.join()
        stats = db.stats()
    assert len(peaks) > 50
    assert max(peaks) <= limit + slack, max(peaks)
    assert stats["cache_peak_bytes"] <= limit + slack
    assert stats["page_evictions"] > 0


def test_the_bound_counts_every_block_the_cache_directory_holds(tmp_path):
    """What the cache directory holds on disk is what its bound counts (cache_bytes), block for block:
    a file of 16 bytes (CURRENT) or a WAL's last partial block takes a whole 4 KiB block, and counting
    whole files by their bytes let the directory pass the bound by up to a block per file."""
    url, cache_dir = str(tmp_path / "db"), str(tmp_path / "cache")
    with levels3.DB(url, create_if_missing=True, cache_dir=cache_dir, cache_page_size=PAGE,
                    max_cache_bytes=1 << 20, write_buffer_size=64 * 1024) as db:
        for i in range(3000):
            db.put(key(i), value(i))
        for i in range(0, 3000, 7):
            assert db.get(key(i)) == value(i)
        time.sleep(0.2)  # nothing in flight: a quiet moment, so one walk sees what the cache counts
        on_disk, stats = disk_bytes(cache_dir), db.stats()
    assert stats["cache_whole_file_bytes"] % 4096 == 0
    assert on_disk <= stats["cache_bytes"], (on_disk, stats["cache_bytes"], stats["cache_whole_file_bytes"])


def test_evicted_pages_read_back_the_same_bytes(tmp_path):
    url = str(tmp_path / "db")
    fill(url, 30_000)
    with levels3.DB(url, max_cache_bytes=64 * 1024, cache_page_size=PAGE, lru_cache_size=1024) as db:
        order = list(range(30_000))
        for round_ in range(2):
            random.Random(round_).shuffle(order)
            for i in order[:3000]:
                assert db.get(key(i)) == value(i)
        assert [v for _k, v in db.iterator()] == [value(i) for i in range(30_000)]
        stats = db.stats()
    assert stats["page_evictions"] > 1000
    assert stats["page_requests"]["data"] + stats["page_requests"]["readahead"] > 1000


def test_pages_without_hole_punching_still_hold_the_bound(tmp_path):
    """Where punching holes is not supported, whole page files are truncated instead."""
    url = str(tmp_path / "db")
    fill(url, 30_000, write_buffer_size=64 * 1024, max_file_size=64 * 1024)
    cache_dir = str(tmp_path / "cache")
    limit = 128 * 1024
    with levels3.DB(url, cache_dir=cache_dir, max_cache_bytes=limit, cache_page_size=PAGE,
                    lru_cache_size=1024) as db:
        db._control.pages.native._disable_hole_punching()
        rng = random.Random(2)
        worst = 0
        for step in range(2000):
            i = rng.randrange(30_000)
            assert db.get(key(i)) == value(i)
            if step % 20 == 0:
                worst = max(worst, disk_bytes(cache_dir))
        stats = db.stats()
    assert worst <= limit + 16 * PAGE
    assert stats["page_evictions"] > 0


def test_warm_reads_never_call_back_into_python(tmp_path):
    url = str(tmp_path / "db")
    fill(url, 20_000)  # about 2 MB in a dozen tables
    # Everything fits in 5 MiB, but zero-copy reading of whole files may take only half of
    # what whole files (write buffers, a compaction output, the MANIFEST) leave: warm
    # reads take both paths (mapped, and copied out of pages).
    limit, whole_files = 5 << 20, 3 * (64 << 10) + (1 << 20) + (1 << 20)
    with levels3.DB(url, cache_page_size=PAGE, max_cache_bytes=limit, write_buffer_size=64 << 10,
                    lru_cache_size=1024) as db:
        assert 1.5 * (1 << 20) < sum(table_sizes(db).values()) < 2.5 * (1 << 20)
        for i in range(20_000):
            db.get(key(i))
        pages = db._control.pages
        calls = []

        class Counting:
            native = pages.native
            stats = pages.stats

            def describe(self, *args):
                calls.append("describe")
                return pages.describe(*args)

            def fetch(self, *args):
                calls.append("fetch")
                return pages.fetch(*args)

        db._control.pages = Counting()
        try:
            before = db.stats()
            for i in random.Random(3).sample(range(20_000), 5000):
                assert db.get(key(i)) == value(i)
            after = db.stats()
        finally:
            db._control.pages = pages
    assert calls == []
    assert after["requests"]["get"] == before["requests"]["get"]
    assert after["page_hits"] - before["page_hits"] > 100  # copied out of pages
    assert 0 < after["cache_mapped_bytes"] <= (limit - whole_files) / 2  # straight from mapped whole files


def test_a_sequential_scan_reads_ahead_with_bounded_requests_in_flight(tmp_path, no_tail_prefetch):
    url = str(tmp_path / "db")
    fill(url, 40_000)
    stores, wrap = recorded(delay=0.005)
    with levels3.DB(url, cache_page_size=PAGE, **wrap) as db:
        assert sum(1 for _ in db.iterator()) == 40_000
        stats = db.stats()
    assert stats["page_requests"]["readahead"] > 10
    assert stats["page_bytes_fetched"]["readahead"] > stats["page_bytes_fetched"]["data"]
    # The reader's own miss plus at most four read-ahead requests.
    assert stores[0].max_in_flight <= 5


def fill_shuffled(url: str, n: int, **options) -> None:
    """n keys of 128-byte values written in random order: level-0 tables that overlap, left to compact."""
    order = list(range(n))
    random.Random(1).shuffle(order)
    with levels3.DB(url, create_if_missing=True, compression=None, **options) as db:
        for i in order:
            db.put(key(i), value(i, 128))


def test_a_scan_of_a_database_four_times_the_bound_fetches_its_tables_about_once(tmp_path):
    """Keys written in random order leave overlapping level-0 tables: the reopen compacts them while the
    scan runs, and the compaction's output (a whole file of up to 2 MiB) alone takes the 2 MiB bound. The
    pages a compaction input or the iterator fetched must still be read before they go: each read of a
    4 KiB block fetching its 64 KiB page again was 14x the tables' bytes."""
    url = str(tmp_path / "db")
    bound, n = 2 * 1024 * 1024, 60_000
    fill_shuffled(url, n, write_buffer_size=bound // 4)
    with levels3.DB(url, max_cache_bytes=bound, write_buffer_size=bound // 4) as db:
        tables = sum(table_sizes(db).values())
        assert tables > 4 * bound
        assert sum(1 for _ in db.iterator()) == n
        stats = db.stats()
    fetched = sum(stats["page_bytes_fetched"].values())
    # The scan reads each table once and the compaction its inputs once: twice the tables, with tails.
    assert fetched <= 3 * tables, (fetched, tables, stats["page_bytes_fetched"])
    assert stats["page_readahead_wasted_bytes"] <= tables // 4


def test_what_compactions_fetch_is_counted_apart_from_reads(tmp_path, no_tail_prefetch):
    url = str(tmp_path / "db")
    fill_shuffled(url, 30_000, write_buffer_size=256 * 1024)
    with levels3.DB(url, cache_page_size=PAGE, cache_dir=str(tmp_path / "cold")) as db:
        tables = sum(table_sizes(db).values())
        db.compact_range()  # on LevelDB's background thread, reading every table (overlapping levels)
        by_compaction = sum(db.stats()["page_bytes_fetched_by_compaction"].values())
        assert by_compaction >= tables // 2
        assert by_compaction <= sum(db.stats()["page_bytes_fetched"].values())
        for i in range(0, 30_000, 101):
            assert db.get(key(i)) == value(i, 128)
        assert sum(db.stats()["page_bytes_fetched_by_compaction"].values()) == by_compaction
        tables = sum(table_sizes(db).values())
    with levels3.DB(url, read_only=True, cache_page_size=PAGE) as follower:
        assert [v for _k, v in follower.iterator()] == [value(i, 128) for i in range(30_000)]
        assert sum(follower.stats()["page_bytes_fetched"].values()) >= tables
        assert sum(follower.stats()["page_bytes_fetched_by_compaction"].values()) == 0


def test_a_compaction_reads_each_input_in_one_request(tmp_path, no_tail_prefetch):
    """A compaction reads each input front to back, once, and a store charges per request far more than
    per byte: an input of up to a chunk (4 MiB) not on local disk is one GET, into memory. Read into the
    page cache, under a bound whole files leave a few MiB of, the same inputs took 2 GETs of 495 KB each
    (34 of 233 KB before that)."""
    url = str(tmp_path / "db")
    fill_shuffled(url, 60_000, write_buffer_size=1024 * 1024)
    stores, wrap = recorded()
    with levels3.DB(url, cache_dir=str(tmp_path / "cold"), max_cache_bytes=16 * 1024 * 1024, **wrap) as db:
        inputs = table_sizes(db)
        db.compact_range()  # every table is an input, read back from the store (the cache is cold)
        stats = db.stats()
        assert [v for _k, v in db.iterator()] == [value(i, 128) for i in range(60_000)]
    assert len(inputs) >= 4 and max(inputs.values()) < 4 * 1024 * 1024
    by_compaction = stats["page_requests_by_compaction"]
    assert by_compaction["data"] == 0, by_compaction
    assert 0 < by_compaction["readahead"] <= len(inputs), (by_compaction, len(inputs))
    first_reads = [(k, start) for k, start, _end in stores[0].gets if start == 0]
    assert len(first_reads) <= len(inputs)
    assert stats["page_readahead_wasted_bytes"] == 0


class FailingTableReads(RecordingStore):
    """Table GETs that ``refuse(start, end)`` selects fail (a permanent error: no retry), up to ``times``."""

    def __init__(self, inner: ObjectStore, refuse, times: int) -> None:
        super().__init__(inner)
        self.refuse, self.times, self.refused = refuse, times, []

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        from levels3.errors import StoreError

        if key.endswith(".ldb") and len(self.refused) < self.times and self.refuse(start, end):
            self.refused.append((key, start, end))
            raise StoreError(f"get {key!r}: access denied (injected)", operation="get", key=key)
        return super().get(key, start, end)


def large_inputs(tmp_path) -> tuple[str, int]:
    """Level-0 tables of about 7 MB, more than a compaction fetches in one chunk."""
    url, n = str(tmp_path / "db"), 120_000
    fill_shuffled(url, n, write_buffer_size=8 * 1024 * 1024, max_file_size=16 * 1024 * 1024)
    return url, n


def test_a_large_compaction_input_is_fetched_ahead_in_chunks(tmp_path, no_tail_prefetch):
    url, n = large_inputs(tmp_path)
    stores, wrap = recorded()
    with levels3.DB(url, cache_dir=str(tmp_path / "cold"), max_cache_bytes=16 * 1024 * 1024, **wrap) as db:
        inputs = table_sizes(db)
        db.compact_range()
        stats = db.stats()
        assert sum(1 for _ in db.iterator()) == n
    larger = {key for key, size in inputs.items() if size > 4 * 1024 * 1024}
    assert len(larger) >= 2, inputs
    # Each input: its first chunk when the compaction reaches it; of the larger ones, the next chunk
    # fetched meanwhile.
    chunks = [(key, start, end) for key, start, end in stores[0].gets if end - start + 1 >= 1024 * 1024]
    assert {key for key, start, _ in chunks if start == 0} == set(inputs)
    assert {key for key, start, _ in chunks if start > 0} == larger
    # A chunk is at most 4 MiB, or the rest of the table when less than half a chunk would be left after it.
    assert all(end - start + 1 <= 6 * 1024 * 1024 for _key, start, end in stores[0].gets), stores[0].gets
    assert stats["page_requests_by_compaction"]["readahead"] <= 3 * len(inputs)
    assert sum(stats["page_bytes_fetched_by_compaction"].values()) >= sum(inputs.values())


def test_a_failed_fetch_ahead_of_a_compaction_is_fetched_again(tmp_path, no_tail_prefetch):
    url, n = large_inputs(tmp_path)
    stores: list[FailingTableReads] = []

    def wrap(store: ObjectStore) -> ObjectStore:
        stores.append(FailingTableReads(store, lambda start, end: start > 0 and end - start + 1 >= 1024 * 1024, 1))
        return stores[-1]

    with levels3.DB(url, cache_dir=str(tmp_path / "cold"), max_cache_bytes=16 * 1024 * 1024,
                    wrap_store=wrap) as db:
        db.compact_range()  # the failure was the background fetch's: the compaction's read fetches again
        db.put(b"after", b"the compaction")
        assert sum(1 for _ in db.iterator()) == n + 1
        assert db.get_property(b"leveldb.num-files-at-level0") == b"0"
    [(key, start, _end)] = stores[0].refused
    assert any(k == key and s <= start <= e for k, s, e in stores[0].gets)


def test_a_compaction_whose_inputs_cannot_be_fetched_fails_and_loses_nothing(tmp_path, no_tail_prefetch):
    url, n = large_inputs(tmp_path)
    wrap = {"wrap_store": lambda store: FailingTableReads(store, lambda start, end: start == 0, 1000)}
    db = levels3.DB(url, cache_dir=str(tmp_path / "cold"), max_cache_bytes=16 * 1024 * 1024, **wrap)
    try:
        db.compact_range()
        with pytest.raises(levels3.IOError, match="access denied"):
            db.put(b"after", b"the failed compaction")  # LevelDB's background error, as for any write
    finally:
        try:
            db.close()
        except levels3.Error:
            pass
    with levels3.DB(url, cache_dir=str(tmp_path / "fresh")) as db:
        assert sum(1 for _ in db.iterator()) == n
        assert db.get(b"after") is None


def two_levels_to_merge(tmp_path) -> tuple[str, dict, set[int], int]:
    """A level of tables of 1 MiB in key order under level-0 tables across the whole key range:
    a compaction of all of it reads the tables of a level one after another."""
    url, n = str(tmp_path / "db"), 60_000
    sizes = {"write_buffer_size": 1024 * 1024, "max_file_size": 1024 * 1024}
    fill_shuffled(url, n, **sizes)
    small = {**sizes, "compression": None}
    rewritten = random.Random(2).sample(range(n), 8_000)  # in random order: level-0 tables that overlap
    with levels3.DB(url, **small) as db:
        db.compact_range()
        for i in rewritten:
            db.put(key(i), value(i + 1, 128))
    changed = set(rewritten)
    return url, small, changed, n


def test_a_compaction_fetches_the_inputs_it_reads_next_ahead(tmp_path, no_tail_prefetch):
    """A compaction reads one level's inputs one after another, and each one's first chunk would be
    waited for: the next ones, guessed from LevelDB's version, are fetched while it reads the current
    one. Each input is still fetched once, and no guess is wasted."""
    url, small, changed, n = two_levels_to_merge(tmp_path)
    stores, wrap = recorded(delay=0.02)  # a store farther than the local disk: a first chunk is waited for
    with levels3.DB(url, cache_dir=str(tmp_path / "cold"), max_cache_bytes=16 * 1024 * 1024, **small, **wrap) as db:
        inputs = table_sizes(db)
        db.compact_range()  # the level-0 tables, then every table below them
        stats = db.stats()
        assert [v for _k, v in db.iterator()] == [value(i + 1 if i in changed else i, 128) for i in range(n)]
    assert len(inputs) >= 8, inputs
    ahead = stats["compaction_inputs_fetched_ahead"]
    assert ahead >= len(inputs) // 2, (ahead, len(inputs))
    first_chunks = Counter(k for k, start, _end in stores[0].gets if start == 0 and k in inputs)
    assert set(first_chunks) == set(inputs) and max(first_chunks.values()) == 1, first_chunks
    assert stats["page_readahead_wasted_bytes"] == 0


class RefusingOneGuess(RecordingStore):
    """Refuses the first table GET from offset 0 made by a thread other than the one that made the
    first such GET (the compaction's own): a fetch of a guessed input."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner, delay=0.02)
        self.compaction_thread: int | None = None
        self.refused: list[str] = []

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        from levels3.errors import StoreError

        if key.endswith(".ldb") and start == 0:
            with self._lock:
                me = threading.get_ident()
                if self.compaction_thread is None:
                    self.compaction_thread = me
                elif me != self.compaction_thread and not self.refused:
                    self.refused.append(key)
                    raise StoreError(f"get {key!r}: access denied (injected)", operation="get", key=key)
        return super().get(key, start, end)


def test_a_guessed_input_whose_fetch_failed_is_fetched_again(tmp_path, no_tail_prefetch):
    url, small, changed, n = two_levels_to_merge(tmp_path)
    stores: list[RefusingOneGuess] = []

    def wrap(store: ObjectStore) -> ObjectStore:
        stores.append(RefusingOneGuess(store))
        return stores[-1]

    with levels3.DB(url, cache_dir=str(tmp_path / "cold"), max_cache_bytes=16 * 1024 * 1024, **small,
                    wrap_store=wrap) as db:
        db.compact_range()  # the refused guess is the input's own read's to fetch
        db.put(b"after", b"the compaction")
        assert [v for k, v in db.iterator() if k != b"after"] == [
            value(i + 1 if i in changed else i, 128) for i in range(n)]
    [refused] = stores[0].refused
    assert any(k == refused and start == 0 for k, start, _end in stores[0].gets)


def test_point_gets_do_not_read_ahead(tmp_path, no_tail_prefetch):
    """A get reads one block: only a table's first block (which scans start with) starts read-ahead."""
    url = str(tmp_path / "db")
    fill(url, 40_000)
    with levels3.DB(url, read_only=True, cache_page_size=PAGE, max_cache_bytes=256 * 1024) as follower:
        for i in random.Random(5).sample(range(40_000), 500):
            assert follower.get(key(i)) == value(i)
        fetched = follower.stats()["page_bytes_fetched"]
    assert fetched["data"] > 100 * PAGE
    assert fetched["readahead"] <= fetched["data"] // 10, fetched


# -- restart -------------------------------------------------------------------------------------


def test_pages_survive_a_clean_restart(tmp_path):
    url = str(tmp_path / "db")
    fill(url, 20_000)
    cache_dir = str(tmp_path / "cache")
    wanted = random.Random(4).sample(range(20_000), 300)
    with levels3.DB(url, cache_dir=cache_dir, cache_page_size=PAGE) as db:
        for i in wanted:
            assert db.get(key(i)) == value(i)
        fetched = db.stats()["page_requests"]
    assert sum(fetched.values()) > 0
    stores, wrap = recorded()
    with levels3.DB(url, cache_dir=cache_dir, cache_page_size=PAGE, **wrap) as db:
        for i in wanted:
            assert db.get(key(i)) == value(i)
        stats = db.stats()
    assert stores[0].gets == []
    assert stats["pages_reused"] > 0


def test_pages_are_not_reused_for_other_content(tmp_path):
    """A database destroyed and written again has objects of the same keys, other content:
    the fingerprints (size, ETag) differ, and the pages of the old ones are dropped at open."""
    url = str(tmp_path / "db")
    fill(url, 20_000)
    cache_dir = str(tmp_path / "cache")
    with levels3.DB(url, cache_dir=cache_dir, cache_page_size=PAGE) as db:
        for i in range(0, 20_000, 7):
            db.get(key(i))
        keys_before = set(table_sizes(db))
    levels3.destroy_db(url)
    with levels3.DB(url, create_if_missing=True, compression=None, write_buffer_size=256 * 1024) as db:
        for i in range(20_000):
            db.put(key(i), value(i + 1))
    with levels3.DB(url, cache_dir=cache_dir, cache_page_size=PAGE) as db:
        assert keys_before & set(table_sizes(db))  # the same object keys exist again
        assert db.stats()["pages_reused"] == 0
        assert [v for _k, v in db.iterator()] == [value(i + 1) for i in range(20_000)]


def test_a_page_directory_that_vanished_does_not_fail_close(tmp_path, caplog):
    """The pages are disposable: if their index cannot be written, close still closes
    everything after them, and the next run fetches its pages again."""
    url = str(tmp_path / "db")
    fill(url, 5000)
    cache_dir = str(tmp_path / "cache")
    db = levels3.DB(url, cache_dir=cache_dir, cache_page_size=PAGE)
    assert db.get(key(1)) == value(1)
    db.put(b"after", b"value")
    remove_tree(os.path.join(cache_dir, ".levels3-pages"))  # the tails are being prefetched meanwhile
    db.close()
    assert "could not record its pages" in caplog.text
    with levels3.DB(url, cache_dir=cache_dir, cache_page_size=PAGE) as db:
        assert db.stats()["pages_reused"] == 0
        assert db.get(b"after") == b"value" and db.get(key(1)) == value(1)


def test_pages_are_discarded_after_a_crash(tmp_path, no_tail_prefetch):
    url = str(tmp_path / "db")
    fill(url, 20_000)
    cache_dir = str(tmp_path / "cache")
    script = textwrap.dedent(f"""
        import os, levels3
        db = levels3.DB({url!r}, cache_dir={cache_dir!r}, cache_page_size={PAGE}, lease_duration=3.0,
                        lease_renewal=0.3)
        for i in range(0, 20_000, 5):
            assert db.get(b"key-%08d" % i) is not None
        assert db.stats()["pages_cached"] > 0
        os.kill(os.getpid(), 9)
    """)
    child = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()},
                           capture_output=True, timeout=120)
    assert child.returncode == -9, child.stderr.decode()
    pages_dir = os.path.join(cache_dir, ".levels3-pages")
    left = set(os.listdir(pages_dir))
    assert left and "INDEX" not in left  # pages were cached, and no index vouches for them
    with levels3.DB(url, cache_dir=cache_dir, cache_page_size=PAGE, lock_timeout=10, lease_duration=3.0,
                    lease_renewal=0.3) as db:
        assert db.stats()["pages_reused"] == 0
        assert not left & set(os.listdir(pages_dir))  # every page file of the crashed run is gone
        assert [v for _k, v in db.iterator()] == [value(i) for i in range(20_000)]


# -- bad input and failures ----------------------------------------------------------------------------


def test_a_short_ranged_get_is_corruption_naming_the_object(tmp_path):
    url = str(tmp_path / "db")
    fill(url, 5000)
    stores, wrap = recorded(short_by=1)
    with levels3.DB(url, cache_page_size=PAGE, **wrap) as db:
        with pytest.raises(levels3.CorruptionError) as caught:
            db.get(key(1))
        tables = table_sizes(db)
    assert any(obj in str(caught.value) for obj in tables), str(caught.value)
    assert "ranged GET" in str(caught.value)


@pytest.mark.parametrize("bad", [0, -4096, 1000, 2048, 4095, 6000, 3 * 4096, 1 << 27])
def test_a_bad_cache_page_size_is_a_value_error(tmp_path, bad):
    with pytest.raises(ValueError, match="cache_page_size"):
        levels3.DB(str(tmp_path / "db"), create_if_missing=True, cache_page_size=bad)
    assert not os.path.exists(tmp_path / "db")  # refused before anything is touched


@pytest.mark.parametrize("bad", [True, "65536", 65536.0, None])
def test_a_cache_page_size_of_another_type_is_a_type_error(tmp_path, bad):
    with pytest.raises(TypeError, match="cache_page_size must be an int"):
        levels3.DB(str(tmp_path / "db"), create_if_missing=True, cache_page_size=bad)


@pytest.mark.parametrize("good", [4096, 1 << 20])
def test_good_cache_page_sizes_work(tmp_path, good):
    url = str(tmp_path / "db")
    fill(url, 3000)
    with levels3.DB(url, cache_page_size=good) as db:
        assert db.get(key(7)) == value(7)
        assert db.stats()["cache_page_size"] == good


@pytest.fixture
def small_disk(tmp_path) -> Iterator[str]:
    """A 4 MiB file system for the cache directory (tmpfs; needs the right to mount)."""
    mount_point = str(tmp_path / "small-disk")
    os.mkdir(mount_point)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount_point], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", mount_point], check=False)


def fill_disk(path: str, leave: int) -> None:
    st = os.statvfs(path)
    with open(os.path.join(path, "ballast"), "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def test_a_full_cache_disk_fails_writes_with_ioerror_and_keeps_what_was_acknowledged(tmp_path, small_disk):
    url = str(tmp_path / "db")
    cache_dir = os.path.join(small_disk, "cache")
    acknowledged = []
    db = levels3.DB(url, create_if_missing=True, cache_dir=cache_dir, write_buffer_size=1 << 20)
    try:
        fill_disk(small_disk, leave=256 * 1024)
        with pytest.raises(levels3.IOError):
            for i in range(100_000):
                db.put(key(i), value(i, 1000), sync=True)
                acknowledged.append(i)
    finally:
        try:
            db.close()
        except OSError:
            pass  # what was never acknowledged may fail to upload; the cache's index may not fit
    assert acknowledged
    with levels3.DB(url) as db:
        for i in acknowledged:
            assert db.get(key(i)) == value(i, 1000)


def test_a_full_cache_disk_fails_reads_with_ioerror(tmp_path, small_disk):
    url = str(tmp_path / "db")
    fill(url, 20_000)
    cache_dir = os.path.join(small_disk, "cache")
    with levels3.DB(url, cache_dir=cache_dir, cache_page_size=PAGE, lru_cache_size=1024) as db:
        assert db.get(key(1)) == value(1)
        wait_for_prefetch(db)  # the tails it fetched are on the disk before the disk is filled
        fill_disk(small_disk, leave=0)
        with pytest.raises(levels3.IOError, match="cache directory"):
            for i in random.Random(5).sample(range(20_000), 2000):
                db.get(key(i))
        os.unlink(os.path.join(small_disk, "ballast"))
        for i in random.Random(6).sample(range(20_000), 200):
            assert db.get(key(i)) == value(i)  # nothing cached from the failed writes


def test_a_follower_reads_in_pages_across_refreshes(tmp_path):
    url = str(tmp_path / "db")
    fill(url, 20_000)
    limit = 1 << 20
    with levels3.DB(url, read_only=True, max_cache_bytes=limit, cache_page_size=PAGE) as follower:
        store = follower._control.pages.store
        for i in range(0, 20_000, 7):
            assert follower.get(key(i)) == value(i)
        with levels3.DB(url) as writer:
            writer.put(b"new", b"value", sync=True)
        follower.refresh()
        assert follower._control.pages.store is store  # one page cache, one bound, for every generation
        assert follower.get(b"new") == b"value"
        for i in range(3, 20_000, 7):
            assert follower.get(key(i)) == value(i)
        stats = follower.stats()
        assert stats["cache_peak_bytes"] <= limit + 16 * PAGE
        assert stats["page_evictions"] > 0
    assert not os.path.exists(store.directory)


def test_the_writers_own_tables_start_fully_present(tmp_path):
    url = str(tmp_path / "db")
    stores, wrap = recorded()
    with levels3.DB(url, create_if_missing=True, compression=None, cache_page_size=PAGE, **wrap) as db:
        for i in range(20_000):
            db.put(key(i), value(i))
        db.compact_range()
        for i in range(0, 20_000, 13):
            assert db.get(key(i)) == value(i)
        stats = db.stats()
    assert stores[0].gets == []  # nothing it wrote had to come back from the store
    assert stats["pages_cached"] > 0
    assert stats["page_hits"] > 0


def test_readers_waiting_on_a_page_while_its_table_becomes_mapped_do_not_crash(tmp_path):
    # A reader waiting for a page another thread fetches, while a third reader finds the
    # table wholly present and maps it: the waiter used to move its page in the LRU list
    # although a mapped table's pages are off it (a segfault in about 2 of 3 runs of
    # test_large_database_with_compactions). In a child process, so that a crash fails
    # this test and not the whole session.
    url = str(tmp_path / "db")
    fill(url, 6_000)  # a few tables of about 150 pages each
    script = """
        import random, sys, threading
        import levels3
        from tests.test_pages import key, recorded, value
        url, cache_root = sys.argv[1], sys.argv[2]
        for round in range(12):
            stores, wrap = recorded()
            with levels3.DB(url, cache_page_size=4096, cache_dir=f"{cache_root}/{round}", **wrap) as db:
                stores[0].delay = 0.002  # fetches overlap: readers wait on each other's pages
                barrier = threading.Barrier(6)
                wrong = []

                def reader(seed):
                    rng = random.Random(seed)
                    barrier.wait()
                    for _ in range(300):
                        i = rng.randrange(6_000)
                        if db.get(key(i)) != value(i):
                            wrong.append(i)

                def scanner():
                    barrier.wait()
                    if sum(1 for _ in db.iterator(include_value=False)) != 6_000:
                        wrong.append("scan")

                threads = [threading.Thread(target=reader, args=(round * 10 + n,)) for n in range(4)]
                threads += [threading.Thread(target=scanner) for _ in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert not wrong, wrong[:10]
        print("ok")
    """
    result = assert_clean_exit(run_python(script, url, str(tmp_path / "caches"), timeout=300))
    assert result.stdout.strip() == "ok"
