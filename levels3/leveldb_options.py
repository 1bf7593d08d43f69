"""LevelDB's own options, with plyvel's names and defaults: the one place that lists them.

levels3.DB takes them as keyword arguments, destroy_db and repair_db pick them
out of theirs (``LevelDBOptions.split``), and the native bridge copies a
validated LevelDBOptions into ``leveldb::Options``. ``None`` leaves LevelDB's
own default. Numbers are checked by the shared rules (levels3.options.DB_NUMBER_RULES).
Imports only levels3.options and levels3.errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .options import DB_NUMBER_RULES

#: The numeric options, each checked by its rule in DB_NUMBER_RULES.
_NUMBERS = ("write_buffer_size", "max_open_files", "lru_cache_size", "block_size",
            "block_restart_interval", "max_file_size", "bloom_filter_bits")


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
        for name in _NUMBERS:
            object.__setattr__(self, name, DB_NUMBER_RULES[name].check(name, getattr(self, name)))
        if self.compression not in (None, "snappy"):
            raise ValueError(f"compression must be 'snappy' or None, not {self.compression!r}")
        if self.comparator is not None:
            if not callable(self.comparator):
                raise TypeError("comparator must be callable")
            if not isinstance(self.comparator_name, bytes) or not self.comparator_name:
                raise TypeError("comparator_name must be given as non-empty bytes with comparator")
        elif self.comparator_name is not None:
            raise TypeError("comparator_name given without comparator")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split(cls, kwargs: Mapping[str, Any]) -> tuple["LevelDBOptions", dict[str, Any]]:
        """These options from ``kwargs``, and the rest of them (the store options)."""
        names = set(cls.names())
        return (cls(**{k: v for k, v in kwargs.items() if k in names}),
                {k: v for k, v in kwargs.items() if k not in names})
