"""How each LevelDB file maps onto objects (GUIDE section 2).

- tables (``NNNNNN.ldb``/``.sst``) and anything else durable: one object, named
  like the file, written once;
- the WAL (``NNNNNN.log``) and ``MANIFEST-NNNNNN``: append-only files stored as
  immutable segments ``<name>/<offset, 20 digits>``, each holding only the bytes
  written since the previous upload;
- ``CURRENT``: one object, replaced atomically; it is the commit point;
- ``LOCK``: the lease object (levels3.lock), not a LevelDB file here;
- ``*.dbtmp`` and the info log (``LOG``, ``LOG.old``): local only.
"""

from __future__ import annotations

import enum
import re


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


LOCK_KEY = "LOCK"
CURRENT_NAME = "CURRENT"
_OFFSET_DIGITS = 20

_TABLE = re.compile(r"\d+\.(ldb|sst)")
_WAL = re.compile(r"\d+\.log")
_MANIFEST = re.compile(r"MANIFEST-\d+")
_TEMP = re.compile(r"\d+\.dbtmp")
_SEGMENT = re.compile(r"(\d+\.log|MANIFEST-\d+)/(\d{%d})" % _OFFSET_DIGITS)
_ARCHIVED = re.compile(r"lost/[^/]+")


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


def segment_key(name: str, offset: int) -> str:
    return f"{name}/{offset:0{_OFFSET_DIGITS}d}"


def parse_key(key: str) -> tuple[str, int | None] | None:
    """Object key -> (file name, segment offset or None); None for keys levels3 does not own."""
    match = _SEGMENT.fullmatch(key)
    if match:
        return match.group(1), int(match.group(2))
    if "/" in key:
        return (key, None) if _ARCHIVED.fullmatch(key) else None
    if kind_of(key) in (FileKind.TABLE, FileKind.CURRENT):
        return key, None
    return None
