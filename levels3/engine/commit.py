"""CURRENT, the commit point: the one function that writes it, and the fence built on it.

Every version of a database becomes real with one PUT of CURRENT, carrying the
committing writer's epoch in its metadata. Whoever publishes a database (a
writer's commit, restore, import) goes through commit_current, so the
conditions on that PUT are decided in one place. claim_epoch is how a writer
fences out every earlier one. May call the store interface only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from ..errors import ObjectNotFound, PreconditionFailed
from ..stores.base import ObjectStore, PutMode
from .layout import CURRENT_NAME, EPOCH_METADATA

log = logging.getLogger("levels3.commit")


def commit_current(store: ObjectStore, data: bytes, *, epoch: int, replacing: str | None) -> str:
    """PUT CURRENT (``data`` names the MANIFEST) as writer ``epoch``; returns its ETag.

    ``replacing=None`` creates it, so a new database is published exactly once;
    otherwise it replaces only the version with that ETag (If-Match), so a
    writer that another has fenced out can never commit again. A refused
    condition raises PreconditionFailed.
    """
    mode = PutMode.CREATE if replacing is None else PutMode.replace(replacing)
    return store.put(CURRENT_NAME, data, mode=mode, metadata={EPOCH_METADATA: str(epoch)})


@dataclass(frozen=True)
class CurrentVersion:
    """CURRENT as one GET read it: its body (the MANIFEST's name), its ETag, and the
    epoch of the writer that committed it."""

    body: bytes
    etag: str
    epoch: int


def read_current(store: ObjectStore) -> CurrentVersion | None:
    """CURRENT's body, ETag and epoch, in one GET; None for a database without one."""
    try:
        body, info = store.get_with_info(CURRENT_NAME)
    except ObjectNotFound:
        return None
    return CurrentVersion(body, info.etag, int(info.metadata.get(EPOCH_METADATA, "0") or 0))


@dataclass(frozen=True)
class Fence:
    """What claim_epoch did: the epoch claimed, CURRENT as this writer now holds it,
    and the version it replaced (None for both: a new database, nothing to fence)."""

    epoch: int
    current: CurrentVersion | None
    replaced: CurrentVersion | None


def claim_epoch(store: ObjectStore, check_lease: Callable[[], None], seen: CurrentVersion | None) -> Fence:
    """Claim the next writer epoch by rewriting CURRENT with If-Match.

    Epochs form a compare-and-swap chain on CURRENT, so each writer's is unique
    and higher than every earlier writer's; and from here on a writer that lost
    its lease can no longer commit (its If-Match on CURRENT fails). ``seen`` is
    CURRENT as the caller read it (read_current) once it held the lease, never
    before: a fence leaves CURRENT's bytes as they were, and where an ETag is a hash
    of the bytes (S3) the If-Match cannot refuse a read older than another writer's
    fence. A version replaced since the read fails the If-Match, and CURRENT is read
    again.
    Without a CURRENT (a new database) nothing is claimed: epoch 0.
    """
    while True:
        check_lease()
        if seen is None:
            return Fence(0, None, None)
        epoch = seen.epoch + 1
        try:
            etag = commit_current(store, seen.body, epoch=epoch, replacing=seen.etag)
            return Fence(epoch, CurrentVersion(seen.body, etag, epoch), seen)
        except PreconditionFailed:
            log.info("CURRENT changed while fencing %s; reading it again", store.url)
        seen = read_current(store)
