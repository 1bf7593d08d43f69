"""import and export: a plain LevelDB directory into a store and back, unchanged.

Uploads and downloads files through the store interface, with the object
names of engine.layout; an import commits CURRENT with engine.commit like any
writer, holding the database lease from levels3.lock. An export reads the live
version the engine's inventory finds and takes no lock.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..engine.commit import commit_current
from ..engine.inventory import Analysis
from ..engine.layout import CURRENT_NAME, LOCK_KEY, FileKind, kind_of, object_key, parse_key
from ..errors import ObjectNotFound
from ..lock import database_lease
from ..stores.base import PutMode
from ..stores.local import fsync_dir
from ._common import CommandError, UsageError, analyze_settled, emit_json, human_bytes, open_store, progress

log = logging.getLogger("levels3.cli")

#: The writer epoch imported objects carry (the target holds nothing else of ours).
IMPORT_EPOCH = 1
#: How often an export lists again when a live writer deleted an object it was about to copy.
EXPORT_ATTEMPTS = 3


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "import", parents=[parent], help="copy a plain LevelDB directory into a store",
        description="Upload a LevelDB directory (for example one made by plyvel) to URL, unchanged: tables as "
                    "whole objects, the WAL and MANIFEST as one segment each, CURRENT last (the commit point). "
                    "Takes the writer lock on URL. The source must not be open in another process.")
    p.add_argument("source", metavar="LOCAL_DIR", help="the LevelDB directory to read")
    p.add_argument("url", metavar="URL", help="where the database goes: s3://bucket/prefix, file:///path or a path")
    p.add_argument("--force", action="store_true",
                   help="replace a database (or leftovers) already at URL: its objects are deleted first")
    _transfer_options(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "export", parents=[parent], help="copy a database from a store into a plain LevelDB directory",
        description="Download the live version of the database at URL (the MANIFEST that CURRENT names, the "
                    "tables it lists and the logs still in use; nothing a later version dropped) into LOCAL_DIR "
                    "as a plain LevelDB directory that plyvel (or any LevelDB) opens; CURRENT is written last. "
                    "LOCAL_DIR must be empty or absent. Takes no lock: beside a live writer it copies the "
                    "newest committed version it finds.")
    p.add_argument("url", metavar="URL")
    p.add_argument("dest", metavar="LOCAL_DIR")
    _transfer_options(p)
    p.set_defaults(func=cmd_export)


def _transfer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line")
    p.add_argument("-j", "--jobs", type=int, default=8, metavar="N", help="parallel transfers (default 8)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _summary(args: argparse.Namespace, verb: str, files: int, nbytes: int, started: float, **extra: Any) -> None:
    seconds = time.monotonic() - started
    if args.json:
        emit_json({"files": files, "bytes": nbytes, "seconds": round(seconds, 3), **extra})
    elif not args.quiet:
        print(f"{verb} {files} files, {human_bytes(nbytes)} ({nbytes} bytes) in {seconds:.2f} s")


def _check_jobs(args: argparse.Namespace) -> None:
    if args.jobs < 1:
        raise UsageError("--jobs must be >= 1")


# -- import ------------------------------------------------------------------------------------


def _source_files(source: str) -> list[tuple[str, str, FileKind]]:
    """(name relative to the directory, path, kind) of every file to upload, CURRENT excluded."""
    out = []
    for name in sorted(os.listdir(source)):
        path = os.path.join(source, name)
        if name == "lost" and os.path.isdir(path):
            for inner in sorted(os.listdir(path)):
                if os.path.isfile(os.path.join(path, inner)):
                    out.append((f"lost/{inner}", os.path.join(path, inner), FileKind.OTHER))
            continue
        if not os.path.isfile(path):
            continue
        kind = kind_of(name)
        if kind in (FileKind.TABLE, FileKind.WAL, FileKind.MANIFEST):
            out.append((name, path, kind))
        elif kind in (FileKind.CURRENT, FileKind.LOCK) or kind.local_only:
            continue
        else:
            log.warning("skipping %s: not a LevelDB file", path)
    return out


class _SourceLock:
    """LevelDB's own fcntl lock on the source's LOCK file: refuses a directory open elsewhere."""

    def __init__(self, source: str) -> None:
        self.fd: int | None = None
        path = os.path.join(source, "LOCK")
        if not os.path.exists(path):
            return
        try:
            self.fd = os.open(path, os.O_RDWR)
        except OSError:
            return  # read-only source: nothing can be writing to it through this path
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            self.fd = None
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise CommandError(f"{source} is open in another process (its LOCK is held); close it first")
            raise

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def cmd_import(args: argparse.Namespace) -> int:
    _check_jobs(args)
    source = os.path.abspath(args.source)
    if not os.path.isdir(source):
        raise CommandError(f"{args.source}: no such directory")
    if not os.path.isfile(os.path.join(source, CURRENT_NAME)):
        raise CommandError(f"{args.source} is not a LevelDB directory (it has no CURRENT file)")
    location, options, store = open_store(args, args.url, create=True)
    source_lock = _SourceLock(source)
    try:
        with open(os.path.join(source, CURRENT_NAME), "rb") as f:
            current = f.read()
        files = _source_files(source)
        too_big = [(name, os.path.getsize(path)) for name, path, _ in files
                   if os.path.getsize(path) > options.max_object_size]
        if too_big:
            name, size = too_big[0]
            raise CommandError(f"{name} is {size} bytes, above the largest object levels3 reads "
                               f"(max_object_size={options.max_object_size})")
        lease = database_lease(store, options)
        lease.acquire()
        try:
            existing = [info for info in store.list("") if info.key != LOCK_KEY and parse_key(info.key) is not None]
            if existing:
                has_db = any(info.key == CURRENT_NAME for info in existing)
                if not args.force:
                    what = "a database" if has_db else f"{len(existing)} objects of an unfinished database"
                    raise CommandError(f"{location.url} already holds {what}; use --force to replace it")
                log.warning("--force: deleting %d objects at %s", len(existing), location.url)
                # CURRENT first: from here on the target holds no committed database.
                for info in sorted(existing, key=lambda i: i.key != CURRENT_NAME):
                    lease.check()
                    store.delete(info.key)
            started = time.monotonic()
            total = sum(os.path.getsize(path) for _, path, _ in files) + len(current)
            order = {FileKind.OTHER: 0, FileKind.TABLE: 0, FileKind.WAL: 1, FileKind.MANIFEST: 2}
            with progress(total, objects=len(files) + 1, quiet=args.quiet, desc="import") as bar:

                def upload(item: tuple[str, str, FileKind]) -> int:
                    name, path, kind = item
                    with open(path, "rb") as f:
                        data = f.read()
                    lease.check()
                    store.put(object_key(name, IMPORT_EPOCH, 0 if kind.segmented else None), data,
                              mode=PutMode.CREATE)
                    bar.update(len(data))
                    return len(data)

                nbytes = 0
                with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                    for stage in (0, 1, 2):  # tables, then logs, then the manifest
                        batch = [item for item in files if order[item[2]] == stage]
                        nbytes += sum(pool.map(upload, batch))
                lease.check()
                # The commit point, last; a levels3 writer opening it fences CURRENT to epoch 2.
                commit_current(store, current, epoch=IMPORT_EPOCH, replacing=None)
                bar.update(len(current))
                nbytes += len(current)
        finally:
            lease.release()
    finally:
        source_lock.close()
        store.close()
    _summary(args, "imported", len(files) + 1, nbytes, started, url=location.url)
    return 0


# -- export ------------------------------------------------------------------------------------


def _live_version(analysis: Analysis) -> dict[str, list[tuple[int, str, int]]]:
    """File name -> its live objects as (offset, key, size), in offset order: the live tables, the
    MANIFEST that CURRENT names and the logs it still uses; not CURRENT, nothing superseded or archived."""
    files: dict[str, list[tuple[int, str, int]]] = {}
    for e in analysis.entries:
        if e.status == "live" and e.kind in ("table", "wal", "manifest"):
            parsed = parse_key(e.key)
            assert parsed is not None  # levels3's own kinds have levels3's names
            files.setdefault(parsed.name, []).append((parsed.offset or 0, e.key, e.size))
    return {name: sorted(objects) for name, objects in sorted(files.items())}


def _clear(dest: str, created: bool) -> None:
    """A partial copy without CURRENT is of no use; the directory was empty or absent before."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
    elif os.path.isdir(dest):
        for name in os.listdir(dest):
            path = os.path.join(dest, name)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)


def cmd_export(args: argparse.Namespace) -> int:
    _check_jobs(args)
    dest = os.path.abspath(args.dest)
    if os.path.exists(dest):
        if not os.path.isdir(dest):
            raise CommandError(f"{args.dest} exists and is not a directory")
        if os.listdir(dest):
            raise CommandError(f"{args.dest} is not empty; export needs an empty or new directory")
    location, options, store = open_store(args, args.url)
    created = not os.path.exists(dest)
    started = time.monotonic()
    try:
        for attempt in range(1, EXPORT_ATTEMPTS + 1):
            analysis = analyze_settled(store, check_crc=False)
            if not analysis.has_database:
                raise CommandError(f"no database at {location.url} (no CURRENT object)")
            if analysis.problems or analysis.manifest is None:
                raise CommandError(f"{location.url} is damaged, nothing was exported (levels3 verify shows more; "
                                   "levels3.repair_db salvages what is readable): " + "; ".join(analysis.problems))
            files = _live_version(analysis)
            current = f"{analysis.current}\n".encode()
            try:
                nbytes = _download(args, store, files, current, dest)
                break
            except ObjectNotFound:
                # A live writer dropped an object after the LIST (merged segments go within seconds):
                # the version it belonged to is no longer the newest; list again.
                _clear(dest, created)
                if attempt == EXPORT_ATTEMPTS:
                    raise
                log.info("%s changed during the export; listing again", location.url)
    except BaseException as exc:
        _clear(dest, created)
        if isinstance(exc, ObjectNotFound):
            raise CommandError(f"{location.url} kept changing under the export (a live writer deleted what it "
                               f"was copying, {EXPORT_ATTEMPTS} times): {exc}") from None
        raise
    finally:
        store.close()
    _summary(args, "exported", len(files) + 1, nbytes, started, directory=dest)
    return 0


def _download(args: argparse.Namespace, store: Any, files: dict[str, list[tuple[int, str, int]]], current: bytes,
              dest: str) -> int:
    """Write every file of the live version into dest, CURRENT last (the commit point); the bytes written."""
    os.makedirs(dest, exist_ok=True)
    total = sum(size for objects in files.values() for _, _, size in objects) + len(current)
    count = sum(len(objects) for objects in files.values()) + 1
    with progress(total, objects=count, quiet=args.quiet, desc="export") as bar:

        def download(item: tuple[str, list[tuple[int, str, int]]]) -> int:
            name, objects = item
            path = os.path.join(dest, name)
            written = 0
            with open(path + ".levels3-part", "wb") as f:
                for offset, key, size in objects:
                    if offset != written:
                        raise CommandError(f"{name}: its objects leave a gap at offset {written}")
                    data = store.get(key)
                    if len(data) != size:
                        raise CommandError(f"{key} changed while being read")
                    f.write(data)
                    written += len(data)
                    bar.update(len(data))
                f.flush()
                os.fsync(f.fileno())
            os.replace(path + ".levels3-part", path)
            return written

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            nbytes = sum(pool.map(download, files.items()))
        with open(os.path.join(dest, CURRENT_NAME + ".levels3-part"), "wb") as f:
            f.write(current)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(dest)  # every file is in place before CURRENT names them
        os.replace(os.path.join(dest, CURRENT_NAME + ".levels3-part"), os.path.join(dest, CURRENT_NAME))
        bar.update(len(current))
    fsync_dir(dest)
    return nbytes + len(current)
