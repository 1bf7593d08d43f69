"""Restarting after a crash: a writer killed with SIGKILL on this host is taken over at once by the next
open; a holder that may still be alive (a live process, another pid namespace, another boot, another
host) never is before its lease ran out; and a held lock's LockError says what to do.

Writers are real processes (tests/writer_process.py) killed with SIGKILL. Their lease is 30 s and the
opens here take no lock_timeout (or one far below 30 s), so an open that succeeds took over early.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import levels3
from levels3 import liveness
from levels3.stores import PutMode

from .locations import DBLocation
from .processes import IN_NEW_PID_NAMESPACE, can_make_pid_namespaces

ROOT = str(Path(__file__).resolve().parent.parent)
LEASE, RENEWAL = 30.0, 10.0


class Writer:
    """tests/writer_process.py in a child process (optionally inside ``prefix``, e.g. unshare)."""

    def __init__(self, location: DBLocation, cache_dir: Path, env: dict[str, str], prefix: list[str]) -> None:
        options = {**location.options, "cache_dir": str(cache_dir)}
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tests.writer_process", location.url, str(LEASE), str(RENEWAL), "w",
             json.dumps(options)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.synced: list[str] = []
        self.acks = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("ack "):
                _, key, synced = line.split()
                self.acks += 1
                if synced == "1":
                    self.synced.append(key)

    def wait_for_acks(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.acks < count:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.02)

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)


@pytest.fixture
def start_writer(tmp_path) -> Iterator[Callable[..., Writer]]:
    started: list[Writer] = []
    env = dict(os.environ, TMPDIR=str(tmp_path))

    def start(location: DBLocation, prefix: list[str] | None = None) -> Writer:
        writer = Writer(location, tmp_path / f"writer-cache-{len(started)}", env, prefix or [])
        started.append(writer)
        return writer

    yield start
    for writer in started:
        if writer.proc.poll() is None:
            writer.kill()


@pytest.fixture(params=["local", "moto_server"])
def location(request, location_factory) -> DBLocation:
    return location_factory(request.param)


def _lock_body(location: DBLocation) -> dict:
    store = location.raw_store()
    try:
        return json.loads(store.get("LOCK"))
    finally:
        store.close()


def _rewrite_lock(location: DBLocation, **changes) -> None:
    """Give the LOCK object another holder record (a new version, as a renewal would write)."""
    store = location.raw_store()
    try:
        body = json.loads(store.get("LOCK"))
        body.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del body[key]
        store.put("LOCK", json.dumps(body, sort_keys=True).encode(), mode=PutMode.OVERWRITE)
    finally:
        store.close()


def test_a_killed_writer_is_taken_over_at_once_on_its_host(location: DBLocation, start_writer) -> None:
    writer = start_writer(location)
    writer.wait_for_acks(30)
    holder = _lock_body(location)
    assert holder["pid"] == writer.proc.pid and holder["host"] == liveness.identity()["host"]
    writer.kill()
    # No lock_timeout: before, this raised LockError for the next 30 s (the lease of the dead writer).
    with location.open() as db:
        assert all(db.get(key.encode()) is not None for key in writer.synced)
        db.put(b"after", b"restart", sync=True)
        assert _lock_body(location)["pid"] == os.getpid()
    with location.open(read_only=True) as follower:
        assert follower.get(b"after") == b"restart"


def test_a_live_writer_is_never_taken_over_and_the_error_says_what_to_do(location: DBLocation,
                                                                         start_writer) -> None:
    writer = start_writer(location)
    writer.wait_for_acks(5)
    with pytest.raises(levels3.LockError) as at_once:
        location.open()
    message = str(at_once.value)
    assert f"pid {writer.proc.pid}" in message
    assert "lock_timeout=30" in message and "levels3 lock --break" in message
    with pytest.raises(levels3.LockError) as waited:
        location.open(lock_timeout=1)
    assert "lock_timeout=30" in str(waited.value) and "levels3 lock --break" in str(waited.value)
    assert writer.proc.poll() is None
    acks = writer.acks
    writer.wait_for_acks(acks + 5)  # still writing: nobody took its lease
    writer.kill()


HOLDERS_ELSEWHERE = {
    "another pid namespace": {"pid_namespace": "pid:[1]"},
    "another boot": {"boot_id": "00000000-0000-0000-0000-000000000000"},
    "another host": {"host": "some-other-host"},
    "a record without the process's identity": {"boot_id": None, "pid_namespace": None, "started": None},
}


@pytest.mark.parametrize("changes", list(HOLDERS_ELSEWHERE.values()), ids=list(HOLDERS_ELSEWHERE))
def test_a_dead_holder_that_cannot_be_judged_is_not_taken_over_early(location: DBLocation, start_writer,
                                                                     changes: dict) -> None:
    writer = start_writer(location)
    writer.wait_for_acks(5)
    writer.kill()
    _rewrite_lock(location, **changes)  # the same dead pid, seen from somewhere its pid means nothing
    with pytest.raises(levels3.LockError, match="lock_timeout=30"):
        location.open()
    with pytest.raises(levels3.LockError):
        location.open(lock_timeout=1)


def test_a_reused_pid_is_taken_over_and_a_live_one_is_not(location: DBLocation, start_writer) -> None:
    writer = start_writer(location)
    writer.wait_for_acks(5)
    writer.kill()
    # A live process of this host holds the pid now (its start time is its own): still alive, not taken over.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        deadline = time.monotonic() + 30
        while (started := liveness._start_time(liveness._stat_fields(sleeper.pid))) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        _rewrite_lock(location, pid=sleeper.pid, started=started)
        with pytest.raises(levels3.LockError):
            location.open()
        # The same pid with another start time: the holder's process is gone, the pid reused.
        _rewrite_lock(location, pid=sleeper.pid, started=started - 1)
        with location.open() as db:
            assert db.get(writer.synced[0].encode()) is not None
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.skipif(not can_make_pid_namespaces(), reason="creating a pid namespace needs CAP_SYS_ADMIN (unshare)")
def test_a_writer_killed_in_another_pid_namespace_is_not_taken_over_early(location_factory,
                                                                           start_writer) -> None:
    location = location_factory("local")
    writer = start_writer(location, prefix=IN_NEW_PID_NAMESPACE)
    writer.wait_for_acks(5)
    holder = _lock_body(location)
    assert holder["pid_namespace"] != liveness.identity()["pid_namespace"]
    writer.kill()  # SIGKILL to unshare; --kill-child SIGKILLs the writer, pid 1 of its namespace
    # Its pid is 1 there; here pid 1 is init, alive with another start time: only the namespace says
    # that this pid is not ours to judge.
    assert holder["pid"] == 1
    with pytest.raises(levels3.LockError):
        location.open()
    with pytest.raises(levels3.LockError):
        location.open(lock_timeout=1)


def test_a_zombie_holder_has_exited(tmp_path) -> None:
    """A process that exited but was not reaped yet (a zombie) can write nothing: gone."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while (started := liveness._start_time(liveness._stat_fields(child.pid))) is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        record = {**liveness.identity(), "pid": child.pid, "started": started}
        assert not liveness.provably_gone(record)  # alive
        child.stdin.close()  # it exits; nobody reaps it yet
        while (liveness._stat_fields(child.pid) or ["?"])[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert liveness.provably_gone(record)
    finally:
        child.wait()
    assert liveness.provably_gone(record)  # reaped: the pid is gone
    assert not liveness.provably_gone({**record, "pid": os.getpid(), "started": liveness.identity()["started"]})
