"""Store options and URL parsing: where a database lives and how its backend behaves.

Owns StoreOptions (with its old name S3Options kept as an alias: the same
options configure file:// databases), Location, and the one validation helper
for every numeric option (NumberRule.check): store options here, the lease's
in levels3.lock, LevelDB's and the DB's own (DB_NUMBER_RULES) in the bridge.
It may import only levels3.errors; everything else reads these values.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import operator
import os
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from .errors import ConfigurationError

MiB = 1024 * 1024
GiB = 1024 * MiB

#: The longest duration any option may have: every duration ends up as a timed
#: wait (threading, sockets), and those raise OverflowError beyond this.
LONGEST_DURATION = threading.TIMEOUT_MAX
#: S3 refuses a single PUT above 5 GiB, so no object can be larger.
LARGEST_OBJECT = 5 * GiB
#: The smallest max_object_size: a LevelDB table is about 1 MiB at least, and needs
#: room besides (engine.sizing explains the arithmetic).
SMALLEST_OBJECT = 2 * MiB
C_INT_MAX = 2**31 - 1  # LevelDB's int options (max_open_files, block_restart_interval, bloom bits)
SIZE_T_MAX = 2**64 - 1  # LevelDB's size_t options (write_buffer_size, block_size, ...)


@dataclass(frozen=True)
class NumberRule:
    """What one numeric option may hold: an int or any real number, finite,
    between ``minimum`` and ``maximum`` (``minimum`` itself excluded when
    ``above`` is set), or None when ``optional``.

    NaN, an infinity or a number out of range raises ConfigurationError (a
    ValueError); any other value of the wrong type (a str, a bool, a finite
    float where an int is needed) raises TypeError. Both messages name the
    option.
    """

    integer: bool = False
    minimum: float | None = None
    above: bool = False
    maximum: float | None = None
    optional: bool = False
    unit: str = ""

    def check(self, name: str, value: Any) -> Any:
        """The value, normalised to int or float (None stays None when optional)."""
        if value is None and self.optional:
            return None
        if isinstance(value, float) and not math.isfinite(value):  # NaN, +-inf: bad values, whatever the type
            raise ConfigurationError(f"{name} must be {self.describe()}, got {_shown(value)}")
        number = self._as_number(name, value)
        if (isinstance(number, float) and not math.isfinite(number)) or not self._in_range(number):
            raise ConfigurationError(f"{name} must be {self.describe()}, got {_shown(value)}")
        return number

    def describe(self) -> str:
        text = "an int" if self.integer else "a finite number"
        if self.unit:
            text += f" ({self.unit})"
        bounds = []
        if self.minimum is not None:
            bounds.append(f"{'>' if self.above else '>='} {_bound(self.minimum)}")
        if self.maximum is not None:
            bounds.append(f"<= {_bound(self.maximum)}")
        if bounds:
            text += " " + " and ".join(bounds)
        return text + (" or None" if self.optional else "")

    def _as_number(self, name: str, value: Any) -> int | float:
        if not isinstance(value, bool):
            if self.integer:
                try:
                    return operator.index(value)  # int, and numpy's ints; never a float
                except TypeError:
                    pass
            elif isinstance(value, numbers.Real):
                return value if isinstance(value, int) else float(value)
        raise TypeError(f"{name} must be {self.describe()}, not {type(value).__name__} {_shown(value)}")

    def _in_range(self, number: int | float) -> bool:
        if self.minimum is not None and (number <= self.minimum if self.above else number < self.minimum):
            return False
        return self.maximum is None or number <= self.maximum


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


POSITIVE_SECONDS = NumberRule(minimum=0, above=True, maximum=LONGEST_DURATION, unit="seconds")
OPTIONAL_POSITIVE_SECONDS = dataclasses.replace(POSITIVE_SECONDS, optional=True)

#: Every numeric store option and its rule; S3Options checks them all, and
#: LeaseLock checks the lease's three with the same rules.
STORE_NUMBER_RULES: dict[str, NumberRule] = {
    "max_cache_bytes": NumberRule(integer=True, minimum=1, unit="bytes"),
    "cache_page_size": NumberRule(integer=True, minimum=4096, maximum=64 * MiB, unit="bytes"),  # and a power of two
    "max_object_size": NumberRule(integer=True, minimum=SMALLEST_OBJECT, maximum=LARGEST_OBJECT, unit="bytes"),
    "retry_max_attempts": NumberRule(integer=True, minimum=1),
    "retry_base_delay": POSITIVE_SECONDS,
    "request_timeout": POSITIVE_SECONDS,
    "lease_duration": POSITIVE_SECONDS,
    "lease_renewal": POSITIVE_SECONDS,
    "lock_timeout": NumberRule(minimum=0, maximum=LONGEST_DURATION, optional=True, unit="seconds"),
    "flush_interval": OPTIONAL_POSITIVE_SECONDS,
    "deletion_grace": NumberRule(minimum=0, maximum=LONGEST_DURATION, unit="seconds"),
}

#: The other numeric options DB() takes (LevelDB's, and a follower's
#: refresh_interval), for the native bridge to check the same way; None leaves
#: LevelDB's default. LevelDB clips several into ranges of its own, as in plyvel;
#: these bounds keep them inside their C types.
DB_NUMBER_RULES: dict[str, NumberRule] = {
    "write_buffer_size": NumberRule(integer=True, minimum=1, maximum=SIZE_T_MAX, optional=True, unit="bytes"),
    "max_open_files": NumberRule(integer=True, minimum=1, maximum=C_INT_MAX, optional=True),
    "lru_cache_size": NumberRule(integer=True, minimum=1, maximum=SIZE_T_MAX, optional=True, unit="bytes"),
    "block_size": NumberRule(integer=True, minimum=1, maximum=SIZE_T_MAX, optional=True, unit="bytes"),
    "block_restart_interval": NumberRule(integer=True, minimum=1, maximum=C_INT_MAX, optional=True),
    "max_file_size": NumberRule(integer=True, minimum=1, maximum=SIZE_T_MAX, optional=True, unit="bytes"),
    "bloom_filter_bits": NumberRule(integer=True, minimum=0, maximum=C_INT_MAX),
    "refresh_interval": OPTIONAL_POSITIVE_SECONDS,
}


def check_lease_timing(lease_duration: Any, lease_renewal: Any, lock_timeout: Any) -> tuple[float, float, float | None]:
    """The lease's three durations, checked (see STORE_NUMBER_RULES) and consistent."""
    duration = STORE_NUMBER_RULES["lease_duration"].check("lease_duration", lease_duration)
    renewal = STORE_NUMBER_RULES["lease_renewal"].check("lease_renewal", lease_renewal)
    timeout = STORE_NUMBER_RULES["lock_timeout"].check("lock_timeout", lock_timeout)
    if renewal >= duration:
        raise ConfigurationError(f"lease_renewal ({renewal:g} s) must be shorter than lease_duration ({duration:g} s)")
    return duration, renewal, timeout


@dataclass
class StoreOptions:
    """Everything about *where* the database lives and how the backend behaves.

    Durations are seconds (int or float); sizes are bytes.  ``None`` for
    ``access_key``/``secret_key``/``region`` means boto3's standard chain.
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    path_style: bool = False
    cache_dir: str | None = None  # None: a private temporary directory removed on close
    max_cache_bytes: int = 1024 * MiB
    cache_page_size: int = 64 * 1024  # tables are cached (and fetched) in pages of this size
    max_object_size: int = 64 * MiB  # the largest object stored or fetched (not LevelDB's max_file_size)
    retry_max_attempts: int = 3
    retry_base_delay: float = 0.1
    request_timeout: float = 30.0
    lease_duration: float = 30.0
    lease_renewal: float = 10.0
    lock_timeout: float | None = None  # None: fail at once if a live writer holds the lock
    flush_interval: float | None = None  # upload unsynced WAL bytes this often (None: only on sync/flush/close)
    deletion_grace: float = 300.0  # keep objects LevelDB deleted this long, for followers on older versions
    logger: logging.Logger | None = None
    client: Any = None  # a ready boto3 S3 client (takes precedence over the fields above)
    session: Any = None  # a boto3 Session to build the client from
    # Wraps the bare store before levels3 adds its own layers: for custom
    # metrics, or (as the tests do) a levels3.stores.FaultInjectingStore. A
    # wrapper whose failed requests may still have landed must keep
    # ambiguous_failures True (ObjectStore's default).
    wrap_store: Any = None

    def __post_init__(self) -> None:
        for name, rule in STORE_NUMBER_RULES.items():
            setattr(self, name, rule.check(name, getattr(self, name)))
        if self.cache_page_size & (self.cache_page_size - 1):
            raise ConfigurationError(f"cache_page_size must be a power of two, got {self.cache_page_size}")
        check_lease_timing(self.lease_duration, self.lease_renewal, self.lock_timeout)
        if self.cache_dir is not None:
            self.cache_dir = os.fspath(self.cache_dir)

    def __repr__(self) -> str:  # never show secrets
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("access_key", "secret_key", "session_token") and value is not None:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"StoreOptions({', '.join(shown)})"

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))


#: The name this class had before it configured local directories too; kept for compatibility.
S3Options = StoreOptions


@dataclass(frozen=True)
class Location:
    """Where a database lives: ``scheme`` is ``s3`` or ``file``."""

    scheme: str
    bucket: str  # s3 only
    prefix: str  # s3: key prefix without trailing slash ('' = bucket root); file: absolute directory

    @property
    def url(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"file://{self.prefix}"


def parse_location(name: Any) -> Location:
    """Accept ``s3://bucket/prefix``, ``file:///path`` or a plain path."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if not isinstance(name, str):
        raise TypeError(f"database name must be str, bytes or os.PathLike, not {type(name).__name__}")
    if not name:
        raise ConfigurationError("database name is empty")
    if "://" not in name:
        return Location("file", "", os.path.abspath(name))
    parsed = urlparse(name)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file:// URL must not name a host: {name!r}")
        path = unquote(parsed.path)
        if not path:
            raise ConfigurationError(f"file:// URL has no path: {name!r}")
        return Location("file", "", os.path.abspath(path))
    if parsed.scheme == "s3":
        bucket = parsed.netloc
        if not bucket or len(bucket) < 3 or "@" in bucket or ":" in bucket:
            raise ConfigurationError(f"s3:// URL needs a valid bucket name: {name!r}")
        if parsed.query or parsed.fragment:
            raise ConfigurationError(f"s3:// URL must not carry a query or fragment: {name!r}")
        prefix = parsed.path.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise ConfigurationError(f"s3:// prefix has an empty or relative segment: {name!r}")
        return Location("s3", bucket, prefix)
    raise ConfigurationError(f"unsupported URL scheme {parsed.scheme!r} in {name!r} (use s3://, file:// or a path)")
