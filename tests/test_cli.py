"""The levels3 command line, run as a real process against the local store and the moto server."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import plyvel
import pytest

import levels3
from levels3.options import S3Options
from levels3.stores import LocalDirStore, ObjectStore, S3Store

from .conftest import REGION

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBCOMMANDS = ("get", "put", "delete", "scan", "info", "import", "export", "verify", "gc", "lock", "bench",
               "checkpoint", "checkpoints", "restore")


def cli(*args: str, cwd: str = REPO, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m levels3 ARGS`` (stdin closed) and return the finished process."""
    return subprocess.run([sys.executable, "-m", "levels3", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, cwd=cwd, env=env or os.environ, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def fails(result: subprocess.CompletedProcess, code: int = 1, *, message: str = "") -> subprocess.CompletedProcess:
    assert result.returncode == code, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    if "-vv" not in result.args:  # -vv adds the details to the log
        assert "Traceback" not in result.stderr
    assert message.lower() in result.stderr.lower(), result.stderr
    return result


@dataclass
class Target:
    """A database URL plus the store options the CLI needs to reach it."""

    kind: str
    url: str
    args: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    bucket: str = ""
    prefix: str = ""

    def run(self, command: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return cli(command, self.url, *args, *self.args, **kwargs)

    def open(self, **kwargs) -> levels3.DB:
        return levels3.DB(self.url, **{**self.options, **kwargs})

    def raw_store(self) -> ObjectStore:
        if self.kind == "local":
            return LocalDirStore(self.url, create=True)
        return S3Store(self.bucket, self.prefix, S3Options(**self.options))

    def keys(self) -> list[str]:
        store = self.raw_store()
        try:
            return [info.key for info in store.list("")]
        finally:
            store.close()


@pytest.fixture(params=["local", "moto_server"])
def target(request: pytest.FixtureRequest, tmp_path) -> Target:
    if request.param == "local":
        return Target("local", str(tmp_path / "db"))
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("server_bucket")
    prefix = f"cli/{uuid.uuid4().hex[:8]}"
    return Target("moto_server", f"s3://{bucket}/{prefix}", ["--endpoint-url", endpoint, "--region", REGION],
                  {"endpoint_url": endpoint, "region": REGION, "request_timeout": 10}, bucket, prefix)


@pytest.fixture
def local_target(tmp_path) -> Target:
    return Target("local", str(tmp_path / "db"))


@pytest.fixture(scope="module")
def plyvel_dir(tmp_path_factory) -> tuple[str, dict[bytes, bytes]]:
    """A plain LevelDB directory made by plyvel, with several tables and a live WAL."""
    path = str(tmp_path_factory.mktemp("plyvel") / "db")
    rng = random.Random(6)
    expected: dict[bytes, bytes] = {}
    db = plyvel.DB(path, create_if_missing=True, write_buffer_size=64 * 1024)
    for i in range(3000):
        key, value = b"key%06d" % i, rng.randbytes(rng.randint(20, 200))
        db.put(key, value)
        expected[key] = value
    for i in range(0, 3000, 17):
        db.delete(b"key%06d" % i)
        del expected[b"key%06d" % i]
    db.put(b"\x00binary\xff", b"\x01\x02")
    expected[b"\x00binary\xff"] = b"\x01\x02"
    db.close()
    names = os.listdir(path)
    assert any(n.endswith(".ldb") for n in names) and any(n.endswith(".log") for n in names), names
    return path, expected


# -- help and usage ------------------------------------------------------------------------------


def test_help_for_every_subcommand() -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda c: cli(*c), [("--help",)] + [(name, "--help") for name in SUBCOMMANDS]))
    top = ok(results[0]).stdout
    for name in SUBCOMMANDS:
        assert name in top
    assert "Exit codes" in top
    for name, result in zip(SUBCOMMANDS, results[1:]):
        out = ok(result).stdout
        assert out.startswith(f"usage: levels3 {name}"), out
        if name != "bench":
            assert "--endpoint-url" in out and "--region" in out


def test_usage_errors_exit_2(tmp_path) -> None:
    cases = [
        (),  # no subcommand
        ("frobnicate",),
        ("get", str(tmp_path)),  # KEY missing
        ("scan", str(tmp_path), "--format", "octal"),
        ("get", str(tmp_path), "zz", "--key-format", "hex"),  # not hex
        ("scan", str(tmp_path), "--prefix", "a", "--start", "b"),
        ("get", "ftp://host/db", "k"),
        ("gc", str(tmp_path), "--dry-run", "--delete"),
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda c: cli(*c), cases))
    for case, result in zip(cases, results):
        assert result.returncode == 2, (case, result.returncode, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.strip(), case


def test_missing_database_exits_1(tmp_path, moto_endpoint, server_bucket) -> None:
    s3 = ["--endpoint-url", moto_endpoint, "--region", REGION]
    secret = "do-not-print-this-secret"
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": secret}
    cases = [
        ("get", str(tmp_path / "nope"), "k"),
        ("info", str(tmp_path / "nope")),
        ("export", str(tmp_path / "nope"), str(tmp_path / "out")),
        ("get", f"s3://{server_bucket}/nothing/here", "k", "-vv", *s3),
        ("scan", "s3://no-such-bucket-levels3/db", *s3),
        ("verify", f"s3://{server_bucket}/nothing/here", *s3),
        ("import", str(tmp_path / "not-a-dir"), str(tmp_path / "db")),
    ]
    with ThreadPoolExecutor(max_workers=7) as pool:
        results = list(pool.map(lambda c: cli(*c, env=env), cases))
    for case, result in zip(cases, results):
        fails(result, 1)
        assert "error" in result.stderr, (case, result.stderr)
        assert secret not in result.stderr + result.stdout
    assert "does not exist" in results[0].stderr or "no database" in results[0].stderr
    assert "levels3.store" in results[3].stderr  # -vv shows every store request


# -- data commands --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["moto_server"], indirect=True)
def test_put_get_delete_scan_s3(target: Target) -> None:
    fails(target.run("put", "a", "1"), message="pass --create")  # no --create: nothing is created
    ok(target.run("put", "a", "1", "--create", "--sync"))
    ok(target.run("put", "b", "2"))
    assert ok(target.run("scan")).stdout.splitlines() == ["a\t1", "b\t2"]
    ok(target.run("delete", "a"))
    assert ok(target.run("get", "b")).stdout == "2\n"
    fails(target.run("get", "a"), message="not found")


def test_put_get_delete_scan(local_target: Target) -> None:
    target = local_target
    fails(target.run("put", "a", "1"), message="pass --create")  # no --create: nothing is created
    ok(target.run("put", "a", "1", "--create"))
    ok(target.run("put", "00ff", base64.b64encode(b"\x00bin\n").decode(), "--key-format", "hex",
                  "--value-format", "base64", "--sync"))
    with target.open() as db:
        db.put(b"b", b"2")
        db.put(b"c", "é".encode())
    assert ok(target.run("get", "a")).stdout == "1\n"
    assert ok(target.run("get", "00ff", "--key-format", "hex", "--format", "hex")).stdout == "0062696e0a\n"
    assert ok(target.run("get", "00ff", "--key-format", "hex")).stdout == "\\x00bin\\n\n"
    assert json.loads(ok(target.run("get", "c", "--json")).stdout)["value"] == "é"
    fails(target.run("get", "missing"), message="not found")
    lines = ok(target.run("scan")).stdout.splitlines()
    assert lines == ["\\x00\\xff\t\\x00bin\\n", "a\t1", "b\t2", "c\té"]
    assert ok(target.run("scan", "--keys-only", "--reverse", "--limit", "2")).stdout.splitlines() == ["c", "b"]
    assert ok(target.run("scan", "--start", "a", "--stop", "c", "--keys-only")).stdout.splitlines() == ["a", "b"]
    rows = [json.loads(line) for line in ok(target.run("scan", "--prefix", "b", "--json", "--format",
                                                       "base64")).stdout.splitlines()]
    assert rows == [{"key": "Yg==", "value": "Mg=="}]
    ok(target.run("delete", "a"))
    ok(target.run("delete", "never-there"))
    assert ok(target.run("scan", "--keys-only", "--format", "hex")).stdout.splitlines() == ["00ff", "62", "63"]


def test_get_raw_output(local_target: Target) -> None:
    with local_target.open(create_if_missing=True) as db:
        db.put(b"k", b"\x00\x01raw\xff")
    result = subprocess.run([sys.executable, "-m", "levels3", "get", local_target.url, "k", "--format", "raw"],
                            capture_output=True, stdin=subprocess.DEVNULL, cwd=REPO, env=os.environ)
    assert result.returncode == 0 and result.stdout == b"\x00\x01raw\xff"


# -- import and export ------------------------------------------------------------------------------


def test_import_export_round_trip(target: Target, plyvel_dir, tmp_path) -> None:
    source, expected = plyvel_dir
    result = ok(cli("import", source, target.url, *target.args))
    assert result.stdout.startswith("imported ") and " files, " in result.stdout and " s" in result.stdout
    keys = target.keys()
    assert "CURRENT" in keys and any(k.endswith(".ldb") for k in keys) and any(".log/" in k for k in keys)
    assert not any(k.endswith(("LOCK", "LOG")) and k != "LOCK" for k in keys)
    assert "LOCK" not in keys  # released after the import

    # levels3 reads every key and value, through the library and the CLI
    with target.open() as db:
        assert dict(db) == expected
    assert len(ok(target.run("scan", "--keys-only")).stdout.splitlines()) == len(expected)

    out = str(tmp_path / "exported")
    summary = json.loads(ok(cli("export", target.url, out, "--json", *target.args)).stdout)
    assert summary["files"] >= 3 and summary["bytes"] > 0
    db = plyvel.DB(out)
    try:
        assert dict(db) == expected
    finally:
        db.close()
    assert "LOCK" not in target.keys()

    if target.kind != "local":
        return
    # an existing database is not overwritten without --force; a non-empty destination is refused
    fails(cli("import", source, target.url, *target.args), message="already holds a database")
    fails(cli("export", target.url, out, *target.args), message="not empty")
    ok(cli("import", source, target.url, "--force", "--quiet", *target.args))
    with target.open() as db:
        assert dict(db) == expected


# -- info, verify, gc --------------------------------------------------------------------------------


def _small_db(target: Target, n: int = 1500) -> None:
    with target.open(create_if_missing=True, write_buffer_size=16 * 1024) as db:
        for i in range(n):
            db.put(b"k%05d" % i, os.urandom(100))


def test_info_verify_gc(target: Target) -> None:
    _small_db(target)
    info = json.loads(ok(target.run("info", "--json")).stdout)
    assert info["database"] is True and info["lock"]["held"] is False
    assert info["objects"]["table"]["count"] >= 1 and info["objects"]["manifest"]["count"] >= 1
    assert "--- level 0 ---" in info["properties"]["leveldb.sstables"]
    assert "Compactions" in info["properties"]["leveldb.stats"]
    assert info["stats"]["requests"]
    if target.kind == "local":
        text = ok(target.run("info")).stdout
        assert "tables" in text and "WAL segments" in text and "MANIFEST segments" in text
        assert "leveldb.stats" in text and "cache" in text

    assert "ok:" in ok(target.run("verify")).stdout

    # an orphan: a table no version references
    planted = "w00000001/000999.ldb"

    def plant() -> None:
        store = target.raw_store()
        try:
            store.put(planted, b"not really a table")
        finally:
            store.close()

    plant()
    assert json.loads(ok(target.run("info", "--json", "--store-only")).stdout)["orphans"] >= 1
    if target.kind == "local":
        kept = ok(target.run("gc"))  # default grace (an hour): too young to go
        assert "kept:" in kept.stdout and planted in kept.stdout
    dry = json.loads(ok(target.run("gc", "--grace", "0", "--json")).stdout)
    assert dry["dry_run"] is True and planted in [e["key"] for e in dry["would_remove"]]
    assert planted in target.keys()
    ok(target.run("gc", "--grace", "0", "--delete"))
    assert planted not in target.keys()
    assert json.loads(ok(target.run("info", "--json", "--store-only")).stdout)["orphans"] == 0

    plant()
    assert planted in fails(target.run("verify", "--strict"), message="orphan").stdout
    # (opening the database made LevelDB drop the obsolete table it saw)
    assert json.loads(ok(target.run("verify", "--json")).stdout)["ok"] is True
    with target.open() as db:
        assert len(list(db.iterator(include_value=False))) == 1500


def test_gc_keeps_what_a_checkpoint_needs_and_verify_checks_it(local_target: Target) -> None:
    """gc once deleted the tables and logs only a checkpoint still named: the checkpoint then failed to
    open (StaleVersionError)."""
    target = local_target
    with target.open(create_if_missing=True, deletion_grace=0) as db:
        for i in range(2000):
            db.put(b"k%05d" % i, b"old" * 30)
        db.compact_range()
        db.checkpoint("before")
        for i in range(2000):
            db.put(b"k%05d" % i, b"new" * 30)
        db.compact_range()
    removed = json.loads(ok(target.run("gc", "--grace", "0", "--delete", "--json")).stdout)["removed"]
    assert all(e["kind"] != "table" for e in removed), removed
    with target.open(checkpoint="before") as snap:
        assert snap.get(b"k00001") == b"old" * 30 and len(list(snap)) == 2000
    info = json.loads(ok(target.run("info", "--store-only", "--json")).stdout)
    assert info["kept_for_checkpoints"] >= 1 and info["objects"]["checkpoint"]["count"] == 1
    ok(target.run("verify", "--strict"))
    # An object the checkpoint needs goes missing: verify says which, and gc refuses to delete anything.
    store = target.raw_store()
    needed = json.loads(store.get("checkpoints/before.json"))["files"]
    table = next(rows[0][0] for name, rows in needed.items() if name.endswith(".ldb"))
    store.delete(table)
    assert f"missing: {table} (needed by checkpoint 'before')" in fails(target.run("verify")).stdout
    fails(target.run("gc", "--grace", "0", "--delete"), message="gc removes nothing")


def test_checkpoint_list_restore_and_delete(target: Target, tmp_path) -> None:
    with target.open(create_if_missing=True) as db:
        for i in range(500):
            db.put(b"k%03d" % i, b"before")
    made = json.loads(ok(target.run("checkpoint", "nightly", "--json")).stdout)
    assert made["name"] == "nightly" and made["objects"] >= 1 and made["bytes"] > 0
    fails(target.run("checkpoint", "bad name"), code=2, message="checkpoint name")
    fails(target.run("checkpoint", "nightly"), message="already exists")
    with target.open() as db:
        db.put(b"k000", b"after")
    listed = json.loads(ok(target.run("checkpoints", "--json")).stdout)["checkpoints"]
    assert [c["name"] for c in listed] == ["nightly"] and listed[0]["objects"] == made["objects"]
    assert ok(target.run("checkpoints")).stdout.startswith("nightly\t")

    copy = str(tmp_path / "copy")
    restored = ok(cli("restore", target.url, "nightly", copy, *target.args))
    assert restored.stdout.startswith("restored checkpoint 'nightly' into file://")
    with levels3.DB(copy) as db:  # writable, independent, with the checkpoint's data
        assert db.get(b"k000") == b"before" and len(list(db)) == 500
        db.put(b"new", b"1")
    fails(cli("restore", target.url, "nightly", copy, *target.args), message="already holds a database")
    fails(cli("restore", target.url, "never-made", str(tmp_path / "other"), *target.args),
          message="no checkpoint named 'never-made'")

    # Other keys under checkpoints/ are not checkpoints; a broken one is listed as such and can be deleted.
    store = target.raw_store()
    store.put("checkpoints/README.txt", b"notes")
    store.put("checkpoints/broken.json", b"[]")
    listed = json.loads(ok(target.run("checkpoints", "--json")).stdout)["checkpoints"]
    assert [c["name"] for c in listed] == ["broken", "nightly"] and "corrupt" in listed[0]["error"]
    assert "problem: checkpoint 'broken' cannot be read" in fails(target.run("verify")).stdout
    ok(target.run("checkpoints", "--delete", "broken"))
    ok(target.run("verify"))

    ok(target.run("checkpoints", "--delete", "nightly"))
    assert json.loads(ok(target.run("checkpoints", "--json")).stdout)["checkpoints"] == []
    fails(target.run("checkpoints", "--delete", "nightly"), message="no checkpoint named")
    assert "checkpoints/README.txt" in target.keys()


def test_verify_finds_corruption_and_missing_tables(local_target: Target) -> None:
    _small_db(local_target)
    info = json.loads(ok(local_target.run("info", "--json", "--store-only")).stdout)
    live = [t["number"] for tables in info["manifest"]["levels"].values() for t in tables]
    assert len(live) >= 2
    store = local_target.raw_store()
    keys = [i.key for i in store.list("")]

    def newest(number: int) -> str:  # the live object of a table: its highest writer epoch
        return max(k for k in keys if k.endswith(f"/{number:06d}.ldb"))

    path = os.path.join(local_target.url, *newest(live[0]).split("/"))
    with open(path, "r+b") as f:
        f.seek(20)
        byte = f.read(1)
        f.seek(20)
        f.write(bytes([byte[0] ^ 0xFF]))
    report = json.loads(fails(local_target.run("verify", "--json")).stdout)
    assert report["ok"] is False and any("reading the database failed" in p for p in report["problems"])

    store.delete(newest(live[-1]))
    store.close()
    fails(local_target.run("verify"), message="problems")
    fails(local_target.run("gc", "--delete", "--grace", "0"), message="damaged")


# -- the lock ------------------------------------------------------------------------------------------


def test_info_and_lock_while_a_writer_holds_it(local_target: Target) -> None:
    _small_db(local_target, 10)
    db = local_target.open(lease_duration=2, lease_renewal=0.5)
    try:
        info = local_target.run("info")
        ok(info)
        assert f"pid {os.getpid()}" in info.stdout
        assert "leveldb.stats" in info.stdout  # read through a follower: no lock needed
        assert "tables" in info.stdout
        data = json.loads(ok(local_target.run("info", "--json")).stdout)
        assert data["lock"]["held"] and data["lock"]["holder"]["pid"] == os.getpid()
        assert data["lock"]["holder_exited"] is False
        assert data["properties"] is not None and data["properties_unavailable"] is None
        shown = json.loads(ok(local_target.run("lock", "--json")).stdout)
        assert shown["holder"]["pid"] == os.getpid() and shown["lease_age_seconds"] < 5
        assert "live" in ok(local_target.run("lock")).stdout
        assert ok(local_target.run("get", "k00001")).stdout  # a read: beside the writer
        fails(local_target.run("put", "k00001", "x"), message=f"pid {os.getpid()}")  # a write: the lock
        fails(local_target.run("lock", "--break"), message="--yes")  # no terminal, no --yes: refused
        # a live holder keeps renewing: --break gives up without touching the lease
        fails(local_target.run("lock", "--break", "--yes", "--lease-duration", "1"), message="being renewed")
        assert db.get(b"k00001") is not None
        db.put(b"still", b"mine")
    finally:
        db.close()
    assert ok(local_target.run("get", "still")).stdout == "mine\n"


DEAD_WRITER = textwrap.dedent("""
    import os, sys
    import levels3
    url, options = sys.argv[1], dict(zip(sys.argv[2::2], sys.argv[3::2]))
    db = levels3.DB(url, create_if_missing=True, lease_duration=2, lease_renewal=0.5, **options)
    db.put(b"k", b"v", sync=True)
    os._exit(0)  # die holding the lease
""")


def _die_holding_the_lease(target: Target, cache_dir: str) -> None:
    # The writer dies without closing: its cache stays, so it goes under tmp_path, not into /tmp for good.
    argv = [sys.executable, "-c", DEAD_WRITER, target.url, "cache_dir", cache_dir]
    for name, value in target.options.items():
        if name != "request_timeout":
            argv += [name, str(value)]
    dead = subprocess.run(argv, capture_output=True, text=True, env=os.environ, timeout=60)
    assert dead.returncode == 0, dead.stderr


def test_lock_break_after_the_lease_expired(target: Target, tmp_path) -> None:
    _die_holding_the_lease(target, str(tmp_path / "dead-writer-cache-1"))
    shown = json.loads(ok(target.run("lock", "--json")).stdout)
    assert shown["held"] and shown["holder"]["pid"] != os.getpid()
    # a process of this host that has exited: --break (like any open) takes its lease over at once
    assert shown["holder_exited"] is True and "has exited" in ok(target.run("lock")).stdout
    result = ok(target.run("lock", "--break", "--yes"))
    assert "broke the lock" in result.stdout and "its process had exited" in result.stdout
    assert ok(target.run("get", "k")).stdout == "v\n"

    # a holder this host cannot judge (another host's): only a lease seen unrenewed for its duration goes
    _die_holding_the_lease(target, str(tmp_path / "dead-writer-cache-2"))
    store = target.raw_store()
    try:
        body = json.loads(store.get("LOCK"))
        store.put("LOCK", json.dumps({**body, "host": "another-host"}).encode())
    finally:
        store.close()
    assert json.loads(ok(target.run("lock", "--json")).stdout)["holder_exited"] is False
    fails(target.run("put", "k", "w"), message="held by")
    result = ok(target.run("lock", "--break", "--yes", "--lease-duration", "2"))
    assert "broke the lock" in result.stdout and "lease unrenewed for" in result.stdout
    assert ok(target.run("get", "k")).stdout == "v\n"
    if target.kind == "local":
        assert "not held" in ok(target.run("lock")).stdout
        assert "not locked" in ok(target.run("lock", "--break", "--yes")).stdout


# -- bench: tests/test_benchmarks_smoke.py ---------------------------------------------------------------
