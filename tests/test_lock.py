"""The LOCK lease: exclusion, renewal, take-over of stale leases, loss detection."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import threading
import time

import pytest

from levels3.errors import LeaseLostError, LockError, ObjectNotFound, StoreError
from levels3.lock import LeaseLock, read_holder
from levels3.stores.base import PutCondition, PutMode
from levels3.stores.local import LocalDirStore

D = 0.6  # lease_duration
R = 0.2  # lease_renewal


def make_lock(store, **kw):
    kw.setdefault("lease_duration", D)
    kw.setdefault("lease_renewal", R)
    return LeaseLock(store, **kw)


def wait_until(predicate, timeout=3.0, step=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


@pytest.fixture
def store(tmp_path):
    return LocalDirStore(tmp_path / "db", create=True)


def foreign_lock(store, **extra):
    """A LOCK written by a holder that never renews (a crashed writer)."""
    body = {"host": "elsewhere", "pid": 4242, "writer": "dead", "since": "2020-01-01T00:00:00+00:00"}
    body.update(extra)
    return store.put("LOCK", json.dumps(body).encode(), mode=PutMode.CREATE)


def test_acquire_release(store):
    lock = make_lock(store)
    assert not lock.valid
    lock.acquire()
    try:
        assert lock.valid
        lock.check()
        holder = read_holder(store)
        assert holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname()
        assert holder["writer"] == lock.writer_id
        assert store.head("LOCK").etag == lock.etag
    finally:
        lock.release()
    assert not lock.valid
    with pytest.raises(LeaseLostError):
        lock.check()
    with pytest.raises(ObjectNotFound):
        store.head("LOCK")
    # The same object can be taken again after a release.
    with make_lock(store) as again:
        assert again.valid
    assert read_holder(store) is None


def test_second_acquirer_gets_lock_error_naming_holder(store):
    with make_lock(store, owner_info={"cache_dir": "/x"}) as first:
        second = make_lock(store)
        with pytest.raises(LockError) as info:
            second.acquire()
        msg = str(info.value)
        assert socket.gethostname() in msg
        assert str(os.getpid()) in msg
        assert read_holder(store)["since"] in msg
        assert read_holder(store)["cache_dir"] == "/x"
        assert not second.valid
        assert first.valid


def test_renewal_changes_etag(store):
    with make_lock(store) as lock:
        seen = [lock.etag]

        def renewed_twice():
            if lock.etag != seen[-1]:
                seen.append(lock.etag)
            return len(seen) >= 3

        assert wait_until(renewed_twice)
        assert len(set(seen)) == len(seen)
        # The store holds the ETag the lock believes it wrote.
        assert wait_until(lambda: store.head("LOCK").etag == lock.etag)
        assert read_holder(store)["renewals"] > 1
        lock.check()


def test_stale_lease_taken_over_after_lease_duration_not_before(store):
    stale = foreign_lock(store)
    # Waiting for less than a lease period can never be enough.
    with pytest.raises(LockError, match="pid 4242"):
        make_lock(store, lock_timeout=D / 2).acquire()
    assert store.head("LOCK").etag == stale

    started = time.monotonic()
    with make_lock(store, lock_timeout=3 * D) as lock:
        assert time.monotonic() - started >= D
        assert read_holder(store)["writer"] == lock.writer_id


def test_stopped_renewal_is_taken_over(store):
    old = make_lock(store).acquire()
    old._stop_renewal()  # simulate a frozen writer: no more renewals
    frozen_etag = store.head("LOCK").etag
    started = time.monotonic()
    new = make_lock(store, lock_timeout=3 * D).acquire()
    try:
        assert time.monotonic() - started >= D
        assert store.head("LOCK").etag != frozen_etag
        # The frozen writer notices on its own clock, without any request.
        with pytest.raises(LeaseLostError):
            old.check()
        old.release()  # must not delete the new holder's LOCK
        assert read_holder(store)["writer"] == new.writer_id
        new.check()
    finally:
        new.release()


def test_holder_advertising_longer_lease_is_respected(store):
    foreign_lock(store, lease_duration=10 * D)
    with pytest.raises(LockError):
        make_lock(store, lock_timeout=2 * D).acquire()


def test_lock_timeout_waits_then_raises_while_holder_renews(store):
    with make_lock(store) as holder:
        started = time.monotonic()
        contender = make_lock(store, lock_timeout=2.5 * D)
        with pytest.raises(LockError, match="lock_timeout"):
            contender.acquire()
        assert time.monotonic() - started >= 2.5 * D
        holder.check()
        assert read_holder(store)["writer"] == holder.writer_id


def test_lock_timeout_acquires_after_release(store):
    holder = make_lock(store).acquire()
    threading.Timer(0.3, holder.release).start()
    with make_lock(store, lock_timeout=5) as lock:
        assert not holder.valid
        assert read_holder(store)["writer"] == lock.writer_id


def test_exactly_one_winner_for_a_stale_lease(store):
    foreign_lock(store)
    n = 6
    barrier = threading.Barrier(n)
    won, refused = [], []

    def contend():
        lock = make_lock(store, lock_timeout=2.5 * D)
        barrier.wait()
        try:
            lock.acquire()
        except LockError:
            refused.append(lock)
        else:
            won.append(lock)

    threads = [threading.Thread(target=contend) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(won) == 1 and len(refused) == n - 1
        won[0].check()
        assert read_holder(store)["writer"] == won[0].writer_id
    finally:
        for lock in won:
            lock.release()


def test_overwritten_lock_is_detected_as_lost(store):
    lost = []
    lock = make_lock(store, on_lost=lost.append).acquire()
    store.put("LOCK", b'{"host": "intruder", "pid": 1}')
    assert wait_until(lambda: not lock.valid, timeout=5 * R)
    with pytest.raises(LeaseLostError, match="taken over"):
        lock.check()
    assert wait_until(lambda: len(lost) == 1)
    lock.release()
    lock.release()
    assert read_holder(store) == {"host": "intruder", "pid": 1}
    assert len(lost) == 1


def test_lost_lock_can_be_acquired_again(store):
    lock = make_lock(store).acquire()
    store.put("LOCK", b"intruder")
    assert wait_until(lambda: not lock.valid, timeout=5 * R)
    store.delete("LOCK")
    lock.acquire()
    try:
        first = lock.etag
        assert wait_until(lambda: lock.etag != first)  # renewing again
        lock.check()
    finally:
        lock.release()
    assert read_holder(store) is None


def test_deleted_lock_is_detected_as_lost(store):
    lock = make_lock(store).acquire()
    store.delete("LOCK")
    assert wait_until(lambda: not lock.valid, timeout=5 * R)
    lock.release()


class FlakyStore(LocalDirStore):
    """Fails lock renewals on demand; records when each successful put started."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.failing = False
        self.failures = 0
        self.success_starts = []

    def put(self, key, data, **kw):
        started = time.monotonic()
        if self.failing and kw.get("mode", PutMode.OVERWRITE).condition is PutCondition.REPLACE:
            self.failures += 1
            raise StoreError("simulated 503 SlowDown", operation="put", key=key)
        etag = super().put(key, data, **kw)
        self.success_starts.append(started)
        return etag


def test_failing_renewals_lose_the_lease_before_anyone_can_take_over(tmp_path):
    store = FlakyStore(tmp_path / "db", create=True)
    lost = []
    lock = make_lock(store, on_lost=lost.append).acquire()
    assert wait_until(lambda: len(store.success_starts) >= 3)  # renewals work at first
    store.failing = True
    last_success = store.success_starts[-1]
    # Safety: never valid once a contender could have seen the last ETag for a lease period.
    # A margin below the full lease period covers clock-rate differences and in-flight uploads.
    while lock.valid:
        assert time.monotonic() < last_success + 0.9 * D
        time.sleep(0.005)
    assert store.success_starts[-1] == last_success  # no renewal sneaked through
    assert wait_until(lambda: len(lost) == 1)
    with pytest.raises(LeaseLostError, match="renewed"):
        lock.check()
    # Recovery does not resurrect a lost lease, even once the store works again.
    store.failing = False
    time.sleep(2 * R)
    assert not lock.valid
    lock.release()
    with pytest.raises(ObjectNotFound):
        store.head("LOCK")  # it was still ours, so the release removed it


def test_transient_renewal_failure_is_survived(tmp_path):
    store = FlakyStore(tmp_path / "db", create=True)
    with make_lock(store, lease_duration=6 * R) as lock:  # a roomy deadline: 4 renewal periods
        n = len(store.success_starts)
        assert wait_until(lambda: len(store.success_starts) > n)
        store.failing = True
        assert wait_until(lambda: store.failures >= 1)
        store.failing = False
        n = len(store.success_starts)
        assert wait_until(lambda: len(store.success_starts) > n)
        lock.check()
        assert wait_until(lambda: store.head("LOCK").etag == lock.etag)


def test_release_is_idempotent_and_spares_a_new_owner(store):
    lock = make_lock(store).acquire()
    lock.release()
    lock.release()
    other = make_lock(store).acquire()
    try:
        lock.release()
        assert read_holder(store)["writer"] == other.writer_id
    finally:
        other.release()
    assert read_holder(store) is None


def test_read_holder_tolerates_garbage(store):
    assert read_holder(store) is None
    store.put("LOCK", b"\xff\x00 not json")
    assert read_holder(store) is None
    store.put("LOCK", b"[1, 2]")
    assert read_holder(store) is None
    with pytest.raises(LockError, match="unknown holder"):
        make_lock(store).acquire()


def test_invalid_durations_rejected(store):
    with pytest.raises(ValueError):
        LeaseLock(store, lease_duration=1, lease_renewal=1)
    with pytest.raises(ValueError):
        LeaseLock(store, lease_duration=0, lease_renewal=0)


# ---------------------------------------------------------------- processes


def _open_store(where):
    """The store a child process contends on: a local directory, or (bucket, prefix, options) on S3."""
    if isinstance(where, str):
        return LocalDirStore(where, create=False)
    from levels3.options import S3Options
    from levels3.stores import RetryingStore, S3Store

    bucket, prefix, options = where
    return RetryingStore(S3Store(bucket, prefix, S3Options(**options)), max_attempts=3, base_delay=0.01)


def _hold_repeatedly(where, log_path, rounds):
    store = _open_store(where)
    for _ in range(rounds):
        # A lease long enough that one slow renewal does not end it (with D, weed mini's lease lapsed,
        # not renewed within 0.4 s, in 2 of 4 runs one morning): this test is about exclusion.
        lock = LeaseLock(store, lease_duration=5 * D, lease_renewal=0.05, lock_timeout=20)
        lock.acquire()
        try:
            lock.check()
            began = time.monotonic()  # CLOCK_MONOTONIC is shared by processes on one host
            time.sleep(0.01)
            lock.check()
            ended = time.monotonic()
        finally:
            lock.release()
        with open(log_path, "a") as f:
            f.write(f"{os.getpid()} {began!r} {ended!r}\n")


@pytest.mark.parametrize("kind", ["local", "seaweedfs"])
def test_two_processes_never_hold_at_once(kind, tmp_path, request):
    """Two contending processes, on the local store and on SeaweedFS (atomic conditional writes
    under concurrent clients, over real HTTP)."""
    if kind == "local":
        where: object = str(tmp_path / "db")
        LocalDirStore(where, create=True)
    else:
        weed = request.getfixturevalue("seaweedfs")
        bucket = f"levels3-lock-{os.urandom(6).hex()}"
        weed.create_bucket(bucket)
        where = (bucket, "race", weed.options(request_timeout=10))
    log_path = tmp_path / "intervals"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hold_repeatedly, args=(where, str(log_path), 20)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    intervals = sorted(
        (float(b), float(e), pid) for pid, b, e in (line.split() for line in log_path.read_text().splitlines())
    )
    assert len(intervals) == 40
    assert len({pid for _, _, pid in intervals}) == 2
    for (b1, e1, _), (b2, _, _) in zip(intervals, intervals[1:]):
        assert e1 <= b2, "two processes held the lock at the same time"
