"""A plain LevelDB directory (plyvel's) given where a levels3 database is expected: one clear error naming
`levels3 import`, from levels3.DB, the maintenance calls and every CLI command, and the directory untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import levels3

plyvel = pytest.importorskip("plyvel")

ROOT = str(Path(__file__).resolve().parent.parent)


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*")}


@pytest.fixture
def plyvel_dir(tmp_path) -> Path:
    path = tmp_path / "pvdir"
    with plyvel.DB(str(path), create_if_missing=True) as db:
        for i in range(100):
            db.put(b"k%03d" % i, b"v")
    return path


CALLS = {
    "DB": lambda p: levels3.DB(str(p)),
    "DB create_if_missing": lambda p: levels3.DB(str(p), create_if_missing=True),
    "DB file://": lambda p: levels3.DB(f"file://{p}"),
    "DB read_only": lambda p: levels3.DB(str(p), read_only=True),
    "destroy_db": lambda p: levels3.destroy_db(str(p)),
    "repair_db": lambda p: levels3.repair_db(str(p)),
}


@pytest.mark.parametrize("call", list(CALLS.values()), ids=list(CALLS))
def test_the_api_names_levels3_import(plyvel_dir: Path, call) -> None:
    before = snapshot(plyvel_dir)
    with pytest.raises(levels3.PlainLevelDBError) as caught:
        call(plyvel_dir)
    message = str(caught.value)
    assert "plain LevelDB directory" in message and f"levels3 import {plyvel_dir}" in message, message
    assert isinstance(caught.value, levels3.Error)
    assert snapshot(plyvel_dir) == before  # nothing written, not even levels3's temp directory
    with plyvel.DB(str(plyvel_dir)) as db:  # still plyvel's
        assert db.get(b"k001") == b"v"


COMMANDS = [
    ("get", "{dir}", "k001"), ("put", "{dir}", "k", "v"), ("put", "{dir}", "k", "v", "--create"),
    ("delete", "{dir}", "k"), ("scan", "{dir}"), ("info", "{dir}"), ("info", "{dir}", "--store-only"),
    ("verify", "{dir}"), ("gc", "{dir}"), ("gc", "{dir}", "--delete"), ("lock", "{dir}"),
    ("lock", "{dir}", "--break", "--yes"), ("export", "{dir}", "{out}"), ("checkpoint", "{dir}", "c"),
    ("checkpoints", "{dir}"), ("restore", "{dir}", "c", "{out}"), ("import", "{other}", "{dir}"),
]


def test_every_cli_command_fails_naming_levels3_import(plyvel_dir: Path, tmp_path) -> None:
    other = tmp_path / "other"
    with plyvel.DB(str(other), create_if_missing=True) as db:
        db.put(b"a", b"1")
    before = snapshot(plyvel_dir)

    def run(command: tuple[str, ...]) -> subprocess.CompletedProcess:
        argv = [a.format(dir=plyvel_dir, out=tmp_path / "out", other=other) for a in command]
        return subprocess.run([sys.executable, "-m", "levels3", *argv], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, cwd=ROOT, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, COMMANDS))
    for command, result in zip(COMMANDS, results):
        assert result.returncode != 0, (command, result.stdout, result.stderr)
        assert "plain LevelDB directory" in result.stderr and "levels3 import" in result.stderr, \
            (command, result.stderr)
        assert "Traceback" not in result.stderr
    assert snapshot(plyvel_dir) == before
    assert not (tmp_path / "out").exists()


def test_levels3_import_brings_it_in(plyvel_dir: Path, tmp_path) -> None:
    """What the message says to do works: the imported copy opens in levels3."""
    target = tmp_path / "imported"
    result = subprocess.run([sys.executable, "-m", "levels3", "import", str(plyvel_dir), str(target), "--quiet"],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    with levels3.DB(str(target)) as db:
        assert db.get(b"k099") == b"v" and len(list(db)) == 100


def test_a_levels3_directory_is_not_mistaken_for_one(tmp_path) -> None:
    path = tmp_path / "db"
    with levels3.DB(str(path), create_if_missing=True, write_buffer_size=64 * 1024) as db:
        for i in range(3000):
            db.put(b"k%05d" % i, os.urandom(50))
    assert not levels3.stores.local.plain_leveldb_files(path)
    with levels3.DB(str(path)) as db:
        assert db.get(b"k00001") is not None
