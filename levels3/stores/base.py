"""The narrow object-store interface every backend layer is written against.

A store is always scoped to one database: keys are relative to the database's
prefix, so nothing outside it can be read, written or deleted by construction.
Wrappers (retry, request counting, fault injection) implement the same
interface around an inner store instead of branching inside it. Owns
ObjectStore, ObjectInfo and PutMode; imports only levels3.errors.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Mapping, Sequence

from ..errors import StoreError


class PutCondition(enum.Enum):
    OVERWRITE = "overwrite"  # replace whatever is there, or create
    CREATE = "create"  # only if nothing is there (If-None-Match: *)
    REPLACE = "replace"  # only the version with this ETag (If-Match)


@dataclass(frozen=True)
class PutMode:
    """How a put treats the object already at its key: ``PutMode.OVERWRITE``,
    ``PutMode.CREATE`` (create only if absent) or ``PutMode.replace(etag)``
    (replace only that version). A refused condition raises PreconditionFailed."""

    condition: PutCondition
    etag: str | None = None  # the version a REPLACE requires

    OVERWRITE: ClassVar["PutMode"]
    CREATE: ClassVar["PutMode"]

    def __post_init__(self) -> None:
        if (self.condition is PutCondition.REPLACE) != (self.etag is not None):
            raise ValueError("an ETag goes with PutCondition.REPLACE, and only with it")

    @classmethod
    def replace(cls, etag: str) -> "PutMode":
        return cls(PutCondition.REPLACE, etag)

    @property
    def conditional(self) -> bool:
        return self.condition is not PutCondition.OVERWRITE

    def __repr__(self) -> str:
        if self.condition is PutCondition.REPLACE:
            return f"PutMode.replace({self.etag!r})"
        return f"PutMode.{self.condition.name}"


PutMode.OVERWRITE = PutMode(PutCondition.OVERWRITE)
PutMode.CREATE = PutMode(PutCondition.CREATE)


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # relative to the store's prefix
    size: int
    etag: str
    metadata: Mapping[str, str] = field(default_factory=dict)  # only filled by head()
    last_modified: float | None = None  # seconds since the epoch, as the store reports it


DELETE_BATCH = 1000  # most keys one delete_many takes (S3 DeleteObjects' limit)
_CONSISTENT_READ_ATTEMPTS = 5


class ObjectStore(abc.ABC):
    """Get / put / delete / list / head on keys relative to one prefix.

    Errors: ``ObjectNotFound`` for a missing key, ``PreconditionFailed`` when a
    condition does not hold, ``StoreError`` (with the operation and key) for
    anything else.  Implementations are thread-safe.
    """

    #: Human-readable location, e.g. ``s3://bucket/prefix``; never holds secrets.
    url: str

    #: Whether a request that failed may still have taken effect (a response lost in
    #: transit).  RetryingStore then tags conditional PUTs with a token, so that a
    #: retry refused by its own earlier attempt is recognised as a success.
    ambiguous_failures: bool = True

    @abc.abstractmethod
    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Return bytes [start, end) of the object (end=None: to its end)."""

    @abc.abstractmethod
    def put(
        self,
        key: str,
        data: bytes,
        *,
        mode: PutMode = PutMode.OVERWRITE,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Store ``data`` atomically and return the new ETag.

        ``mode`` says what may be there already (see PutMode); a refused
        condition raises PreconditionFailed.
        """

    @abc.abstractmethod
    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete the object; a missing key is not an error (unless if_match is given)."""

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete up to DELETE_BATCH objects, missing ones not an error: one request
        where the store has a batch delete (S3 DeleteObjects), else one per key."""
        for key in keys:
            self.delete(key)

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Size, ETag and user metadata of one object."""

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        """The whole object and the ObjectInfo (ETag, metadata) of exactly those bytes.

        S3 answers both in one GET; that is what a store should override this with.
        This default reads the object between two HEADs until they agree (a version
        replaced meanwhile has another ETag; bodies levels3 replaces are unique)."""
        for _ in range(_CONSISTENT_READ_ATTEMPTS):
            info = self.head(key)
            data = self.get(key)
            if self.head(key).etag == info.etag:
                return data, info
        raise StoreError(f"get {key!r} on {self.url}: the object was replaced during each of "
                         f"{_CONSISTENT_READ_ATTEMPTS} attempts to read it", operation="get", key=key, transient=True)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default does nothing."""
