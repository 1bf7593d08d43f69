"""LevelDB's own options, with plyvel's names and defaults: the one place that lists them.

levels3.DB takes them as keyword arguments, destroy_db and repair_db pick them
out of theirs (``LevelDBOptions.split``), and the native bridge copies a
validated LevelDBOptions into ``leveldb::Options``. ``None`` leaves LevelDB's
own default. Numbers are checked by the shared rules (levels3.options.DB_NUMBER_RULES);
a custom comparator is tried on sample keys (check_comparator). Imports only
levels3.options and levels3.errors.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .options import DB_NUMBER_RULES

#: The numeric options, each checked by its rule in DB_NUMBER_RULES.
_NUMBERS = ("write_buffer_size", "max_open_files", "lru_cache_size", "block_size",
            "block_restart_interval", "max_file_size", "bloom_filter_bits")

#: Keys a comparator is tried on at open: the empty key, bytes at both ends of the
#: range, text and a length difference. A comparator made for keys of one format may
#: raise on some of them; that alone does not refuse it.
COMPARATOR_SAMPLE_KEYS = (b"", b"\x00", b"0", b"9", b"a", b"ab", b"b", b"\xff\xff")


def comparison_result(result: Any) -> int:
    """A comparator's result as an int: any int but a bool (a bool cannot say "less"), or
    what ``__index__`` gives (numpy's ints). Anything else raises TypeError. The same rule
    holds at open (check_comparator) and for every comparison later (levels3._callbacks)."""
    if not isinstance(result, bool):
        try:
            return operator.index(result)
        except TypeError:
            pass
    text = repr(result)
    text = text if len(text) <= 80 else text[:77] + "..."
    raise TypeError(f"the comparator returned {type(result).__name__} {text}; "
                    "a comparator returns a negative, zero or positive int")


def check_comparator(comparator: Callable[[bytes, bytes], Any], name: bytes) -> None:
    """Call ``comparator`` on every pair of COMPARATOR_SAMPLE_KEYS, so that the common
    mistakes are a TypeError at open rather than an abort later (a comparison that fails
    inside LevelDB aborts the process: see levels3._callbacks). A result that is not an int
    refuses it; so does raising on every pair (the exception is chained). Raising on some
    pairs only is allowed: a comparator may be made for keys of one format."""
    described = f"comparator {name!r} ({comparator!r})"
    failures: list[Exception] = []
    answered = 0
    for a in COMPARATOR_SAMPLE_KEYS:
        for b in COMPARATOR_SAMPLE_KEYS:
            try:
                result = comparator(a, b)
            except Exception as exc:
                failures.append(exc)
                continue
            try:
                comparison_result(result)
            except TypeError as exc:
                raise TypeError(f"{described} comparing {a!r} with {b!r}: {exc}") from None
            answered += 1
    if not answered:
        last = failures[-1]
        raise TypeError(f"{described} raised on every pair of sample keys it was tried on at open "
                        f"({type(last).__name__}: {last}); a comparator returns a negative, zero "
                        "or positive int for any two keys") from last


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
    bloom_filter_bits: int = 10  # 0: no filter policy (plyvel's default); see README, Bloom filters
    comparator: Callable[[bytes, bytes], int] | None = None
    comparator_name: bytes | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "create_if_missing", bool(self.create_if_missing))
        object.__setattr__(self, "error_if_exists", bool(self.error_if_exists))
        for name in _NUMBERS:
            object.__setattr__(self, name, DB_NUMBER_RULES[name].check(name, getattr(self, name)))
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
            check_comparator(self.comparator, self.comparator_name)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split(cls, kwargs: Mapping[str, Any]) -> tuple["LevelDBOptions", dict[str, Any]]:
        """These options from ``kwargs``, and the rest of them (the store options)."""
        names = set(cls.names())
        return (cls(**{k: v for k, v in kwargs.items() if k in names}),
                {k: v for k, v in kwargs.items() if k not in names})
