"""destroy_db and repair_db: LevelDB's maintenance calls, run on a store."""

from __future__ import annotations

from typing import Any

from . import _native
from .engine.backend import Backend
from .options import S3Options

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
        _native._run_destroy(backend, config)
        backend.delete_all()
    finally:
        backend.close()


def repair_db(name: Any, *, options: S3Options | None = None, **kwargs: Any) -> None:
    """Rebuild the database's metadata from whatever tables and logs survive."""
    config, store_options = _config(kwargs)
    backend = Backend.open(name, options, store_options, create_if_missing=False)
    try:
        _native._run_repair(backend, config)
    finally:
        backend.close()
