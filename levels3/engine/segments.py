"""Segment planning for the append-only files (the WAL and MANIFEST): pure functions, no I/O.

Owns the merge policy: which trailing objects an upload absorbs and at which
level (see layout for the object names). It imports only the catalog's
StoredObject type; the writer's control path calls it.
"""

from __future__ import annotations

from .catalog import StoredObject

MERGE_FANOUT = 16  # segments of one level merged into one object of the next (see plan_segment_upload)
MERGE_MAX_BYTES = 4 << 20  # no merge grows past this (nor past max_object_size): bounds what one sync re-uploads
# Segments a merge replaced could only be needed by a follower opening from a LIST
# made just before the merge (WAL and MANIFEST are read at open, never after), and
# such a follower lists again (StaleVersionError at open). So they get no grace:
# the reaper's next batch deletes them, which keeps what every open and refresh
# lists down to the last few seconds' syncs.
MERGED_SEGMENT_GRACE = 0.0


def plan_segment_upload(objects: list[StoredObject], new_bytes: int,
                        fanout: int = MERGE_FANOUT, max_bytes: int = MERGE_MAX_BYTES) -> tuple[int, int]:
    """How many trailing objects the next segment upload absorbs, and its level.

    The objects of a WAL or MANIFEST form a counter in base ``fanout``: a new
    segment is level 0, and when it would make ``fanout`` objects of one level
    at the end of the file, it is uploaded together with them as one object of
    the next level instead (and so on up). The merge rides on the upload a sync
    needs anyway, so a sync stays one PUT; a file written by n syncs is read
    back from O(fanout * log n) objects, and each byte is uploaded at most
    1 + log_fanout(n) times. Merges stop at ``max_bytes``: a sync never carries
    more than that much old data. Where a run has grown past ``fanout - 1``
    objects (its objects were too large to merge), its last ``fanout - 1``
    are the candidates, so small syncs after large ones still merge.
    """
    absorbed, level, merged_bytes = 0, 0, new_bytes
    end = len(objects)
    while True:
        run = 0
        while run < end - absorbed and objects[end - absorbed - run - 1].level == level:
            run += 1
        if run + 1 < fanout:
            return absorbed, level
        run = fanout - 1
        run_bytes = sum(o.size for o in objects[end - absorbed - run:end - absorbed])
        if merged_bytes + run_bytes > max_bytes:
            return absorbed, level
        absorbed, level, merged_bytes = absorbed + run, level + 1, merged_bytes + run_bytes


def split_tail(start: int, end: int, max_bytes: int) -> list[tuple[int, int]]:
    """The [offset, end) ranges of the segments that upload bytes [start, end)
    when no object may hold more than ``max_bytes``: one range when they fit."""
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    return [(offset, min(end, offset + max_bytes)) for offset in range(start, end, max_bytes)] or [(start, end)]


def seal_plan(objects: list[StoredObject], new_bytes: int, max_bytes: int = MERGE_MAX_BYTES) -> int:
    """How many trailing objects a file's last upload folds in: all that fit in
    ``max_bytes``, when that leaves the file in fewer objects than it would be."""
    absorbed, total = 0, new_bytes
    while absorbed < len(objects) and total + objects[-1 - absorbed].size <= max_bytes:
        total += objects[-1 - absorbed].size
        absorbed += 1
    return absorbed if absorbed + (new_bytes > 0) >= 2 else 0
