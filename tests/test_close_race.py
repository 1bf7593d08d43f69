"""close() while other threads are inside the database (issue 14, item 1).

Each test runs rounds in a child process: open the database, start threads of
each kind working on it, call ``db.close()`` from another thread at a random
moment, join them. A call that was in flight when close() ran may complete or
fail cleanly (RuntimeError, or a levels3.Error); a call that starts after
close() returned must raise RuntimeError; nothing may crash. The write test
also reopens the database after every round: every write that was
acknowledged, synced or not, must be there (close() uploads what is left).
Today the child dies with SIGSEGV or SIGABRT, or hangs (a writer waiting on a
group commit that close() freed): the 60 s timeout turns a hang into a failure.
"""

from __future__ import annotations

import pytest

from .processes import assert_clean_exit, run_python

ROUNDS_SCRIPT = r"""
import json, os, random, sys, threading, time
import levels3

url, options, kinds, per_kind, rounds, cold = sys.argv[1], *map(json.loads, sys.argv[2:])
KEYS = 3000
with levels3.DB(url, create_if_missing=True, write_buffer_size=64 * 1024, **options) as db:
    for i in range(KEYS):  # a few tables, so that reads do real work below the memtable
        db.put(b"k%05d" % i, os.urandom(100))
    db.compact_range()

failures = []
rng = random.Random()


def worker(db, kind, tid, ready, closed, acked):
    r = random.Random()
    state = {"obj": None, "seq": 0}

    def make():
        if kind == "iterator":
            state["obj"] = db.iterator()
        elif kind == "raw_iterator":
            state["obj"] = db.raw_iterator()
            state["obj"].seek_to_first()
        elif kind == "snapshot":
            state["obj"] = db.snapshot()

    def call():
        key = b"k%05d" % r.randrange(KEYS)
        obj = state["obj"]
        if kind in ("iterator", "raw_iterator", "snapshot") and obj is None:
            make()  # closed before it could be made: this must raise RuntimeError too
            obj = state["obj"]
        if kind == "get":
            db.get(key)
        elif kind == "iterator":
            try:
                next(obj)
            except StopIteration:
                obj.seek_to_start()
        elif kind == "raw_iterator":
            if obj.valid():
                obj.key()
                obj.next()
            else:
                obj.seek(key)
        elif kind == "snapshot":
            obj.get(key)
        else:
            state["seq"] += 1
            new = b"w%02d-%06d" % (tid, state["seq"])
            if kind == "put":
                db.put(new, b"v")
            elif kind == "put_sync":
                db.put(new, b"v", sync=True)
            else:  # batch
                with db.write_batch() as batch:
                    batch.put(new, b"v")
                    batch.put(new + b"-2", b"v")
            acked.append(new)

    try:
        make()
    except RuntimeError:
        pass
    ready.wait()
    while True:
        after = closed.is_set()  # close() has returned: the call must raise RuntimeError
        try:
            call()
        except RuntimeError:
            if not after:
                closed.wait()
                try:
                    call()
                    failures.append(f"{kind}: a call after close() returned normally")
                except RuntimeError:
                    pass
                except BaseException as exc:
                    failures.append(f"{kind}: a call after close() raised {type(exc).__name__}: {exc}")
            return
        except levels3.Error as exc:
            if after:
                failures.append(f"{kind}: a call after close() raised {type(exc).__name__}: {exc}")
                return
            # failed cleanly while close() ran; go on until the database says it is closed
        except BaseException as exc:
            failures.append(f"{kind}: {type(exc).__name__}: {exc}")
            return
        else:
            if after:
                failures.append(f"{kind}: a call after close() returned normally")
                return


for round_no in range(rounds):
    db = levels3.DB(url, **options)
    if not cold:
        for i in range(0, KEYS, 7):  # tables opened and cached before the race
            db.get(b"k%05d" % i)
    threads, acked = [], []
    ready = threading.Barrier(len(kinds) * per_kind + 1)
    closed = threading.Event()
    for kind in kinds:
        for n in range(per_kind):
            threads.append(threading.Thread(target=worker, args=(db, kind, len(threads), ready, closed, acked)))
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(rng.choice((0, 0.001, 0.005, 0.02)))
    db.close()
    closed.set()
    for t in threads:
        t.join()
    if acked:
        with levels3.DB(url, **options) as check:
            missing = [k for k in acked if check.get(k) is None]
        if missing:
            failures.append(f"round {round_no}: {len(missing)} of {len(acked)} acknowledged writes are missing")
    if failures:
        print("FAIL round", round_no)
        print("\n".join(failures[:20]))
        sys.exit(1)
print("ok", rounds, "rounds")
"""

READERS = ["get", "iterator", "raw_iterator", "snapshot"]
WRITERS = ["put", "put_sync", "batch"]


@pytest.mark.parametrize("kind, rounds, cold", [("local", 50, False), ("moto_server", 10, True)])
def test_close_while_threads_read(location_factory, kind, rounds, cold):
    """8 threads each inside get, an iterator, a raw_iterator and a snapshot; a third party closes.
    Over the moto server the cache starts cold, so close() also meets table fetches in flight."""
    location = location_factory(kind)
    result = run_python(ROUNDS_SCRIPT, location.url, location.options, READERS, 8, rounds, cold, timeout=180)
    assert_clean_exit(result)
    assert f"ok {rounds} rounds" in result.stdout


def test_close_while_threads_write(location_factory):
    """8 threads each in put, put(sync=True) and a write batch when close() runs: no crash, and every
    acknowledged write is in the database when it is opened again."""
    location = location_factory("local")
    result = run_python(ROUNDS_SCRIPT, location.url, location.options, WRITERS, 8, 50, False, timeout=180)
    assert_clean_exit(result)
    assert "ok 50 rounds" in result.stdout


GC_CYCLE_SCRIPT = r"""
import gc, sys
import levels3

path = sys.argv[1]
with levels3.DB(path, create_if_missing=True, write_buffer_size=64 * 1024) as db:
    for i in range(2000):
        db.put(b"k%05d" % i, b"v" * 100)
    db.compact_range()
gc.disable()
for n in range(20):
    db = levels3.DB(path)
    it = db.iterator()
    next(it)
    raw = db.raw_iterator()
    raw.seek_to_first()
    snapshot = db.snapshot()
    cycle = [db, it, raw, snapshot]
    cycle.append(cycle)
    del db, it, raw, snapshot, cycle
    gc.collect()
print("ok")
"""


def test_garbage_collection_order_does_not_matter(tmp_path):
    """A database collected together with its iterators and snapshot (one reference cycle):
    the collector clears weak references before it calls DB.__del__, so close() must know the
    iterators by itself. Deleting LevelDB with one alive trips VersionSet's assertion (SIGABRT)."""
    result = run_python(GC_CYCLE_SCRIPT, str(tmp_path / "db"), timeout=120)
    assert_clean_exit(result)
    assert "ok" in result.stdout


CLOSE_IN_COMPARATOR_SCRIPT = r"""
import sys, threading, time
import levels3

path, where = sys.argv[1], sys.argv[2]
db = None
armed = False
events = []  # printed by the main thread: the compaction thread's output would interleave


def closing_compare(a, b):
    # Closes the database from inside a comparison: in the caller's own put, or on
    # LevelDB's compaction thread (any thread but the main one).
    global armed
    if armed and (b"close-now" in (a, b) if where == "put" else threading.current_thread() is not main):
        armed = False
        db.close()
        events.append("close() returned inside the comparator")
    return (a > b) - (a < b)


main = threading.current_thread()
db = levels3.DB(path, create_if_missing=True, write_buffer_size=64 * 1024, comparator=closing_compare,
                comparator_name=b"closing-cmp")
acked = []
for i in range(200):
    db.put(b"k%05d" % i, b"v" * 100)
    acked.append(b"k%05d" % i)
armed = True
try:
    if where == "put":
        db.put(b"close-now", b"v")
        acked.append(b"close-now")
        print("put returned", flush=True)
    for i in range(200, 100000):  # enough to flush memtables: the compaction thread compares
        db.put(b"k%05d" % i, b"v" * 100)
        acked.append(b"k%05d" % i)
    print("never closed", flush=True)
except RuntimeError as exc:
    print("refused after close:", exc, flush=True)
while any(thread.name == "levels3-close" for thread in threading.enumerate()):
    time.sleep(0.01)  # the closing finishes in a thread of its own
armed = False
with levels3.DB(path, comparator=closing_compare, comparator_name=b"closing-cmp") as again:
    missing = [k for k in acked if again.get(k) is None]
print("\n".join(events))
print("reopened:", len(acked), "acknowledged,", len(missing), "missing", flush=True)
"""


@pytest.mark.parametrize("where", ["put", "compaction"])
def test_close_from_inside_a_comparator_does_not_deadlock(tmp_path, where):
    """close() from the comparator cannot wait for the call it runs in (nor, on the compaction
    thread, delete LevelDB, which waits for that thread): it refuses new calls at once and
    finishes closing in a thread of its own. The call it ran in completes; every acknowledged
    write is there when the database is opened again."""
    result = run_python(CLOSE_IN_COMPARATOR_SCRIPT, str(tmp_path / "db"), where, timeout=120)
    assert_clean_exit(result)
    assert "close() returned inside the comparator" in result.stdout, result.stdout
    assert "refused after close: Database is closed" in result.stdout, result.stdout
    if where == "put":
        assert "put returned" in result.stdout
    assert ", 0 missing" in result.stdout, result.stdout
