"""One writer, many followers, checkpoints: real processes where it matters."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import levels3
from levels3.engine.catalog import Catalog
from levels3.stores import LocalDirStore

ROOT = str(Path(__file__).resolve().parent.parent)


def test_three_follower_processes_see_consistent_states(tmp_path):
    url = str(tmp_path / "db")
    published = tmp_path / "published"
    writer = levels3.DB(url, create_if_missing=True, write_buffer_size=32 * 1024)
    writer.put(b"counter", b"0", sync=True)
    followers = [subprocess.Popen([sys.executable, "-m", "tests.follower_process", url, str(published), "40"],
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
    assert n > 40


def test_writes_on_a_follower_are_refused(db_location):
    with db_location.open(create_if_missing=True) as writer:
        writer.put(b"k", b"v", sync=True)
        with db_location.open(read_only=True) as follower:
            assert follower.get(b"k") == b"v"
            for write in (lambda: follower.put(b"a", b"b"), lambda: follower.delete(b"k"), follower.sync,
                          lambda: follower.write_batch().write(), lambda: follower.checkpoint("x")):
                with pytest.raises(levels3.ReadOnlyError):
                    write()
            with pytest.raises(levels3.Error):
                writer.refresh()
        objects = len(db_location.read_objects(lambda key: True))
    assert objects > 0


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


def test_retired_objects_go_after_the_grace_period_in_batches_off_the_write_path(tmp_path):
    """300 synced writes: their merged-away WAL segments stay for the grace period, then go in a few
    DeleteObjects requests from the background, not one DELETE per object on a write."""
    url = str(tmp_path / "db")
    db = levels3.DB(url, create_if_missing=True, deletion_grace=5.0)
    try:
        for i in range(300):
            db.put(b"%04d" % i, b"v", sync=True)
        segments = {k for k in _object_keys(url) if ".log/" in k}
        assert len(segments) > 250  # the merged-away ones are still there, for followers
        deletes_while_writing = db.stats()["requests"]["delete"]
        assert deletes_while_writing == 0
        assert _wait_until(lambda: len({k for k in _object_keys(url) if ".log/" in k}) < 40, timeout=20)
        # one request per batch, a batch every grace/10 at most: a handful, against 250+ single DELETEs
        assert db.stats()["requests"]["delete"] - deletes_while_writing <= 20
        assert db.get(b"0299") == b"v"
    finally:
        db.close()
    with levels3.DB(url, cache_dir=str(tmp_path / "cold")) as db:
        assert sum(1 for _ in db) == 300


def test_what_a_short_session_left_is_deleted_by_the_next_once_old_enough(tmp_path):
    """A session shorter than deletion_grace leaves its retired objects behind; the next writer deletes them
    once deletion_grace has passed since they were dropped, by the store's clock, not a grace after it opened."""
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True, deletion_grace=600) as db:
        for i in range(100):
            db.put(b"%04d" % i, b"v", sync=True)
    left = {o.key for o in Catalog.load(LocalDirStore(url, create=False)).garbage}  # superseded, not yet deleted
    assert len(left) > 50
    time.sleep(3.5)
    with levels3.DB(url, deletion_grace=3) as db:  # dropped 3.5 s ago (> 3 s): due at once
        assert _wait_until(lambda: not (left & _object_keys(url)), timeout=2.5)
        assert db.get(b"0099") == b"v"
