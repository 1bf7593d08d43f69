"""checkpoint, checkpoints and restore: named states of a database, and new databases made from them.

Through levels3.DB (checkpoint), levels3.restore, and engine.checkpoints to list and describe them.
"""

from __future__ import annotations

import argparse
import datetime
import time
from typing import Any

from ..engine.checkpoints import checkpoint_key, checkpoint_name, read_checkpoint
from ..engine.layout import CHECKPOINT_PREFIX
from ..errors import Error, ObjectNotFound
from ..stores.base import ObjectStore
from ._common import CommandError, emit_json, human_bytes, location_of, open_db, open_store, progress, store_kwargs


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "checkpoint", parents=[parent], help="record the database's current state under a name",
        description="Open URL as its writer (taking the lock), record every write made so far as checkpoint "
                    "NAME and close. Nothing is copied: the checkpoint names the objects of that state, and "
                    "neither the writer nor gc deletes them while it exists. Open it read-only with "
                    "levels3.DB(URL, checkpoint=NAME), or make a new database from it with `levels3 restore`.")
    p.add_argument("url", metavar="URL")
    p.add_argument("name", metavar="NAME", help="1-128 letters, digits, '.', '_' or '-'")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser(
        "checkpoints", parents=[parent], help="list checkpoints (or delete one)",
        description="List the checkpoints of the database at URL: name, when it was made, and the objects and "
                    "bytes it keeps. --delete NAME removes one: the objects only it needed become orphans, "
                    "deleted by the next writer after its deletion_grace, or by `levels3 gc`. A follower open "
                    "on that checkpoint may then lose them.")
    p.add_argument("url", metavar="URL")
    p.add_argument("--delete", metavar="NAME", help="remove this checkpoint")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_checkpoints)

    p = sub.add_parser(
        "restore", parents=[parent], help="make a new database from a checkpoint",
        description="Copy the objects checkpoint NAME of URL needs (and nothing else) to TARGET, then write "
                    "TARGET's CURRENT last: until then TARGET is not a database. TARGET must not hold a "
                    "database; it may be another prefix, another bucket on the same endpoint, or a local "
                    "directory. The new database is writable and independent of URL.")
    p.add_argument("url", metavar="URL")
    p.add_argument("name", metavar="NAME")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_restore)


def _describe(store: ObjectStore, name: str) -> dict[str, Any]:
    try:
        data = read_checkpoint(store, name)
    except Error as exc:  # listed, so that it can be seen and deleted
        return {"name": name, "error": str(exc)}
    rows = [row for rows in data["files"].values() for row in rows]
    created = datetime.datetime.fromtimestamp(data["created"], datetime.timezone.utc)
    return {"name": name, "created": created.isoformat(timespec="seconds"), "files": len(data["files"]),
            "objects": len(rows), "bytes": sum(row[2] for row in rows)}


def _describe_at(args: argparse.Namespace, url: str, name: str) -> dict[str, Any]:
    _, _, store = open_store(args, url)
    try:
        return _describe(store, name)
    finally:
        store.close()


def cmd_checkpoint(args: argparse.Namespace) -> int:
    checkpoint_key(args.name)  # a bad name is a usage error before the lock is taken
    with open_db(args, args.url) as db:
        db.checkpoint(args.name)
    info = _describe_at(args, args.url, args.name)
    if args.json:
        emit_json(info)
    else:
        print(f"checkpoint {info['name']!r} of {location_of(args.url).url}: {info['files']} files, "
              f"{human_bytes(info['bytes'])} kept")
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    location, _, store = open_store(args, args.url)
    try:
        if args.delete is not None:
            key = checkpoint_key(args.delete)
            try:
                store.head(key)
            except ObjectNotFound:
                raise CommandError(f"no checkpoint named {args.delete!r} in {location.url}") from None
            store.delete(key)
            if not args.json:
                print(f"deleted checkpoint {args.delete!r}")
        names = [name for info in store.list(CHECKPOINT_PREFIX) if (name := checkpoint_name(info.key)) is not None]
        found = [_describe(store, name) for name in names]
    finally:
        store.close()
    if args.json:
        emit_json({"url": location.url, "deleted": args.delete, "checkpoints": found})
    elif args.delete is None:
        if not found:
            print(f"no checkpoints in {location.url}")
        for info in found:
            if "error" in info:
                print(f"{info['name']}\tunreadable: {info['error']}")
            else:
                print(f"{info['name']}\t{info['created']}\t{info['files']} files\t{human_bytes(info['bytes'])}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    import levels3

    location_of(args.url)  # bad URLs are usage errors
    location_of(args.target)
    started = time.monotonic()
    info = _describe_at(args, args.url, args.name)
    if "error" in info:
        raise CommandError(info["error"])
    with progress(info["bytes"], objects=info["objects"] + 1, quiet=args.quiet, desc="restore") as bar:
        levels3.restore(args.url, args.name, args.target, wrap_store=bar.counting("put"), **store_kwargs(args))
    info.update(target=location_of(args.target).url, seconds=round(time.monotonic() - started, 3))
    if args.json:
        emit_json(info)
    elif not args.quiet:
        print(f"restored checkpoint {args.name!r} into {info['target']}: {info['objects']} objects, "
              f"{human_bytes(info['bytes'])} in {info['seconds']:.2f} s")
    return 0
