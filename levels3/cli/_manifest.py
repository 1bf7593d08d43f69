"""Read-only understanding of a database in a store, without opening LevelDB.

Parses CURRENT and the MANIFEST it names (LevelDB's log format holding
VersionEdit records) to find the live files, then classifies every object in
the store: live, orphaned (no live version references it), kept (no live version
references it, but a checkpoint does), archived (``lost/``, kept by repair), or
foreign (a key levels3 does not own).  ``info``, ``verify``
and ``gc`` share this; none of it writes to the store.
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..engine.checkpoints import checkpoint_name, needed_keys, read_checkpoint
from ..engine.catalog import Catalog
from ..engine.layout import CURRENT_NAME, LOCK_KEY, FileKind, kind_of, parse_key
from ..errors import Error
from ..stores.base import ObjectInfo, ObjectStore

# -- CRC32C (Castagnoli), as LevelDB masks it -----------------------------------


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# -- log format and VersionEdit ----------------------------------------------------

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


class ManifestError(Exception):
    """The MANIFEST could not be parsed."""


def read_log_records(data: bytes, *, check_crc: bool = True) -> Iterable[bytes]:
    """Yield the logical records of a LevelDB log file (a MANIFEST or WAL).

    A truncated record at the end (a writer that stopped mid-write) ends the
    log, as in LevelDB; a bad checksum or a broken fragment sequence raises.
    """
    pos = 0
    pending: bytearray | None = None
    size = len(data)
    while pos < size:
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:
            pos += left_in_block  # block trailer
            continue
        if pos + _HEADER > size:
            return
        masked, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:
            pos += left_in_block  # zero padding (preallocated space)
            continue
        start, end = pos + _HEADER, pos + _HEADER + length
        if end > size:
            return  # torn tail
        if end - pos > left_in_block:
            raise ManifestError(f"record at offset {pos} crosses a block boundary")
        if check_crc and crc32c(data[start:end], crc32c(bytes([kind]))) != _unmask(masked):
            raise ManifestError(f"checksum mismatch in the record at offset {pos}")
        payload = data[start:end]
        pos = end
        if kind == _FULL:
            if pending is not None:
                raise ManifestError(f"unfinished record before offset {start - _HEADER}")
            yield bytes(payload)
        elif kind == _FIRST:
            pending = bytearray(payload)
        elif kind == _MIDDLE:
            if pending is None:
                raise ManifestError(f"record fragment without a start at offset {start - _HEADER}")
            pending += payload
        elif kind == _LAST:
            if pending is None:
                raise ManifestError(f"record fragment without a start at offset {start - _HEADER}")
            pending += payload
            yield bytes(pending)
            pending = None
        else:
            raise ManifestError(f"unknown record type {kind} at offset {start - _HEADER}")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ManifestError("truncated or overlong varint in a version edit")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _slice(buf: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = _varint(buf, pos)
    if pos + length > len(buf):
        raise ManifestError("truncated slice in a version edit")
    return buf[pos:pos + length], pos + length


@dataclass
class TableMeta:
    level: int
    number: int
    size: int
    smallest: bytes
    largest: bytes


@dataclass
class ManifestState:
    """The version a MANIFEST describes after applying all its edits."""

    name: str
    comparator: str | None = None
    log_number: int = 0
    prev_log_number: int = 0
    next_file_number: int = 0
    last_sequence: int = 0
    edits: int = 0
    tables: dict[int, TableMeta] = field(default_factory=dict)  # file number -> meta

    def levels(self) -> dict[int, list[TableMeta]]:
        out: dict[int, list[TableMeta]] = {level: [] for level in range(7)}
        for meta in sorted(self.tables.values(), key=lambda m: (m.level, m.smallest, m.number)):
            out.setdefault(meta.level, []).append(meta)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "comparator": self.comparator,
            "log_number": self.log_number,
            "prev_log_number": self.prev_log_number,
            "next_file_number": self.next_file_number,
            "last_sequence": self.last_sequence,
            "edits": self.edits,
            "levels": {str(level): [{"number": m.number, "size": m.size} for m in metas]
                       for level, metas in self.levels().items()},
        }


def parse_manifest(name: str, data: bytes, *, check_crc: bool = True) -> ManifestState:
    state = ManifestState(name)
    for record in read_log_records(data, check_crc=check_crc):
        state.edits += 1
        deleted: list[tuple[int, int]] = []
        added: list[TableMeta] = []
        pos = 0
        while pos < len(record):
            tag, pos = _varint(record, pos)
            if tag == 1:
                value, pos = _slice(record, pos)
                state.comparator = value.decode("utf-8", "replace")
            elif tag == 2:
                state.log_number, pos = _varint(record, pos)
            elif tag == 3:
                state.next_file_number, pos = _varint(record, pos)
            elif tag == 4:
                state.last_sequence, pos = _varint(record, pos)
            elif tag == 5:
                _, pos = _varint(record, pos)
                _, pos = _slice(record, pos)
            elif tag == 6:
                level, pos = _varint(record, pos)
                number, pos = _varint(record, pos)
                deleted.append((level, number))
            elif tag == 7:
                level, pos = _varint(record, pos)
                number, pos = _varint(record, pos)
                size, pos = _varint(record, pos)
                smallest, pos = _slice(record, pos)
                largest, pos = _slice(record, pos)
                added.append(TableMeta(level, number, size, smallest, largest))
            elif tag == 9:
                state.prev_log_number, pos = _varint(record, pos)
            else:
                raise ManifestError(f"unknown version edit tag {tag}")
        # LevelDB's VersionSet::Builder: an edit's deletions first, then its additions.
        for level, number in deleted:
            meta = state.tables.get(number)
            if meta is not None and meta.level == level:
                del state.tables[number]
        for meta in added:
            state.tables[meta.number] = meta
    if state.edits == 0:
        raise ManifestError("the manifest holds no version edit")
    return state


def file_number(name: str) -> int | None:
    match = re.match(r"(?:MANIFEST-)?(\d+)", name)
    return int(match.group(1)) if match else None


# -- object ages ---------------------------------------------------------------------


def object_times(store: ObjectStore) -> dict[str, float]:
    """Key -> last-modified time (epoch seconds) of every object under the database."""
    return {info.key: info.last_modified for info in store.list("") if info.last_modified is not None}


# -- classification ---------------------------------------------------------------------


@dataclass
class Entry:
    key: str
    size: int
    kind: str  # table, wal, manifest, current, lock, checkpoint, archived, foreign
    status: str = "live"  # live, orphan, kept (for a checkpoint), archived, foreign, unknown
    reason: str = ""
    mtime: float | None = None

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "size": self.size, "kind": self.kind, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.mtime is not None and now is not None:
            out["age_seconds"] = round(now - self.mtime, 3)
        return out


KIND_LABELS = {
    "table": "tables",
    "wal": "WAL segments",
    "manifest": "MANIFEST segments",
    "current": "CURRENT",
    "lock": "LOCK",
    "checkpoint": "checkpoints",
    "archived": "archived (lost/)",
    "foreign": "other objects",
}


@dataclass
class Analysis:
    entries: list[Entry]
    current: str | None = None  # the MANIFEST name CURRENT points at
    manifest: ManifestState | None = None
    problems: list[str] = field(default_factory=list)  # damage: missing or mismatched live files
    notes: list[str] = field(default_factory=list)

    @property
    def has_database(self) -> bool:
        return self.current is not None

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {k: {"count": 0, "bytes": 0} for k in KIND_LABELS}
        for e in self.entries:
            out[e.kind]["count"] += 1
            out[e.kind]["bytes"] += e.size
        return out

    def orphans(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "orphan"]

    def kept(self) -> list[Entry]:
        """Objects no live version needs that a checkpoint does."""
        return [e for e in self.entries if e.status == "kept"]

    def foreign(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "foreign"]


class _Listed:
    """A store stand-in that replays one LIST (so Catalog.load and we see the same objects)."""

    def __init__(self, infos: list[ObjectInfo]) -> None:
        self._infos = infos

    def list(self, prefix: str = "") -> Iterable[ObjectInfo]:
        return iter(self._infos)


def analyze(store: ObjectStore, *, times: dict[str, float] | None = None, check_crc: bool = True) -> Analysis:
    """Classify every object under the store's prefix (see the module docstring)."""
    infos = list(store.list(""))
    analysis = _classify(store, infos, times or {}, check_crc)
    _keep_for_checkpoints(store, infos, analysis)
    return analysis


def _keep_for_checkpoints(store: ObjectStore, infos: list[ObjectInfo], analysis: Analysis) -> None:
    """An object no live version needs may still be one a checkpoint needs: never an orphan, then. A
    checkpoint that cannot be read is damage (gc then removes nothing), not permission to delete."""
    needed: dict[str, str] = {}
    for info in infos:
        name = checkpoint_name(info.key)
        if name is None:
            continue
        try:
            data = read_checkpoint(store, name)
        except Error as exc:
            analysis.problems.append(f"checkpoint {name!r} cannot be read: {exc}")
            continue
        for key in needed_keys(data):
            needed.setdefault(key, name)
    listed = {info.key for info in infos}
    for key, name in sorted(needed.items()):
        if key not in listed:
            analysis.problems.append(f"missing: {key} (needed by checkpoint {name!r})")
    for e in analysis.entries:
        if e.status == "orphan" and e.key in needed:
            e.status, e.reason = "kept", f"not live, but checkpoint {needed[e.key]!r} needs it"


def _classify(store: ObjectStore, infos: list[ObjectInfo], times: dict[str, float], check_crc: bool) -> Analysis:
    catalog = Catalog.load(_Listed(infos))  # type: ignore[arg-type]
    garbage = {o.key for o in catalog.garbage}
    entries: list[Entry] = []
    for info in infos:
        parsed = parse_key(info.key)
        if info.key == LOCK_KEY:
            kind = "lock"
        elif checkpoint_name(info.key) is not None:
            kind = "checkpoint"
        elif parsed is None:
            kind = "foreign"
        elif parsed.name == CURRENT_NAME:
            kind = "current"
        else:
            kind = {FileKind.TABLE: "table", FileKind.WAL: "wal", FileKind.MANIFEST: "manifest"}.get(
                kind_of(parsed.name), "archived")
        entry = Entry(info.key, info.size, kind, mtime=times.get(info.key))
        if kind == "foreign":
            entry.status, entry.reason = "foreign", "not a levels3 object name; never touched"
        elif kind == "checkpoint":
            entry.reason = "a named state of the database (db.checkpoint)"
        elif info.key in garbage:
            record = catalog.get(parsed.name)  # type: ignore[union-attr]
            if record is not None and record.epoch > parsed.epoch:  # type: ignore[union-attr]
                entry.status, entry.reason = "orphan", f"superseded by writer epoch {record.epoch}"
            else:
                entry.status, entry.reason = "orphan", "follows a gap in its file's segments"
        elif kind == "archived":
            entry.status, entry.reason = "archived", "archived by repair; kept"
        entries.append(entry)

    analysis = Analysis(entries)
    current_record = catalog.get(CURRENT_NAME)
    if current_record is None:
        for e in entries:
            if e.status == "live" and e.kind != "lock":
                e.status, e.reason = "unknown", "no CURRENT: nothing is committed"
        return analysis
    current = store.get(CURRENT_NAME)
    text = current.decode("utf-8", "replace")
    if not text.endswith("\n") or not re.fullmatch(r"MANIFEST-\d+", text[:-1]):
        analysis.problems.append(f"CURRENT does not name a manifest: {text!r}")
        analysis.current = text.strip() or "?"
        for e in entries:
            if e.status == "live" and e.kind in ("table", "wal", "manifest"):
                e.status, e.reason = "unknown", "CURRENT is unreadable"
        return analysis
    manifest_name = text[:-1]
    analysis.current = manifest_name
    manifest_record = catalog.get(manifest_name)
    if manifest_record is None or not manifest_record.objects:
        analysis.problems.append(f"missing: {manifest_name} (named by CURRENT)")
    else:
        try:
            data = b"".join(store.get(o.key) for o in manifest_record.objects)
            analysis.manifest = parse_manifest(manifest_name, data, check_crc=check_crc)
        except ManifestError as exc:
            analysis.problems.append(f"{manifest_name} cannot be parsed: {exc}")
    state = analysis.manifest
    if state is None:
        for e in entries:
            if e.status == "live" and e.kind in ("table", "wal", "manifest"):
                e.status, e.reason = "unknown", "the current manifest is unreadable"
        return analysis

    present_tables = {file_number(r.name): r for r in catalog.records()
                      if kind_of(r.name) is FileKind.TABLE and r.objects}
    for number, meta in sorted(state.tables.items()):
        record = present_tables.get(number)
        if record is None:
            analysis.problems.append(f"missing: table {number:06d}.ldb (level {meta.level}, {meta.size} bytes)")
        elif record.size != meta.size:
            analysis.problems.append(
                f"size mismatch: {record.name} is {record.size} bytes, the manifest says {meta.size}")

    for e in entries:
        if e.status != "live" or e.kind not in ("table", "wal", "manifest"):
            continue
        name = parse_key(e.key).name  # type: ignore[union-attr]
        file_no = file_number(name)
        if e.kind == "table":
            if file_no not in state.tables:
                e.status, e.reason = "orphan", "table not in the current version"
        elif e.kind == "wal":
            if file_no is None or (file_no < state.log_number and file_no != state.prev_log_number):
                e.status, e.reason = "orphan", f"log older than the one in use ({state.log_number:06d}.log)"
        elif name != manifest_name:
            e.status, e.reason = "orphan", f"not the current manifest ({manifest_name})"
    return analysis


def age_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def now() -> float:
    return time.time()
