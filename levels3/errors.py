"""Exceptions raised by levels3.

The first four mirror plyvel's hierarchy exactly, so ``except plyvel.Error``-style
code keeps working after switching the import.  The rest are specific to a
database that lives in object storage. Imports nothing.
"""

from __future__ import annotations


class Error(Exception):
    """Base class of every levels3 error (plyvel.Error)."""


class IOError(Error, OSError):  # noqa: A001 - plyvel's public name
    """LevelDB reported an I/O error (plyvel.IOError, also an OSError); store failures end up here."""


class CorruptionError(Error):
    """LevelDB found corrupt data (plyvel.CorruptionError)."""


class IteratorInvalidError(Error):
    """A raw iterator was used while not positioned on an entry (plyvel.IteratorInvalidError)."""


class StoreError(IOError):
    """An object-store request failed for good (after any retries).

    ``operation`` and ``key`` say what was attempted; ``transient`` whether the
    same request may succeed when repeated (the retry layer asks only this);
    ``code`` and ``status`` are the store's error code and HTTP status, when it
    gave them. ``__cause__`` holds the underlying exception. Messages never
    contain credentials.
    """

    def __init__(self, message: str, *, operation: str = "", key: str = "", transient: bool = False,
                 code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.operation = operation
        self.key = key
        self.transient = transient
        self.code = code
        self.status = status


class ObjectNotFound(StoreError):
    """The object does not exist."""


class PreconditionFailed(StoreError):
    """A conditional request (If-None-Match / If-Match) was refused: someone else won."""


class ConfigurationError(Error, ValueError):
    """Bad options or URL: raised before anything is touched."""


class PlainLevelDBError(ConfigurationError):
    """The path is a plain LevelDB directory (plyvel's), not a levels3 database: ``levels3 import`` brings it in."""


class WriteTooLargeError(Error, ValueError):
    """A single put, delete or write batch is too large for max_object_size (see README, Object size).

    Raised before LevelDB sees the write: nothing of it was written, and the database stays usable.
    """


class ReadOnlyError(Error):
    """A write was attempted on a read-only follower or checkpoint."""


class StaleVersionError(IOError):
    """A follower's version needs an object the writer has deleted: call refresh()."""


class LockError(IOError):
    """Another live writer holds the database lock.

    An ``IOError`` (and so an ``OSError``), as plyvel reports a held lock: code written for plyvel
    that catches ``plyvel.IOError`` keeps working after ``import levels3 as plyvel``.
    """


class LeaseLostError(IOError):
    """This writer's lease was lost or taken over; it must not write any more.

    The write that raised it may or may not be applied, as a write in flight when a
    process crashes: an upload already sent may land before the successor lists the
    store. The successor and every later open agree on the outcome.
    """
