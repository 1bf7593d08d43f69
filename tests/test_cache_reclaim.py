"""A crashed process's temporary cache is reclaimed once its owner is provably gone
(issue 17, item 9). Real processes, killed with SIGKILL.

A temporary cache directory records its owner in its lock file (levels3.liveness's
identity) and holds an exclusive flock on it. The next open that makes a temporary
directory beside it removes it when the flock is free, the directory has been left
alone for RECLAIM_AGE, and the owner is provably gone: same host, boot and pid
namespace, and the pid is gone or belongs to a process with another start time.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

import levels3
from levels3 import liveness
from levels3.engine import cache as cache_module

from .processes import IN_NEW_PID_NAMESPACE, ROOT, can_make_pid_namespaces

HOLDER = """
import sys, time
import levels3
url, cache_dir = sys.argv[1], sys.argv[2] or None
levels3.DB(url, create_if_missing=True).close()
db = levels3.DB(url, read_only=sys.argv[3] == "follower", cache_dir=cache_dir)
db.get(b"k")
print("open", flush=True)
time.sleep(600)
"""


class Holder:
    """A process holding a database open with a temporary cache until it is killed."""

    def __init__(self, url: str, tmpdir: Path, *, cache_dir: str = "", role: str = "writer",
                 prefix: list[str] | None = None) -> None:
        self.proc = subprocess.Popen([*(prefix or []), sys.executable, "-c", HOLDER, url, cache_dir, role],
                                     cwd=ROOT, env=dict(os.environ, TMPDIR=str(tmpdir)), text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "open\n", (line, self.proc.stderr.read() if self.proc.stderr else "")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def tmpdir_for_caches(tmp_path, monkeypatch) -> Iterator[Path]:
    """The system temporary directory, for this test and its children: empty at first."""
    where = tmp_path / "tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    yield where


def caches_in(directory: Path) -> set[str]:
    return {n for n in os.listdir(directory) if n.startswith("levels3-cache-")}


def wait_until_unlocked(directory: Path, timeout: float = 30) -> None:
    """Until nobody holds the cache's flock (a killed process's is released as it dies)."""
    deadline = time.monotonic() + timeout
    fd = os.open(directory / ".levels3-cache.lock", os.O_RDWR)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{directory} is still locked"
                time.sleep(0.05)
    finally:
        os.close(fd)


def age(directory: Path, seconds: float) -> None:
    """Make a cache directory look left alone for ``seconds``."""
    past = time.time() - seconds
    for path in (directory, directory / ".levels3-cache.lock"):
        os.utime(path, (past, past))


def test_a_killed_writers_temporary_cache_is_reclaimed_and_a_live_ones_is_not(tmp_path, tmpdir_for_caches):
    live = Holder(str(tmp_path / "db-live"), tmpdir_for_caches)
    try:
        (live_cache,) = caches_in(tmpdir_for_caches)
        killed = Holder(str(tmp_path / "db-killed"), tmpdir_for_caches)
        (killed_cache,) = caches_in(tmpdir_for_caches) - {live_cache}
        record = json.loads((tmpdir_for_caches / killed_cache / ".levels3-cache.lock").read_text())
        assert record["owner"]["pid"] == killed.proc.pid and record["temporary"] is True
        killed.kill()
        wait_until_unlocked(tmpdir_for_caches / killed_cache)

        # Fresh (a process may be between making its directory and recording itself): kept.
        with levels3.DB(str(tmp_path / "db-next"), create_if_missing=True) as db:
            db.put(b"k", b"v")
        assert {live_cache, killed_cache} <= caches_in(tmpdir_for_caches)

        age(tmpdir_for_caches / live_cache, 2 * cache_module.RECLAIM_AGE)
        age(tmpdir_for_caches / killed_cache, 2 * cache_module.RECLAIM_AGE)
        with levels3.DB(str(tmp_path / "db-next")) as db:  # any open that makes a temporary cache
            assert db.get(b"k") == b"v"
            assert killed_cache not in caches_in(tmpdir_for_caches)  # its owner is provably gone
            assert live_cache in caches_in(tmpdir_for_caches)  # its owner holds the flock
        assert caches_in(tmpdir_for_caches) == {live_cache}
    finally:
        live.kill()


def test_a_killed_followers_cache_in_a_shared_cache_dir_is_reclaimed_by_the_writer(tmp_path, tmpdir_for_caches):
    url, shared = str(tmp_path / "db"), tmp_path / "shared"
    with levels3.DB(url, create_if_missing=True, cache_dir=str(shared)) as db:
        db.put(b"k", b"v", sync=True)
    follower = Holder(url, tmpdir_for_caches, cache_dir=str(shared), role="follower")
    (followers_cache,) = caches_in(shared)
    follower.kill()
    wait_until_unlocked(shared / followers_cache)
    age(shared / followers_cache, 2 * cache_module.RECLAIM_AGE)
    with levels3.DB(url, cache_dir=str(shared)) as db:  # the writer reopening in its cache_dir
        assert db.get(b"k") == b"v"
    assert caches_in(shared) == set()


def _forged(directory: Path, owner: dict, *, temporary: bool = True) -> str:
    path = directory / f"levels3-cache-{len(os.listdir(directory))}"
    path.mkdir()
    (path / ".levels3-cache.lock").write_text(json.dumps({"owner": owner, "temporary": temporary}))
    (path / "000005.ldb").write_bytes(b"x" * 1000)
    age(path, 2 * cache_module.RECLAIM_AGE)
    return path.name


def test_only_a_provably_gone_owner_loses_its_cache(tmpdir_for_caches):
    dead = subprocess.run([sys.executable, "-c", "import json, levels3.liveness as l; print(json.dumps(l.identity()))"],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    gone = json.loads(dead.stdout)  # an exited process of this host, boot and pid namespace
    assert liveness.provably_gone(gone)
    reclaimable = _forged(tmpdir_for_caches, gone)
    kept = {
        _forged(tmpdir_for_caches, {**gone, "boot_id": "another-boot"}),  # another boot (or host): cannot tell
        _forged(tmpdir_for_caches, {**gone, "pid_namespace": "pid:[1]"}),  # another container's pid
        _forged(tmpdir_for_caches, liveness.identity()),  # this process: alive
        _forged(tmpdir_for_caches, gone, temporary=False),  # a cache_dir someone named: theirs to keep
    }
    no_record = tmpdir_for_caches / "levels3-cache-old"  # made before owners were recorded
    no_record.mkdir()
    (no_record / ".levels3-cache.lock").write_text("")
    age(no_record, 2 * cache_module.RECLAIM_AGE)
    kept.add(no_record.name)
    assert set(cache_module.reclaim_abandoned(str(tmpdir_for_caches))) == {str(tmpdir_for_caches / reclaimable)}
    assert caches_in(tmpdir_for_caches) == kept


@pytest.mark.skipif(not can_make_pid_namespaces(), reason="creating a pid namespace needs CAP_SYS_ADMIN (unshare)")
def test_a_cache_from_another_pid_namespace_is_never_reclaimed(tmp_path, tmpdir_for_caches):
    """Its pids mean other processes: a killed writer's cache stays, though its pid is free here."""
    holder = Holder(str(tmp_path / "db"), tmpdir_for_caches,
                    prefix=IN_NEW_PID_NAMESPACE)
    (cache,) = caches_in(tmpdir_for_caches)
    holder.kill()  # SIGKILL to unshare; --kill-child SIGKILLs the writer
    wait_until_unlocked(tmpdir_for_caches / cache)  # so it is the pid namespace that keeps it
    age(tmpdir_for_caches / cache, 2 * cache_module.RECLAIM_AGE)
    assert cache_module.reclaim_abandoned(str(tmpdir_for_caches)) == []
    assert caches_in(tmpdir_for_caches) == {cache}
