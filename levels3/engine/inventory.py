"""The inventory of a database in its store: every object classified, and what gc may delete.

Reads CURRENT and the MANIFEST it names (engine.manifest) to find the live
files, then classifies every object: live, orphaned (no live version
references it), kept (no live version references it, but a checkpoint does),
archived (``lost/``, kept by repair), damaged (an object of a file whose
objects do not cover it: a problem, and never deleted), or foreign (a key
levels3 does not own). plan_gc is the garbage-collection policy on top of that. Nothing here writes
to the store or opens LevelDB; the CLI's info, verify and gc present the
results. May call the store interface and the engine's catalog, layout and
checkpoints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import Error
from ..stores.base import ObjectInfo, ObjectStore
from .catalog import Catalog
from .checkpoints import checkpoint_name, needed_keys, read_checkpoint
from .layout import CURRENT_NAME, LOCK_KEY, FileKind, kind_of, parse_key
from .manifest import ManifestError, ManifestState, file_number, parse_manifest

# -- object ages ---------------------------------------------------------------------


def object_times(store: ObjectStore) -> dict[str, float]:
    """Key -> last-modified time (epoch seconds) of every object under the database."""
    return {info.key: info.last_modified for info in store.list("") if info.last_modified is not None}


# -- classification ---------------------------------------------------------------------


@dataclass
class Entry:
    key: str
    size: int
    kind: str  # table, wal, manifest, current, lock, checkpoint, archived, foreign
    status: str = "live"  # live, orphan, kept (for a checkpoint), archived, damaged, foreign, unknown
    reason: str = ""
    mtime: float | None = None

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "size": self.size, "kind": self.kind, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.mtime is not None and now is not None:
            out["age_seconds"] = round(now - self.mtime, 3)
        return out


#: What an object is, in the order the CLI reports them.
KINDS = ("table", "wal", "manifest", "current", "lock", "checkpoint", "archived", "foreign")


@dataclass
class Analysis:
    entries: list[Entry]
    current: str | None = None  # the MANIFEST name CURRENT points at
    manifest: ManifestState | None = None
    problems: list[str] = field(default_factory=list)  # damage: missing or mismatched live files

    @property
    def has_database(self) -> bool:
        return self.current is not None

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {k: {"count": 0, "bytes": 0} for k in KINDS}
        for e in self.entries:
            out[e.kind]["count"] += 1
            out[e.kind]["bytes"] += e.size
        return out

    def orphans(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "orphan"]

    def kept(self) -> list[Entry]:
        """Objects no live version needs that a checkpoint does."""
        return [e for e in self.entries if e.status == "kept"]

    def foreign(self) -> list[Entry]:
        return [e for e in self.entries if e.status == "foreign"]


class _Listed:
    """A store stand-in that replays one LIST (so Catalog.load and we see the same objects)."""

    def __init__(self, infos: list[ObjectInfo]) -> None:
        self._infos = infos

    def list(self, prefix: str = "") -> Iterable[ObjectInfo]:
        return iter(self._infos)


#: How often analyze lists the store while the listing shows damage: a LIST of many pages
#: running beside a live writer can page past a merge's key before it lands and past
#: the segments it replaced after they are deleted, seeing a gap that is not there.
LISTINGS_BEFORE_DAMAGE = 3


def analyze(store: ObjectStore, *, times: dict[str, float] | None = None, check_crc: bool = True) -> Analysis:
    """Classify every object under the store's prefix (see the module docstring)."""
    for _ in range(LISTINGS_BEFORE_DAMAGE):
        infos = list(store.list(""))
        catalog = Catalog.load(_Listed(infos))  # type: ignore[arg-type]
        if not catalog.damaged():
            break
    analysis = _classify(store, infos, catalog, times or {}, check_crc)
    _keep_for_checkpoints(store, infos, analysis)
    return analysis


def _keep_for_checkpoints(store: ObjectStore, infos: list[ObjectInfo], analysis: Analysis) -> None:
    """An object no live version needs may still be one a checkpoint needs: never an orphan, then. A
    checkpoint that cannot be read is damage (gc then removes nothing), not permission to delete."""
    needed: dict[str, str] = {}
    for info in infos:
        name = checkpoint_name(info.key)
        if name is None:
            continue
        try:
            data = read_checkpoint(store, name)
        except Error as exc:
            analysis.problems.append(f"checkpoint {name!r} cannot be read: {exc}")
            continue
        for key in needed_keys(data):
            needed.setdefault(key, name)
    listed = {info.key for info in infos}
    for key, name in sorted(needed.items()):
        if key not in listed:
            analysis.problems.append(f"missing: {key} (needed by checkpoint {name!r})")
    for e in analysis.entries:
        if e.status == "orphan" and e.key in needed:
            e.status, e.reason = "kept", f"not live, but checkpoint {needed[e.key]!r} needs it"


def _classify(store: ObjectStore, infos: list[ObjectInfo], catalog: Catalog, times: dict[str, float],
              check_crc: bool) -> Analysis:
    garbage = {o.key for o in catalog.garbage}
    entries: list[Entry] = []
    for info in infos:
        parsed = parse_key(info.key)
        if info.key == LOCK_KEY:
            kind = "lock"
        elif checkpoint_name(info.key) is not None:
            kind = "checkpoint"
        elif parsed is None:
            kind = "foreign"
        elif parsed.name == CURRENT_NAME:
            kind = "current"
        else:
            kind = {FileKind.TABLE: "table", FileKind.WAL: "wal", FileKind.MANIFEST: "manifest"}.get(
                kind_of(parsed.name), "archived")
        entry = Entry(info.key, info.size, kind, mtime=times.get(info.key))
        if kind == "foreign":
            entry.status, entry.reason = "foreign", "not a levels3 object name; never touched"
        elif kind == "checkpoint":
            entry.reason = "a named state of the database (db.checkpoint)"
        elif info.key in garbage:
            record = catalog.get(parsed.name)  # type: ignore[union-attr]
            if record is not None and record.epoch > parsed.epoch:  # type: ignore[union-attr]
                entry.status, entry.reason = "orphan", f"superseded by writer epoch {record.epoch}"
            else:
                entry.status, entry.reason = "orphan", "replaced by a merged object holding the same bytes"
        elif kind == "archived":
            entry.status, entry.reason = "archived", "archived by repair; kept"
        entries.append(entry)

    analysis = Analysis(entries)
    damaged = {o.key: record for record in catalog.damaged() for o in record.objects}
    for record in catalog.damaged():
        analysis.problems.append(f"damaged: {record.damage}")
    try:
        _classify_live(store, catalog, analysis, check_crc)
    finally:
        for e in entries:
            if e.key in damaged:
                e.status, e.reason = "damaged", "an object of a damaged file (kept; see the problems)"
    return analysis


def _classify_live(store: ObjectStore, catalog: Catalog, analysis: Analysis, check_crc: bool) -> None:
    """Mark what the version CURRENT names does not need as orphaned (and record the problems)."""
    entries = analysis.entries
    current_record = catalog.get(CURRENT_NAME)
    if current_record is None:
        for e in entries:
            if e.status == "live" and e.kind != "lock":
                e.status, e.reason = "unknown", "no CURRENT: nothing is committed"
        return
    current = store.get(CURRENT_NAME)
    text = current.decode("utf-8", "replace")
    if not text.endswith("\n") or not re.fullmatch(r"MANIFEST-\d+", text[:-1]):
        analysis.problems.append(f"CURRENT does not name a manifest: {text!r}")
        analysis.current = text.strip() or "?"
        for e in entries:
            if e.status == "live" and e.kind in ("table", "wal", "manifest"):
                e.status, e.reason = "unknown", "CURRENT is unreadable"
        return
    manifest_name = text[:-1]
    analysis.current = manifest_name
    manifest_record = catalog.get(manifest_name)
    if manifest_record is None or not manifest_record.objects:
        analysis.problems.append(f"missing: {manifest_name} (named by CURRENT)")
    elif manifest_record.damage is None:  # a damaged one is a problem already
        try:
            data = b"".join(store.get(o.key) for o in manifest_record.objects)
            analysis.manifest = parse_manifest(manifest_name, data, check_crc=check_crc)
        except ManifestError as exc:
            analysis.problems.append(f"{manifest_name} cannot be parsed: {exc}")
    state = analysis.manifest
    if state is None:
        for e in entries:
            if e.status == "live" and e.kind in ("table", "wal", "manifest"):
                e.status, e.reason = "unknown", "the current manifest is unreadable"
        return

    present_tables = {file_number(r.name): r for r in catalog.records()
                      if kind_of(r.name) is FileKind.TABLE and r.objects}
    for number, meta in sorted(state.tables.items()):
        record = present_tables.get(number)
        if record is None:
            analysis.problems.append(f"missing: table {number:06d}.ldb (level {meta.level}, {meta.size} bytes)")
        elif record.size != meta.size:
            analysis.problems.append(
                f"size mismatch: {record.name} is {record.size} bytes, the manifest says {meta.size}")

    for e in entries:
        if e.status != "live" or e.kind not in ("table", "wal", "manifest"):
            continue
        name = parse_key(e.key).name  # type: ignore[union-attr]
        file_no = file_number(name)
        if e.kind == "table":
            if file_no not in state.tables:
                e.status, e.reason = "orphan", "table not in the current version"
        elif e.kind == "wal":
            if file_no is None or (file_no < state.log_number and file_no != state.prev_log_number):
                e.status, e.reason = "orphan", f"log older than the one in use ({state.log_number:06d}.log)"
        elif name != manifest_name:
            e.status, e.reason = "orphan", f"not the current manifest ({manifest_name})"


def plan_gc(analysis: Analysis, url: str, *, grace: float, now: float) -> tuple[list[Entry], list[Entry]]:
    """gc's policy: the orphans it may delete (older than ``grace`` seconds by the store's
    clock) and the ones it keeps for now. It deletes nothing when nothing is committed, or
    when anything live is missing: a damaged database may need its orphans to be repaired."""
    if not analysis.has_database:
        raise Error(f"no database at {url} (no CURRENT object); gc removes nothing when nothing is committed")
    if analysis.problems:
        raise Error("the database is damaged, gc removes nothing (orphans may be needed to repair it): "
                    + "; ".join(analysis.problems))
    eligible: list[Entry] = []
    young: list[Entry] = []
    for e in analysis.orphans():
        (eligible if e.mtime is not None and now - e.mtime >= grace else young).append(e)
    return eligible, young
