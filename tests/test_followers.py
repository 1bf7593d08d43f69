"""One writer, many followers, checkpoints: real processes where it matters."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import levels3
from levels3.engine.layout import object_key, parse_key
from levels3.stores import LocalDirStore
from levels3.stores.faults import FaultInjectingStore

ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.mark.parametrize("network", ["local", "faulty"])
def test_three_follower_processes_see_consistent_states(tmp_path, location_factory, request, network):
    """On the local store, and over HTTP through a faulty network (moto server)."""
    if network == "local":
        url, options = str(tmp_path / "db"), {}
    else:
        from .test_fencing import faulty_network

        location = location_factory("moto_server")
        url, options = location.url, faulty_network(location, request)
    published = tmp_path / "published"
    writer = levels3.DB(url, create_if_missing=True, write_buffer_size=32 * 1024, **options)
    writer.put(b"counter", b"0", sync=True)
    rounds = "40" if network == "local" else "15"
    followers = [subprocess.Popen([sys.executable, "-m", "tests.follower_process", url, str(published), rounds,
                                   json.dumps(options)],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
    n = 0
    try:
        while any(p.poll() is None for p in followers):
            n += 1
            with writer.write_batch(sync=True) as batch:
                batch.put(b"counter", b"%d" % n)
                batch.put(b"sum", b"%d" % (n * (n + 1) // 2))
                batch.put(b"filler%06d" % n, b"x" * 200)  # memtable flushes and compactions too
            published.write_text(str(n))  # only after the synced write returned
    finally:
        writer.close()
    for p in followers:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        result = json.loads(out)
        assert result["inconsistent"] == 0
        assert result["late"] == 0
        assert result["distinct"] > 5  # they did follow the writer
    assert n > int(rounds)


def test_writes_on_a_follower_are_refused(db_location):
    with db_location.open(create_if_missing=True) as writer:
        writer.put(b"k", b"v", sync=True)
        with db_location.open(read_only=True) as follower:
            assert follower.get(b"k") == b"v"
            for write in (lambda: follower.put(b"a", b"b"), lambda: follower.delete(b"k"), follower.sync,
                          lambda: follower.write_batch().write(), lambda: follower.checkpoint("x"),
                          follower.compact_range):
                with pytest.raises(levels3.ReadOnlyError):
                    write()
            assert follower.get(b"k") == b"v"
            with pytest.raises(levels3.Error):
                writer.refresh()
        objects = len(db_location.read_objects(lambda key: True))
    assert objects > 0


def _tables(db) -> set[int]:
    return {int(n) for n in re.findall(rb"(\d+):\d+\[", db.get_property(b"leveldb.sstables"))}


def test_a_follower_never_compacts(tmp_path):
    """Reads that keep missing in one table make LevelDB compact it (a seek compaction). On a
    follower its output would be tables in the follower's cache alone, outside the cache's bound:
    the follower refuses to compact, and goes on reading its version."""
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True, write_buffer_size=64 * 1024) as writer:
        for i in range(0, 4000, 2):
            writer.put(b"%06d" % i, b"even")
        writer.compact_range()  # the even keys in a table of a deeper level
        for i in range(1, 4000, 2):
            writer.put(b"%06d" % i, b"odd")
        writer.sync()
    with levels3.DB(url, read_only=True) as follower:
        opened_with = _tables(follower)
        for _ in range(3):  # each get of an even key misses first in the odd keys' tables
            for i in range(0, 4000, 8):
                assert follower.get(b"%06d" % i) == b"even"
        time.sleep(0.5)  # a compaction LevelDB scheduled has run by now
        assert _tables(follower) == opened_with
        assert sum(1 for _ in follower) == 4000


def test_follower_reads_its_version_through_a_compaction(tmp_path):
    """Opened before the writer rewrites and compacts everything, a follower with an
    empty, tiny cache still reads its version: the old tables outlive the grace period."""
    url = str(tmp_path / "db")
    options = dict(write_buffer_size=64 * 1024, max_file_size=64 * 1024)
    writer = levels3.DB(url, create_if_missing=True, deletion_grace=600, **options)
    for i in range(20_000):
        writer.put(b"%06d" % i, b"old-%06d" % i)
    writer.sync()
    follower = levels3.DB(url, read_only=True, max_cache_bytes=64 * 1024, max_open_files=74)
    try:
        for i in range(20_000):
            writer.put(b"%06d" % i, b"new-%06d" % i)
        writer.compact_range()
        assert sum(1 for _ in follower) == 20_000
        for i in range(0, 20_000, 97):
            assert follower.get(b"%06d" % i) == b"old-%06d" % i
        follower.refresh()
        assert follower.get(b"000123") == b"new-000123"
    finally:
        follower.close()
        writer.close()


def test_follower_older_than_the_grace_period_gets_a_clear_error(tmp_path):
    url = str(tmp_path / "db")
    writer = levels3.DB(url, create_if_missing=True, deletion_grace=0, write_buffer_size=64 * 1024)
    for i in range(5_000):
        writer.put(b"%05d" % i, b"old")
    writer.compact_range()
    follower = levels3.DB(url, read_only=True)  # has fetched nothing yet
    try:
        for i in range(5_000):
            writer.put(b"%05d" % i, b"new")
        writer.compact_range()  # the old tables go at once (no grace)
        with pytest.raises(levels3.IOError, match="refresh"):
            for i in range(0, 5_000, 50):
                follower.get(b"%05d" % i)
        follower.refresh()
        assert follower.get(b"00042") == b"new"
    finally:
        follower.close()
        writer.close()


def test_checkpoint_keeps_its_data(db_location, tmp_path):
    with db_location.open(create_if_missing=True, write_buffer_size=64 * 1024) as writer:
        for i in range(3_000):
            writer.put(b"%05d" % i, b"v1")
        writer.put(b"unsynced-before-checkpoint", b"yes")
        writer.checkpoint("before")
        expected = dict(writer)
        with pytest.raises(levels3.Error, match="exists"):
            writer.checkpoint("before")
        for i in range(0, 3_000, 2):
            writer.delete(b"%05d" % i)
        for i in range(3_000, 6_000):
            writer.put(b"%05d" % i, b"v2")
        writer.compact_range()
    with db_location.open(create_if_missing=True, write_buffer_size=64 * 1024) as writer:
        writer.compact_range()  # another writer session: its deletions must spare the checkpoint too
    with db_location.open(checkpoint="before", cache_dir=str(tmp_path / "cp")) as snapshot:
        assert dict(snapshot) == expected
        with pytest.raises(levels3.ReadOnlyError):
            snapshot.put(b"x", b"y")
        with pytest.raises(levels3.Error):
            snapshot.refresh()
    with pytest.raises(levels3.Error, match="no checkpoint"):
        db_location.open(checkpoint="never-taken")

    restored = db_location.sibling("restored")
    levels3.restore(db_location.url, "before", restored.url, **db_location.options)
    with restored.open() as db:
        assert dict(db) == expected
        db.put(b"after-restore", b"1", sync=True)
    with restored.open() as db:
        assert db.get(b"after-restore") == b"1"


def _checkpointed_then_compacted(url: str) -> dict[bytes, bytes]:
    """A database whose checkpoint "c1" alone needs its first tables; returns c1's contents."""
    with levels3.DB(url, create_if_missing=True, deletion_grace=0) as writer:
        for i in range(2000):
            writer.put(b"k%05d" % i, b"old" * 30)
        writer.compact_range()
        writer.checkpoint("c1")
        expected = dict(writer)
        for i in range(2000):
            writer.put(b"k%05d" % i, b"new" * 30)
        writer.compact_range()
    return expected


def test_an_unreadable_checkpoint_makes_the_writer_delete_nothing(tmp_path):
    """A writer that cannot read a checkpoint cannot know what it needs: it used to skip it (and delete its
    objects); now it deletes nothing that session. The checkpoint works again once its JSON is back."""
    url = str(tmp_path / "db")
    expected = _checkpointed_then_compacted(url)
    store = LocalDirStore(url, create=False)
    body = store.get("checkpoints/c1.json")
    before = {o.key for o in store.list()}
    for broken in (body[:40], b"[]", b'{"version": 1, "files": {"000005.ldb": [[5]]}}'):
        store.put("checkpoints/c1.json", broken)
        with levels3.DB(url, deletion_grace=0) as writer:  # opens anyway: the data it needs is there
            for i in range(2000):
                writer.put(b"k%05d" % i, b"newer" * 20)
            writer.compact_range()
        assert before <= {o.key for o in store.list()}  # nothing was deleted
    store.put("checkpoints/c1.json", body)
    with levels3.DB(url, checkpoint="c1", cache_dir=str(tmp_path / "cp")) as snapshot:
        assert dict(snapshot) == expected


def test_odd_keys_under_checkpoints_are_not_checkpoints(tmp_path):
    url = str(tmp_path / "db")
    expected = _checkpointed_then_compacted(url)
    store = LocalDirStore(url, create=False)
    for key in ("checkpoints/README.txt", "checkpoints/sub/x.json", "checkpoints/bad name.json"):
        store.put(key, b"not a checkpoint")
    before = {o.key for o in store.list()}
    with levels3.DB(url, deletion_grace=0) as writer:
        for i in range(2000):
            writer.put(b"k%05d" % i, b"newer" * 20)
        writer.compact_range()
    after = {o.key for o in store.list()}
    assert before - after  # deletion went on (no hold for keys that are not checkpoints), sparing c1
    assert {"checkpoints/README.txt", "checkpoints/sub/x.json", "checkpoints/bad name.json"} <= after
    with levels3.DB(url, checkpoint="c1", cache_dir=str(tmp_path / "cp")) as snapshot:
        assert dict(snapshot) == expected


def test_repair_spares_what_a_checkpoint_needs(tmp_path):
    url = str(tmp_path / "db")
    expected = _checkpointed_then_compacted(url)
    levels3.repair_db(url)
    with levels3.DB(url, checkpoint="c1", cache_dir=str(tmp_path / "cp")) as snapshot:
        assert dict(snapshot) == expected


def test_restore_refuses_a_target_holding_other_objects_and_resumes_its_own(tmp_path):
    url, target = str(tmp_path / "db"), str(tmp_path / "copy")
    with levels3.DB(url, create_if_missing=True) as writer:
        writer.put(b"a", b"1")
        writer.checkpoint("early")
        writer.put(b"b", b"2")
        writer.checkpoint("late")
    # A restore of "late" interrupted before its CURRENT: its objects are not all "early"'s.
    levels3.restore(url, "late", target)
    LocalDirStore(target, create=False).delete("CURRENT")
    with pytest.raises(levels3.Error, match="not empty"):
        levels3.restore(url, "early", target)
    levels3.restore(url, "late", target)  # the same checkpoint again: it resumes
    with levels3.DB(target) as db:
        assert dict(db) == {b"a": b"1", b"b": b"2"}
    with pytest.raises(levels3.Error, match="no checkpoint"):
        levels3.restore(url, "never", str(tmp_path / "untouched"))
    assert not os.path.exists(tmp_path / "untouched")


def test_refresh_interval_follows_without_calls(tmp_path):
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True) as writer:
        writer.put(b"k", b"1", sync=True)
        with levels3.DB(url, refresh_interval=0.1) as follower:
            assert follower.read_only and follower.get(b"k") == b"1"
            writer.put(b"k", b"2", sync=True)
            deadline = time.monotonic() + 10
            while follower.get(b"k") != b"2":
                assert time.monotonic() < deadline, "the follower never caught up"
                time.sleep(0.05)


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _object_keys(url: str) -> set[str]:
    return {o.key for o in LocalDirStore(url, create=False).list()}


def test_merged_away_segments_go_in_batches_from_the_background(tmp_path):
    """300 synced writes: the ~280 WAL segments merges replaced are deleted by the reaper's batches (one
    DeleteObjects request each), not by one DELETE per object on a write; the database stays whole."""
    url = str(tmp_path / "db")
    db = levels3.DB(url, create_if_missing=True, deletion_grace=5.0)  # batches every 0.5 s
    try:
        for i in range(300):
            db.put(b"%04d" % i, b"v", sync=True)
        assert _wait_until(lambda: len({k for k in _object_keys(url) if ".log/" in k}) < 40, timeout=20)
        assert db.stats()["requests"]["delete"] <= 20
        assert db.get(b"0299") == b"v"
    finally:
        db.close()
    with levels3.DB(url, cache_dir=str(tmp_path / "cold")) as db:
        assert sum(1 for _ in db) == 300


def test_what_a_short_session_left_is_deleted_by_the_next_once_old_enough(tmp_path):
    """A session shorter than deletion_grace leaves the tables it compacted away behind; the next writer
    deletes them once deletion_grace has passed since they were dropped, by the store's clock, not a grace
    after it opened."""
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True, deletion_grace=600, write_buffer_size=64 * 1024) as db:
        for rewrite in range(2):  # overlapping tables, so the compaction merges them away
            for i in range(5_000):
                db.put(b"%05d" % i, b"v" * 50)
        db.compact_range()
        live = {int(n) for n in re.findall(rb"(\d+):\d+\[", db.get_property(b"leveldb.sstables"))}
    # tables compacted away, still in the store for followers
    left = {k for k in _object_keys(url) if k.endswith(".ldb") and int(k.rsplit("/", 1)[1][:-4]) not in live}
    assert len(left) >= 3
    time.sleep(3.5)
    with levels3.DB(url, deletion_grace=3) as db:  # dropped 3.5 s ago (> 3 s): due at once
        assert _wait_until(lambda: not (left & _object_keys(url)), timeout=2.5)
        assert db.get(b"04999") == b"v" * 50


def test_a_follower_lists_again_when_a_merge_deletes_what_it_listed(tmp_path):
    """The writer may replace and delete segments between a follower's LIST and its reads: the follower's
    open then lists again instead of failing."""
    url = str(tmp_path / "db")
    writer = levels3.DB(url, create_if_missing=True)
    for i in range(5):
        writer.put(b"k%d" % i, b"v%d" % i, sync=True)
    raw = LocalDirStore(url, create=False)

    class MergeRightAfterTheFirstList(FaultInjectingStore):
        lists = 0

        def list(self, prefix=""):
            listing = list(super().list(prefix))
            MergeRightAfterTheFirstList.lists += 1
            if MergeRightAfterTheFirstList.lists == 1:  # what the writer's merge + reaper would do
                segments = sorted((parse_key(o.key).offset, o.key) for o in listing if ".log/" in o.key)
                data = b"".join(raw.get(key) for _, key in segments)
                first = parse_key(segments[0][1])
                raw.put(object_key(first.name, first.epoch, 0, end=len(data), level=9), data)
                for _, key in segments:
                    raw.delete(key)
            return iter(listing)

    try:
        with levels3.DB(url, read_only=True, wrap_store=lambda s: MergeRightAfterTheFirstList(s, rate=0.0)) as f:
            assert dict(f) == {b"k%d" % i: b"v%d" % i for i in range(5)}
        assert MergeRightAfterTheFirstList.lists == 2
    finally:
        writer.close()


class _ListingMissesTables(FaultInjectingStore):
    """A LIST that had already passed the tables' keys when the writer created them: the first `misses`
    listings (counted in `lists`, shared by the wrappers of every open attempt) leave out every table."""

    def __init__(self, inner, misses: int, lists: list[int]) -> None:
        super().__init__(inner, rate=0.0)
        self.misses, self.lists = misses, lists

    def list(self, prefix=""):
        self.lists.append(1)
        listing = list(super().list(prefix))
        return iter([o for o in listing if len(self.lists) > self.misses or not o.key.endswith(".ldb")])


@pytest.mark.parametrize("misses", [1, 3])
def test_a_follower_lists_again_when_its_listing_missed_a_table(tmp_path, misses):
    """LevelDB's open checks every table of the version against the listing: a table the LIST missed was
    a CorruptionError ("missing files"). The follower lists again; a table still missing after 3 listings
    really is missing, and that is still a CorruptionError."""
    url = str(tmp_path / "db")
    lists: list[int] = []
    with levels3.DB(url, create_if_missing=True) as writer:
        for i in range(200):
            writer.put(b"k%03d" % i, b"v" * 100)
        writer.compact_range()  # the data now lives in tables
        wrap = lambda s: _ListingMissesTables(s, misses, lists)  # noqa: E731
        if misses < 3:
            with levels3.DB(url, read_only=True, wrap_store=wrap) as follower:
                assert len(lists) == misses + 1
                assert follower.get(b"k001") == b"v" * 100 and len(list(follower)) == 200
        else:
            with pytest.raises(levels3.CorruptionError, match="missing files"):
                levels3.DB(url, read_only=True, wrap_store=wrap)
            assert len(lists) == 3


def test_a_failed_refresh_leaves_the_follower_working(tmp_path):
    url = str(tmp_path / "db")
    stores: list[FaultInjectingStore] = []
    closes = []

    class Watched(FaultInjectingStore):
        def close(self):
            closes.append(1)
            super().close()

    with levels3.DB(url, create_if_missing=True) as writer:
        writer.put(b"a", b"1", sync=True)
        follower = levels3.DB(url, read_only=True,
                              wrap_store=lambda s: stores.append(Watched(s, rate=0.0, kinds=("500",))) or stores[-1],
                              retry_max_attempts=1)
        writer.put(b"b", b"2", sync=True)
        stores[0].rate = 1.0
        with pytest.raises(levels3.Error):
            follower.refresh()
        stores[0].rate = 0.0
        assert closes == []  # the store the follower still uses was not closed by the failed generation
        assert follower.get(b"a") == b"1"
        follower.refresh()
        assert follower.get(b"b") == b"2"
        follower.close()
    assert closes == [1]


def test_a_refreshed_away_generation_freed_by_the_garbage_collector_closes_cleanly(tmp_path):
    """A refreshed-away generation is freed when nothing reads it any more. Held only by
    garbage in a reference cycle (an exception's traceback, here a list that holds itself),
    it is freed by the collector; its control path must still be whole when LevelDB's
    teardown calls back into it (it was not, and the process segfaulted)."""
    from .processes import assert_clean_exit, run_python

    result = run_python("""
        import gc, os, sys
        import levels3
        url = sys.argv[1]
        writer = levels3.DB(url, create_if_missing=True)
        writer.put(b"k", b"0", sync=True)
        follower = levels3.DB(url, read_only=True, cache_dir=sys.argv[2])
        for round_ in range(20):
            it = follower.iterator()            # holds the current generation
            next(it)
            cycle = [it]
            cycle.append(cycle)                 # garbage only the collector frees
            writer.put(b"k", b"%d" % (round_ + 1), sync=True)
            follower.refresh()                  # the iterator's generation is retired
            del it, cycle
            gc.collect()
            assert follower.get(b"k") == b"%d" % (round_ + 1)
        owned = os.listdir(sys.argv[2])
        assert len(owned) == 1, owned  # the follower owns one directory in its cache_dir
        left = os.listdir(os.path.join(sys.argv[2], owned[0]))
        print(len([n for n in left if n.startswith("generation-")]))  # generations' caches left
        print(len([n for n in left if n.startswith("levels3-pages-")]))  # the page cache they all share
        follower.close()
        writer.close()
    """, str(tmp_path / "db"), str(tmp_path / "follower-cache"))
    assert_clean_exit(result)
    generations, page_caches = map(int, result.stdout.split())
    assert generations == 1  # only the current one: every retired generation was closed
    assert page_caches == 1
