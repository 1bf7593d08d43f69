"""How max_object_size bounds LevelDB's tables, and so the largest single write. Pure functions.

``max_object_size`` caps every object levels3 stores. The WAL and the
MANIFEST take as many segments as their bytes need (engine.writer), but a
table is one object, and LevelDB decides how large it grows:

- a table flushed from the memtable holds up to ``write_buffer_size`` plus
  the write group that overflowed it (LevelDB groups concurrent writes up to
  1 MiB, a larger write goes alone);
- a table written by a compaction holds up to ``max_file_size`` plus one data
  block (``block_size``) and the entry that crossed the limit.

Three quarters of the cap go to those entries; the last quarter is room for a
table's index, filter and footer. levels3 therefore picks defaults that fit
(``write_buffer_size`` = min(4 MiB, cap / 4), ``max_file_size`` =
min(2 MiB, cap / 4), which LevelDB raises to its minimum of 1 MiB), refuses
explicit options that cannot fit with a ConfigurationError naming both, and
refuses at the write (before LevelDB sees it) a single put, delete or write
batch heavier than what is left: ``max_write_bytes``. A write's weight counts
its keys twice (a table's index may repeat a block's last key whole) and a
few bytes per entry (a table's per-entry header), so no table built around it
can outgrow the cap. Imports only levels3.errors and levels3.options.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigurationError
from ..options import SMALLEST_OBJECT

KiB = 1 << 10
MiB = 1 << 20

#: The smallest max_object_size (StoreOptions refuses less): LevelDB's tables are at
#: least about 1 MiB (its minimum max_file_size), and a table needs a quarter of the cap besides.
MIN_OBJECT_SIZE = SMALLEST_OBJECT
#: What LevelDB groups concurrent writes into (DBImpl::BuildBatchGroup; the
#: group commit in csrc/group_commit.h uses the same bound).
WRITE_GROUP_BYTES = 1 * MiB
#: Bytes a table may spend per entry beyond the entry's key and value in a write
#: batch: the 8-byte sequence tag, three varints and its share of the restart array.
ENTRY_OVERHEAD = 16
#: A configuration that leaves less than this for one write is refused.
MIN_WRITE_BYTES = 64 * KiB

# LevelDB's defaults and the ranges it clips them to (SanitizeOptions).
_DEFAULT_WRITE_BUFFER, _WRITE_BUFFER_RANGE = 4 * MiB, (64 * KiB, 1 << 30)
_DEFAULT_FILE_SIZE, _FILE_SIZE_RANGE = 2 * MiB, (1 * MiB, 1 << 30)
_DEFAULT_BLOCK_SIZE, _BLOCK_SIZE_RANGE = 4 * KiB, (1 * KiB, 4 * MiB)


@dataclass(frozen=True)
class TableLimits:
    """LevelDB's table sizes under one max_object_size, and the heaviest write that fits beside them."""

    write_buffer_size: int
    max_file_size: int
    max_write_bytes: int  # the largest write_weight accepted


def _clip(value: int, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], value))


def table_limits(max_object_size: int, *, write_buffer_size: int | None = None, max_file_size: int | None = None,
                 block_size: int | None = None) -> TableLimits:
    """The limits for these options (None: levels3's default for this cap); raises
    ConfigurationError naming max_object_size and the option that cannot fit."""
    cap = max_object_size
    if cap < MIN_OBJECT_SIZE:  # StoreOptions refuses it too; this keeps the arithmetic honest alone
        raise ConfigurationError(f"max_object_size={cap} is below the minimum of {MIN_OBJECT_SIZE} bytes")
    budget = cap * 3 // 4
    buffer = _clip(min(_DEFAULT_WRITE_BUFFER, cap // 4) if write_buffer_size is None else write_buffer_size,
                   _WRITE_BUFFER_RANGE)
    file_size = _clip(min(_DEFAULT_FILE_SIZE, cap // 4) if max_file_size is None else max_file_size,
                      _FILE_SIZE_RANGE)
    block = _clip(_DEFAULT_BLOCK_SIZE if block_size is None else block_size, _BLOCK_SIZE_RANGE)
    needed = max(buffer + WRITE_GROUP_BYTES, buffer + MIN_WRITE_BYTES, file_size + block + MIN_WRITE_BYTES)
    if needed > budget:
        smallest_cap = -(-needed * 4 // 3)
        if buffer + max(WRITE_GROUP_BYTES, MIN_WRITE_BYTES) >= file_size + block + MIN_WRITE_BYTES:
            what = (f"write_buffer_size={buffer} does not fit max_object_size={cap}: a table flushed from the "
                    f"memtable holds up to write_buffer_size + {WRITE_GROUP_BYTES} bytes (a write group), and that "
                    "must stay within three quarters of max_object_size")
        else:
            named = "max_file_size" if max_file_size is not None or block_size is None else "block_size"
            what = (f"{named}={file_size if named == 'max_file_size' else block} does not fit "
                    f"max_object_size={cap}: a table a compaction writes holds up to max_file_size + block_size "
                    f"(here {file_size} + {block}) + one write, and that must stay within three quarters of "
                    "max_object_size")
        raise ConfigurationError(f"{what}; choose a smaller value or max_object_size >= {smallest_cap}")
    return TableLimits(buffer, file_size, budget - max(buffer, file_size + block))


def write_weight(payload_bytes: int, key_bytes: int, entries: int) -> int:
    """What one write counts against max_write_bytes: its batch's bytes, its keys again,
    and ENTRY_OVERHEAD per entry (see the module docstring)."""
    return payload_bytes + key_bytes + ENTRY_OVERHEAD * entries
