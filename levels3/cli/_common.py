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
from typing import Any

from ..stores.assembly import build_store, resolve_options
from ..engine.layout import CURRENT_NAME
from ..errors import ConfigurationError, ObjectNotFound
from ..options import Location, StoreOptions, parse_location
from ..stores.base import ObjectStore

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
                       help="wait this long for the writer lock instead of failing at once")
    group.add_argument("--lease-duration", type=float, metavar="SECONDS",
                       help="how long a silent writer's lease is respected (default 30)")


def store_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword store options for levels3.DB / StoreOptions from the parsed arguments."""
    out: dict[str, Any] = {}
    for name in ("endpoint_url", "region", "path_style", "cache_dir", "lock_timeout"):
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
    import levels3

    location_of(url)  # a bad URL is a usage error
    return levels3.DB(url, **config, **store_kwargs(args))


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


def progress(total: int, *, quiet: bool, desc: str) -> Any:
    """A tqdm byte counter on stderr; a no-op when quiet, not a tty, or tqdm is absent."""
    enabled = not quiet and sys.stderr.isatty()
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                        file=sys.stderr, leave=False)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass
    return _NoProgress()


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        pass
