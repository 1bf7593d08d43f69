"""What reaches the store, when, and what comes back: reopen, cache loss, sync, prefix, cache bound."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import boto3
import pytest

import levels3
from levels3.engine.layout import parse_key
from levels3.stores import LocalDirStore
from levels3.stores.faults import FaultInjectingStore

from .conftest import REGION


def test_reopen_with_same_cache_reuses_it(db_location, tmp_path):
    cache = str(tmp_path / "cache")
    with db_location.open(create_if_missing=True, cache_dir=cache) as db:
        for i in range(2000):
            db.put(b"key%05d" % i, b"value%05d" % i)
        db.compact_range()
    with db_location.open(cache_dir=cache) as db:
        assert db.get(b"key01234") == b"value01234"
        assert sum(1 for _ in db) == 2000
        stats = db.stats()
    assert stats["cache_hits"] > 0
    assert stats["requests"]["get"] <= 3  # CURRENT and the MANIFEST at most; tables come from the cache


def test_reopen_with_new_cache_and_deleted_cache(db_location, tmp_path):
    cache = str(tmp_path / "cache")
    with db_location.open(create_if_missing=True, cache_dir=cache) as db:
        for i in range(3000):
            db.put(b"k%05d" % i, os.urandom(50))
        expected = dict(db)
    shutil.rmtree(cache)
    with db_location.open(cache_dir=cache) as db:
        assert dict(db) == expected
    with db_location.open(cache_dir=str(tmp_path / "fresh")) as db:
        assert dict(db) == expected
        assert db.stats()["cache_misses"] > 0


def test_stale_cache_is_not_trusted(db_location, tmp_path):
    """A cache whose files the store no longer holds in that form is discarded."""
    old_cache = str(tmp_path / "old")
    with db_location.open(create_if_missing=True, cache_dir=old_cache) as db:
        for i in range(1000):
            db.put(b"k%04d" % i, b"old")
        db.compact_range()
    levels3.destroy_db(db_location.url, **db_location.options)
    with db_location.open(create_if_missing=True, cache_dir=str(tmp_path / "other")) as db:
        for i in range(1000):
            db.put(b"k%04d" % i, b"new")
        db.compact_range()
    with db_location.open(cache_dir=old_cache) as db:
        assert set(v for _, v in db) == {b"new"}


def test_one_process_per_cache_dir(db_location, tmp_path):
    cache = str(tmp_path / "cache")
    other = db_location.sibling("other")
    with db_location.open(create_if_missing=True, cache_dir=cache):
        with pytest.raises(levels3.Error, match="in use"):
            other.open(create_if_missing=True, cache_dir=cache)


def test_synced_write_is_in_the_store_before_put_returns(db_location):
    with db_location.open(create_if_missing=True) as db:
        marker = os.urandom(16).hex().encode()
        db.put(b"synced", marker, sync=True)
        wal = b"".join(db_location.read_objects(lambda key: ".log/" in key))
        assert marker in wal


def test_unsynced_writes_reach_the_store_at_close(db_location):
    with db_location.open(create_if_missing=True) as db:
        db.put(b"unsynced", b"tail-value")
    with db_location.open() as db:
        assert db.get(b"unsynced") == b"tail-value"


def test_wal_is_never_reuploaded_whole(db_location):
    """Each sync is one PUT of the new bytes, plus (every 16th PUT at a level) the 15 small objects before it:
    1000 syncs reach level 2, so no byte goes up more than 3 times (re-sending the whole WAL would be ~500x)."""
    with db_location.open(create_if_missing=True) as db:
        before = db.stats()
        for i in range(1000):
            db.put(b"key%04d" % i, b"v" * 100, sync=True)
        after = db.stats()
        uploaded = after["bytes_uploaded"] - before["bytes_uploaded"]
        puts = after["requests"]["put"] - before["requests"]["put"]
        store = db_location.raw_store()
        wal_bytes = max(p.offset + o.size for o in store.list() if (p := parse_key(o.key)) and ".log/" in o.key)
    assert wal_bytes > 100_000
    assert uploaded <= 3 * wal_bytes
    assert puts <= 1000 + 5  # one per sync (+ lease renewals)


def test_cold_open_reads_few_objects_however_many_syncs(location_factory):
    """The WAL of a writer that synced 4000 times comes back in a few dozen objects while it writes (merged as
    it goes); after a clean close it is a table (written at close), and no WAL is left to fetch. The merge
    plan is store-independent; the local store keeps 4000 syncs quick."""
    db_location = location_factory("local")

    def cold_open_gets() -> int:
        with db_location.open(cache_dir=None, read_only=True) as db:
            assert db.get(b"key03999") == b"v" * 100
            assert sum(1 for _ in db.iterator()) == 4000
            return db.stats()["requests"]["get"]

    with db_location.open(create_if_missing=True) as db:
        for i in range(4000):
            db.put(b"key%05d" % i, b"v" * 100, sync=True)
        # CURRENT, the MANIFEST (a segment or two), the WAL: 4000 = 15*256 + 10*16, at most 15 objects a level
        assert cold_open_gets() <= 3 + 3 * 15
    assert not [o.key for o in db_location.raw_store().list() if ".log/" in o.key]
    assert cold_open_gets() == 3  # CURRENT, the MANIFEST and the table (its tail GET holds it whole)


def _wal_keys(db_location) -> list[str]:
    return [o.key for o in db_location.raw_store().list() if ".log/" in o.key]


def test_a_clean_close_writes_the_memtable_to_a_table(db_location):
    """Writes still in the memtable at close become a table then (two PUTs: the table and a MANIFEST
    segment), and the WAL that held them is deleted: the next open replays no log, so it fetches no WAL
    and uploads no table before the database can be used."""
    with db_location.open(create_if_missing=True) as db:
        for i in range(3000):
            db.put(b"key%05d" % i, b"v%05d" % i)  # unsynced: only the memtable and the WAL hold them
        db.put(b"last", b"synced", sync=True)
    assert _wal_keys(db_location) == []
    with db_location.open() as db:
        puts = db.stats()["requests"]["put"]
        assert db.get(b"key01234") == b"v01234" and db.get(b"last") == b"synced"
        assert sum(1 for _ in db) == 3001
        tables = db.get_property(b"leveldb.sstables").decode()
    # the lease, the fence, LevelDB's new MANIFEST and CURRENT: no table from a replayed log
    assert puts == 4, puts
    assert tables.count(".. ") >= 1


def test_the_flush_at_close_keeps_the_empty_key(db_location):
    """The flush is a CompactRange of an inverted range that only a table holding the empty key overlaps:
    with such a table, LevelDB compacts it as well, and nothing is lost."""
    with db_location.open(create_if_missing=True) as db:
        db.put(b"", b"empty")
        for i in range(500):
            db.put(b"k%04d" % i, b"x")
    with db_location.open() as db:
        db.put(b"", b"empty again")
        db.put(b"k9999", b"y")
    with db_location.open() as db:
        assert db.get(b"") == b"empty again"
        assert db.get(b"k9999") == b"y" and db.get(b"k0250") == b"x"
        assert sum(1 for _ in db) == 502
    assert _wal_keys(db_location) == []


def test_a_custom_comparator_closes_without_a_flush_and_seals_its_wal(location_factory):
    """The inverted range is only empty in bytewise order: with a custom comparator the close leaves the
    memtable in the WAL, sealed in one object, which the next open replays."""
    db_location = location_factory("local")

    def reverse(a: bytes, b: bytes) -> int:
        return (a < b) - (a > b)

    with db_location.open(create_if_missing=True, comparator=reverse, comparator_name=b"reverse") as db:
        for i in range(300):
            db.put(b"key%05d" % i, b"v", sync=i % 10 == 0)
    assert len(_wal_keys(db_location)) == 1
    with db_location.open(comparator=reverse, comparator_name=b"reverse") as db:
        assert [k for k, _ in db.iterator()][:2] == [b"key00299", b"key00298"]


def test_nothing_outside_the_prefix_is_touched(mocked_aws):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="shared-bucket")
    neighbours = {"some/db-sibling/CURRENT": b"x", "some/CURRENT": b"y", "other/000001.ldb": b"z", "LOCK": b"w"}
    for key, body in neighbours.items():
        s3.put_object(Bucket="shared-bucket", Key=key, Body=body)
    with levels3.DB("s3://shared-bucket/some/db", create_if_missing=True, region=REGION,
                    write_buffer_size=64 * 1024) as db:
        for i in range(5000):
            db.put(b"%05d" % i, os.urandom(64))
        db.compact_range()
    levels3.destroy_db("s3://shared-bucket/some/db", region=REGION)
    remaining = {o["Key"]: s3.get_object(Bucket="shared-bucket", Key=o["Key"])["Body"].read()
                 for o in s3.list_objects_v2(Bucket="shared-bucket").get("Contents", [])}
    assert remaining == neighbours


@pytest.mark.parametrize("kind", ["local", "mock_aws"])
def test_large_database_with_compactions(kind, request, tmp_path):
    location = request.getfixturevalue("location_factory")(kind)
    n = 200_000
    rng = random.Random(7)
    keys = [b"%016x" % rng.getrandbits(64) for _ in range(n)]
    with location.open(create_if_missing=True, write_buffer_size=1 << 20, max_file_size=1 << 20) as db:
        for i, key in enumerate(keys):
            db.put(key, b"%08d" % i + b"x" * 92)
        for key in keys[:1000]:
            db.delete(key)
        assert int(db.get_property(b"leveldb.num-files-at-level1") or b"0") > 0  # compactions ran
    with location.open(cache_dir=str(tmp_path / "new-cache")) as db:
        sample = rng.sample(range(1000, n), 500)
        for i in sample:
            assert db.get(keys[i]) == b"%08d" % i + b"x" * 92
        assert db.get(keys[5]) is None
        count = 0
        previous = b""
        for key, _ in db:
            assert key > previous
            previous = key
            count += 1
        assert count == n - 1000


def _cache_bytes(cache) -> tuple[int, int, int]:
    """(bytes of files nobody holds open, bytes on disk, bytes of files LevelDB holds open or is writing)."""
    with cache._lock:
        entries = dict(cache._entries)
    unpinned = sum(e.size for e in entries.values() if not e.pins and not e.writing)
    # Blocks allocated: a table's page file is sparse (its evicted pages are holes).
    disk = sum(os.lstat(os.path.join(root, f)).st_blocks * 512 for root, _, files in os.walk(cache.directory)
               for f in files if not f.startswith(".levels3"))
    held = sum(os.path.getsize(cache.path(n)) for n, e in entries.items()
               if (e.pins or e.writing) and os.path.exists(cache.path(n)))
    return unpinned, disk, held


def test_cache_stays_within_bound_plus_open_files(tmp_path):
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True, write_buffer_size=64 * 1024, max_file_size=64 * 1024) as db:
        for i in range(60_000):
            db.put(b"%08d" % i, os.urandom(150))
    limit = 256 * 1024
    # LevelDB keeps up to max_open_files - 10 tables open (the minimum it accepts is 74):
    # those are pinned, so the database must have many more tables than that.
    with levels3.DB(url, cache_dir=str(tmp_path / "cache"), max_cache_bytes=limit, max_open_files=74,
                    lru_cache_size=8 * 1024) as db:
        cache = db._control.cache
        rng = random.Random(1)
        tables = len([n for n in db._control.catalog.names() if n.endswith(".ldb")])
        assert tables > 100
        for step in range(3000):
            db.get(b"%08d" % rng.randrange(60_000))
            if step % 100 == 0:
                unpinned, disk, held = _cache_bytes(cache)
                assert unpinned <= limit
                assert disk <= limit + held
        assert db.stats()["page_evictions"] > 0  # tables are cached in pages (tests/test_pages.py)


def test_synced_write_survives_a_killed_process(tmp_path):
    """A writer killed right after put(sync=True) returned: the next writer has it and all before it."""
    url = str(tmp_path / "db")
    script = textwrap.dedent(f"""
        import os, levels3
        db = levels3.DB({url!r}, create_if_missing=True, lease_duration=3.0, lease_renewal=0.5,
                        write_buffer_size=16 * 1024, cache_dir={str(tmp_path / "killed-cache")!r})
        for i in range(3000):  # the WAL rolls over many times; only every 500th write is synced
            db.put(b"key%04d" % i, b"value%04d" % i, sync=(i % 500 == 499))
        print("synced", flush=True)
        os.kill(os.getpid(), 9)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "synced" in result.stdout and result.returncode == -9, result.stderr
    with levels3.DB(url, lease_duration=3.0, lease_renewal=0.5, lock_timeout=10) as db:
        # A sync makes every earlier write durable, not only itself (and the last write was synced).
        assert [k for k, _ in db] == [b"key%04d" % i for i in range(3000)]


def test_corrupt_table_object_raises_corruption(tmp_path):
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True) as db:
        for i in range(5000):
            db.put(b"%06d" % i, b"v" * 50)
        db.compact_range()
    store = LocalDirStore(url, create=False)
    table = next(o.key for o in store.list() if o.key.endswith(".ldb"))
    size = store.head(table).size
    store.put(table, b"\0" * size)
    with levels3.DB(url, paranoid_checks=True) as db:
        with pytest.raises(levels3.CorruptionError):
            for i in range(5000):
                db.get(b"%06d" % i, verify_checksums=True)


@pytest.mark.parametrize("flush_interval", [None, 0.2])
def test_flush_interval_bounds_what_a_crash_loses(tmp_path, flush_interval):
    """Unsynced writes reach the store within flush_interval; without it, only at sync/flush/close."""
    url = str(tmp_path / "db")
    script = textwrap.dedent(f"""
        import os, time, levels3
        db = levels3.DB({url!r}, create_if_missing=True, flush_interval={flush_interval!r},
                        lease_duration=3.0, lease_renewal=0.5, cache_dir={str(tmp_path / "killed-cache")!r})
        for i in range(500):
            db.put(b"unsynced%03d" % i, b"v")
        time.sleep(1.0)
        os.kill(os.getpid(), 9)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stderr
    with levels3.DB(url, lease_duration=3.0, lease_renewal=0.5, lock_timeout=10) as db:
        found = sum(1 for _ in db)
    assert found == (500 if flush_interval else 0)


def test_sync_makes_earlier_writes_durable(db_location):
    with db_location.open(create_if_missing=True) as db:
        db.put(b"a", b"unsynced-marker-1")
        assert b"unsynced-marker-1" not in b"".join(db_location.read_objects(lambda k: ".log/" in k))
        db.sync()
        assert b"unsynced-marker-1" in b"".join(db_location.read_objects(lambda k: ".log/" in k))


def test_manifest_reads_stay_few_however_long_the_writer_ran(db_location):
    """Cold open after hundreds of version edits: the MANIFEST comes back in a few objects."""
    with db_location.open(create_if_missing=True, write_buffer_size=16 * 1024) as db:
        for i in range(20_000):  # a memtable flush (a MANIFEST edit) every ~500 writes
            db.put(b"%08d" % i, b"v" * 20)
        db.sync()
        store = db_location.raw_store()
        manifest_objects = [o.key for o in store.list() if "/MANIFEST-" in o.key]
    assert 0 < len(manifest_objects) <= 2 * 16
    assert any(key.endswith("-1") for key in manifest_objects)  # merges happened
    with db_location.open(cache_dir=None) as db:
        assert db.get(b"00012345") == b"v" * 20
        gets = db.stats()["requests"]["get"]
    # CURRENT (fence), the MANIFEST's objects, WAL segments, and the few tables one key lives in
    assert gets <= 1 + len(manifest_objects) + 8


def test_catalog_survives_empty_objects(tmp_path):
    """A 0-byte object (an empty table, say) must not stall the catalog's cover search."""
    from levels3.engine.catalog import Catalog

    store = LocalDirStore(str(tmp_path / "db"), create=True)
    store.put("w00000001/000007.ldb", b"")
    store.put("w00000001/000005.log/00000000000000000000", b"")
    store.put("w00000001/000005.log/00000000000000000000-00000000000000000004-1", b"abcd")
    catalog = Catalog.load(store)
    assert catalog.get("000007.ldb").size == 0
    assert catalog.get("000005.log").size == 4


@pytest.mark.parametrize("sync_bytes", [130, 1000, 70_000])
def test_segment_merge_plan_bounds_objects_and_reuploads(sync_bytes):
    """Simulate 20k syncs through plan_segment_upload: the file stays a contiguous cover, few objects, and no
    byte is uploaded more than 1 + levels times; no merge is larger than the cap."""
    from levels3.engine.segments import MERGE_FANOUT, MERGE_MAX_BYTES, plan_segment_upload
    from levels3.engine.catalog import StoredObject

    objects: list[StoredObject] = []
    uploaded = most_objects = 0
    for _ in range(20_000):
        absorbed, level = plan_segment_upload(objects, sync_bytes)
        start = objects[-absorbed].offset if absorbed else (objects[-1].end if objects else 0)
        end = (objects[-1].end if objects else 0) + sync_bytes
        assert end - start <= max(MERGE_MAX_BYTES, sync_bytes)
        objects[len(objects) - absorbed:] = [StoredObject(f"k{start}", start, end - start, "", level)]
        uploaded += end - start
        most_objects = max(most_objects, len(objects))
    total = objects[-1].end
    assert [o.offset for o in objects[1:]] == [o.end for o in objects[:-1]] and objects[0].offset == 0
    levels = max(o.level for o in objects)
    assert levels >= 1
    assert uploaded <= (1 + levels) * total
    # below the cap: at most fanout-1 objects per level; at the cap: objects of at least cap/fanout bytes
    assert most_objects <= (MERGE_FANOUT - 1) * (levels + 1) + total // (MERGE_MAX_BYTES // MERGE_FANOUT)


class _WalWatch(FaultInjectingStore):
    """Records every WAL upload; each takes `delay` seconds and can be held at `gate`."""

    def __init__(self, inner, delay: float = 0.0) -> None:
        super().__init__(inner, rate=0.0)
        self.delay, self.wal = delay, bytearray()
        self.wal_puts = 0
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def put(self, key, data, **kwargs):
        if ".log/" in key:
            self.entered.set()
            self.gate.wait()
            time.sleep(self.delay)
        etag = super().put(key, data, **kwargs)
        if ".log/" in key:
            with self._lock:
                self.wal += data
                self.wal_puts += 1
        return etag


def test_concurrent_synced_writes_share_uploads_and_each_is_durable_on_return(tmp_path):
    """8 threads x 40 synced puts: every put's bytes were uploaded when it returned, and the threads shared
    uploads (one WAL PUT per group, groups of several writers)."""
    watches: list[_WalWatch] = []
    db = levels3.DB(str(tmp_path / "db"), create_if_missing=True,
                    wrap_store=lambda s: watches.append(_WalWatch(s, delay=0.02)) or watches[0])
    not_durable: list[bytes] = []

    def writer(t: int) -> None:
        for i in range(40):
            value = b"value-%02d-%03d-" % (t, i) + os.urandom(8).hex().encode()
            db.put(b"k%02d-%03d" % (t, i), value, sync=True)
            with watches[0]._lock:
                if value not in watches[0].wal:
                    not_durable.append(value)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    puts = watches[0].wal_puts
    db.close()
    assert not_durable == []
    # A closed loop of 8 forms groups of ~8 (~42 PUTs); without the gather window, LevelDB-style groups
    # alternate between whoever waited and whoever came back (~63 PUTs).
    assert puts <= 320 / 6


def test_synced_batches_too_big_to_share_a_group_are_each_written_once(tmp_path):
    """Groups stop at 1 MiB: 0.7 MiB batches from 4 threads go one per group, and every writer still
    returns with its own batch durable (the queue hands leadership on instead of dropping anyone)."""
    watches: list[_WalWatch] = []
    db = levels3.DB(str(tmp_path / "db"), create_if_missing=True,
                    wrap_store=lambda s: watches.append(_WalWatch(s, delay=0.01)) or watches[0])
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(4):
                with db.write_batch(sync=True) as batch:
                    batch.put(b"big-%d-%d" % (t, i), bytes([t * 4 + i]) * (700 << 10))
                assert db.get(b"big-%d-%d" % (t, i)) is not None
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads) and errors == []
    assert watches[0].wal_puts >= 16  # no two 0.7 MiB batches shared an upload
    db.close()
    reopened = levels3.DB(str(tmp_path / "db"))
    for t in range(4):
        for i in range(4):
            assert reopened.get(b"big-%d-%d" % (t, i)) == bytes([t * 4 + i]) * (700 << 10)
    reopened.close()


def test_a_synced_write_is_invisible_until_durable(tmp_path):
    """As in LevelDB: a reader never sees a synced write whose upload has not landed."""
    watches: list[_WalWatch] = []
    db = levels3.DB(str(tmp_path / "db"), create_if_missing=True,
                    wrap_store=lambda s: watches.append(_WalWatch(s)) or watches[0])
    watch = watches[0]
    watch.gate.clear()
    watch.entered.clear()
    writer = threading.Thread(target=lambda: db.put(b"k", b"v", sync=True))
    writer.start()
    assert watch.entered.wait(10)
    assert db.get(b"k") is None  # the upload is held: not durable, so not visible
    watch.gate.set()
    writer.join(10)
    assert db.get(b"k") == b"v"
    db.close()
