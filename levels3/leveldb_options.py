"""LevelDB's own options, with plyvel's names and defaults: the one place that lists them.

levels3.DB takes them as keyword arguments, destroy_db and repair_db pick them
out of theirs (``LevelDBOptions.split``), and the native bridge copies a
validated LevelDBOptions into ``leveldb::Options``. ``None`` leaves LevelDB's
own default. Imports nothing of levels3.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

#: The options that must be positive ints (or None) when given.
_POSITIVE_SIZES = ("write_buffer_size", "max_open_files", "lru_cache_size", "block_size",
                   "block_restart_interval", "max_file_size")


@dataclass(frozen=True)
class LevelDBOptions:
    """How LevelDB itself runs (what plyvel.DB takes besides the name)."""

    create_if_missing: bool = False
    error_if_exists: bool = False
    paranoid_checks: bool | None = None
    write_buffer_size: int | None = None
    max_open_files: int | None = None
    lru_cache_size: int | None = None  # a block cache of this many bytes (None: LevelDB's 8 MiB)
    block_size: int | None = None
    block_restart_interval: int | None = None
    max_file_size: int | None = None  # LevelDB's target table size (not levels3's max_object_size)
    compression: str | None = "snappy"
    bloom_filter_bits: int = 0  # 0: no filter policy
    comparator: Callable[[bytes, bytes], int] | None = None
    comparator_name: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "create_if_missing", bool(self.create_if_missing))
        object.__setattr__(self, "error_if_exists", bool(self.error_if_exists))
        for name in _POSITIVE_SIZES:
            value = getattr(self, name)
            if value is not None and (type(value) is bool or not isinstance(value, int) or value <= 0):
                raise TypeError(f"{name} must be a positive int or None, not {value!r}")
        bits = self.bloom_filter_bits
        if type(bits) is bool or not isinstance(bits, int) or bits < 0:
            raise TypeError(f"bloom_filter_bits must be an int >= 0, not {bits!r}")
        if self.compression not in (None, "snappy"):
            raise ValueError(f"compression must be 'snappy' or None, not {self.compression!r}")
        if (self.comparator is None) != (self.comparator_name is None):
            # plyvel's words, for either one missing
            raise ValueError("'comparator' and 'comparator_name' must be specified together")
        if self.comparator is not None:
            if not callable(self.comparator):
                raise TypeError(f"comparator must be callable, not {type(self.comparator).__name__}")
            if not isinstance(self.comparator_name, bytes):
                raise TypeError(f"comparator_name must be bytes, not {type(self.comparator_name).__name__}")
            if not self.comparator_name:
                raise ValueError("comparator_name must not be empty")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split(cls, kwargs: Mapping[str, Any]) -> tuple["LevelDBOptions", dict[str, Any]]:
        """These options from ``kwargs``, and the rest of them (the store options)."""
        names = set(cls.names())
        return (cls(**{k: v for k, v in kwargs.items() if k in names}),
                {k: v for k, v in kwargs.items() if k not in names})
