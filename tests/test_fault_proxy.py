"""The test toolkit itself: the fault proxy and the SeaweedFS launcher (levels3.testing)."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import botocore.config
import botocore.exceptions
import pytest

from levels3.testing import FaultProxy, Rule, SeaweedFS
from levels3.testing.seaweedfs import _free_ports

from .locations import REGION


def client(endpoint: str, **config):
    config.setdefault("retries", {"total_max_attempts": 1})
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION, config=botocore.config.Config(**config))


def test_many_pooled_connections_at_once(proxy, server_bucket):
    """32 threads through one boto3 pool (keep-alive), bodies of many sizes: every byte arrives."""
    s3 = client(proxy.url, max_pool_connections=32)

    def roundtrip(i: int) -> bool:
        body = os.urandom(i * 997 % 200_000)
        s3.put_object(Bucket=server_bucket, Key=f"k/{i}", Body=body)
        return s3.get_object(Bucket=server_bucket, Key=f"k/{i}")["Body"].read() == body

    with ThreadPoolExecutor(32) as pool:
        assert all(pool.map(roundtrip, range(200)))
    assert proxy.count(method="PUT") == 200 and proxy.count(method="GET") == 200
    assert all(a.status == 200 for a in proxy.arrivals)


def test_chunked_request_bodies_are_forwarded(proxy, server_bucket):
    s3 = client(proxy.upstream)
    body = b"".join(os.urandom(1000) for _ in range(5))
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.putrequest("PUT", f"/{server_bucket}/chunked")  # moto does not check signatures
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for start in range(0, len(body), 1000):
        conn.send(b"%x\r\n%s\r\n" % (1000, body[start:start + 1000]))
    conn.send(b"0\r\n\r\n")
    assert conn.getresponse().status == 200
    conn.close()
    assert s3.get_object(Bucket=server_bucket, Key="chunked")["Body"].read() == body


def test_rules_match_method_key_query_and_headers(proxy, server_bucket):
    s3 = client(proxy.url)
    listing = proxy.add(Rule("error", query="list-type", count=1))
    conditional = proxy.add(Rule("error", status=500, method="PUT", headers=["If-None-Match"], count=2))
    only_logs = proxy.add(Rule("error", method="GET", key=r"\.log/"))
    s3.put_object(Bucket=server_bucket, Key="a.ldb", Body=b"x")  # unconditional: no rule
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ClientError, match="InternalError"):
            s3.put_object(Bucket=server_bucket, Key="b", Body=b"x", IfNoneMatch="*")
    s3.put_object(Bucket=server_bucket, Key="b", Body=b"x", IfNoneMatch="*")  # count ran out
    with pytest.raises(botocore.exceptions.ClientError, match="SlowDown"):
        s3.list_objects_v2(Bucket=server_bucket)
    assert s3.list_objects_v2(Bucket=server_bucket)["KeyCount"] == 2
    assert s3.get_object(Bucket=server_bucket, Key="a.ldb")["Body"].read() == b"x"
    with pytest.raises(botocore.exceptions.ClientError, match="SlowDown"):
        s3.get_object(Bucket=server_bucket, Key="w1/000003.log/0")
    assert (listing.fired, conditional.fired, only_logs.fired) == (1, 2, 1)
    assert proxy.count(query="list-type") == 2 and proxy.count(method="PUT", headers=["If-None-Match"]) == 3


def test_the_same_seed_injects_the_same_faults(moto_endpoint, server_bucket):
    def run(seed: int) -> list[bool]:
        with FaultProxy(moto_endpoint, seed=seed, rules=[Rule("error", method="HEAD", rate=0.3)]) as proxy:
            s3 = client(proxy.url)
            for _ in range(40):
                try:
                    s3.head_object(Bucket=server_bucket, Key="nothing")
                except botocore.exceptions.ClientError:
                    pass
            return [a.status == 503 for a in proxy.arrivals]

    first = run(1)
    assert first == run(1) and first != run(2)
    assert 3 < sum(first) < 30


def test_dropped_reset_and_held_responses(proxy, server_bucket):
    s3 = client(proxy.url, read_timeout=0.5, connect_timeout=0.5)
    s3.put_object(Bucket=server_bucket, Key="big", Body=b"z" * 300_000)
    proxy.add(Rule("drop", method="PUT", count=1))
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        s3.put_object(Bucket=server_bucket, Key="landed", Body=b"y")
    assert s3.get_object(Bucket=server_bucket, Key="landed")["Body"].read() == b"y"  # it did land
    proxy.add(Rule("reset", method="GET", count=1))
    with pytest.raises(botocore.exceptions.ResponseStreamingError):
        s3.get_object(Bucket=server_bucket, Key="big")["Body"].read()
    proxy.add(Rule("hold", method="HEAD", count=1, seconds=2))
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        s3.head_object(Bucket=server_bucket, Key="big")
    assert s3.head_object(Bucket=server_bucket, Key="big")["ContentLength"] == 300_000


def test_latency_and_bandwidth(proxy, server_bucket):
    s3 = client(proxy.url)
    s3.put_object(Bucket=server_bucket, Key="mb", Body=b"m" * 500_000)
    proxy.latency, proxy.bandwidth = 0.05, 2_000_000  # 50 ms per request, 2 MB/s per stream
    began = time.monotonic()
    s3.get_object(Bucket=server_bucket, Key="mb")["Body"].read()
    assert time.monotonic() - began >= 0.05 + 0.25


def test_arrivals_never_hold_credentials(proxy, server_bucket):
    s3 = boto3.client("s3", endpoint_url=proxy.url, region_name=REGION, aws_access_key_id="AKIAPROXYTEST",
                      aws_secret_access_key="proxy-secret", aws_session_token="proxy-session-token")
    s3.put_object(Bucket=server_bucket, Key="k", Body=b"v", Metadata={"levels3-token": "abc"})
    (arrival,) = proxy.arrivals
    assert arrival.headers.get("x-amz-meta-levels3-token") == "abc"
    assert not any(name.lower() in ("authorization", "x-amz-security-token") for name in arrival.headers)


def test_stop_ends_stalled_and_idle_connections(moto_endpoint, server_bucket):
    gate = threading.Event()
    proxy = FaultProxy(moto_endpoint, rules=[Rule("stall", method="GET", gate=gate)]).start()
    idle = socket.create_connection(("127.0.0.1", proxy.port))  # a pooled connection, never used
    s3 = client(proxy.url, read_timeout=30)
    errors: list[BaseException] = []

    def stalled() -> None:
        try:
            s3.get_object(Bucket=server_bucket, Key="anything")
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    thread = threading.Thread(target=stalled)
    thread.start()
    while not proxy.arrivals:
        time.sleep(0.01)
    began = time.monotonic()
    proxy.stop()
    assert time.monotonic() - began < 5
    thread.join(10)
    assert not thread.is_alive() and len(errors) == 1
    assert idle.recv(1) == b""  # closed
    idle.close()


def test_free_ports_leave_room_for_the_grpc_twins():
    ports = _free_ports(5)
    assert len(set(ports) | {p + 10000 for p in ports}) == 10
    for port in ports + [p + 10000 for p in ports]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_seaweedfs_checks_signatures_and_cleans_up(seaweedfs):
    bucket = f"levels3-weed-{os.urandom(4).hex()}"
    seaweedfs.create_bucket(bucket)
    seaweedfs.client().put_object(Bucket=bucket, Key="k", Body=b"v")
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        seaweedfs.client(aws_secret_access_key="not-the-secret").get_object(Bucket=bucket, Key="k")
    own = SeaweedFS().start()
    directory = own.directory
    assert directory is not None and os.path.isdir(directory)
    assert "secret" not in repr(own)
    own.stop()
    assert not os.path.exists(directory)
    with pytest.raises(Exception):
        socket.create_connection(("127.0.0.1", own.ports["s3"]), timeout=1).close()
