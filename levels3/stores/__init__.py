"""Object-store backends and the wrappers composed around them.

``open_store`` builds the bare backend for a location; callers add layers, e.g.
``RetryingStore(CountingStore(open_store(...)), ...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..options import Location, S3Options
from .base import ObjectInfo, ObjectStore
from .counting import CountingStore
from .faults import FaultInjectingStore, InjectedFault
from .local import LocalDirStore, validate_key
from .retry import TOKEN_METADATA_KEY, RetryingStore, is_transient

if TYPE_CHECKING:
    from .s3 import S3Store, probe_conditional_writes

__all__ = [
    "CountingStore",
    "FaultInjectingStore",
    "InjectedFault",
    "LocalDirStore",
    "ObjectInfo",
    "ObjectStore",
    "RetryingStore",
    "S3Store",
    "TOKEN_METADATA_KEY",
    "is_transient",
    "open_store",
    "probe_conditional_writes",
    "validate_key",
]


def __getattr__(name: str) -> object:
    # boto3 is imported only when the S3 backend is actually used.
    if name in ("S3Store", "probe_conditional_writes"):
        from . import s3

        return getattr(s3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(location: Location, options: S3Options, *, create: bool) -> ObjectStore:
    """The bare backend for ``location`` (no retry or counting layers)."""
    if location.scheme == "file":
        return LocalDirStore(location.prefix, create=create)
    if location.scheme == "s3":
        from .s3 import S3Store

        # A bucket has no "create": the prefix simply starts empty.
        return S3Store(location.bucket, location.prefix, options)
    raise ValueError(f"unsupported location scheme {location.scheme!r}")
