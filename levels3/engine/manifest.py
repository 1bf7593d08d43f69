"""LevelDB's on-disk log format and the VersionEdits a MANIFEST holds, parsed in Python.

Owns the reading of LevelDB's formats outside LevelDB itself: CRC32C as
LevelDB masks it, the 32 KiB-block log of fragmented records (the WAL and the
MANIFEST share it), and the VersionEdit tags that add and drop tables. Used
where LevelDB is not running: the inventory (info, verify, gc), a follower
deciding whether its LIST missed a table, and repair's salvage of a damaged
log (which record a missing range cuts into). Imports nothing of levels3.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable

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

LOG_BLOCK = _BLOCK = 32768
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


def unreadable_from(f: BinaryIO, position: int) -> int:
    """Where the physical record that bytes missing from ``position`` on cut into
    begins, in a log file ``f`` (read up to ``position``, which is genuine).

    Zeroing the file from there makes LevelDB's log reader see a zero header,
    skip the rest of that block, and read on from the next one; without it, a
    reader that does not check checksums (RepairDB's) would take a record half
    made of zeros for a real one.
    """
    block_start = position - position % _BLOCK
    f.seek(block_start)
    data = f.read(position - block_start)
    pos = 0
    while True:
        if _BLOCK - pos < _HEADER:
            return position  # inside the block's trailer: nothing genuine is cut
        if pos + _HEADER > len(data):
            return block_start + pos  # the header itself is cut (or the gap starts at a record)
        _, length, kind = struct.unpack_from("<IHB", data, pos)
        if kind == 0 and length == 0:
            return position  # zero padding: the reader skips the rest of the block anyway
        end = pos + _HEADER + length
        if end > len(data):
            return block_start + pos
        pos = end


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
