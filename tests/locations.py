"""Database locations for tests: the same suite on the local store, moto in-process, a moto server and SeaweedFS."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import boto3
import pytest

import levels3
from levels3.stores import LocalDirStore, ObjectStore, S3Store
from levels3.options import S3Options

REGION = "us-east-1"

KINDS = ("local", "mock_aws", "moto_server", "seaweedfs")


@dataclass
class DBLocation:
    """Where a test database lives, with the store options needed to open it."""

    kind: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    bucket: str = ""
    prefix: str = ""

    def open(self, **kwargs: Any) -> levels3.DB:
        return levels3.DB(self.url, **{**self.options, **kwargs})

    def sibling(self, name: str) -> "DBLocation":
        if self.kind == "local":
            return DBLocation(self.kind, f"{self.url}-{name}", dict(self.options))
        prefix = f"{self.prefix}-{name}"
        return DBLocation(self.kind, f"s3://{self.bucket}/{prefix}", dict(self.options), self.bucket, prefix)

    def raw_store(self) -> ObjectStore:
        """The bare store under the database (no levels3 layers), for inspecting objects."""
        if self.kind == "local":
            return LocalDirStore(self.url, create=False)
        return S3Store(self.bucket, self.prefix, S3Options(**self.options))

    def read_objects(self, predicate: Callable[[str], bool]) -> list[bytes]:
        store = self.raw_store()
        try:
            return [store.get(info.key) for info in store.list() if predicate(info.key)]
        finally:
            store.close()


def make_location(kind: str, request: pytest.FixtureRequest, tmp_path) -> DBLocation:
    if kind == "local":
        return DBLocation(kind, str(tmp_path / f"db-{uuid.uuid4().hex[:8]}"))
    if kind == "mock_aws":
        request.getfixturevalue("mocked_aws")
        bucket = f"levels3-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=bucket)
        return DBLocation(kind, f"s3://{bucket}/tests/db", {"region": REGION}, bucket, "tests/db")
    bucket = f"levels3-{uuid.uuid4().hex[:12]}"
    if kind == "seaweedfs":
        weed = request.getfixturevalue("seaweedfs")
        weed.create_bucket(bucket)
        options = weed.options(request_timeout=10)
        return DBLocation(kind, f"s3://{bucket}/tests/db", options, bucket, "tests/db")
    if kind != "moto_server":
        raise ValueError(f"unknown location kind {kind!r}")
    endpoint = request.getfixturevalue("moto_endpoint")
    boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(Bucket=bucket)
    options = {"region": REGION, "endpoint_url": endpoint, "request_timeout": 10}
    return DBLocation(kind, f"s3://{bucket}/tests/db", options, bucket, "tests/db")
