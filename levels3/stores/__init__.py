"""Object-store backends and the wrappers composed around them.

``open_store`` builds the bare backend for a location; ``build_store`` (stores.assembly)
adds the layers a database uses: ``RetryingStore(CountingStore(open_store(...)), ...)``.
The stores know nothing of LevelDB or the engine; they import only levels3.errors
and levels3.options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .assembly import build_store, ensure_conditional_writes, open_store, resolve_options
from .base import ObjectInfo, ObjectStore, PutCondition, PutMode
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
    "PutCondition",
    "PutMode",
    "RetryingStore",
    "S3Store",
    "TOKEN_METADATA_KEY",
    "build_store",
    "ensure_conditional_writes",
    "is_transient",
    "open_store",
    "probe_conditional_writes",
    "resolve_options",
    "validate_key",
]


def __getattr__(name: str) -> object:
    # boto3 is imported only when the S3 backend is actually used.
    if name in ("S3Store", "probe_conditional_writes"):
        from . import s3

        return getattr(s3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
