"""get, put, delete and scan: single keys and ranges, through levels3.DB.

get and scan read through a follower (no lock, nothing written, beside a live writer);
put and delete open the writer.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import Error
from ._common import (FORMATS, CommandError, UsageError, database_exists, emit_json, open_db, open_reader,
                      parse_bytes, render)


def _key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key-format", choices=FORMATS, default="text",
                   help="how keys given on the command line are written (default: text, the bytes as typed)")


def _output_options(p: argparse.ArgumentParser, *, raw: bool = False) -> None:
    choices = FORMATS + (("raw",) if raw else ())
    p.add_argument("--format", choices=choices, default="text",
                   help="how keys and values are shown: text (UTF-8, backslash escapes for other bytes), "
                        "hex, base64" + (", raw (the value's bytes exactly, no newline)" if raw else "")
                        + " (default: text)")
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("get", parents=[parent], help="print the value of one key",
                       description="Print the value stored under KEY. Exit 1 if the key is absent. Reads the "
                                   "newest committed state as a follower: no lock, nothing written, works beside "
                                   "a live writer (its unsynced writes are not visible).")
    p.add_argument("url", metavar="URL", help="the database: s3://bucket/prefix, file:///path or a path")
    p.add_argument("key", metavar="KEY")
    _key_options(p)
    _output_options(p, raw=True)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("put", parents=[parent], help="store one key and value",
                       description="Store VALUE under KEY. The write is in the store when the command exits "
                                   "(closing uploads the WAL); --sync makes the put itself a synced write.")
    p.add_argument("url", metavar="URL")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    _key_options(p)
    p.add_argument("--value-format", choices=FORMATS, default="text", help="how VALUE is written (default: text)")
    p.add_argument("--sync", action="store_true", help="a synced write (durable in the store when put returns)")
    p.add_argument("--create", action="store_true", help="create the database if it does not exist")
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("delete", parents=[parent], help="delete one key",
                       description="Delete KEY (deleting an absent key is not an error).")
    p.add_argument("url", metavar="URL")
    p.add_argument("key", metavar="KEY")
    _key_options(p)
    p.add_argument("--sync", action="store_true", help="a synced write")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("scan", parents=[parent], help="list keys and values in order",
                       description="Print keys (and values) in key order, one per line: KEY<TAB>VALUE in text, "
                                   "hex or base64 rendering; with --json one JSON object per line. Reads as a "
                                   "follower, like get.")
    p.add_argument("url", metavar="URL")
    p.add_argument("--prefix", help="only keys starting with this")
    p.add_argument("--start", help="first key (inclusive)")
    p.add_argument("--stop", help="end key (exclusive)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N entries")
    p.add_argument("--keys-only", action="store_true", help="print keys only")
    p.add_argument("--reverse", action="store_true", help="in descending key order")
    _key_options(p)
    _output_options(p)
    p.set_defaults(func=cmd_scan)


def _write_line(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_get(args: argparse.Namespace) -> int:
    key = parse_bytes(args.key, args.key_format, "KEY")
    if args.json and args.format == "raw":
        raise UsageError("--json cannot be combined with --format raw")
    with open_reader(args, args.url) as db:
        value = db.get(key)
    if value is None:
        raise CommandError(f"key not found: {render(key, 'text')!r}")
    if args.format == "raw":
        sys.stdout.flush()
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
    elif args.json:
        emit_json({"key": render(key, args.format), "value": render(value, args.format), "format": args.format})
    else:
        _write_line(render(value, args.format))
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    key = parse_bytes(args.key, args.key_format, "KEY")
    value = parse_bytes(args.value, args.value_format, "VALUE")
    try:
        db = open_db(args, args.url, create_if_missing=args.create)
    except Error as exc:
        if not args.create and _certainly_absent(args):
            raise CommandError(f"{exc}; pass --create to create it") from None
        raise
    with db:
        db.put(key, value, sync=args.sync)
    return 0


def _certainly_absent(args: argparse.Namespace) -> bool:
    try:
        return not database_exists(args, args.url)
    except Error:
        return False  # the store cannot say: the open's own error stands


def cmd_delete(args: argparse.Namespace) -> int:
    key = parse_bytes(args.key, args.key_format, "KEY")
    with open_db(args, args.url) as db:
        db.delete(key, sync=args.sync)
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    if args.prefix is not None and (args.start is not None or args.stop is not None):
        raise UsageError("--prefix cannot be combined with --start or --stop")
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be >= 0")
    bounds: dict[str, bytes] = {}
    for name in ("prefix", "start", "stop"):
        text = getattr(args, name)
        if text is not None:
            bounds[name] = parse_bytes(text, args.key_format, f"--{name}")
    fmt = args.format
    count = 0
    with open_reader(args, args.url) as db:
        it = db.iterator(reverse=args.reverse, include_value=not args.keys_only, **bounds)
        try:
            for item in it:
                if args.limit is not None and count >= args.limit:
                    break
                count += 1
                if args.keys_only:
                    if args.json:
                        _write_line(json.dumps({"key": render(item, fmt)}))
                    else:
                        _write_line(render(item, fmt))
                else:
                    key, value = item
                    if args.json:
                        _write_line(json.dumps({"key": render(key, fmt), "value": render(value, fmt)}))
                    else:
                        _write_line(f"{render(key, fmt)}\t{render(value, fmt)}")
        finally:
            it.close()
    return 0
