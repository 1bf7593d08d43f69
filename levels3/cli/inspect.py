"""info, verify, gc and lock: looking into a database and keeping it tidy.

Presents what the engine's inventory (levels3.engine.inventory) finds and
what its gc policy allows; the lease comes from levels3.lock. Nothing here
parses LevelDB's formats or decides what may be deleted. info and verify read
as a follower and take no lock; gc takes it only to delete.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..engine.inventory import Analysis, object_times, plan_gc
from ..engine.layout import LOCK_KEY
from ..errors import Error, LockError, ObjectNotFound
from ..liveness import provably_gone
from ..lock import database_lease, describe_holder, read_holder
from ._common import CommandError, analyze_settled, emit_json, human_bytes, open_reader, open_store, progress

PROPERTIES = ("leveldb.stats", "leveldb.sstables", "leveldb.approximate-memory-usage")
KIND_LABELS = {
    "table": "tables",
    "wal": "WAL segments",
    "manifest": "MANIFEST segments",
    "current": "CURRENT",
    "lock": "LOCK",
    "checkpoint": "checkpoints",
    "archived": "archived (lost/)",
    "foreign": "other objects",
}


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "info", parents=[parent], help="objects, bytes, live files, lock holder and LevelDB properties",
        description="Show what the store holds (objects and bytes by kind), the live version from the MANIFEST, "
                    "the lock holder and lease age, then open the database as a follower (no lock, nothing "
                    "written, beside a live writer too) for LevelDB's properties (leveldb.stats, "
                    "leveldb.sstables) and the request and cache counters of that open.")
    p.add_argument("url", metavar="URL")
    p.add_argument("--store-only", action="store_true",
                   help="do not open the database (no LevelDB properties)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "verify", parents=[parent], help="check checksums and that every referenced object exists",
        description="Compare the store against the MANIFEST (missing objects: referenced but absent; orphaned "
                    "objects: present but not live), then open the database with paranoid checks and read every "
                    "entry with checksum verification. Exit 1 when anything is missing, mismatched or corrupt "
                    "(a WAL or MANIFEST with a deleted or truncated object is named as damaged). "
                    "Orphans (superseded or uncommitted objects a crashed or closing writer left, which gc "
                    "removes) are listed; with --strict they fail the check too. Every object a checkpoint "
                    "names must exist too. It takes no lock and writes nothing: it runs beside a live writer "
                    "and leaves the database exactly as it was.")
    p.add_argument("url", metavar="URL")
    p.add_argument("--strict", action="store_true", help="orphaned objects fail the check too")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "gc", parents=[parent], help="remove orphaned objects (dry run unless --delete)",
        description="Find objects no live version references (tables not in the current version, logs and "
                    "manifests no longer in use, segments a merge replaced) that are older than the grace "
                    "period. Objects a checkpoint needs are kept. "
                    "Lists them by default (--dry-run, no lock taken); --delete removes them, holding the writer "
                    "lock. Refuses to delete anything when a live object is missing or a file is damaged (a "
                    "damaged database may need them; levels3.repair_db is the way to salvage it).")
    p.add_argument("url", metavar="URL")
    p.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="only objects older than this (store time) are removed (default 3600)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="delete", action="store_false", default=False,
                      help="only show what would be removed (the default)")
    mode.add_argument("--delete", dest="delete", action="store_true", help="actually remove them")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_gc)

    p = sub.add_parser(
        "lock", parents=[parent], help="show the writer lease; --break an expired one",
        description="Show the writer lease on URL: holder host and pid, since when, and how long ago it was "
                    "last renewed (store time). --break takes over and removes the lease, but only once its "
                    "ETag has been observed unchanged for a whole lease duration (the holder stopped renewing), "
                    "exactly as a waiting writer would; it asks for confirmation first (--yes skips).")
    p.add_argument("url", metavar="URL")
    p.add_argument("--break", dest="break_lock", action="store_true", help="remove an expired lease")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_lock)


# -- lock state -------------------------------------------------------------------------------


def _lock_state(store: Any, times: dict[str, float], options: Any) -> dict[str, Any]:
    try:
        etag = store.head(LOCK_KEY).etag
    except ObjectNotFound:
        return {"held": False}
    holder = read_holder(store)
    state: dict[str, Any] = {"held": True, "etag": etag, "holder": holder,
                             "description": describe_holder(holder)}
    mtime = times.get(LOCK_KEY)
    duration = options.lease_duration
    if holder and isinstance(holder.get("lease_duration"), (int, float)):
        duration = max(duration, float(holder["lease_duration"]))
    state["lease_duration"] = duration
    state["holder_exited"] = provably_gone(holder)  # a process of this host that is gone: taken over at once
    if mtime is not None:
        age = max(0.0, time.time() - mtime)
        state["lease_age_seconds"] = round(age, 3)
        state["looks_expired"] = age > duration
    return state


def _lock_lines(state: dict[str, Any]) -> list[str]:
    if not state["held"]:
        return ["not held"]
    holder = state.get("holder") or {}
    lines = [f"held by {state['description']}"]
    age = state.get("lease_age_seconds")
    if state.get("holder_exited"):
        lines.append("that process of this host has exited: the next open takes the lock over at once")
    if age is not None:
        verdict = ("not renewed within the lease: the holder looks dead (levels3 lock --break)"
                   if state.get("looks_expired") else "live")
        lines.append(f"last renewed {age_text(age)} ago (store time), lease {state['lease_duration']:g} s: {verdict}")
    if holder.get("renewals") is not None:
        lines.append(f"renewals {holder['renewals']}, writer {holder.get('writer', '?')}")
    return lines


# -- info -----------------------------------------------------------------------------------------


def _totals_lines(analysis: Analysis) -> list[str]:
    totals = analysis.totals()
    count = sum(t["count"] for t in totals.values())
    size = sum(t["bytes"] for t in totals.values())
    lines = [f"objects   {count} objects, {human_bytes(size)} ({size} bytes)"]
    for kind, label in KIND_LABELS.items():
        t = totals[kind]
        if t["count"] or kind in ("table", "wal", "manifest"):
            lines.append(f"  {label:<20} {t['count']:>7}  {human_bytes(t['bytes']):>10}")
    return lines


def _manifest_lines(analysis: Analysis) -> list[str]:
    state = analysis.manifest
    if state is None:
        return [f"manifest  {analysis.current or 'none (no CURRENT)'}"]
    lines = [f"manifest  {state.name}: log {state.log_number:06d}.log, next file {state.next_file_number}, "
             f"last sequence {state.last_sequence}, {len(state.tables)} live tables"]
    for level, metas in state.levels().items():
        if metas:
            lines.append(f"  level {level}: {len(metas)} tables, {human_bytes(sum(m.size for m in metas))}")
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    location, options, store = open_store(args, args.url)
    try:
        times = object_times(store)
        analysis = analyze_settled(store, times=times)
        lock = _lock_state(store, times, options)
    finally:
        store.close()
    if not analysis.entries:
        raise CommandError(f"no database at {location.url} (no objects)")
    result: dict[str, Any] = {
        "url": location.url,
        "objects": analysis.totals(),
        "database": analysis.has_database,
        "manifest": analysis.manifest.to_json() if analysis.manifest else None,
        "problems": analysis.problems,
        "orphans": len(analysis.orphans()),
        "kept_for_checkpoints": len(analysis.kept()),
        "lock": lock,
        "properties": None,
        "stats": None,
    }
    unavailable = None
    if not analysis.has_database:
        unavailable = "there is no committed database (no CURRENT object)"
    elif args.store_only:
        unavailable = "not opened (--store-only)"
    else:
        try:
            with open_reader(args, args.url) as db:
                result["properties"] = {
                    name: (db.get_property(name.encode()) or b"").decode("utf-8", "replace") for name in PROPERTIES
                }
                result["stats"] = db.stats()
        except Error as exc:
            unavailable = f"the database could not be opened: {exc}"
    result["properties_unavailable"] = unavailable

    if args.json:
        emit_json(result)
    else:
        out = [f"database  {location.url}"]
        out += _totals_lines(analysis)
        out += _manifest_lines(analysis)
        if analysis.orphans():
            out.append(f"orphans   {len(analysis.orphans())} objects no live version references (levels3 gc)")
        if analysis.kept():
            out.append(f"kept      {len(analysis.kept())} objects only checkpoints need (gc leaves them)")
        for problem in analysis.problems:
            out.append(f"problem   {problem}")
        lock_lines = _lock_lines(lock)
        out.append(f"lock      {lock_lines[0]}")
        out += [f"          {line}" for line in lock_lines[1:]]
        if unavailable:
            out.append(f"properties: {unavailable}")
        else:
            props = result["properties"]
            out.append(f"leveldb.approximate-memory-usage: {props['leveldb.approximate-memory-usage']}")
            out.append("leveldb.stats:")
            out += ["  " + line for line in props["leveldb.stats"].strip("\n").splitlines()]
            out.append("leveldb.sstables:")
            out += ["  " + line for line in props["leveldb.sstables"].strip("\n").splitlines()]
            stats = result["stats"]
            out.append(f"cache     {human_bytes(stats.get('cache_bytes', 0))} held, "
                       f"peak {human_bytes(stats.get('cache_peak_bytes', 0))}, "
                       f"{stats.get('cache_hits', 0)} hits, {stats.get('cache_misses', 0)} misses")
            requests = stats.get("requests") or {}
            if requests:
                out.append("requests  " + ", ".join(f"{k} {v}" for k, v in sorted(requests.items())))
        print("\n".join(out))
    return 0 if analysis.has_database else 1


def age_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# -- verify ------------------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    location, options, store = open_store(args, args.url)
    try:
        analysis = analyze_settled(store, check_crc=True)  # no lock: a live writer may go on writing
    finally:
        store.close()
    if not analysis.has_database:
        raise CommandError(f"no database at {location.url} (no CURRENT object)")
    problems = list(analysis.problems)
    entries = 0
    if analysis.manifest is not None:
        try:
            live = [e for e in analysis.entries if e.status == "live" and e.kind in ("table", "wal", "manifest", "current")]
            with progress(sum(e.size for e in live), objects=len(live), quiet=args.quiet, desc="verify") as bar, \
                    open_reader(args, args.url, paranoid_checks=True, wrap_store=bar.counting("get")) as db:
                it = db.iterator(verify_checksums=True, fill_cache=False)
                try:
                    for _ in it:
                        entries += 1
                finally:
                    it.close()
        except Error as exc:
            problems.append(f"reading the database failed: {exc}")
    orphans = analysis.orphans()
    ok = not problems and not (args.strict and orphans)
    if args.json:
        emit_json({
            "url": location.url,
            "ok": ok,
            "entries": entries,
            "tables": len(analysis.manifest.tables) if analysis.manifest else None,
            "problems": problems,
            "orphans": [e.to_json() for e in orphans],
            "strict": args.strict,
            "foreign": [e.to_json() for e in analysis.foreign()],
        })
    else:
        for problem in problems:
            print(f"problem: {problem}")
        for e in orphans:
            print(f"orphan:  {e.key} ({e.size} bytes): {e.reason}")
        for e in analysis.foreign():
            print(f"note:    {e.key} is not a levels3 object; ignored")
        tables = len(analysis.manifest.tables) if analysis.manifest else 0
        if ok:
            garbage = f", {len(orphans)} orphaned objects (levels3 gc removes them)" if orphans else ""
            print(f"ok: {entries} entries read with checksums verified, {tables} live tables, nothing "
                  f"missing{garbage}")
        else:
            hint = " (levels3 gc removes orphans)" if orphans and not problems else ""
            print(f"FAILED: {len(problems)} problems, {len(orphans)} orphaned objects{hint}", file=sys.stderr)
    return 0 if ok else 1


# -- gc -------------------------------------------------------------------------------------------------


def cmd_gc(args: argparse.Namespace) -> int:
    if args.grace < 0:
        from ._common import UsageError

        raise UsageError("--grace must be >= 0")
    location, options, store = open_store(args, args.url)
    try:
        lease = database_lease(store, options)
        if args.delete:  # a dry run only reads
            lease.acquire()
        try:
            analysis = analyze_settled(store, times=object_times(store))
            now = time.time()
            try:
                eligible, young = plan_gc(analysis, location.url, grace=args.grace, now=now)
            except Error as exc:
                raise CommandError(str(exc)) from None
            if args.delete:
                with progress(sum(e.size for e in eligible), objects=len(eligible), quiet=args.quiet,
                              desc="gc") as bar:
                    for e in eligible:
                        lease.check()
                        store.delete(e.key)
                        bar.update(e.size)
        finally:
            lease.release()
    finally:
        store.close()
    nbytes = sum(e.size for e in eligible)
    if args.json:
        emit_json({
            "url": location.url,
            "dry_run": not args.delete,
            "grace_seconds": args.grace,
            "removed" if args.delete else "would_remove": [e.to_json(now) for e in eligible],
            "kept_within_grace": [e.to_json(now) for e in young],
            "bytes": nbytes,
        })
        return 0
    verb = "removed" if args.delete else "would remove"
    for e in eligible:
        print(f"{verb}: {e.key} ({e.size} bytes, age {age_text(now - (e.mtime or now))}): {e.reason}")
    for e in young:
        age = "unknown age" if e.mtime is None else f"age {age_text(now - e.mtime)}"
        print(f"kept:   {e.key} ({e.size} bytes, {age}, within the {args.grace:g} s grace period): {e.reason}")
    summary = f"{verb} {len(eligible)} objects, {human_bytes(nbytes)}"
    if not args.delete:
        summary += " (dry run; pass --delete to remove them)"
    print(summary)
    return 0


# -- lock --------------------------------------------------------------------------------------------------


def cmd_lock(args: argparse.Namespace) -> int:
    location, options, store = open_store(args, args.url)
    try:
        times = object_times(store)
        state = _lock_state(store, times, options)
        state["url"] = location.url
        if not args.break_lock:
            if args.json:
                emit_json(state)
            else:
                lines = _lock_lines(state)
                print(f"lock      {location.url}/{LOCK_KEY}: {lines[0]}")
                print("\n".join(f"          {line}" for line in lines[1:]))
            return 0
        if not state["held"]:
            print(f"{location.url} is not locked; nothing to break")
            return 0
        stale_after = 0.0 if state["holder_exited"] else state["lease_duration"]
        if not args.yes:
            if not sys.stdin or not sys.stdin.isatty():
                raise CommandError("refusing to break the lock without confirmation (no terminal); pass --yes")
            when = ("at once: that process has exited" if state["holder_exited"] else
                    f"only once its lease is seen unrenewed for {stale_after:g} s")
            answer = input(f"Break the lock on {location.url} held by {state['description']}? It is taken over "
                           f"{when}. [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("not confirmed; the lock is left alone")
        if not state["holder_exited"]:
            print(f"waiting up to {stale_after:g} s for the lease to be observed expired...", file=sys.stderr)
        lease = database_lease(store, options, wait=state["lease_duration"] + max(2.0, state["lease_duration"] / 2))
        started = time.monotonic()
        try:
            lease.acquire()
        except LockError:
            raise CommandError(f"the lease on {location.url} is being renewed: its holder is alive "
                               "(the lock was not broken)") from None
        lease.release()
        if args.json:
            emit_json({"url": location.url, "broken": True, "previous": state,
                       "waited_seconds": round(time.monotonic() - started, 3)})
        else:
            why = ("its process had exited" if state["holder_exited"] else
                   f"lease unrenewed for {time.monotonic() - started:.1f} s")
            print(f"broke the lock held by {state['description']} ({why})")
        return 0
    finally:
        store.close()
