"""Store assembly: from a location and options to the layered store a database uses.

Owns the order of the layers (retry around counting around the bare store, so
every attempt S3 bills is counted), the merging of ``options=`` with keyword
options, and the once-per-endpoint probe for conditional writes. It may call
the stores package and levels3.options; nothing here knows LevelDB.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..options import Location, StoreOptions
from .base import ObjectStore
from .counting import CountingStore
from .local import LocalDirStore
from .retry import RetryingStore


def open_store(location: Location, options: StoreOptions, *, create: bool) -> ObjectStore:
    """The bare backend for ``location`` (no retry or counting layers)."""
    if location.scheme == "file":
        return LocalDirStore(location.prefix, create=create)
    if location.scheme == "s3":
        from .s3 import S3Store

        # A bucket has no "create": the prefix simply starts empty.
        return S3Store(location.bucket, location.prefix, options)
    raise ValueError(f"unsupported location scheme {location.scheme!r}")


def resolve_options(options: StoreOptions | None, overrides: Mapping[str, Any]) -> StoreOptions:
    """Merge ``options=`` and keyword store options into one StoreOptions."""
    unknown = set(overrides) - StoreOptions.field_names()
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    if options is None:
        return StoreOptions(**overrides)
    if not isinstance(options, StoreOptions):
        raise TypeError(f"options must be a levels3.StoreOptions, not {type(options).__name__}")
    if not overrides:
        return options
    merged = {f: getattr(options, f) for f in StoreOptions.field_names()}
    merged.update(overrides)
    return StoreOptions(**merged)


def build_store(location: Location, options: StoreOptions, *, create: bool) -> tuple[ObjectStore, CountingStore]:
    """The layered store: retry around counting, so every attempt (what S3 bills) is counted.

    Returns the outer store and the counting layer (for stats()).
    """
    raw = open_store(location, options, create=create)
    if options.wrap_store is not None:
        raw = options.wrap_store(raw)
    counting = CountingStore(raw)
    retrying = RetryingStore(counting, max_attempts=options.retry_max_attempts, base_delay=options.retry_base_delay)
    return retrying, counting


_probed_endpoints: set[tuple[str | None, str]] = set()


def ensure_conditional_writes(store: ObjectStore, location: Location, options: StoreOptions) -> None:
    """Refuse to write through an endpoint that ignores If-None-Match / If-Match
    (some S3-compatible stores do): the lock and fencing would silently break.
    Probed once per endpoint and bucket per process."""
    if location.scheme != "s3":
        return  # the local store implements both itself
    endpoint = (options.endpoint_url, location.bucket)
    if endpoint in _probed_endpoints:
        return
    from .s3 import probe_conditional_writes

    probe_conditional_writes(store)
    _probed_endpoints.add(endpoint)
