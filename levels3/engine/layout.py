"""How each LevelDB file maps onto objects: names only, no I/O.

Every object a writer uploads carries that writer's *epoch*: a number that grows
with each writer session (one more than any epoch the store has seen when the
writer took the lease). Two writers, even a fenced zombie and its successor,
therefore never write the same key, and when a file name exists in several
epochs the highest one is the live one.

- tables (``NNNNNN.ldb``/``.sst``) and other durable files:
  ``w<epoch>/<name>``, one object written once (``If-None-Match: *``);
- the WAL (``NNNNNN.log``) and ``MANIFEST-NNNNNN``: append-only files stored as
  immutable segments ``w<epoch>/<name>/<offset>-<end>-0``, each holding the
  bytes [offset, end) written since the previous upload. Every 16th upload at
  a level also carries the 15 objects before it, as one
  ``w<epoch>/<name>/<offset>-<end>-<level>`` object of the next level
  (segments.plan_segment_upload), so reading a file back takes a number of
  GETs that grows only logarithmically with the syncs that wrote it, and a
  sync is still one PUT. The end in every key lets a reader check each
  object's size, the last one's included (catalog: a gap or a short object is
  damage). Keys written before ends were recorded, ``w<epoch>/<name>/<offset>``,
  still parse (end unknown); the ``-0`` suffix keeps new keys readable by
  those earlier versions, which read ``<offset>-<end>-<level>`` already;
- ``CURRENT``: one object at the top, replaced with ``If-Match``: the commit
  point, carrying the committing writer's epoch in its metadata;
- ``LOCK``: the lease object (levels3.lock);
- ``checkpoints/<name>.json``: a named version: CURRENT's content and the keys
  of every object it needs (nothing is copied);
- ``*.dbtmp`` and the info log (``LOG``, ``LOG.old``): local only.

Imports only the LOCK key from levels3.lock.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

from ..lock import LOCK_KEY


class FileKind(enum.Enum):
    TABLE = "table"
    WAL = "wal"
    MANIFEST = "manifest"
    CURRENT = "current"
    LOCK = "lock"
    TEMP = "temp"
    INFO_LOG = "info_log"
    OTHER = "other"  # durable, written once (e.g. files archived by repair in lost/)

    @property
    def segmented(self) -> bool:
        return self in (FileKind.WAL, FileKind.MANIFEST)

    @property
    def local_only(self) -> bool:
        return self in (FileKind.TEMP, FileKind.INFO_LOG)


CURRENT_NAME = "CURRENT"
EPOCH_METADATA = "levels3-epoch"  # on CURRENT: the epoch of the writer that committed it
CHECKPOINT_PREFIX = "checkpoints/"  # checkpoints/<name>.json: a recorded version (see checkpoints.write_checkpoint)
_EPOCH_DIGITS = 8
_OFFSET_DIGITS = 20

_TABLE = re.compile(r"\d+\.(ldb|sst)")
_WAL = re.compile(r"\d+\.log")
_MANIFEST = re.compile(r"MANIFEST-\d+")
_TEMP = re.compile(r"\d+\.dbtmp")
_OBJECT = re.compile(r"w(\d{%d})/((?:lost/)?[^/]+)(?:/(\d{%d})(?:-(\d{%d})-(\d+))?)?"
                     % (_EPOCH_DIGITS, _OFFSET_DIGITS, _OFFSET_DIGITS))


def kind_of(name: str) -> FileKind:
    """Classify a file name relative to the database directory."""
    if _TABLE.fullmatch(name):
        return FileKind.TABLE
    if _WAL.fullmatch(name):
        return FileKind.WAL
    if _MANIFEST.fullmatch(name):
        return FileKind.MANIFEST
    if name == CURRENT_NAME:
        return FileKind.CURRENT
    if name == LOCK_KEY:
        return FileKind.LOCK
    if _TEMP.fullmatch(name):
        return FileKind.TEMP
    if name in ("LOG", "LOG.old"):
        return FileKind.INFO_LOG
    return FileKind.OTHER


class ObjectName(NamedTuple):
    """What an object key says: the file, the writer epoch, the segment's range."""

    name: str
    epoch: int
    offset: int | None  # None for a whole object
    level: int = 0  # 0 for a segment as uploaded; n > 0 for a merge of level n-1 objects
    end: int | None = None  # where the segment's bytes end in the file (None: a key without it)


def object_key(name: str, epoch: int, offset: int | None = None, *, end: int | None = None, level: int = 0) -> str:
    """The key of a whole object (offset None), or of the segment (level 0) or
    merged object (level > 0) holding bytes [offset, end) of the file. Without
    ``end``, a segment gets the earlier ``<offset>`` form, whose size nobody can check."""
    if name == CURRENT_NAME:
        return CURRENT_NAME
    base = f"w{epoch:0{_EPOCH_DIGITS}d}/{name}"
    if offset is None:
        return base
    if end is None:
        if level:
            raise ValueError("a merged object's key needs its end")
        return f"{base}/{offset:0{_OFFSET_DIGITS}d}"
    if end < offset:
        raise ValueError(f"segment end {end} before its offset {offset}")
    return f"{base}/{offset:0{_OFFSET_DIGITS}d}-{end:0{_OFFSET_DIGITS}d}-{level}"


def file_key(name: str, epoch: int) -> str:
    """The prefix every object of one version of a file shares (its whole-object key)."""
    return object_key(name, epoch)


def parse_key(key: str) -> ObjectName | None:
    """Object key -> ObjectName; None for keys levels3 does not own (LOCK included)."""
    if key == CURRENT_NAME:
        return ObjectName(CURRENT_NAME, 0, None)
    match = _OBJECT.fullmatch(key)
    if match is None:
        return None
    name = match.group(2)
    offset = match.group(3)
    kind = kind_of(name)
    if kind.segmented != (offset is not None) or kind in (FileKind.CURRENT, FileKind.LOCK) or kind.local_only:
        return None
    level = int(match.group(5)) if match.group(5) else 0
    end = int(match.group(4)) if match.group(4) else None
    if end is not None and end < int(offset):
        return None
    return ObjectName(name, int(match.group(1)), None if offset is None else int(offset), level, end)
