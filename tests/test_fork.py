"""A process forked while a database is open (issue 14, item 2).

Nothing may run in the child on the parent's behalf: not the atexit close, not
the handle's destructor, not the cache's clean-up. In the child, every use of
the inherited handle raises an error that says to open the database again.
Each test runs the parent (and so its child) as a real process, over the moto
HTTP server.
"""

from __future__ import annotations

import json

import pytest

from .processes import assert_clean_exit, run_python

LEASE = dict(lease_duration=3.0, lease_renewal=0.5)

CHILD_EXITS_SCRIPT = r"""
import gc, json, os, sys
import levels3
from levels3.options import S3Options
from levels3.stores import S3Store

url, options, child_exit, bucket, prefix = sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:]
db = levels3.DB(url, create_if_missing=True, **options)
for i in range(10):
    db.put(b"before%03d" % i, b"v", sync=True)
pid = os.fork()
if pid == 0:
    if child_exit == "dealloc":  # the child drops its copy of the handle, then ends without atexit
        del db
        gc.collect()
        os._exit(0)
    sys.exit(0)  # a normal exit: atexit hooks run
_, status = os.waitpid(pid, 0)
print("child status", status, flush=True)
store_options = {k: v for k, v in options.items() if k in ("endpoint_url", "region", "request_timeout")}
store = S3Store(bucket, prefix, S3Options(**store_options))
print("lock after child", "present" if any(o.key == "LOCK" for o in store.list("")) else "absent", flush=True)
for i in range(50):
    db.put(b"after%03d" % i, b"v", sync=True)  # each acknowledged: in the store when put returns
print("acked", flush=True)
os._exit(0)  # the parent crashes: nothing is closed
"""


@pytest.mark.parametrize("child_exit, own_cache", [("exit", False), ("exit", True), ("dealloc", False)])
def test_child_leaves_the_parents_database_alone(location_factory, tmp_path, child_exit, own_cache):
    """The parent's synced writes after its child ended survive the parent's crash, and its lease
    was not released by the child."""
    location = location_factory("moto_server")
    options = {**location.options, **LEASE}
    if own_cache:
        options["cache_dir"] = str(tmp_path / "cache")
    result = run_python(CHILD_EXITS_SCRIPT, location.url, options, child_exit, location.bucket, location.prefix,
                        timeout=120)
    assert_clean_exit(result)
    assert "child status 0" in result.stdout, result.stdout
    assert "lock after child present" in result.stdout, result.stdout
    assert "acked" in result.stdout
    with location.open(lock_timeout=10, **LEASE) as db:
        keys = {k for k, _ in db}
    lost = [b"after%03d" % i for i in range(50) if b"after%03d" % i not in keys]
    assert not lost, f"{len(lost)} of 50 acknowledged synced writes were lost"
    assert {b"before%03d" % i for i in range(10)} <= keys


CHILD_USES_SCRIPT = r"""
import json, os, sys
import levels3

url, options = sys.argv[1], json.loads(sys.argv[2])
db = levels3.DB(url, create_if_missing=True, **options)
db.put(b"parent", b"v", sync=True)
print("parent pid", os.getpid(), flush=True)
inherited_iterator, inherited_snapshot = db.iterator(), db.snapshot()
pid = os.fork()
if pid == 0:
    results = {}
    uses = [
        ("get", lambda: db.get(b"parent")),
        ("put", lambda: db.put(b"child", b"x")),
        ("put_sync", lambda: db.put(b"child-synced", b"x", sync=True)),
        ("iterator", lambda: next(db.iterator())),
        ("snapshot", lambda: db.snapshot()),
        ("write_batch", lambda: db.write_batch().write()),
        ("inherited_iterator", lambda: next(inherited_iterator)),
        ("inherited_snapshot", lambda: inherited_snapshot.get(b"parent")),
        ("stats", lambda: db.stats()),
        ("close", lambda: db.close()),
    ]
    for name, use in uses:
        try:
            use()
            results[name] = "returned"
        except BaseException as exc:
            results[name] = f"{type(exc).__name__}: {exc}"
    print("child results", json.dumps(results), flush=True)
    with levels3.DB(url, read_only=True, **options) as own:  # what the error says to do
        print("child's own follower reads", own.get(b"parent"), flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("child status", status, flush=True)
for i in range(20):
    db.put(b"after%03d" % i, b"v", sync=True)
db.close()
print("parent closed", flush=True)
"""


def test_child_cannot_use_the_inherited_handle(location_factory):
    """Every use in the child raises, naming the process that opened the database; a database the
    child opens itself works; the parent carries on as if there had been no child."""
    location = location_factory("moto_server")
    result = run_python(CHILD_USES_SCRIPT, location.url, location.options, timeout=120)
    assert_clean_exit(result)
    parent_pid = next(line.split()[-1] for line in result.stdout.splitlines() if line.startswith("parent pid"))
    child = json.loads(next(line[len("child results "):] for line in result.stdout.splitlines()
                            if line.startswith("child results")))
    for use, outcome in child.items():
        assert outcome != "returned", f"{use} worked in the forked child"
        assert f"opened in process {parent_pid}" in outcome and "fork" in outcome, f"{use}: {outcome}"
    assert "child's own follower reads b'v'" in result.stdout, result.stdout
    assert "parent closed" in result.stdout, result.stdout
    with location.open() as db:
        assert db.get(b"parent") == b"v"
        assert [db.get(b"after%03d" % i) for i in range(20)] == [b"v"] * 20
        assert db.get(b"child") is None and db.get(b"child-synced") is None
