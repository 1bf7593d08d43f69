"""The public API of levels3, call by call, on the local-directory store (and a few over moto)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import boto3
import pytest

import levels3

TMP_DIR = ".levels3-tmp"


def store_files(root: Path) -> dict[str, bytes]:
    """Every object in a local-directory store (the store's own temp dir left out)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != TMP_DIR]
        for name in filenames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "db"


@pytest.fixture
def db(path):
    database = levels3.DB(str(path), create_if_missing=True)
    yield database
    database.close()


def fill(db, n: int, value_size: int = 100, prefix: bytes = b"k") -> None:
    with db.write_batch() as wb:
        for i in range(n):
            wb.put(b"%s%06d" % (prefix, i), bytes([i % 251]) * value_size)


# ---------------------------------------------------------------------------
# Module attributes
# ---------------------------------------------------------------------------

def test_versions() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", levels3.__version__)
    assert re.fullmatch(r"1\.\d+", levels3.__leveldb_version__)
    assert int(levels3.__leveldb_version__.split(".")[1]) >= 20


def test_s3options_is_the_old_name_of_storeoptions() -> None:
    assert levels3.S3Options is levels3.StoreOptions
    assert levels3.options.S3Options is levels3.StoreOptions


def test_db_takes_exactly_leveldbs_options_with_their_defaults() -> None:
    """levels3.leveldb_options describes LevelDB's options once; DB's keywords (plyvel's) must match it."""
    import dataclasses
    import inspect

    from levels3.leveldb_options import LevelDBOptions

    params = inspect.signature(levels3.DB.__init__).parameters
    own = ("read_only", "checkpoint", "refresh_interval", "options", "store_options")
    keywords = {name: p.default for name, p in params.items() if p.kind is p.KEYWORD_ONLY and name not in own}
    assert keywords == {f.name: f.default for f in dataclasses.fields(LevelDBOptions)}
    config, rest = LevelDBOptions.split({"block_size": 8192, "region": "eu-west-1"})
    assert config.block_size == 8192 and rest == {"region": "eu-west-1"}


def test_exception_hierarchy() -> None:
    for name in ("IOError", "CorruptionError", "IteratorInvalidError"):
        assert issubclass(getattr(levels3, name), levels3.Error)


# ---------------------------------------------------------------------------
# get / put / delete
# ---------------------------------------------------------------------------

def test_get_put_delete(db) -> None:
    assert db.get(b"a") is None
    assert db.get(b"a", b"default") == b"default"
    assert db.get(b"a", default=7) == 7
    db.put(b"a", b"1")
    db.put(b"", b"empty key")
    db.put(b"bin\x00\xff", b"\x00" * 3)
    assert db.get(b"a") == b"1"
    assert db.get(b"a", b"default") == b"1"
    assert db.get(b"") == b"empty key"
    assert db.get(b"bin\x00\xff") == b"\x00" * 3
    db.put(b"a", b"2")
    assert db.get(b"a") == b"2"
    db.delete(b"a")
    assert db.get(b"a") is None
    db.delete(b"never there")  # no error
    db.put(b"v", b"")
    assert db.get(b"v") == b""
    db.put(b"ba", bytearray(b"from bytearray"))
    db.put(b"mv", memoryview(b"xfrom memoryview")[1:])
    assert db.get(b"ba") == b"from bytearray"
    assert db.get(b"mv") == b"from memoryview"
    assert db.get(b"a", verify_checksums=True, fill_cache=False) is None


def test_large_values(db) -> None:
    big = os.urandom(3 * 1024 * 1024)
    db.put(b"big", big)
    assert db.get(b"big") == big


@pytest.mark.parametrize("bad", ["str", None, 1, bytearray(b"x")])
def test_keys_must_be_bytes(db, bad) -> None:
    with pytest.raises(TypeError):
        db.get(bad)
    with pytest.raises(TypeError):
        db.put(bad, b"v")
    with pytest.raises(TypeError):
        db.delete(bad)


def test_values_must_be_bytes_like(db) -> None:
    for bad in ("str", None, 3):
        with pytest.raises(TypeError):
            db.put(b"k", bad)
    assert db.get(b"k") is None


def _objects_containing(root: Path, needle: bytes) -> list[str]:
    return [name for name, data in store_files(root).items() if needle in data]


def test_sync_put_and_delete_reach_the_store(path, db) -> None:
    marker = b"sync-marker-" + os.urandom(8).hex().encode()
    db.put(b"synced", marker, sync=True)
    assert _objects_containing(path, marker), "a synced put must be in the store on return"
    marker2 = b"sync-delete-" + os.urandom(8).hex().encode()
    db.delete(marker2, sync=True)
    assert _objects_containing(path, marker2)


def test_sync_write_batch_reaches_the_store(path, db) -> None:
    marker = b"batch-marker-" + os.urandom(8).hex().encode()
    with db.write_batch(sync=True) as wb:
        wb.put(b"k", marker)
    assert _objects_containing(path, marker)


def test_data_survives_reopen_without_cache(path) -> None:
    with levels3.DB(str(path), create_if_missing=True) as db:
        fill(db, 500)
        db.put(b"last", b"word")
    with levels3.DB(str(path)) as db:
        assert db.get(b"last") == b"word"
        assert db.get(b"k000499") == bytes([499 % 251]) * 100
        assert sum(1 for _ in db) == 501


# ---------------------------------------------------------------------------
# Write batches
# ---------------------------------------------------------------------------

def test_write_batch_operations(db) -> None:
    db.put(b"gone", b"x")
    wb = db.write_batch()
    empty_size = wb.approximate_size()
    wb.put(b"a", b"1")
    wb.put(b"b", bytearray(b"2"))
    wb.delete(b"gone")
    assert wb.approximate_size() > empty_size
    assert db.get(b"a") is None, "nothing is written before write()"
    wb.write()
    assert db.get(b"a") == b"1" and db.get(b"b") == b"2" and db.get(b"gone") is None

    wb.clear()
    assert wb.approximate_size() == empty_size
    wb.put(b"c", b"3")
    other = db.write_batch()
    other.put(b"d", b"4")
    other.delete(b"a")
    wb.append(other)
    assert db.get(b"d") is None
    wb.write()
    assert (db.get(b"c"), db.get(b"d"), db.get(b"a")) == (b"3", b"4", None)
    # write() leaves the batch filled (plyvel): writing again re-applies it.
    db.put(b"c", b"changed")
    wb.write()
    assert db.get(b"c") == b"3"


def test_write_batch_later_operation_wins(db) -> None:
    with db.write_batch() as wb:
        wb.put(b"k", b"1")
        wb.delete(b"k")
        wb.put(b"j", b"1")
        wb.put(b"j", b"2")
    assert db.get(b"k") is None
    assert db.get(b"j") == b"2"


def test_write_batch_context_manager(db) -> None:
    with db.write_batch() as wb:
        wb.put(b"a", b"1")
        assert db.get(b"a") is None
    assert db.get(b"a") == b"1"
    assert wb.approximate_size() == db.write_batch().approximate_size(), "emptied after the block"


def test_write_batch_without_transaction_writes_on_exception(db) -> None:
    with pytest.raises(ZeroDivisionError):
        with db.write_batch() as wb:
            wb.put(b"a", b"1")
            1 / 0
    assert db.get(b"a") == b"1"


def test_write_batch_transaction_discards_on_exception(db) -> None:
    db.put(b"keep", b"old")
    with pytest.raises(ZeroDivisionError):
        with db.write_batch(transaction=True) as wb:
            wb.put(b"a", b"1")
            wb.put(b"keep", b"new")
            wb.delete(b"keep")
            1 / 0
    assert db.get(b"a") is None
    assert db.get(b"keep") == b"old"
    with db.write_batch(transaction=True) as wb:
        wb.put(b"a", b"2")
    assert db.get(b"a") == b"2"


def test_write_batch_type_errors(db) -> None:
    wb = db.write_batch()
    with pytest.raises(TypeError):
        wb.put("a", b"1")
    with pytest.raises(TypeError):
        wb.put(b"a", "1")
    with pytest.raises(TypeError):
        wb.delete(None)
    with pytest.raises(TypeError):
        wb.append([])


# ---------------------------------------------------------------------------
# Iterators
# ---------------------------------------------------------------------------

@pytest.fixture
def abc(db):
    for k in (b"a", b"b", b"c", b"d", b"e"):
        db.put(k, k.upper())
    return db


def keys(it) -> list[bytes]:
    return [k for k, _ in it]


def test_iterate_db_directly(abc) -> None:
    assert list(abc) == [(b"a", b"A"), (b"b", b"B"), (b"c", b"C"), (b"d", b"D"), (b"e", b"E")]


def test_iterator_ranges(abc) -> None:
    assert keys(abc.iterator(start=b"b", stop=b"d")) == [b"b", b"c"]
    assert keys(abc.iterator(start=b"b", stop=b"d", include_start=False, include_stop=True)) == [b"c", b"d"]
    assert keys(abc.iterator(start=b"bb")) == [b"c", b"d", b"e"]
    assert keys(abc.iterator(stop=b"c")) == [b"a", b"b"]
    assert keys(abc.iterator(reverse=True)) == [b"e", b"d", b"c", b"b", b"a"]
    assert keys(abc.iterator(reverse=True, start=b"b", stop=b"d")) == [b"c", b"b"]
    assert keys(abc.iterator(reverse=True, start=b"b", stop=b"d", include_stop=True)) == [b"d", b"c", b"b"]
    assert list(abc.iterator(start=b"x")) == []
    abc.put(b"ca", b"1")
    abc.put(b"cb", b"2")
    assert keys(abc.iterator(prefix=b"c")) == [b"c", b"ca", b"cb"]
    assert keys(abc.iterator(prefix=b"c", reverse=True)) == [b"cb", b"ca", b"c"]
    assert list(abc.iterator(prefix=b"c", include_value=False)) == [b"c", b"ca", b"cb"]
    assert list(abc.iterator(prefix=b"ca", include_key=False)) == [b"1"]
    assert list(abc.iterator(prefix=b"ca", include_key=False, include_value=False)) == [None]  # as plyvel
    with pytest.raises(TypeError):
        abc.iterator(prefix=b"c", start=b"a")


def test_iterator_moves(abc) -> None:
    it = abc.iterator(include_value=False)
    assert next(it) == b"a"
    assert next(it) == b"b"
    assert it.prev() == b"b"
    assert it.prev() == b"a"
    with pytest.raises(StopIteration):
        it.prev()
    assert next(it) == b"a"
    it.seek(b"cc")
    assert next(it) == b"d"
    it.seek_to_stop()
    with pytest.raises(StopIteration):
        next(it)
    assert it.prev() == b"e"
    it.seek_to_start()
    assert list(it) == [b"a", b"b", b"c", b"d", b"e"]

    rev = abc.iterator(reverse=True, include_value=False)
    assert next(rev) == b"e"
    assert rev.prev() == b"e"
    rev.seek(b"c")
    assert next(rev) == b"b"
    rev.seek_to_start()  # the start of the key range: a reverse iterator is exhausted there
    with pytest.raises(StopIteration):
        next(rev)
    assert rev.prev() == b"a"


def test_iterator_sees_a_consistent_view(abc) -> None:
    it = abc.iterator(include_value=False)
    abc.put(b"f", b"F")
    abc.delete(b"a")
    assert list(it) == [b"a", b"b", b"c", b"d", b"e"]


def test_iterator_close_and_context_manager(abc) -> None:
    with abc.iterator() as it:
        assert next(it) == (b"a", b"A")
    with pytest.raises(RuntimeError):
        next(it)
    it.close()  # twice is fine


def test_raw_iterator(abc) -> None:
    it = abc.raw_iterator()
    assert not it.valid()
    for call in (it.key, it.value, it.item, it.next, it.prev):
        with pytest.raises(levels3.IteratorInvalidError):
            call()
    it.seek_to_first()
    assert it.valid() and it.item() == (b"a", b"A")
    it.next()
    assert it.key() == b"b" and it.value() == b"B"
    it.seek(b"cc")
    assert it.key() == b"d"
    it.prev()
    assert it.key() == b"c"
    it.seek_to_last()
    assert it.key() == b"e"
    it.next()
    assert not it.valid()
    it.seek(b"zzz")
    assert not it.valid()
    it.seek_to_first()
    it.prev()
    assert not it.valid()
    with pytest.raises(TypeError):
        it.seek("a")
    with abc.raw_iterator() as it2:
        it2.seek_to_first()
    with pytest.raises(RuntimeError):
        it2.valid()


def test_iterators_over_many_tables(path) -> None:
    with levels3.DB(str(path), create_if_missing=True, write_buffer_size=64 * 1024) as db:
        fill(db, 3000, value_size=200)
        db.compact_range()
        for i in range(0, 3000, 3):
            db.delete(b"k%06d" % i)
        expected = [b"k%06d" % i for i in range(3000) if i % 3]
        assert [k for k, _ in db] == expected
        assert [k for k, _ in db.iterator(reverse=True)] == expected[::-1]
        assert [k for k, _ in db.iterator(start=b"k001000", stop=b"k001010")] == [
            k for k in expected if b"k001000" <= k < b"k001010"]


# ---------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------

def test_snapshot(abc) -> None:
    snap = abc.snapshot()
    abc.put(b"a", b"changed")
    abc.delete(b"b")
    abc.put(b"z", b"Z")
    assert snap.get(b"a") == b"A"
    assert snap.get(b"b") == b"B"
    assert snap.get(b"z") is None
    assert snap.get(b"z", b"dflt") == b"dflt"
    assert keys(snap.iterator()) == [b"a", b"b", b"c", b"d", b"e"]
    assert keys(snap) == [b"a", b"b", b"c", b"d", b"e"]
    assert keys(snap.iterator(reverse=True, stop=b"c")) == [b"b", b"a"]
    raw = snap.raw_iterator()
    raw.seek_to_first()
    assert raw.item() == (b"a", b"A")
    assert abc.get(b"a") == b"changed"
    snap.close()
    with pytest.raises(RuntimeError):
        snap.get(b"a")
    with pytest.raises(RuntimeError):
        snap.iterator()
    with pytest.raises(RuntimeError):
        snap.raw_iterator()
    snap.close()  # idempotent


def test_snapshot_context_manager_and_release(abc) -> None:
    with abc.snapshot() as snap:
        abc.put(b"a", b"new")
        assert snap.get(b"a") == b"A"
    with pytest.raises(RuntimeError):
        snap.get(b"a")
    snap2 = abc.snapshot()
    snap2.release()
    with pytest.raises(RuntimeError):
        snap2.get(b"a")


def test_snapshot_survives_compaction(path) -> None:
    with levels3.DB(str(path), create_if_missing=True, write_buffer_size=64 * 1024) as db:
        fill(db, 1000)
        snap = db.snapshot()
        for i in range(1000):
            db.delete(b"k%06d" % i)
        db.compact_range()
        assert list(db) == []
        assert snap.get(b"k000123") == bytes([123]) * 100
        assert sum(1 for _ in snap) == 1000


# ---------------------------------------------------------------------------
# Prefixed views
# ---------------------------------------------------------------------------

def test_prefixed_db(db) -> None:
    users = db.prefixed_db(b"user:")
    assert users.db is db
    assert users.prefix == b"user:"
    users.put(b"1", b"alice")
    users.put(b"2", b"bob")
    db.put(b"user;", b"outside")
    db.put(b"other", b"x")
    assert db.get(b"user:1") == b"alice"
    assert users.get(b"1") == b"alice"
    assert users.get(b"3", b"none") == b"none"
    assert list(users) == [(b"1", b"alice"), (b"2", b"bob")]
    assert list(users.iterator(reverse=True, include_value=False)) == [b"2", b"1"]
    assert list(users.iterator(start=b"2", include_value=False)) == [b"2"]
    users.delete(b"1")
    assert db.get(b"user:1") is None
    with users.write_batch() as wb:
        wb.put(b"3", b"carol")
        wb.delete(b"2")
    assert list(users) == [(b"3", b"carol")]
    snap = users.snapshot()
    users.put(b"3", b"changed")
    assert snap.get(b"3") == b"carol"
    assert list(snap) == [(b"3", b"carol")]

    admins = users.prefixed_db(b"admin:")
    assert admins.prefix == b"user:admin:" and admins.db is db
    admins.put(b"root", b"1")
    assert db.get(b"user:admin:root") == b"1"
    assert list(admins) == [(b"root", b"1")]
    with pytest.raises(TypeError):
        db.prefixed_db("str")


def test_prefixed_db_with_ff_prefix(db) -> None:
    view = db.prefixed_db(b"\xff")
    view.put(b"\xff", b"1")
    view.put(b"", b"0")
    db.put(b"\xfe", b"before")
    assert list(view) == [(b"", b"0"), (b"\xff", b"1")]
    assert list(view.iterator(reverse=True)) == [(b"\xff", b"1"), (b"", b"0")]


# ---------------------------------------------------------------------------
# Properties, compaction, sizes
# ---------------------------------------------------------------------------

def test_get_property(path) -> None:
    with levels3.DB(str(path), create_if_missing=True, write_buffer_size=64 * 1024) as db:
        assert db.get_property(b"leveldb.num-files-at-level0") == b"0"
        fill(db, 2000)
        db.compact_range()
        stats = db.get_property(b"leveldb.stats")
        assert b"Compactions" in stats and b"Level" in stats
        sstables = db.get_property(b"leveldb.sstables")
        assert re.search(rb"\d+:\d+\[", sstables), sstables
        assert db.get_property(b"leveldb.num-files-at-level0") == b"0"  # compacted away
        assert db.get_property(b"leveldb.no-such-property") is None
        assert db.get_property(b"leveldb.num-files-at-level99") is None
        with pytest.raises(TypeError):
            db.get_property("leveldb.stats")


def test_compact_range_and_approximate_sizes(path) -> None:
    with levels3.DB(str(path), create_if_missing=True, compression=None, write_buffer_size=256 * 1024) as db:
        before = db.approximate_size(b"k", b"l")
        fill(db, 5000, value_size=200)
        db.compact_range()
        after = db.approximate_size(b"k", b"l")
        assert before == 0
        assert after > 500_000, after  # 5000 * 200 bytes, uncompressed
        assert db.approximate_sizes() == []
        small, big, none = db.approximate_sizes((b"k000000", b"k000100"), (b"k", b"l"), (b"x", b"y"))
        assert none == 0
        assert small < big and big == after
        # compact_range with bounds keeps every entry.
        db.compact_range(start=b"k001000", stop=b"k002000")
        db.compact_range(start=b"k003000")
        db.compact_range(stop=b"k000010")
        assert sum(1 for _ in db) == 5000
        for i in range(5000):
            db.delete(b"k%06d" % i)
        db.compact_range()
        assert db.approximate_size(b"k", b"l") < after // 10
        with pytest.raises(TypeError):
            db.approximate_size("k", b"l")


def test_compression_none_stores_more_bytes(tmp_path) -> None:
    sizes = {}
    for compression in (None, "snappy"):
        root = tmp_path / str(compression)
        with levels3.DB(str(root), create_if_missing=True, compression=compression) as db:
            fill(db, 2000, value_size=500)
            db.compact_range()
            assert db.get(b"k000007") == bytes([7]) * 500
        sizes[compression] = sum(len(v) for k, v in store_files(root).items() if k.endswith(".ldb"))
    assert sizes[None] > 1_000_000
    assert sizes[None] > 5 * sizes["snappy"]
    with pytest.raises((ValueError, TypeError)):
        levels3.DB(str(tmp_path / "bad"), create_if_missing=True, compression="zstd-please")


def test_bloom_filter_bits(tmp_path) -> None:
    tables = {}
    for bits in (0, 10):
        root = tmp_path / f"bloom{bits}"
        with levels3.DB(str(root), create_if_missing=True, bloom_filter_bits=bits) as db:
            fill(db, 500)
            db.compact_range()
            assert db.get(b"k000010") == bytes([10]) * 100
            assert db.get(b"k999999") is None
        tables[bits] = b"".join(v for k, v in store_files(root).items() if k.endswith(".ldb"))
    assert b"filter.leveldb.BuiltinBloomFilter2" in tables[10]
    assert b"filter.leveldb.BuiltinBloomFilter2" not in tables[0]


def test_tables_written_with_a_bloom_filter_stay_readable_by_plyvel(tmp_path) -> None:
    """A filter is one more block in each table: plyvel reads them with or without a filter policy."""
    import subprocess
    import sys

    plyvel = pytest.importorskip("plyvel")
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True, bloom_filter_bits=10) as db:
        fill(db, 3000)
        db.compact_range()
    assert b"filter.leveldb.BuiltinBloomFilter2" in b"".join(
        v for k, v in store_files(tmp_path / "db").items() if k.endswith(".ldb"))
    out = str(tmp_path / "exported")
    done = subprocess.run([sys.executable, "-m", "levels3", "export", url, out, "--quiet"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = {b"k%06d" % i: bytes([i % 251]) * 100 for i in range(3000)}
    for policy in ({}, {"bloom_filter_bits": 10}):
        db = plyvel.DB(out, **policy)
        try:
            assert dict(db) == expected
            assert db.get(b"k001234") == expected[b"k001234"] and db.get(b"k999999") is None
        finally:
            db.close()


def test_lru_cache_size(tmp_path) -> None:
    usage = {}
    for cache_size in (1, 32 * 1024 * 1024):
        root = tmp_path / f"cache{cache_size}"
        with levels3.DB(str(root), create_if_missing=True, lru_cache_size=cache_size) as db:
            fill(db, 3000, value_size=200)
            db.compact_range()
            for i in range(0, 3000, 7):
                assert db.get(b"k%06d" % i) == bytes([i % 251]) * 200
            usage[cache_size] = int(db.get_property(b"leveldb.approximate-memory-usage"))
    assert usage[32 * 1024 * 1024] > usage[1] + 100_000, usage


def test_other_tuning_options(path) -> None:
    with levels3.DB(str(path), create_if_missing=True, paranoid_checks=True, write_buffer_size=128 * 1024,
                    max_open_files=100, block_size=1024, block_restart_interval=8,
                    max_file_size=256 * 1024) as db:
        fill(db, 2000)
        db.compact_range()
        assert db.get(b"k001999") == bytes([1999 % 251]) * 100
        assert db.get(b"k001999", verify_checksums=True) == bytes([1999 % 251]) * 100
    with pytest.raises(TypeError):
        levels3.DB(str(path), write_buffer_size="big")


# ---------------------------------------------------------------------------
# Custom comparator
# ---------------------------------------------------------------------------

def reverse_order(a: bytes, b: bytes) -> int:
    return (a < b) - (a > b)


def test_custom_comparator(path) -> None:
    with levels3.DB(str(path), create_if_missing=True, comparator=reverse_order,
                    comparator_name=b"test.ReverseOrder") as db:
        for k in (b"a", b"c", b"b", b"aa"):
            db.put(k, k)
        assert [k for k, _ in db] == [b"c", b"b", b"aa", b"a"]
        assert [k for k, _ in db.iterator(start=b"b")] == [b"b", b"aa", b"a"]
        assert [k for k, _ in db.iterator(reverse=True, stop=b"aa")] == [b"b", b"c"]
        db.compact_range()
    with levels3.DB(str(path), comparator=reverse_order, comparator_name=b"test.ReverseOrder") as db:
        assert [k for k, _ in db] == [b"c", b"b", b"aa", b"a"]
    with pytest.raises(levels3.Error, match="comparator"):
        levels3.DB(str(path), comparator=reverse_order, comparator_name=b"test.Other")
    with pytest.raises(levels3.Error, match="comparator"):
        levels3.DB(str(path))  # the default bytewise comparator has another name too
    with pytest.raises((TypeError, ValueError)):
        levels3.DB(str(path), comparator=reverse_order)
    with pytest.raises(TypeError):
        levels3.DB(str(path), comparator="not callable", comparator_name=b"x")


# ---------------------------------------------------------------------------
# Opening, closing, names
# ---------------------------------------------------------------------------

def test_close_closed_name_repr(path) -> None:
    db = levels3.DB(str(path), create_if_missing=True)
    assert db.name == str(path)
    assert not db.closed
    assert "open" in repr(db)
    db.close()
    assert db.closed
    assert "closed" in repr(db)
    db.close()  # idempotent


def test_context_manager_closes(path) -> None:
    with levels3.DB(str(path), create_if_missing=True) as db:
        db.put(b"a", b"1")
    assert db.closed
    with levels3.DB(str(path)) as db:
        assert db.get(b"a") == b"1"


@pytest.mark.parametrize("call", [
    lambda db: db.get(b"a"),
    lambda db: db.put(b"a", b"1"),
    lambda db: db.delete(b"a"),
    lambda db: db.write_batch(),
    lambda db: db.iterator(),
    lambda db: db.raw_iterator(),
    lambda db: iter(db),
    lambda db: db.snapshot(),
    lambda db: db.get_property(b"leveldb.stats"),
    lambda db: db.compact_range(),
    lambda db: db.approximate_size(b"a", b"b"),
    lambda db: db.approximate_sizes((b"a", b"b")),
    lambda db: db.prefixed_db(b"p").get(b"a"),
    lambda db: db.prefixed_db(b"p").put(b"a", b"1"),
])
def test_operations_after_close_raise_runtime_error(path, call) -> None:
    db = levels3.DB(str(path), create_if_missing=True)
    db.close()
    with pytest.raises(RuntimeError):
        call(db)


def test_close_invalidates_iterators_snapshots_batches(path) -> None:
    db = levels3.DB(str(path), create_if_missing=True)
    db.put(b"a", b"1")
    it, raw, snap, wb = db.iterator(), db.raw_iterator(), db.snapshot(), db.write_batch()
    db.close()
    for call in (lambda: next(it), raw.valid, lambda: snap.get(b"a"), lambda: wb.put(b"b", b"2"), wb.write):
        with pytest.raises(RuntimeError):
            call()


def test_missing_database_without_create_if_missing(tmp_path) -> None:
    missing = tmp_path / "nothing-here"
    with pytest.raises(levels3.Error) as info:
        levels3.DB(str(missing))
    message = str(info.value)
    assert str(missing) in message
    assert "levels3-cache" not in message, "name the database, not the private cache"
    assert not missing.exists() or not store_files(missing)


def test_empty_directory_without_create_if_missing(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(levels3.Error) as info:
        levels3.DB(str(empty))
    assert "create_if_missing" in str(info.value) or "does not exist" in str(info.value)
    assert str(empty) in str(info.value)


def test_error_if_exists(path) -> None:
    with levels3.DB(str(path), create_if_missing=True, error_if_exists=True) as db:
        db.put(b"a", b"1")
    with pytest.raises(levels3.Error) as info:
        levels3.DB(str(path), error_if_exists=True)
    assert "exists" in str(info.value)
    assert str(path) in str(info.value)
    with levels3.DB(str(path), create_if_missing=True) as db:  # reopening is fine
        assert db.get(b"a") == b"1"


# ---------------------------------------------------------------------------
# destroy_db / repair_db
# ---------------------------------------------------------------------------

def test_destroy_db(path) -> None:
    with levels3.DB(str(path), create_if_missing=True, write_buffer_size=64 * 1024) as db:
        fill(db, 2000)
        db.compact_range()
        fill(db, 10, prefix=b"tail")
    assert any(k.endswith(".ldb") for k in store_files(path))
    levels3.destroy_db(str(path))
    assert store_files(path) == {}
    with pytest.raises(levels3.Error):
        levels3.DB(str(path))
    with levels3.DB(str(path), create_if_missing=True) as db:
        assert list(db) == []


def test_destroy_db_refuses_an_open_database(path) -> None:
    with levels3.DB(str(path), create_if_missing=True) as db:
        db.put(b"a", b"1")
        with pytest.raises(levels3.Error):
            levels3.destroy_db(str(path))
        assert db.get(b"a") == b"1"
    with levels3.DB(str(path)) as db:
        assert db.get(b"a") == b"1"


def test_repair_db_rebuilds_lost_metadata(path) -> None:
    with levels3.DB(str(path), create_if_missing=True, write_buffer_size=64 * 1024) as db:
        fill(db, 2000)
        db.compact_range()
        db.put(b"after-compaction", b"x", sync=True)
    for name in store_files(path):
        if name == "CURRENT" or name.startswith("MANIFEST"):
            os.remove(path / name)
    with pytest.raises(levels3.Error):
        levels3.DB(str(path))
    levels3.repair_db(str(path))
    with levels3.DB(str(path)) as db:
        assert db.get(b"k001234") == bytes([1234 % 251]) * 100
        assert db.get(b"after-compaction") == b"x"
        assert sum(1 for _ in db) == 2001


def test_repair_db_on_healthy_database_keeps_data(path) -> None:
    with levels3.DB(str(path), create_if_missing=True) as db:
        fill(db, 100)
    levels3.repair_db(str(path))
    with levels3.DB(str(path)) as db:
        assert sum(1 for _ in db) == 100


# ---------------------------------------------------------------------------
# The same core calls on S3 (moto in-process)
# ---------------------------------------------------------------------------

def test_core_calls_on_s3(mocked_aws) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="bkt")
    url = "s3://bkt/some/prefix"
    with pytest.raises(levels3.Error):
        levels3.DB(url, region="us-east-1")
    with levels3.DB(url, create_if_missing=True, region="us-east-1") as db:
        assert db.name == url
        db.put(b"a", b"1", sync=True)
        db.put(b"b", b"2")
        with db.write_batch(transaction=True) as wb:
            wb.put(b"c", b"3")
            wb.delete(b"b")
        snap = db.snapshot()
        db.put(b"a", b"changed")
        assert snap.get(b"a") == b"1"
        assert list(db.prefixed_db(b"c")) == [(b"", b"3")]
        assert list(db.iterator(reverse=True, include_value=False)) == [b"c", b"a"]
        raw = db.raw_iterator()
        raw.seek(b"b")
        assert raw.item() == (b"c", b"3")
        assert db.get_property(b"leveldb.num-files-at-level0") is not None
        fill(db, 500)
        db.compact_range()
        assert db.approximate_size(b"k", b"l") > 0
    keys_in_bucket = [o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix="some/prefix/").get("Contents", [])]
    assert any(k.endswith(".ldb") for k in keys_in_bucket), keys_in_bucket
    with levels3.DB(url, region="us-east-1") as db:
        assert db.get(b"a") == b"changed"
        assert db.get(b"b") is None
        assert db.get(b"c") == b"3"
        assert sum(1 for _ in db) == 502
    with pytest.raises(levels3.Error):
        levels3.DB(url, error_if_exists=True, region="us-east-1")
    levels3.destroy_db(url, region="us-east-1")
    left = [o["Key"] for o in s3.list_objects_v2(Bucket="bkt", Prefix="some/prefix/").get("Contents", [])]
    assert not [k for k in left if re.search(r"(CURRENT|MANIFEST|\.ldb|\.log)", k)], left
    with pytest.raises(levels3.Error):
        levels3.DB(url, region="us-east-1")
