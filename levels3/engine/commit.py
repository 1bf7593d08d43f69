"""CURRENT, the commit point: the one function that writes it, and the fence built on it.

Every version of a database becomes real with one PUT of CURRENT, carrying the
committing writer's epoch in its metadata. Whoever publishes a database (a
writer's commit, restore, import) goes through commit_current, so the
conditions on that PUT are decided in one place. claim_epoch is how a writer
fences out every earlier one. May call the store interface only.
"""

from __future__ import annotations

import logging
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


def claim_epoch(store: ObjectStore, check_lease: Callable[[], None]) -> tuple[int, str | None]:
    """Claim the next writer epoch by rewriting CURRENT with If-Match: (epoch, CURRENT's new ETag).

    Epochs form a compare-and-swap chain on CURRENT, so each writer's is unique
    and higher than every earlier writer's; and from here on a writer that lost
    its lease can no longer commit (its If-Match on CURRENT fails). Without a
    CURRENT (a new database) nothing is claimed: (0, None).
    """
    while True:
        check_lease()
        try:
            info = store.head(CURRENT_NAME)
        except ObjectNotFound:
            return 0, None
        body = store.get(CURRENT_NAME)
        epoch = int(info.metadata.get(EPOCH_METADATA, "0") or 0) + 1
        try:
            return epoch, commit_current(store, body, epoch=epoch, replacing=info.etag)
        except PreconditionFailed:
            log.info("CURRENT changed while fencing %s; retrying", store.url)
