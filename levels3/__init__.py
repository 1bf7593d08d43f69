"""levels3: LevelDB for Python with its data in S3-compatible object storage.

A drop-in for plyvel: ``levels3.DB("s3://bucket/prefix", create_if_missing=True)``
behaves like ``plyvel.DB(path, create_if_missing=True)``; a plain path or
``file:///path`` keeps the database in a local directory with the same layout.
This module only re-exports the public API.
"""

from ._native import (
    Iterator,
    PrefixedDB,
    RawIterator,
    Snapshot,
    WriteBatch,
    __leveldb_version__,
)
from .database import DB
from .errors import (
    ConfigurationError,
    CorruptionError,
    Error,
    IOError,
    IteratorInvalidError,
    LeaseLostError,
    LockError,
    ObjectNotFound,
    PlainLevelDBError,
    PreconditionFailed,
    ReadOnlyError,
    StaleVersionError,
    StoreError,
    WriteTooLargeError,
)
from .maintenance import destroy_db, repair_db, restore
from .options import S3Options, StoreOptions

__version__ = "0.1.0"

__all__ = [
    "DB",
    "PrefixedDB",
    "WriteBatch",
    "Snapshot",
    "Iterator",
    "RawIterator",
    "StoreOptions",
    "S3Options",
    "destroy_db",
    "repair_db",
    "restore",
    "Error",
    "IOError",
    "CorruptionError",
    "IteratorInvalidError",
    "StoreError",
    "ObjectNotFound",
    "PreconditionFailed",
    "ConfigurationError",
    "PlainLevelDBError",
    "LockError",
    "LeaseLostError",
    "ReadOnlyError",
    "StaleVersionError",
    "WriteTooLargeError",
    "__version__",
    "__leveldb_version__",
]
