"""Over a real HTTP connection: faults injected by a proxy on 127.0.0.1, real authentication (SeaweedFS).

The proxy (levels3.testing.FaultProxy) counts requests as they arrive, so these tests see what
botocore does below levels3's own retry layer.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest

import levels3
from levels3.errors import PreconditionFailed, StoreError
from levels3.options import S3Options
from levels3.stores import CountingStore, PutMode, RetryingStore, S3Store
from levels3.testing import Rule

from .locations import REGION

ROOT = str(Path(__file__).resolve().parent.parent)


def no_sleep(_: float) -> None:
    pass


def s3_store(endpoint: str, bucket: str, attempts: int, **options) -> tuple[RetryingStore, CountingStore]:
    counting = CountingStore(S3Store(bucket, "db", S3Options(endpoint_url=endpoint, region=REGION,
                                                             request_timeout=5, **options)))
    return RetryingStore(counting, max_attempts=attempts, base_delay=0.001, sleep=no_sleep), counting


# -- one retry layer -------------------------------------------------------------------------------


@pytest.mark.parametrize("failures, attempts", [(0, 1), (1, 1), (2, 3), (3, 4)])
def test_botocore_never_retries_by_itself(proxy, server_bucket, failures, attempts):
    """503 answered `failures` times: every attempt RetryingStore makes is one request on the wire."""
    store, counting = s3_store(proxy.url, server_bucket, attempts)
    proxy.add(Rule("error", status=503, method="PUT", count=failures))
    if failures < attempts:
        store.put("k", b"v")
        assert store.get("k") == b"v"
    else:
        with pytest.raises(StoreError) as info:
            store.put("k", b"v")
        assert "SlowDown" in str(info.value) or "503" in str(info.value)
    expected = min(failures + 1, attempts)
    assert proxy.count(method="PUT") == expected
    assert counting.snapshot()["requests"]["put"] == expected


def test_a_conditional_put_whose_response_was_lost_lands_once_and_succeeds(proxy, server_bucket):
    """The PUT lands, the connection drops before the response: the retry sees 412, the token
    check (one HEAD) recognises the write as ours, and the put succeeds."""
    store, _ = s3_store(proxy.url, server_bucket, 3)
    proxy.add(Rule("drop", method="PUT", headers=["If-None-Match"], count=1))
    etag = store.put("CURRENT", b"MANIFEST-000001", mode=PutMode.CREATE)
    assert [a.status for a in proxy.arrivals if a.method == "PUT"] == [None, 412]
    assert proxy.count(method="HEAD") == 1
    assert store.head("CURRENT").etag == etag and store.get("CURRENT") == b"MANIFEST-000001"
    with pytest.raises(PreconditionFailed):  # someone else's object still refuses
        store.put("CURRENT", b"other", mode=PutMode.CREATE)


def test_a_synced_put_whose_wal_response_was_lost_is_acknowledged(proxy, server_bucket):
    db = levels3.DB(f"s3://{server_bucket}/db", create_if_missing=True, endpoint_url=proxy.url, region=REGION,
                    request_timeout=5, retry_base_delay=0.01)
    try:
        db.put(b"warm", b"up", sync=True)
        rule = proxy.add(Rule("drop", method="PUT", key=r"\.log/", count=1))
        db.put(b"key", b"value", sync=True)  # raised IOError while botocore resent by itself
        assert rule.fired == 1
        db.put(b"after", b"works", sync=True)
    finally:
        db.close()
    with levels3.DB(f"s3://{server_bucket}/db", endpoint_url=proxy.upstream, region=REGION) as again:
        assert again.get(b"key") == b"value" and again.get(b"after") == b"works"


# -- the capability probe --------------------------------------------------------------------------


def test_an_endpoint_ignoring_conditional_delete_is_refused(proxy, server_bucket):
    """LocalStack 4.4 ignores If-Match on DELETE: a closing writer could delete its successor's lease."""
    proxy.add(Rule("rewrite", method="DELETE", drop_headers=["If-Match"]))
    with pytest.raises(StoreError, match="If-Match on DELETE"):
        levels3.DB(f"s3://{server_bucket}/db", create_if_missing=True, endpoint_url=proxy.url, region=REGION)
    client = boto3.client("s3", endpoint_url=proxy.upstream, region_name=REGION)
    assert client.list_objects_v2(Bucket=server_bucket).get("KeyCount") == 0  # nothing written, probe gone
    assert proxy.count(method="DELETE", headers=["If-Match"]) == 1


# -- real authentication (SeaweedFS) ---------------------------------------------------------------


@pytest.mark.parametrize("case, message", [("wrong secret", "secret key does not match"),
                                           ("unknown key", "access key is not known")])
def test_bad_credentials_on_seaweedfs_fail_once_and_clearly(seaweedfs, case, message):
    bucket = f"levels3-auth-{os.urandom(6).hex()}"
    seaweedfs.create_bucket(bucket)
    options = seaweedfs.options(**({"secret_key": "levels3-wrong-secret-Q7"} if case == "wrong secret"
                                   else {"access_key": "levels3-nobody"}))
    store, counting = s3_store(options.pop("endpoint_url"), bucket, 4, **{k: v for k, v in options.items()
                                                                          if k != "region"})
    with pytest.raises(StoreError, match=message) as info:
        store.put("CURRENT", b"x")
    assert counting.total_requests == 1
    assert options["secret_key"] not in str(info.value) and options["access_key"] not in str(info.value)


@pytest.mark.parametrize("probed", [False, True])
def test_a_wrong_secret_on_seaweedfs_is_one_clear_error_without_a_traceback(seaweedfs, probed, caplog):
    """The open raises one error saying what is wrong; nothing is logged with a traceback.
    ``probed``: the endpoint was probed by an earlier open, so the LOCK's create is the first request."""
    caplog.set_level(logging.DEBUG)
    bucket = f"levels3-auth-{os.urandom(6).hex()}"
    seaweedfs.create_bucket(bucket)
    url = f"s3://{bucket}/db"
    if probed:
        levels3.DB(url, create_if_missing=True, **seaweedfs.options()).close()
    wrong = seaweedfs.options(secret_key="levels3-wrong-secret-Q7")
    with pytest.raises(StoreError, match="secret key does not match") as info:
        levels3.DB(url, create_if_missing=True, **wrong)
    assert "wrong-secret" not in str(info.value)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert not [r for r in caplog.records if r.name.startswith("levels3") and r.levelno >= logging.WARNING]
    with pytest.raises(StoreError, match="secret key does not match"):
        levels3.DB(url, read_only=True, **wrong)


# -- credentials in debug logs ---------------------------------------------------------------------

_DEBUG_WORKLOAD = textwrap.dedent("""
    import logging, os, sys
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    import levels3
    endpoint, bucket, how = sys.argv[1:4]
    options = dict(endpoint_url=endpoint, region="us-east-1", flush_interval=0.05, lease_renewal=0.2,
                   lease_duration=3.0)
    if how == "explicit":
        options.update(access_key="AKIALEVELS3EXPLICIT1", secret_key="levels3-SECRET-explicit-9f8e",
                       session_token="levels3-SESSION-explicit-1a2b")
    else:  # the standard chain (environment variables)
        os.environ.update(AWS_ACCESS_KEY_ID="AKIALEVELS3ENVIRON01", AWS_SECRET_ACCESS_KEY="levels3-SECRET-env-7c6d",
                          AWS_SESSION_TOKEN="levels3-SESSION-env-5e4f")
    with levels3.DB(f"s3://{bucket}/db", create_if_missing=True, **options) as db:
        for i in range(50):
            db.put(b"k%03d" % i, b"v", sync=i % 10 == 0)
        db.get(b"k001")
    with levels3.DB(f"s3://{bucket}/db", read_only=True, **options) as follower:
        assert follower.get(b"k049") == b"v"
    print("done")
""")


@pytest.mark.parametrize("how", ["explicit", "environment"])
def test_no_credential_in_any_debug_log_record(moto_endpoint, server_bucket, how):
    """With logging.basicConfig(level=DEBUG), botocore logs every request's headers and the
    canonical request it signs: the session token, secret and access key id never show."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-c", _DEBUG_WORKLOAD, moto_endpoint, server_bucket, how],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr[-3000:]
    log = result.stderr
    assert "botocore.endpoint" in log and "Sending http request" in log  # the records are there
    assert "x-amz-security-token:***" in log.lower()  # and were redacted, not dropped
    secrets = {"explicit": ["AKIALEVELS3EXPLICIT1", "levels3-SECRET-explicit-9f8e", "levels3-SESSION-explicit-1a2b"],
               "environment": ["AKIALEVELS3ENVIRON01", "levels3-SECRET-env-7c6d", "levels3-SESSION-env-5e4f"]}[how]
    shown = {value: log.count(value) for value in secrets if value in log}
    assert shown == {}, json.dumps(shown)


# -- bodies cut midway -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [179, 300_000])
def test_a_body_reset_midway_is_retried(proxy, server_bucket, size):
    """A small body cut midway surfaces from urllib3 unwrapped (ProtocolError), a large one as
    botocore's ResponseStreamingError: both are transient, so the GET is retried and succeeds."""
    store, counting = s3_store(proxy.url, server_bucket, 3)
    data = os.urandom(size)
    store.put("w1/000005.ldb", data)
    proxy.add(Rule("reset", method="GET", count=1))
    assert store.get("w1/000005.ldb") == data
    assert proxy.count(method="GET") == 2 and counting.snapshot()["requests"]["get"] == 2
