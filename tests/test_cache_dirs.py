"""Cache directories that are shared, unusable or deleted under an open database
(issue 14, items 5 and 7). Over the moto HTTP server.

- Each open database owns exactly one directory; a writer's adoption of its cache_dir never
  touches a follower's directory, even when the follower was given the same cache_dir.
- A cache_dir that cannot be used raises levels3.IOError naming the path, not a bare OSError.
- A cache directory deleted while the database is open: reads either fetch again or raise
  levels3.IOError naming the local path (never "not found" about an object the store has);
  close() raises levels3.IOError naming the path (or, if it raises nothing, has uploaded every
  write), and it still releases the lease.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
from typing import Iterator

import pytest

import levels3

from .operator_actions import remove_tree

KEYS = 3000


def _fill(db) -> dict[bytes, bytes]:
    rng = random.Random(14)
    expected = {b"k%05d" % i: rng.randbytes(100) for i in range(KEYS)}
    for key, value in expected.items():
        db.put(key, value)
    db.compact_range()  # several tables, none of them read yet by anyone else
    db.sync()
    return expected


def test_writer_reopen_leaves_a_followers_cache_alone(location_factory, tmp_path):
    location = location_factory("moto_server")
    shared = str(tmp_path / "shared-cache")
    writer = location.open(create_if_missing=True, cache_dir=shared, write_buffer_size=64 * 1024)
    expected = _fill(writer)
    follower = location.open(read_only=True, cache_dir=shared)
    try:
        assert follower.get(b"k00000") == expected[b"k00000"]  # one table fetched into its cache
        writer.close()
        writer = location.open(cache_dir=shared)  # adopts what it finds in its cache_dir
        assert dict(follower) == expected  # every other table is fetched now, into the follower's cache
    finally:
        follower.close()
        writer.close()


def _unusable_cache_dirs(tmp_path) -> dict[str, str]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    lock_is_a_dir = tmp_path / "lock-is-a-dir"
    (lock_is_a_dir / ".levels3-cache.lock").mkdir(parents=True)
    return {"is-a-file": str(a_file), "under-a-file": str(a_file / "cache"), "lock-is-a-dir": str(lock_is_a_dir)}



@pytest.mark.parametrize("case, read_only", [
    ("is-a-file", False), ("under-a-file", False), ("lock-is-a-dir", False),
    ("is-a-file", True), ("under-a-file", True),  # a follower makes its directory inside cache_dir
])
def test_unusable_cache_dir_raises_levels3_ioerror(location_factory, tmp_path, case, read_only):
    location = location_factory("moto_server")
    with location.open(create_if_missing=True):
        pass
    bad = _unusable_cache_dirs(tmp_path)[case]
    with pytest.raises(levels3.IOError) as raised:
        location.open(read_only=read_only, cache_dir=bad)
    assert bad in str(raised.value) or os.path.dirname(bad) in str(raised.value)
    with location.open(create_if_missing=True) as db:  # no lease was left behind
        db.put(b"k", b"v")


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator[str]:
    """A directory nobody may write into, root included: a read-only tmpfs (or an
    immutable directory) for root, permissions for anyone else."""
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o500)
        yield str(path)
        path.chmod(0o700)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode == 0:
        try:
            yield str(path)
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
        return
    immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if immutable.returncode != 0:
        pytest.fail("root can neither mount a read-only tmpfs nor make a directory immutable here: "
                    f"{mounted.stderr.decode().strip()}; {immutable.stderr.decode().strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("inside", [False, True])
def test_read_only_cache_dir_raises_levels3_ioerror(location_factory, read_only_dir, read_only, inside):
    location = location_factory("moto_server")
    with location.open(create_if_missing=True):
        pass
    cache_dir = os.path.join(read_only_dir, "cache") if inside else read_only_dir
    with pytest.raises(levels3.IOError, match=re.escape(cache_dir)):
        location.open(read_only=read_only, cache_dir=cache_dir)
    with location.open() as db:  # no lease was left behind
        db.put(b"k", b"v")


def test_reads_after_the_cache_directory_vanished(location_factory, tmp_path):
    location = location_factory("moto_server")
    with location.open(create_if_missing=True, write_buffer_size=64 * 1024) as db:
        expected = _fill(db)
    cache = str(tmp_path / "cache")
    db = location.open(cache_dir=cache)
    try:
        remove_tree(cache)  # an operator cleaning up /tmp, say (while the tails are being prefetched)
        try:
            assert dict(db) == expected  # fetched again: the cache is disposable
        except levels3.Error as exc:
            assert isinstance(exc, levels3.IOError), repr(exc)
            assert cache in str(exc), str(exc)
            assert "NotFound" not in str(exc) and location.url not in str(exc), str(exc)
    finally:
        try:
            db.close()
        except levels3.IOError:
            pass


def test_close_after_the_cache_directory_vanished(location_factory, tmp_path):
    location = location_factory("moto_server")
    cache = str(tmp_path / "cache")
    db = location.open(create_if_missing=True, cache_dir=cache)
    for i in range(20):
        db.put(b"synced%02d" % i, b"v", sync=True)
    db.put(b"unsynced", b"v")
    remove_tree(cache)
    try:
        db.close()
    except levels3.IOError as exc:
        assert cache in str(exc), str(exc)
        closed_cleanly = False
    else:
        closed_cleanly = True
    assert db.closed
    with location.open() as reopened:  # at once: the lease was released
        assert [reopened.get(b"synced%02d" % i) for i in range(20)] == [b"v"] * 20
        if closed_cleanly:
            assert reopened.get(b"unsynced") == b"v", "close() reported success but lost a write"


def _own_directories(cache_dir: str) -> list[str]:
    """The directories in a writer's ``cache_dir`` besides its own page cache: other databases'."""
    return sorted(n for n in os.listdir(cache_dir)
                  if os.path.isdir(os.path.join(cache_dir, n)) and n != ".levels3-pages")


def test_every_open_database_owns_one_directory_under_a_shared_cache_dir(location_factory, tmp_path):
    location = location_factory("moto_server")
    shared = str(tmp_path / "shared-cache")
    writer = location.open(create_if_missing=True, cache_dir=shared, write_buffer_size=64 * 1024)
    expected = _fill(writer)
    followers = [location.open(read_only=True, cache_dir=shared) for _ in range(2)]
    try:
        owned = _own_directories(shared)
        assert len(owned) == 2  # one each, and nothing else of theirs beside the writer's files
        assert sorted(os.path.basename(f._control.home.path) for f in followers) == owned
        for follower in followers:
            assert follower.get(b"k00000") == expected[b"k00000"]
        before = {name: sorted(os.listdir(os.path.join(shared, name))) for name in owned}
        writer.close()
        writer = location.open(cache_dir=shared)  # the writer's adoption
        followers[0].refresh()  # and a follower's: a new generation inside its own directory
        assert _own_directories(shared) == owned
        untouched = os.path.basename(followers[1]._control.home.path)  # the follower that did not refresh
        assert sorted(os.listdir(os.path.join(shared, untouched))) == before[untouched]
        for follower in followers:
            assert dict(follower) == expected
    finally:
        for follower in followers:
            follower.close()
        writer.close()
    assert _own_directories(shared) == []  # each took its own directory with it


def test_a_cached_file_that_vanished_is_fetched_again_or_reported_as_local(tmp_path):
    from levels3.engine.cache import LocalCache

    cache = LocalCache(str(tmp_path / "cache"), 1 << 20)
    try:
        temp = cache.temp_path("000005.ldb")
        with open(temp, "wb") as f:
            f.write(b"table")
        path = cache.insert_downloaded("000005.ldb", temp, 5, "etag-1")
        cache.release("000005.ldb")
        os.unlink(path)  # removed under the open cache
        assert cache.open_cached("000005.ldb", "etag-1") is None  # a miss: the caller fetches it again
        local = cache.start_write("000007.log")
        open(local, "wb").close()
        os.unlink(local)
        with pytest.raises(levels3.IOError, match=re.escape(local)):
            cache.pin_local("000007.log")  # only here, and gone: a local problem, named by its path
    finally:
        cache.close()


def test_a_follower_closes_after_its_cache_directory_vanished(location_factory, tmp_path):
    location = location_factory("moto_server")
    with location.open(create_if_missing=True, write_buffer_size=64 * 1024) as db:
        expected = _fill(db)
    shared = str(tmp_path / "cache")
    follower = location.open(read_only=True, cache_dir=shared)
    assert follower.get(b"k00001") == expected[b"k00001"]
    remove_tree(shared)
    try:
        assert dict(follower) == expected
    except levels3.Error as exc:
        assert isinstance(exc, levels3.IOError) and shared in str(exc), repr(exc)
        assert location.url not in str(exc), str(exc)
    follower.close()  # nothing of its own to upload: closes without a word
    assert follower.closed


def test_a_writer_cache_dir_in_use_by_another_open_database_is_refused(tmp_path):
    shared = str(tmp_path / "cache")
    first = levels3.DB(str(tmp_path / "db-1"), create_if_missing=True, cache_dir=shared)
    try:
        first.put(b"k", b"1", sync=True)
        with pytest.raises(levels3.IOError, match=f"{re.escape(shared)} is in use"):
            levels3.DB(str(tmp_path / "db-2"), create_if_missing=True, cache_dir=shared)
        assert first.get(b"k") == b"1"  # untouched
    finally:
        first.close()
    with levels3.DB(str(tmp_path / "db-2"), create_if_missing=True, cache_dir=shared) as second:  # no lease left
        second.put(b"k", b"2")
