"""Store options and URL parsing: where a database lives and how its backend behaves.

Owns StoreOptions (with its old name S3Options kept as an alias: the same
options configure file:// databases) and Location. It may import only
levels3.errors; everything else reads these values.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from .errors import ConfigurationError

MiB = 1024 * 1024


@dataclass
class StoreOptions:
    """Everything about *where* the database lives and how the backend behaves.

    Durations are seconds (int or float); sizes are bytes.  ``None`` for
    ``access_key``/``secret_key``/``region`` means boto3's standard chain.
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    path_style: bool = False
    cache_dir: str | None = None  # None: a private temporary directory removed on close
    max_cache_bytes: int = 1024 * MiB
    max_object_size: int = 64 * MiB  # the largest object stored or fetched (not LevelDB's max_file_size)
    retry_max_attempts: int = 3
    retry_base_delay: float = 0.1
    request_timeout: float = 30.0
    lease_duration: float = 30.0
    lease_renewal: float = 10.0
    lock_timeout: float | None = None  # None: fail at once if a live writer holds the lock
    flush_interval: float | None = None  # upload unsynced WAL bytes this often (None: only on sync/flush/close)
    deletion_grace: float = 300.0  # keep objects LevelDB deleted this long, for followers on older versions
    logger: logging.Logger | None = None
    client: Any = None  # a ready boto3 S3 client (takes precedence over the fields above)
    session: Any = None  # a boto3 Session to build the client from
    # Wraps the bare store before levels3 adds its own layers: for custom
    # metrics, or (as the tests do) a levels3.stores.FaultInjectingStore. A
    # wrapper whose failed requests may still have landed must keep
    # ambiguous_failures True (ObjectStore's default).
    wrap_store: Any = None

    def __post_init__(self) -> None:
        for name in ("max_cache_bytes", "max_object_size", "retry_max_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive int, got {value!r}")
        if isinstance(self.deletion_grace, bool) or not isinstance(self.deletion_grace, (int, float)) \
                or self.deletion_grace < 0:
            raise ConfigurationError(f"deletion_grace must be a number of seconds >= 0, got {self.deletion_grace!r}")
        for name in ("retry_base_delay", "request_timeout", "lease_duration", "lease_renewal"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.lease_renewal >= self.lease_duration:
            raise ConfigurationError("lease_renewal must be shorter than lease_duration")
        if self.flush_interval is not None and (isinstance(self.flush_interval, bool) or
                                                not isinstance(self.flush_interval, (int, float)) or
                                                self.flush_interval <= 0):
            raise ConfigurationError(f"flush_interval must be a positive number of seconds or None, "
                                     f"got {self.flush_interval!r}")
        if self.lock_timeout is not None and self.lock_timeout < 0:
            raise ConfigurationError("lock_timeout must be >= 0 or None")
        if self.cache_dir is not None:
            self.cache_dir = os.fspath(self.cache_dir)

    def __repr__(self) -> str:  # never show secrets
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("access_key", "secret_key", "session_token") and value is not None:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"StoreOptions({', '.join(shown)})"

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))


#: The name this class had before it configured local directories too; kept for compatibility.
S3Options = StoreOptions


@dataclass(frozen=True)
class Location:
    """Where a database lives: ``scheme`` is ``s3`` or ``file``."""

    scheme: str
    bucket: str  # s3 only
    prefix: str  # s3: key prefix without trailing slash ('' = bucket root); file: absolute directory

    @property
    def url(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"file://{self.prefix}"


def parse_location(name: Any) -> Location:
    """Accept ``s3://bucket/prefix``, ``file:///path`` or a plain path."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if not isinstance(name, str):
        raise TypeError(f"database name must be str, bytes or os.PathLike, not {type(name).__name__}")
    if not name:
        raise ConfigurationError("database name is empty")
    if "://" not in name:
        return Location("file", "", os.path.abspath(name))
    parsed = urlparse(name)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file:// URL must not name a host: {name!r}")
        path = unquote(parsed.path)
        if not path:
            raise ConfigurationError(f"file:// URL has no path: {name!r}")
        return Location("file", "", os.path.abspath(path))
    if parsed.scheme == "s3":
        bucket = parsed.netloc
        if not bucket or len(bucket) < 3 or "@" in bucket or ":" in bucket:
            raise ConfigurationError(f"s3:// URL needs a valid bucket name: {name!r}")
        if parsed.query or parsed.fragment:
            raise ConfigurationError(f"s3:// URL must not carry a query or fragment: {name!r}")
        prefix = parsed.path.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise ConfigurationError(f"s3:// prefix has an empty or relative segment: {name!r}")
        return Location("s3", bucket, prefix)
    raise ConfigurationError(f"unsupported URL scheme {parsed.scheme!r} in {name!r} (use s3://, file:// or a path)")
