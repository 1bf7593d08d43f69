"""Shared fixtures: object stores over a local directory, moto in-process, a moto HTTP server and SeaweedFS."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Callable, Iterator

import pytest

# Fake credentials before anything imports boto3, so no test can ever reach real AWS
# or read the developer's own profile.
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN"):
    os.environ.pop(_name, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_SECURITY_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    AWS_EC2_METADATA_DISABLED="true",
)

import boto3  # noqa: E402
import requests  # noqa: E402
from moto import mock_aws  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from levels3.options import S3Options  # noqa: E402
from levels3.testing import FaultProxy, SeaweedFS  # noqa: E402

from .locations import KINDS, REGION, DBLocation, make_location  # noqa: E402
from levels3.stores import LocalDirStore, ObjectStore, S3Store  # noqa: E402


def unique_bucket() -> str:
    return f"levels3-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server on loopback, shared by the whole session."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server on loopback (real signatures, atomic conditional writes), for the session."""
    with SeaweedFS() as server:
        yield server


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A fault-injecting HTTP proxy in front of the moto server, with no rules yet."""
    with FaultProxy(moto_endpoint, seed=13) as running:
        yield running


@pytest.fixture
def server_bucket(moto_endpoint: str) -> str:
    """A fresh, empty bucket on the moto server."""
    bucket = unique_bucket()
    boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def server_options(moto_endpoint: str) -> S3Options:
    return S3Options(endpoint_url=moto_endpoint, region=REGION, request_timeout=10)


@pytest.fixture
def mocked_aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture(params=KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(store_kind: str, request: pytest.FixtureRequest, tmp_path) -> Iterator[ObjectStore]:
    """A bare, empty object store of each backend kind."""
    if store_kind == "local":
        result: ObjectStore = LocalDirStore(tmp_path / "db", create=True)
    elif store_kind == "mock_aws":
        request.getfixturevalue("mocked_aws")
        bucket = unique_bucket()
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
        result = S3Store(bucket, "some/db", S3Options(region=REGION))
    elif store_kind == "seaweedfs":
        weed: SeaweedFS = request.getfixturevalue("seaweedfs")
        bucket = unique_bucket()
        weed.create_bucket(bucket)
        result = S3Store(bucket, "some/db", S3Options(**weed.options(request_timeout=10)))
    else:
        bucket = request.getfixturevalue("server_bucket")
        result = S3Store(bucket, "some/db", request.getfixturevalue("server_options"))
    try:
        yield result
    finally:
        result.close()


@pytest.fixture
def moto_auth(moto_endpoint: str, server_bucket: str) -> Iterator[dict[str, str]]:
    """Turn on moto's credential checking (off by default) for one test.

    Yields the access key of a fresh IAM user that has no permissions at all.
    """
    iam = boto3.client("iam", endpoint_url=moto_endpoint, region_name=REGION)
    user = f"levels3-{uuid.uuid4().hex[:12]}"
    iam.create_user(UserName=user)
    creds = iam.create_access_key(UserName=user)["AccessKey"]
    requests.post(f"{moto_endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield creds
    finally:
        requests.post(f"{moto_endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()


@pytest.fixture(params=KINDS)
def db_location(request: pytest.FixtureRequest, tmp_path) -> Iterator[DBLocation]:
    """An empty database location of each kind; the integration tests run on all of them."""
    yield make_location(request.param, request, tmp_path)


@pytest.fixture
def location_factory(request: pytest.FixtureRequest, tmp_path) -> Callable[[str], DBLocation]:
    return lambda kind: make_location(kind, request, tmp_path)
