"""Where levels3 behaves as plyvel 1.5.1 does, call by call, and the one place it deliberately does not.

plyvel is run side by side as the reference: destroy_db, the comparator arguments and the
comparator-mismatch message. ``key in db`` is the deliberate difference (plyvel 1.5.1 iterates
pairs and answers False for a key that is there); the README lists it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

import levels3

plyvel = pytest.importorskip("plyvel")

README = Path(__file__).resolve().parent.parent / "README.md"


def bytewise(a: bytes, b: bytes) -> int:
    return (a > b) - (a < b)


def raised(fn: Any) -> BaseException:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the exception is the result
        return exc
    raise AssertionError("no exception")


# -- destroy_db ---------------------------------------------------------------------------------


def test_destroy_db_removes_the_directory_as_plyvel_does(tmp_path) -> None:
    for module, path in ((plyvel, tmp_path / "plyvel"), (levels3, tmp_path / "levels3")):
        with module.DB(str(path), create_if_missing=True, write_buffer_size=64 * 1024) as db:
            for i in range(3000):
                db.put(b"k%05d" % i, os.urandom(50))
            db.compact_range()
        module.destroy_db(str(path))
        assert not path.exists(), (module.__name__, sorted(os.listdir(path)))
    # and it is gone for good: opening without create_if_missing fails, with it the database is new
    with pytest.raises(levels3.Error):
        levels3.DB(str(tmp_path / "levels3"))
    with levels3.DB(str(tmp_path / "levels3"), create_if_missing=True) as db:
        assert list(db) == []


def test_destroy_db_keeps_a_directory_holding_other_files(tmp_path) -> None:
    path = tmp_path / "db"
    with levels3.DB(str(path), create_if_missing=True) as db:
        db.put(b"a", b"1")
    (path / "notes.txt").write_text("mine, not levels3's")
    levels3.destroy_db(str(path))
    assert sorted(p.name for p in path.iterdir() if p.name != ".levels3-tmp") == ["notes.txt"]
    assert (path / "notes.txt").read_text() == "mine, not levels3's"


# -- comparator arguments -------------------------------------------------------------------------


COMPARATOR_ARGUMENTS = [
    ("name without comparator", {"comparator_name": b"x"}),
    ("comparator without name", {"comparator": bytewise}),
    ("comparator not callable", {"comparator": 1, "comparator_name": b"x"}),
    ("name an int", {"comparator": bytewise, "comparator_name": 1}),
    ("name a str", {"comparator": bytewise, "comparator_name": "x"}),
]


@pytest.mark.parametrize("kwargs", [k for _, k in COMPARATOR_ARGUMENTS], ids=[n for n, _ in COMPARATOR_ARGUMENTS])
def test_comparator_arguments_are_checked_as_in_plyvel(tmp_path, kwargs: dict) -> None:
    expected = raised(lambda: plyvel.DB(str(tmp_path / "plyvel"), create_if_missing=True, **kwargs))
    got = raised(lambda: levels3.DB(str(tmp_path / "levels3"), create_if_missing=True, **kwargs))
    assert type(got) is type(expected), (got, expected)
    if isinstance(expected, ValueError):
        assert str(got) == str(expected)  # "'comparator' and 'comparator_name' must be specified together"
    assert not (tmp_path / "levels3").exists()  # refused before anything was created


# -- the comparator-mismatch message --------------------------------------------------------------


MISMATCHES = [
    ("bytewise, opened with a custom one", None, (bytewise, b"test.Other")),
    ("custom, opened bytewise", (bytewise, b"test.Mine"), None),
    ("custom, opened with another custom one", (bytewise, b"test.Mine"), (bytewise, b"test.Theirs")),
]


def _comparator(spec: tuple | None) -> dict:
    return {} if spec is None else {"comparator": spec[0], "comparator_name": spec[1]}


@pytest.mark.parametrize("made,used", [(m, u) for _, m, u in MISMATCHES], ids=[n for n, _, _ in MISMATCHES])
def test_comparator_mismatch_message_is_plyvels(tmp_path, made, used) -> None:
    with plyvel.DB(str(tmp_path / "plyvel"), create_if_missing=True, **_comparator(made)) as db:
        db.put(b"a", b"1")
    expected = raised(lambda: plyvel.DB(str(tmp_path / "plyvel"), **_comparator(used)))
    # plyvel's message is LevelDB's Status as bytes (its str() is that bytes' repr)
    text = expected.args[0].decode()
    assert "does not match existing comparator" in text

    url = str(tmp_path / "levels3")
    with levels3.DB(url, create_if_missing=True, **_comparator(made)) as db:
        db.put(b"a", b"1")
        db.checkpoint("c")
    for how in ({}, {"read_only": True}, {"checkpoint": "c"}):  # writer, follower, checkpoint
        got = raised(lambda: levels3.DB(url, **_comparator(used), **how))
        assert type(got) is levels3.Error and str(got) == text, (how, str(got))


# -- key in db: a real lookup (the deliberate difference) ------------------------------------------


def test_contains_is_a_lookup_on_db_prefixed_db_and_snapshot(tmp_path) -> None:
    with plyvel.DB(str(tmp_path / "plyvel"), create_if_missing=True) as pdb:
        pdb.put(b"a", b"1")
        assert (b"a" in pdb) is False  # plyvel 1.5.1: iterates (key, value) pairs; the README says so

    with levels3.DB(str(tmp_path / "levels3"), create_if_missing=True) as db:
        db.put(b"a", b"1")
        db.put(b"p:b", b"")  # an empty value is still there
        db.put(b"gone", b"x")
        db.delete(b"gone")
        snap = db.snapshot()
        db.put(b"later", b"1")
        db.delete(b"a")
        sub = db.prefixed_db(b"p:")
        assert b"p:b" in db and b"later" in db and b"a" not in db and b"gone" not in db
        assert b"b" in sub and b"p:b" not in sub and b"later" not in sub
        assert b"a" in snap and b"later" not in snap and b"gone" not in snap
        psnap = sub.snapshot()
        assert b"b" in psnap and b"x" not in psnap
        for container in (db, sub, snap, psnap):
            for bad in ("a", None, 1, bytearray(b"a")):
                with pytest.raises(TypeError):
                    bad in container  # noqa: B015 - the membership test is the call under test
        snap.close()
        with pytest.raises(RuntimeError):
            b"a" in snap  # noqa: B015
    with pytest.raises(RuntimeError):
        b"a" in db  # noqa: B015


def test_readme_records_the_contains_difference() -> None:
    text = README.read_text()
    bullet = re.search(r"^- `key in db`.*?(?=^- |\n\n)", text, re.MULTILINE | re.DOTALL)
    assert bullet and "plyvel 1.5.1" in bullet.group(0) and "TypeError" in bullet.group(0), \
        "the README must say how `in` differs from plyvel"


# -- stats() ------------------------------------------------------------------------------------------


def test_a_clean_create_counts_no_errors(tmp_path, mocked_aws) -> None:
    import boto3

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="levels3-stats")
    for url, options in ((str(tmp_path / "db"), {}), ("s3://levels3-stats/db", {"region": "us-east-1"})):
        with levels3.DB(url, create_if_missing=True, **options) as db:
            db.put(b"a", b"1", sync=True)
            assert db.get(b"a") == b"1"
            stats = db.stats()
        # the probe's refused conditional writes and the absent CURRENT of a new database are answers
        assert stats["errors"] == 0, (url, stats)
        assert stats["refused"] >= 1, (url, stats)


def test_every_stats_key_is_in_the_readme(tmp_path) -> None:
    with levels3.DB(str(tmp_path / "db"), create_if_missing=True) as db:
        keys = set(db.stats())
    text = README.read_text()
    section = text[text.index("`db.stats()`"):]
    section = section[:section.index("\n## ")]
    missing = sorted(k for k in keys if f"`{k}`" not in section)
    assert not missing, f"stats() keys the README does not describe: {missing}"
