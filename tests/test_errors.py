"""Bad input and failing stores: one clear exception, no crash, no retry storm, no secret shown."""

from __future__ import annotations

import logging
import os
import random
import time

import boto3
import pytest

import levels3
from levels3.stores import FaultInjectingStore

from .conftest import REGION
from .processes import assert_clean_exit, run_python


@pytest.mark.parametrize("name", ["ftp://host/db", "s3://", "s3://ab/db", "s3://bucket/a//b", "file://host/db", ""])
def test_bad_urls_are_refused_before_anything_is_touched(name):
    with pytest.raises(levels3.ConfigurationError):
        levels3.DB(name, create_if_missing=True)


def test_bad_option_types(tmp_path):
    with pytest.raises(TypeError):
        levels3.DB(str(tmp_path / "db"), create_if_missing=True, write_buffer_size="big")
    with pytest.raises(TypeError, match="unexpected keyword"):
        levels3.DB(str(tmp_path / "db"), create_if_missing=True, no_such_option=1)
    with pytest.raises(levels3.ConfigurationError):
        levels3.DB(str(tmp_path / "db"), create_if_missing=True, lease_duration=-1)
    with pytest.raises(TypeError):
        levels3.DB(12345)
    assert not (tmp_path / "db").exists()


def test_missing_database_without_create(db_location):
    with pytest.raises(levels3.Error, match="does not exist"):
        db_location.open()


@pytest.mark.parametrize("where", ["mock_aws", "moto_server"])
def test_missing_bucket_is_one_clear_error(where, request, caplog):
    options = {"region": REGION, "retry_max_attempts": 5, "retry_base_delay": 1.0}
    if where == "mock_aws":
        request.getfixturevalue("mocked_aws")
    else:
        options["endpoint_url"] = request.getfixturevalue("moto_endpoint")
    began = time.monotonic()
    with pytest.raises(levels3.StoreError, match="levels3-missing-bucket"):
        levels3.DB("s3://levels3-missing-bucket/db", create_if_missing=True, **options)
    assert time.monotonic() - began < 5  # no backoff: a missing bucket is not transient


@pytest.mark.parametrize("case", ["unknown key", "wrong secret", "no permission"])
def test_bad_credentials_are_one_clear_error(case, moto_auth, moto_endpoint, server_bucket, caplog):
    caplog.set_level(logging.DEBUG, logger="levels3")
    access_key, secret_key = {
        "unknown key": ("AKIALEVELS3NOBODY001", "levels3-made-up-secret-771"),
        "wrong secret": (moto_auth["AccessKeyId"], moto_auth["SecretAccessKey"] + "x"),
        "no permission": (moto_auth["AccessKeyId"], moto_auth["SecretAccessKey"]),
    }[case]
    began = time.monotonic()
    with pytest.raises(levels3.StoreError) as info:
        levels3.DB(f"s3://{server_bucket}/db", create_if_missing=True, endpoint_url=moto_endpoint,
                   region=REGION, access_key=access_key, secret_key=secret_key, retry_base_delay=1.0)
    assert time.monotonic() - began < 5
    shown = " ".join([str(info.value), repr(info.value), caplog.text])
    assert secret_key not in shown and access_key not in str(info.value)


def test_endpoint_ignoring_conditional_writes_is_refused(mocked_aws):
    """An endpoint that drops If-None-Match (as some vendors do) cannot host a writer."""
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket="no-conditions")

    def drop_conditions(params, **_):
        params.pop("IfNoneMatch", None)
        params.pop("IfMatch", None)

    client.meta.events.register("provide-client-params.s3.PutObject", drop_conditions)
    with pytest.raises(levels3.StoreError, match="conditional writes|If-None-Match"):
        levels3.DB("s3://no-conditions/db", create_if_missing=True, client=client)
    assert "Contents" not in client.list_objects_v2(Bucket="no-conditions", Prefix="db/CURRENT")


def test_non_bytes_keys_and_values(tmp_path):
    with levels3.DB(str(tmp_path / "db"), create_if_missing=True) as db:
        for bad in ("text", 1, None, bytearray(b"x")):
            with pytest.raises(TypeError):
                db.put(bad, b"v")
            with pytest.raises(TypeError):
                db.get(bad)
        with pytest.raises(TypeError):
            db.put(b"k", "text")
        db.put(b"k", b"v")
        assert db.get(b"k") == b"v"


def test_failed_uploads_become_background_errors(tmp_path):
    """A store that stops accepting uploads: writes raise, nothing is silently dropped."""
    faults: list[FaultInjectingStore] = []

    def wrap(store):
        faults.append(FaultInjectingStore(store, rate=0.0, kinds=("500",), when=("before",)))
        return faults[0]

    url = str(tmp_path / "db")
    db = levels3.DB(url, create_if_missing=True, wrap_store=wrap, retry_max_attempts=2, retry_base_delay=0.01)
    db.put(b"durable", b"1", sync=True)
    faults[0].rate = 1.0
    with pytest.raises(levels3.IOError):
        db.put(b"lost", b"2", sync=True)
    with pytest.raises(levels3.IOError):
        db.put(b"later", b"3")  # LevelDB's background error: every later write fails too
    faults[0].rate = 0.0
    try:
        db.close()
    except levels3.Error:
        pass
    with levels3.DB(url) as db:
        assert db.get(b"durable") == b"1"


def test_workload_survives_five_percent_transient_faults(tmp_path):
    """100k keys with put, delete, batches and reopen: with 5% injected faults at the store,
    the result equals a fault-free run's and no error reaches the user."""

    def workload(url, wrap):
        rng = random.Random(5)
        options = dict(wrap_store=wrap, retry_max_attempts=8, retry_base_delay=0.001,
                       write_buffer_size=256 * 1024, max_file_size=256 * 1024)
        db = levels3.DB(url, create_if_missing=True, **options)
        for round_ in range(4):
            for i in range(20_000):
                key = b"%06d" % rng.randrange(100_000)
                if rng.random() < 0.1:
                    db.delete(key, sync=rng.random() < 0.01)
                else:
                    db.put(key, os.urandom(8) + key, sync=rng.random() < 0.01)
            with db.write_batch(sync=True) as batch:
                for i in range(5_000):
                    batch.put(b"batch%d-%05d" % (round_, i), b"%d" % i)
            db.close()
            db = levels3.DB(url, **options)
        result = {k: v[8:] for k, v in db}
        db.close()
        return result

    injected = []

    def faulty(store):
        injected.append(FaultInjectingStore(store, rate=0.05, seed=11))
        return injected[-1]

    clean = workload(str(tmp_path / "clean"), None)
    faulted = workload(str(tmp_path / "faulted"), faulty)
    assert sum(f.injected for f in injected) > 20
    assert faulted == clean
    assert len(clean) > 50_000


def test_a_log_that_cannot_be_fetched_fails_the_open_and_loses_nothing(tmp_path):
    """LevelDB (without paranoid_checks) skips a log it cannot open and commits past it. A WAL fetch that
    fails must fail the open instead, for a writer and a follower, and leave the writes for the next open."""
    from levels3.errors import StoreError

    class LogsUnreadable(FaultInjectingStore):
        def get(self, key, start=0, end=None):
            if ".log/" in key:
                raise StoreError(f"get {key!r}: access denied (injected)", operation="get", key=key)
            return super().get(key, start, end)

    url = str(tmp_path / "db")
    # A writer that ends without closing (a clean close would write the memtable to a table).
    assert_clean_exit(run_python("""
        import os, sys, levels3
        db = levels3.DB(sys.argv[1], create_if_missing=True)
        for i in range(20):
            db.put(b"k%02d" % i, b"v", sync=True)  # in the WAL only: no table yet
        os._exit(0)
    """, url))
    broken = {"wrap_store": lambda s: LogsUnreadable(s, rate=0.0), "cache_dir": None}
    with pytest.raises(levels3.IOError, match="write-ahead log"):
        levels3.DB(url, read_only=True, **broken)
    with pytest.raises(levels3.IOError, match="write-ahead log"):
        levels3.DB(url, **broken)
    with levels3.DB(url, cache_dir=str(tmp_path / "fresh-cache")) as db:
        assert sum(1 for _ in db) == 20


def test_a_failure_on_the_compaction_thread_is_raised_chained_by_the_next_write(tmp_path):
    """A table upload that fails in LevelDB's background flush surfaces on a later write, as
    levels3.IOError whose cause is the store's own error (not a copy of its text)."""
    from levels3.errors import StoreError

    class TablesRefused(FaultInjectingStore):
        def put(self, key, data, **kwargs):
            if key.endswith(".ldb"):
                raise StoreError(f"put {key!r}: access denied (injected)", operation="put", key=key)
            return super().put(key, data, **kwargs)

    db = levels3.DB(str(tmp_path / "db"), create_if_missing=True, write_buffer_size=64 * 1024,
                    wrap_store=lambda s: TablesRefused(s, rate=0.0))
    try:
        with pytest.raises(levels3.IOError) as info:
            for i in range(100_000):  # the memtable fills, the flush's table upload fails
                db.put(b"k%06d" % i, os.urandom(100))
        cause = info.value.__cause__
        assert isinstance(cause, StoreError) and cause.operation == "put" and cause.key.endswith(".ldb")
        assert "access denied (injected)" in str(info.value)
        assert "levels3 failure" not in str(info.value)  # the token that carried it is not shown
        with pytest.raises(levels3.IOError) as again:  # LevelDB keeps the error: so does every later write
            db.put(b"more", b"x")
        assert again.value.__cause__ is cause
    finally:
        try:
            db.close()
        except levels3.Error:
            pass


def test_failure_registry_keeps_the_last_exceptions_by_token():
    from levels3.engine.control import FailureRegistry

    registry = FailureRegistry(capacity=2)
    try:
        raise ValueError("first")
    except ValueError as exc:
        first = exc
        message = registry.note(exc)
    assert first.__traceback__ is None  # no frames of the calling thread are kept alive
    assert registry.take(f"IO error: x: {message}") == ("IO error: x: ValueError: first", first)
    assert registry.take(message)[1] is first  # looked up, not consumed
    registry.note(KeyError("second"))
    registry.note(KeyError("third"))
    assert registry.take(message) == ("ValueError: first", None)  # evicted: the Status class stands
