"""destroy_db, repair_db and restore: maintenance calls, run on a store.

destroy_db and repair_db run LevelDB's DestroyDB / RepairDB through the native
bridge on a writer's control path (engine.writer), lease held; restore copies
a checkpoint's objects between two stores and commits the copy with
engine.commit. May call the bridge, the engine and the stores.
"""

from __future__ import annotations

import logging
from typing import Any

from . import _native
from .engine.checkpoints import needed_keys, read_checkpoint
from .engine.commit import commit_current
from .engine.layout import CURRENT_NAME
from .engine.writer import WriterControl
from .errors import Error
from .leveldb_options import LevelDBOptions
from .options import StoreOptions, parse_location
from .stores.assembly import build_store, resolve_options
from .stores.local import remove_if_only_store_files

log = logging.getLogger("levels3.maintenance")


def destroy_db(name: Any, *, options: StoreOptions | None = None, **kwargs: Any) -> None:
    """Delete every object of the database at ``name`` (takes the writer lock first).

    A local directory is then removed too, as plyvel removes it, when nothing but levels3's
    own files was in it."""
    config, store_options = LevelDBOptions.split(kwargs)
    control = WriterControl.open(name, options, store_options, create_if_missing=False)
    try:
        _native.run_maintenance(control, config, repair=False)
        control.delete_all()
    finally:
        control.close()
    if control.location.scheme == "file":
        remove_if_only_store_files(control.location.prefix)


def repair_db(name: Any, *, options: StoreOptions | None = None, **kwargs: Any) -> None:
    """Rebuild the database's metadata from whatever tables and logs survive.

    This is the explicit way past damage that makes the open refuse a database
    (``CorruptionError``: a WAL or MANIFEST object deleted or truncated in the
    store). A damaged file is read as far as it goes: the missing bytes read as
    zeros, and the log record they cut into is dropped, so LevelDB's repair
    recovers every write recorded before the damage and those from the next
    32 KiB log block on. Each damaged file is reported on the ``levels3``
    logger at WARNING, naming its objects and the byte ranges lost; LevelDB's
    own account (records dropped, tables rebuilt) goes to ``levels3.leveldb``.
    The damaged files are archived under ``lost/`` (what was readable of
    them), and their objects are deleted.
    """
    config, store_options = LevelDBOptions.split(kwargs)
    control = WriterControl.open(name, options, store_options, create_if_missing=False)
    try:
        for record in control.catalog.damaged():
            log.warning("repair_db: %s", record.damage)
        control.salvage = True
        _native.run_maintenance(control, config, repair=True)
        control.retire_inherited_garbage()
    finally:
        control.close()


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
            commit_current(dst_store, data["current"].encode(), epoch=data["epoch"], replacing=None)
        finally:
            dst_store.close()
    finally:
        src_store.close()
