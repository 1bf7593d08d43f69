"""destroy_db, repair_db and restore: maintenance calls, run on a store."""

from __future__ import annotations

from typing import Any

from . import _native
from .engine.backend import Backend, build_store, read_checkpoint, resolve_options
from .engine.layout import CURRENT_NAME, EPOCH_METADATA
from .errors import Error, ObjectNotFound
from .options import S3Options, parse_location

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


def destroy_db(name: Any, *, options: S3Options | None = None, **kwargs: Any) -> None:
    """Delete every object of the database at ``name`` (takes the writer lock first)."""
    config, store_options = _config(kwargs)
    backend = Backend.open(name, options, store_options, create_if_missing=False)
    try:
        _native._run_maintenance(backend, config, False)
        backend.delete_all()
    finally:
        backend.close()


def repair_db(name: Any, *, options: S3Options | None = None, **kwargs: Any) -> None:
    """Rebuild the database's metadata from whatever tables and logs survive."""
    config, store_options = _config(kwargs)
    backend = Backend.open(name, options, store_options, create_if_missing=False)
    try:
        _native._run_maintenance(backend, config, True)
    finally:
        backend.close()


def restore(source: Any, checkpoint: str, target: Any, *, options: S3Options | None = None,
            **store_options: Any) -> None:
    """Make a new, writable database at ``target`` from checkpoint ``checkpoint`` of ``source``.

    Copies the objects the checkpoint needs (and nothing else), then writes
    CURRENT last: until then the target is not a database. ``target`` may be
    another prefix of the same bucket, another bucket or a local directory; it
    must not hold a database already.
    """
    opts = resolve_options(options, store_options)
    src_store, _ = build_store(parse_location(source), opts, create=False)
    dst_location = parse_location(target)
    dst_store, _ = build_store(dst_location, opts, create=True)
    try:
        data = read_checkpoint(src_store, checkpoint)
        try:
            dst_store.head(CURRENT_NAME)
        except ObjectNotFound:
            pass
        else:
            raise Error(f"{dst_location.url} already holds a database; restore needs an empty target")
        for rows in data["files"].values():
            for key, *_rest in rows:
                dst_store.put(key, src_store.get(key))
        dst_store.put(CURRENT_NAME, data["current"].encode(), if_none_match=True,
                      metadata={EPOCH_METADATA: str(data["epoch"])})
    finally:
        src_store.close()
        dst_store.close()
