"""destroy_db, repair_db and restore: maintenance calls, run on a store."""

from __future__ import annotations

from typing import Any

from . import _native
from .engine.backend import Backend
from .stores.assembly import build_store, resolve_options
from .stores.base import PutMode
from .engine.checkpoints import needed_keys, read_checkpoint
from .engine.layout import CURRENT_NAME, EPOCH_METADATA
from .errors import Error
from .options import StoreOptions, parse_location

_DEFAULT_CONFIG = dict(
    create_if_missing=False, error_if_exists=False, paranoid_checks=None, write_buffer_size=None,
    max_open_files=None, lru_cache_size=None, block_size=None, block_restart_interval=None,
    max_file_size=None, compression="snappy", bloom_filter_bits=0, comparator=None, comparator_name=None,
)


def _config(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    config = dict(_DEFAULT_CONFIG)
    store_options: dict[str, Any] = {}
    for key, value in kwargs.items():
        (config if key in config else store_options)[key] = value
    return config, store_options


def destroy_db(name: Any, *, options: StoreOptions | None = None, **kwargs: Any) -> None:
    """Delete every object of the database at ``name`` (takes the writer lock first)."""
    config, store_options = _config(kwargs)
    backend = Backend.open(name, options, store_options, create_if_missing=False)
    try:
        _native._run_maintenance(backend, config, False)
        backend.delete_all()
    finally:
        backend.close()


def repair_db(name: Any, *, options: StoreOptions | None = None, **kwargs: Any) -> None:
    """Rebuild the database's metadata from whatever tables and logs survive."""
    config, store_options = _config(kwargs)
    backend = Backend.open(name, options, store_options, create_if_missing=False)
    try:
        _native._run_maintenance(backend, config, True)
    finally:
        backend.close()


def restore(source: Any, checkpoint: str, target: Any, *, options: StoreOptions | None = None,
            **store_options: Any) -> None:
    """Make a new, writable database at ``target`` from checkpoint ``checkpoint`` of ``source``.

    Copies the objects the checkpoint needs (and nothing else), then writes
    CURRENT last: until then the target is not a database. ``target`` may be
    another prefix of the same bucket, another bucket or a local directory; it
    must be empty, or hold only what an interrupted restore of this checkpoint
    left (the restore then resumes).
    """
    opts = resolve_options(options, store_options)
    dst_location = parse_location(target)
    src_store, _ = build_store(parse_location(source), opts, create=False)
    try:
        data = read_checkpoint(src_store, checkpoint)  # before the target is touched (or created)
        needed = needed_keys(data)
        dst_store, _ = build_store(dst_location, opts, create=True)
        try:
            # Only an earlier, interrupted restore of this same checkpoint may have left objects there:
            # anything else (another database, another checkpoint's segments) would be read as part of it.
            present = {info.key for info in dst_store.list("")}
            if CURRENT_NAME in present:
                raise Error(f"{dst_location.url} already holds a database; restore needs an empty target")
            foreign = sorted(present - set(needed))
            if foreign:
                raise Error(f"{dst_location.url} is not empty ({len(foreign)} objects this checkpoint does not "
                            f"name, e.g. {foreign[0]!r}); restore needs an empty target")
            for key in needed:
                dst_store.put(key, src_store.get(key))
            dst_store.put(CURRENT_NAME, data["current"].encode(), mode=PutMode.CREATE,
                          metadata={EPOCH_METADATA: str(data["epoch"])})
        finally:
            dst_store.close()
    finally:
        src_store.close()
