"""The command line beside a live writer: commands that read open as followers (no lock, not one PUT or
DELETE), commands that write take the lock; export copies exactly the live version; progress bars on a
terminal only."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import boto3
import pytest

import levels3

from .conftest import REGION

plyvel = pytest.importorskip("plyvel")

ROOT = str(Path(__file__).resolve().parent.parent)


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "levels3", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, cwd=ROOT, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"{result.args[3:]}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def fill(db: levels3.DB, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        db.put(b"k%06d" % i, b"v%06d" % i * 8)


def object_versions(store) -> dict[str, str]:
    """Every object but the lease, with its ETag: what a read must leave exactly as it was."""
    try:
        return {info.key: info.etag for info in store.list("") if info.key != "LOCK"}
    finally:
        store.close()


READ_COMMANDS = [
    ("get", "{url}", "k000007"),
    ("scan", "{url}", "--limit", "5"),
    ("scan", "{url}", "--prefix", "k0001", "--keys-only"),
    ("info", "{url}"),
    ("info", "{url}", "--json"),
    ("verify", "{url}"),
    ("export", "{url}", "{out}"),
    ("checkpoints", "{url}"),
    ("lock", "{url}"),
    ("gc", "{url}", "--grace", "0"),  # a dry run
]


def _run_reads(url: str, extra: list[str], tmp_path: Path) -> list[subprocess.CompletedProcess]:
    results = []
    for n, command in enumerate(READ_COMMANDS):
        argv = [a.format(url=url, out=tmp_path / f"export-{n}") for a in command]
        results.append(ok(cli(*argv, *extra)))
    return results


def test_reads_beside_a_live_writer_make_no_writes_over_s3(moto_endpoint, server_bucket, proxy, tmp_path) -> None:
    url = f"s3://{server_bucket}/live/db"
    options = {"endpoint_url": moto_endpoint, "region": REGION, "request_timeout": 10}
    with levels3.DB(url, create_if_missing=True, write_buffer_size=64 * 1024, **options) as writer:
        fill(writer, 3000)
        writer.put(b"synced", b"1", sync=True)
        writer.checkpoint("c1")
        proxy.reset_arrivals()
        # the CLI goes through the counting proxy; the writer talks to moto directly
        results = _run_reads(url, ["--endpoint-url", proxy.url, "--region", REGION], tmp_path)
        writes = {m: proxy.count(method=m) for m in ("PUT", "POST", "DELETE")}
        assert writes == {"PUT": 0, "POST": 0, "DELETE": 0}, writes
        assert proxy.count(method="GET") > 0  # they did read through it
        assert results[0].stdout == "v000007" * 8 + "\n"
        assert "ok:" in results[5].stdout
        info = json.loads(results[4].stdout)
        assert info["lock"]["held"] and info["lock"]["holder"]["pid"] == os.getpid()
        assert "Compactions" in info["properties"]["leveldb.stats"]  # LevelDB's own, from the follower
        with plyvel.DB(str(tmp_path / "export-6")) as exported:
            assert exported.get(b"synced") == b"1" and exported.get(b"k002999") is not None
        writer.put(b"still", b"mine", sync=True)  # the writer never lost its lease
        assert writer.get(b"still") == b"mine"


def test_reads_leave_a_local_database_unchanged(tmp_path) -> None:
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True, write_buffer_size=64 * 1024, deletion_grace=3600) as db:
        fill(db, 4000)
        db.compact_range()
        fill(db, 500)  # obsolete tables wait out their deletion grace; a WAL is live
    store = lambda: levels3.stores.LocalDirStore(url, create=False)  # noqa: E731
    before = object_versions(store())
    for _ in range(3):  # once took a database from 6 objects to 17 in 10 gets
        ok(cli("get", url, "k000001"))
    ok(cli("verify", url))
    ok(cli("verify", url, "--json"))  # verify changed the database it checked: tables 6 -> 8
    ok(cli("info", url))
    assert object_versions(store()) == before


def test_reads_work_while_a_local_writer_holds_the_lock(tmp_path) -> None:
    url = str(tmp_path / "db")
    with levels3.DB(url, create_if_missing=True, write_buffer_size=64 * 1024) as writer:
        fill(writer, 2000)
        writer.sync()
        results = _run_reads(url, [], tmp_path)
        assert results[0].stdout == "v000007" * 8 + "\n"
        assert len(results[2].stdout.splitlines()) == 100  # k000100 .. k000199
        assert f"pid {os.getpid()}" in results[3].stdout and "leveldb.stats" in results[3].stdout
        writer.put(b"after", b"reads", sync=True)


WRITE_COMMANDS = [
    ("put", "{url}", "a", "b"),
    ("delete", "{url}", "k000001"),
    ("gc", "{url}", "--grace", "0", "--delete"),
    ("checkpoint", "{url}", "c2"),
    ("import", "{source}", "{url}", "--force"),
]


def test_writes_beside_a_live_writer_wait_for_the_lock(tmp_path) -> None:
    url = str(tmp_path / "db")
    source = tmp_path / "plyvel"
    with plyvel.DB(str(source), create_if_missing=True) as pdb:
        pdb.put(b"x", b"y")
    with levels3.DB(url, create_if_missing=True, lease_duration=30, lease_renewal=10) as writer:
        fill(writer, 100)
        writer.sync()
        for command in WRITE_COMMANDS:
            argv = [a.format(url=url, source=source) for a in command]
            result = cli(*argv)
            assert result.returncode == 1, (command, result.stdout, result.stderr)
            assert f"pid {os.getpid()}" in result.stderr and "levels3 lock --break" in result.stderr, result.stderr
        # --lock-timeout is there for them: they wait, then give up naming it
        started = time.monotonic()
        result = cli("put", url, "a", "b", "--lock-timeout", "1")
        assert result.returncode == 1 and "lock_timeout=1" in result.stderr, result.stderr
        assert time.monotonic() - started >= 1
        assert writer.get(b"a") is None and writer.get(b"k000001") is not None
    ok(cli("put", url, "a", "b"))  # once the writer has closed
    with levels3.DB(url) as db:
        assert db.get(b"a") == b"b"


# -- export: exactly the live version ------------------------------------------------------------------


def _live_files(url: str) -> tuple[set[str], str]:
    """The live tables (from the MANIFEST that CURRENT names) and that MANIFEST's name."""
    info = json.loads(ok(cli("info", url, "--json", "--store-only")).stdout)
    tables = {f"{t['number']:06d}.ldb" for level in info["manifest"]["levels"].values() for t in level}
    return tables, info["manifest"]["name"]


def test_export_copies_exactly_the_live_version(tmp_path) -> None:
    url = str(tmp_path / "db")
    expected = {}
    with levels3.DB(url, create_if_missing=True, write_buffer_size=32 * 1024, deletion_grace=3600) as db:
        for round_ in range(3):  # overwrite everything: most tables become obsolete, kept for the grace
            for i in range(2000):
                key, value = b"k%05d" % i, b"%d-" % round_ + os.urandom(40)
                db.put(key, value)
                expected[key] = value
            db.compact_range()
    with levels3.DB(url, deletion_grace=3600) as db:  # a second session: one more MANIFEST and WAL
        db.put(b"last", b"write")
        expected[b"last"] = b"write"
    tables, manifest = _live_files(url)
    store_tables = {k.rsplit("/", 1)[1] for k in object_versions(levels3.stores.LocalDirStore(url, create=False))
                    if k.endswith(".ldb")}
    assert len(store_tables) > len(tables)  # obsolete tables are still in the store

    out = tmp_path / "exported"
    summary = json.loads(ok(cli("export", url, str(out), "--json")).stdout)
    names = set(os.listdir(out))
    assert {n for n in names if n.endswith(".ldb")} == tables
    assert {n for n in names if n.startswith("MANIFEST-")} == {manifest}
    assert (out / "CURRENT").read_text() == manifest + "\n"
    assert summary["files"] == len(names)
    assert summary["bytes"] == sum((out / n).stat().st_size for n in names)
    with plyvel.DB(str(out)) as pdb:
        assert dict(pdb) == expected


# -- progress bars -------------------------------------------------------------------------------------


def _on_a_terminal(argv: list[str], timeout: float = 180) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (80 columns) and stdout on a pipe."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "levels3", *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, cwd=ROOT)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                chunk = b""
            if not chunk and proc.poll() is not None:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
        assert time.monotonic() < deadline, "the command hung"
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait()
    os.close(master)
    return proc.returncode, out, seen.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def progress_db(tmp_path_factory) -> tuple[str, str]:
    base = tmp_path_factory.mktemp("progress")
    source = str(base / "plyvel")
    with plyvel.DB(source, create_if_missing=True, write_buffer_size=64 * 1024) as pdb:
        for i in range(5000):
            pdb.put(b"k%05d" % i, os.urandom(60))
    url = str(base / "db")
    ok(cli("import", source, url, "--quiet"))
    with levels3.DB(url) as db:
        db.checkpoint("c")
    return source, url


def _commands(source: str, url: str, scratch: Path) -> dict[str, list[str]]:
    name = uuid.uuid4().hex[:8]
    return {
        "verify": ["verify", url],
        "import": ["import", source, str(scratch / f"import-{name}")],
        "export": ["export", url, str(scratch / f"export-{name}")],
        "gc": ["gc", url, "--grace", "0", "--delete"],
        "restore": ["restore", url, "c", str(scratch / f"restore-{name}")],
    }


@pytest.mark.parametrize("command", ["verify", "import", "export", "gc", "restore"])
def test_progress_on_a_terminal_only(progress_db, tmp_path, command: str) -> None:
    source, url = progress_db
    argv = _commands(source, url, tmp_path)[command]
    code, out, terminal = _on_a_terminal(argv)
    assert code == 0, (out, terminal)
    assert f"{command}:" in terminal and "objects" in terminal, terminal  # tqdm: "verify: 40%|####  | ..."
    assert "B/s" in terminal or "B [" in terminal, terminal  # bytes, with their rate

    argv = _commands(source, url, tmp_path)[command]
    code, out, quiet = _on_a_terminal(argv + ["--quiet"])
    assert code == 0 and quiet == "", quiet

    result = ok(cli(*_commands(source, url, tmp_path)[command]))  # a pipe: no bar
    assert "\r" not in result.stderr and "objects" not in result.stderr and "|" not in result.stderr, result.stderr
