"""Shared pieces of the command line: store options, opening, rendering, errors.

Stores come from levels3.stores (assembly), databases from levels3.DB; the
subcommand modules present what those return.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import sys
import threading
from typing import Any, Callable

from ..engine.inventory import Analysis, analyze
from ..engine.layout import CURRENT_NAME
from ..stores.assembly import build_store, resolve_options
from ..errors import ConfigurationError, ObjectNotFound
from ..options import Location, StoreOptions, parse_location
from ..stores.base import ObjectStore
from ..stores.counting import CountingStore

log = logging.getLogger("levels3.cli")

FORMATS = ("text", "hex", "base64")


class CommandError(Exception):
    """An operational failure the CLI reports in one line (exit code 1 unless given)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CommandError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 2)


# -- options ------------------------------------------------------------------------------


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "store options",
        "Credentials come from the standard AWS chain (environment, shared files, instance role).")
    group.add_argument("--endpoint-url", metavar="URL",
                       help="S3-compatible endpoint (MinIO, Ceph, R2, moto ...); default: AWS")
    group.add_argument("--region", help="the bucket's region (default: the AWS chain's)")
    group.add_argument("--path-style", action="store_true", default=None,
                       help="use path-style addressing (most self-hosted endpoints)")
    group.add_argument("--cache-dir", metavar="DIR",
                       help="where LevelDB's files live locally (default: a temporary directory)")
    group.add_argument("--lock-timeout", type=float, metavar="SECONDS",
                       help="commands that write (put, delete, import, checkpoint, gc --delete): wait this long "
                            "for the writer lock instead of failing at once; commands that read take no lock")
    group.add_argument("--lease-duration", type=float, metavar="SECONDS",
                       help="how long a silent writer's lease is respected (default 30)")


def store_kwargs(args: argparse.Namespace, *, writer: bool = True) -> dict[str, Any]:
    """Keyword store options for levels3.DB / StoreOptions from the parsed arguments
    (a reader's leave out the lock's)."""
    out: dict[str, Any] = {}
    for name in ("endpoint_url", "region", "path_style", "cache_dir") + (("lock_timeout",) if writer else ()):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    duration = getattr(args, "lease_duration", None)
    if duration is not None:
        if duration <= 0:
            raise UsageError("--lease-duration must be positive")
        out["lease_duration"] = duration
        out["lease_renewal"] = min(StoreOptions.lease_renewal, duration / 3)
    return out


def store_options(args: argparse.Namespace) -> StoreOptions:
    return resolve_options(None, store_kwargs(args))


def location_of(url: str) -> Location:
    try:
        return parse_location(url)
    except (ConfigurationError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def open_store(args: argparse.Namespace, url: str, *, create: bool = False) -> tuple[Location, StoreOptions, ObjectStore]:
    """The database's object store with retries (no LevelDB, no lock)."""
    location = location_of(url)
    options = store_options(args)
    store, _ = build_store(location, options, create=create)
    return location, options, store


def database_exists(args: argparse.Namespace, url: str) -> bool:
    """Whether a database is committed at url (its CURRENT exists)."""
    try:
        _, _, store = open_store(args, url)
    except ObjectNotFound:
        return False  # not even its directory
    try:
        store.head(CURRENT_NAME)
        return True
    except ObjectNotFound:
        return False
    finally:
        store.close()


def open_db(args: argparse.Namespace, url: str, **config: Any) -> Any:
    """The database as its writer: for commands that write (takes the lock, --lock-timeout applies)."""
    import levels3

    location_of(url)  # a bad URL is a usage error
    return levels3.DB(url, **config, **store_kwargs(args))


def open_reader(args: argparse.Namespace, url: str, **config: Any) -> Any:
    """The database as a follower, for commands that only read: no lock, so it works beside a live
    writer, and nothing is written to the store (LevelDB's recovery stays in a private cache)."""
    import levels3

    location_of(url)
    return levels3.DB(url, read_only=True, **config, **store_kwargs(args, writer=False))


def analyze_settled(store: ObjectStore, **kwargs: Any) -> Analysis:
    """The inventory of a database that a live writer may be changing meanwhile.

    A LIST is no snapshot: a table created after the LIST passed its key, or segments a merge replaced
    and deleted between the LIST and their GET, look like damage for one pass. Such problems are gone
    when the store is listed again; real damage is found the same way every time. So a pass with
    problems is repeated (up to 3 passes) until two agree.
    """
    analysis = _analyze_once(store, kwargs)
    for _ in range(2):
        if not analysis.problems:
            break
        again = _analyze_once(store, kwargs)
        if again.problems == analysis.problems:
            break
        analysis = again
    return analysis


def _analyze_once(store: ObjectStore, kwargs: dict[str, Any]) -> Analysis:
    try:
        return analyze(store, **kwargs)
    except ObjectNotFound as exc:  # listed, then gone before it was read
        return Analysis([], current="?", problems=[f"missing: {exc.key or exc} (listed, then gone)"])


# -- keys and values --------------------------------------------------------------------------


def parse_bytes(text: str, fmt: str, what: str) -> bytes:
    if fmt == "hex":
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise UsageError(f"{what} is not valid hex: {text!r}") from None
    if fmt == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{what} is not valid base64: {text!r}") from None
    return os.fsencode(text)  # the bytes as given on the command line


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape(data: bytes) -> str:
    """UTF-8 text with backslash escapes for everything not printable (reversible)."""
    out = []
    for ch in data.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def render(data: bytes, fmt: str) -> str:
    if fmt == "hex":
        return data.hex()
    if fmt == "base64":
        return base64.b64encode(data).decode("ascii")
    return escape(data)


# -- output ----------------------------------------------------------------------------------


def emit_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def progress(total_bytes: int, *, objects: int | None = None, quiet: bool, desc: str) -> "Progress":
    """A progress bar of bytes and objects on stderr: only on a terminal and without --quiet."""
    return Progress(total_bytes, objects=objects, enabled=not quiet and sys.stderr.isatty(), desc=desc)


class Progress:
    """A tqdm bar counting bytes, with "done/total objects" after it; does nothing when disabled.

    ``update`` may be called from several threads. ``counting(kind)`` is a ``wrap_store`` that
    advances the bar by every get, put or delete request an opened database makes.
    """

    def __init__(self, total_bytes: int, *, objects: int | None, enabled: bool, desc: str) -> None:
        self._bar: Any = None
        self._objects_total = objects
        self._objects = 0
        self._lock = threading.Lock()
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                             file=sys.stderr, leave=False, dynamic_ncols=True, postfix=self._objects_text())

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def _objects_text(self) -> str:
        total = "" if self._objects_total is None else f"/{self._objects_total}"
        return f"{self._objects}{total} objects"

    def update(self, nbytes: int, objects: int = 1) -> None:
        if self._bar is None:
            return
        with self._lock:
            self._objects += objects
            self._bar.set_postfix_str(self._objects_text(), refresh=False)  # shown with the next redraw
            self._bar.update(nbytes)

    def counting(self, kind: str) -> Callable[[ObjectStore], ObjectStore] | None:
        """A wrap_store for levels3.DB that advances the bar by each ``kind`` request's bytes."""
        if self._bar is None:
            return None
        return lambda inner: _ProgressStore(inner, self, kind)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ProgressStore(CountingStore):
    """Forwards every request; a successful one of the watched kind advances a Progress."""

    def __init__(self, inner: ObjectStore, bar: Progress, kind: str) -> None:
        super().__init__(inner, reservoir=1)
        self._bar = bar
        self._kind = kind

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        data = super().get(key, start, end)
        if self._kind == "get":
            self._bar.update(len(data))
        return data

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        etag = super().put(key, data, **kwargs)
        if self._kind == "put":
            self._bar.update(len(data))
        return etag
