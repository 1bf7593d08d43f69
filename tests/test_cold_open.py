"""The round trips of a cold open: requests that need nothing from each other go out together.

Over a far store every request in a row costs a round trip, so a writer reopen sends the fence
with the LIST, and the MANIFEST with the WAL; a follower sends the MANIFEST with the WAL. (CURRENT
is read only once the lease is held: see the last test.) Each request here is held for HOLD seconds by a store wrapper,
so requests sent together overlap and requests sent in a row cannot: the tests check which
overlapped, never how long anything took.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any, Iterator, Mapping, Sequence

import pytest

import levels3
from levels3.parallel import POOL_THREADS, run_parallel, submit
from levels3.stores.base import ObjectInfo, ObjectStore

from .processes import assert_clean_exit, run_python

HOLD = 0.5  # long next to a pool thread's start, even on a loaded machine


class OverlapStore(ObjectStore):
    """Delegates to the bare store, holding every request HOLD seconds (while ``holding``) and
    recording each as (operation, key, started, ended)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.ambiguous_failures = inner.ambiguous_failures
        self.holding = True
        self.requests: list[tuple[str, str, float, float]] = []
        self.before: dict[tuple[str, str], threading.Event] = {}  # gates: (operation, key) waits for its event
        self._lock = threading.Lock()

    def _run(self, operation: str, key: str, call: Any) -> Any:
        gate = self.before.get((operation, key))
        if gate is not None:
            assert gate.wait(20), f"{operation} {key} was never let through"
        started = time.monotonic()
        try:
            if self.holding:
                time.sleep(HOLD)
            return call()
        finally:
            with self._lock:
                self.requests.append((operation, key, started, time.monotonic()))

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return self._run("get", key, lambda: self.inner.get(key, start, end))

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        return self._run("get", key, lambda: self.inner.get_with_info(key))

    def head(self, key: str) -> ObjectInfo:
        return self._run("head", key, lambda: self.inner.head(key))

    def put(self, key: str, data: bytes, **conditions: Any) -> str:
        return self._run("put", key, lambda: self.inner.put(key, data, **conditions))

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self._run("delete", key, lambda: self.inner.delete(key, if_match=if_match))

    def delete_many(self, keys: Sequence[str]) -> None:
        self._run("delete_many", ",".join(keys), lambda: self.inner.delete_many(keys))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._run("list", prefix, lambda: list(self.inner.list(prefix))))

    def close(self) -> None:
        self.inner.close()

    # -- what the tests ask -----------------------------------------------------------
    def find(self, operation: str, pattern: str) -> list[tuple[str, str, float, float]]:
        with self._lock:
            return [r for r in self.requests if r[0] == operation and pattern in r[1]]

    def overlapped(self, a: tuple[str, str], b: tuple[str, str]) -> bool:
        """Whether the first request matching ``a`` and the first matching ``b`` were in flight together."""
        (_, _, a_start, a_end), (_, _, b_start, b_end) = self.find(*a)[0], self.find(*b)[0]
        return a_start < b_end and b_start < a_end


def wrapped(*, holding: bool = True, before: Mapping[tuple[str, str], threading.Event] | None = None,
            ) -> tuple[list[OverlapStore], dict[str, Any]]:
    """(the stores made, the wrap_store option that makes them)."""
    holder: list[OverlapStore] = []

    def wrap(store: ObjectStore) -> ObjectStore:
        made = OverlapStore(store)
        made.holding = holding
        made.before.update(before or {})
        holder.append(made)
        return made

    return holder, {"wrap_store": wrap}


def make_database(url: str) -> None:
    """A table, and a WAL the next open must replay: its writer ends without closing (a clean
    close would write the memtable to a table and delete the WAL)."""
    assert_clean_exit(run_python("""
        import os, sys, levels3
        db = levels3.DB(sys.argv[1], create_if_missing=True)
        db.put(b"in-a-table", b"1")
        db.compact_range()
        for i in range(50):
            db.put(b"in-the-log-%02d" % i, b"2", sync=True)
        os._exit(0)
    """, url))


def test_a_writer_reopen_sends_independent_requests_together(tmp_path):
    url = str(tmp_path / "db")
    make_database(url)
    holder, wrap = wrapped()
    with levels3.DB(url, **wrap) as db:
        store = holder[0]
        store.holding = False
        assert db.get(b"in-a-table") == b"1" and db.get(b"in-the-log-49") == b"2"
    assert store.find("get", "CURRENT")[0][2] >= store.find("put", "LOCK")[0][3]  # read with the lease held
    assert store.overlapped(("put", "CURRENT"), ("list", "")), "the fence and the LIST in a row"
    assert store.overlapped(("get", "/MANIFEST-"), ("get", ".log/")), "the MANIFEST and the WAL in a row"
    # CURRENT is read once, with its ETag: no HEAD, and LevelDB's own read is answered from the fence's copy.
    assert len(store.find("get", "CURRENT")) == 1 and store.find("head", "CURRENT") == []


def test_a_follower_open_fetches_the_manifest_and_the_log_together(tmp_path):
    url = str(tmp_path / "db")
    make_database(url)
    holder, wrap = wrapped()
    with levels3.DB(url, read_only=True, **wrap) as follower:
        assert follower.get(b"in-the-log-49") == b"2"
    store = holder[0]
    assert store.overlapped(("get", "CURRENT"), ("list", "")), "CURRENT and the LIST in a row"
    assert store.overlapped(("get", "/MANIFEST-"), ("get", ".log/"))
    assert len(store.find("get", "CURRENT")) == 1


def test_a_follower_whose_list_predates_current_lists_again(tmp_path):
    """CURRENT is read beside the LIST: when it comes back newer than the LIST (a writer reopened
    in between, committing a MANIFEST the LIST has not seen), the follower lists again."""
    url = str(tmp_path / "db")
    make_database(url)
    let_current_through = threading.Event()
    holder, wrap = wrapped(holding=False, before={("get", "CURRENT"): let_current_through})
    opened: list[Any] = []
    follower = threading.Thread(target=lambda: opened.append(levels3.DB(url, read_only=True, **wrap)))
    follower.start()
    try:
        deadline = time.monotonic() + 20
        while not (holder and holder[0].find("list", "")):
            assert time.monotonic() < deadline, "the follower did not list before reading CURRENT"
            time.sleep(0.01)
        with levels3.DB(url) as writer:  # a new MANIFEST, committed after the follower's LIST
            writer.put(b"after-the-list", b"3", sync=True)
    finally:
        let_current_through.set()
        follower.join(30)
    (db,) = opened
    with db:
        assert db.get(b"after-the-list") == b"3" and db.get(b"in-the-log-49") == b"2"
    assert len(holder[0].find("list", "")) == 2


def test_a_wal_of_many_segments_is_fetched_several_segments_at_a_time(tmp_path):
    """A writer killed before it could merge its segments leaves one object per synced write."""
    url = str(tmp_path / "db")
    make_database(url)
    with levels3.DB(url) as db:  # the 50 synced writes above went to a table at this open
        for i in range(20):
            db.put(b"after-%02d" % i, b"3", sync=True)
        holder, wrap = wrapped()
        with levels3.DB(url, read_only=True, **wrap) as follower:  # the writer's log is still in segments
            assert follower.get(b"after-19") == b"3"
    segments = holder[0].find("get", ".log/")
    assert len(segments) >= 3  # segments the writer has not merged yet
    assert any(holder[0].overlapped(("get", segments[0][1]), ("get", s[1])) for s in segments[1:])


@pytest.mark.parametrize("kind", ["local", "mock_aws"])  # on S3 an ETag is a hash of the bytes
def test_a_writer_that_waited_for_the_lock_claims_an_epoch_above_its_predecessors(location_factory, kind):
    """A fences (claims an epoch by rewriting CURRENT, with the same bytes) while B waits for A's lock;
    A's open then fails after uploading its MANIFEST under its epoch, and A lets the lock go. B must claim
    an epoch above A's: had B read CURRENT before A's fence, the If-Match on a CURRENT whose bytes (and
    so, on S3, whose ETag) a fence leaves unchanged could not tell, and B would reuse A's epoch and
    collide with A's objects."""
    location = location_factory(kind)
    with location.open(create_if_missing=True) as db:
        for i in range(100):
            db.put(b"before-%03d" % i, b"v", sync=True)
    b_waits = threading.Event()
    a_holder: list[OverlapStore] = []
    b_holder, b_wrap = wrapped(holding=False)
    a_failure: list[BaseException] = []

    class FailingCommit(OverlapStore):
        def put(self, key: str, data: bytes, **conditions: Any) -> str:
            if key == "CURRENT" and self.find("put", "CURRENT"):
                # A's commit, after its fence and its MANIFEST landed: A's open fails, its lock is released
                raise levels3.StoreError("injected: A's commit fails", operation="put", key=key)
            return super().put(key, data, **conditions)

    def wrap_a(store: ObjectStore) -> ObjectStore:
        made = FailingCommit(store)
        made.holding, made.before = False, {("put", "CURRENT"): b_waits}
        a_holder.append(made)
        return made

    def open_a() -> None:
        try:
            location.open(wrap_store=wrap_a).close()
        except levels3.Error as exc:
            a_failure.append(exc)

    writer_a = threading.Thread(target=open_a)
    writer_a.start()
    _wait_for(lambda: a_holder and a_holder[0].find("put", "LOCK"), "A never took the lock")
    opened: list[Any] = []
    writer_b = threading.Thread(target=lambda: opened.append(location.open(lock_timeout=30, **b_wrap)))
    writer_b.start()
    _wait_for(lambda: b_holder and b_holder[0].find("put", "LOCK"), "B never tried the lock")
    b_waits.set()  # now A fences
    writer_a.join(30)
    writer_b.join(30)
    assert a_failure, "A's open was meant to fail"
    assert opened, "B did not open"
    with opened[0] as b:
        assert b.get(b"before-099") == b"v"
        b.put(b"from-b", b"1", sync=True)
    a_epochs = {key.split("/")[0] for _, key, _, _ in a_holder[0].find("put", "/")}
    b_epochs = {key.split("/")[0] for _, key, _, _ in b_holder[0].find("put", "/")}
    assert a_epochs and b_epochs and max(a_epochs) < min(b_epochs), (a_epochs, b_epochs)
    with location.open() as again:
        assert (again.get(b"before-000"), again.get(b"from-b")) == (b"v", b"1")


def _wait_for(condition: Any, failure: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.01)


def test_calls_run_in_parallel_from_a_pool_thread_overlap_and_never_deadlock():
    """The WAL's segments are fetched in parallel from a pool thread (the recovery prefetch runs
    there): nested calls go out together when threads are free, and run on the waiting thread
    when none is (every pool thread nesting at once must not wait for work queued behind it)."""
    def together() -> bool:
        both = threading.Barrier(2, timeout=10)  # passed only if the two calls run at once

        def held() -> bool:
            both.wait()
            return True
        return all(run_parallel(held, held))

    assert submit(together).result(timeout=20), "nested calls ran one after the other"

    def spans() -> list[tuple[float, float]]:
        def held() -> tuple[float, float]:
            started = time.monotonic()
            time.sleep(0.05)
            return started, time.monotonic()
        return run_parallel(held, held)

    everyone = [submit(spans) for _ in range(POOL_THREADS * 2)]
    assert all(len(f.result(timeout=30)) == 2 for f in everyone)


def test_a_cold_open_prefetches_the_tails_of_the_live_tables_only(tmp_path):
    """Tables compacted away wait out deletion_grace in the store, for followers on older versions:
    a new follower's tail prefetch reads the MANIFEST's levels and leaves them alone (no get of
    its version reads them)."""
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True) as db:
        for round_ in range(3):
            for i in range(2000):
                db.put(b"key%05d" % i, b"%d" % round_ * 50)
            db.compact_range()  # the round before's tables are dropped, and stay for deletion_grace
    holder, wrap = wrapped(holding=False)
    with levels3.DB(url, read_only=True, **wrap) as db:
        db.get(b"key00001")  # a follower's prefetch starts with its first read
        store = holder[0]
        live = {f"{int(n):06d}.ldb" for n in re.findall(r"^ (\d+):", db.get_property(b"leveldb.sstables").decode(),
                                                           re.MULTILINE)}
        _wait_for(lambda: store.find("get", ".ldb"), "no table tail was prefetched")
        time.sleep(1.0)  # the prefetch is done within a few ms here; give a slow machine time to fetch more
        fetched = {key.rsplit("/", 1)[1] for _, key, _, _ in store.find("get", ".ldb")}
    stored = {o.key.rsplit("/", 1)[1] for o in store.inner.list() if o.key.endswith(".ldb")}
    assert stored - live, "the test needs tables the version no longer holds"
    assert fetched == live, (fetched, live)
