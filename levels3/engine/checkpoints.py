"""Checkpoints: a recorded version, stored as ``checkpoints/<name>.json``.

The JSON names CURRENT's content and every object of every live file at the
time; nothing is copied. This module owns that format: writing one
(write_checkpoint, which the writer calls once it has chosen the objects) and
reading one back. Whoever deletes objects (the writer's reaper, ``levels3 gc``)
must keep what any checkpoint names, and must delete nothing it cannot prove
unneeded when a checkpoint cannot be read. May call the store interface only.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..errors import ConfigurationError, Error, ObjectNotFound, PreconditionFailed
from ..stores.base import ObjectStore, PutMode
from .layout import CHECKPOINT_PREFIX

if TYPE_CHECKING:
    from .catalog import StoredObject

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
FORMAT_VERSION = 1


def checkpoint_key(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(f"checkpoint name must be 1-128 letters, digits, '.', '_' or '-': {name!r}")
    return f"{CHECKPOINT_PREFIX}{name}.json"


def checkpoint_name(key: str) -> str | None:
    """The checkpoint a key holds, or None for any other key (even one under checkpoints/)."""
    if not key.startswith(CHECKPOINT_PREFIX) or not key.endswith(".json"):
        return None
    name = key[len(CHECKPOINT_PREFIX):-len(".json")]
    return name if _NAME.fullmatch(name) else None


def _well_formed(data: Any) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        return False
    if not (isinstance(data.get("current"), str) and isinstance(data.get("epoch"), int)
            and isinstance(data.get("created"), (int, float))):
        return False
    for rows in data["files"].values():
        if not isinstance(rows, list):
            return False
        for row in rows:  # [key, offset, size, etag, level]
            if not (isinstance(row, list) and len(row) == 5 and isinstance(row[0], str) and isinstance(row[3], str)
                    and all(isinstance(n, int) for n in (row[1], row[2], row[4]))):
                return False
    return True


def write_checkpoint(store: ObjectStore, name: str, *, epoch: int, current: str,
                     files: Mapping[str, Sequence["StoredObject"]]) -> None:
    """Store checkpoint ``name``: CURRENT's content and the objects of every live file.

    Created with If-None-Match, so an existing checkpoint is never replaced.
    """
    key = checkpoint_key(name)
    rows = {file: [[o.key, o.offset, o.size, o.etag, o.level] for o in objects] for file, objects in files.items()}
    body = json.dumps({"version": FORMAT_VERSION, "name": name, "epoch": epoch, "created": time.time(),
                       "current": current, "files": rows}, sort_keys=True).encode()
    try:
        store.put(key, body, mode=PutMode.CREATE)
    except PreconditionFailed:
        raise Error(f"a checkpoint named {name!r} already exists in {store.url}") from None


def read_checkpoint(store: ObjectStore, name: str) -> dict[str, Any]:
    """The checkpoint's JSON; Error if it is absent, unreadable or not a checkpoint of this format."""
    key = checkpoint_key(name)
    try:
        data = json.loads(store.get(key))
    except ObjectNotFound:
        raise Error(f"no checkpoint named {name!r} in {store.url}") from None
    except ValueError as exc:
        raise Error(f"checkpoint {name!r} in {store.url} is corrupt: {exc}") from None
    if isinstance(data, dict) and data.get("version") != FORMAT_VERSION:
        raise Error(f"checkpoint {name!r} has an unknown format version {data.get('version')!r}")
    if not _well_formed(data):
        raise Error(f"checkpoint {name!r} in {store.url} is corrupt: not a levels3 checkpoint")
    return data


def needed_keys(data: dict[str, Any]) -> list[str]:
    """Every object key a (well-formed) checkpoint names."""
    return [row[0] for rows in data["files"].values() for row in rows]
