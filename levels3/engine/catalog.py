"""What the store holds for each LevelDB file, kept in memory.

Loaded with one LIST at open and then kept up to date by the control path, so
that the Env calls LevelDB makes under its DB mutex (GetChildren, FileExists,
GetFileSize) are answered without a network round trip. Owns FileRecord and
StoredObject; may call only the store's list (and layout, checkpoints for names).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..stores.base import ObjectStore
from .checkpoints import checkpoint_name
from .layout import CHECKPOINT_PREFIX, CURRENT_NAME, LOCK_KEY, file_key, parse_key


@dataclass
class StoredObject:
    key: str
    offset: int  # where this object's bytes start in the file (0 for whole objects)
    size: int
    etag: str
    level: int = 0  # > 0: a merge of smaller segments (see layout)
    declared_end: int | None = None  # the end its key names (None: a whole object or an older key)

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def expected_end(self) -> int:
        """Where this object's bytes should end: what its key says, else what it holds."""
        return self.end if self.declared_end is None else self.declared_end

    @property
    def wrong_size(self) -> bool:
        """Whether the object holds other than the bytes its key names (truncated, or not ours)."""
        return self.declared_end is not None and self.declared_end != self.end


@dataclass
class FileRecord:
    """One LevelDB file: the objects that hold it, in offset order, all of one epoch."""

    name: str
    epoch: int = 0
    objects: list[StoredObject] = field(default_factory=list)
    writing: bool = False  # being written by this process; the local file is authoritative
    local: bool = False  # a follower's own file: lives only in its cache, never uploaded
    unsent_tail: bool = False  # a WAL rolled over with bytes never uploaded (sent at close)
    # Set when the objects do not cover the file: what is missing, naming the objects.
    # Such a file keeps every object it has (none is garbage) and is read only to salvage it.
    damage: str | None = None
    missing: list[tuple[int, int]] = field(default_factory=list)  # the byte ranges no object holds

    @property
    def size(self) -> int:
        if self.damage is not None:
            return max((o.expected_end for o in self.objects), default=0)
        return sum(o.size for o in self.objects)

    @property
    def fingerprint(self) -> str:
        """Identifies this exact content; a cached copy is valid only if it matches."""
        return "|".join(f"{o.key}:{o.size}:{o.etag}" for o in self.objects)


class Catalog:
    def __init__(self) -> None:
        self._files: dict[str, FileRecord] = {}
        self._lock = threading.Lock()
        self.garbage: list[StoredObject] = []  # superseded objects: never read, removed by gc
        self.checkpoints: list[str] = []  # names of the checkpoints/<name>.json objects
        # How long before the LIST anything but CURRENT and LOCK was last uploaded, by the
        # store's clock: the newest of CURRENT's and LOCK's LastModified (an opening
        # writer's lease and fence, just before its LIST) against the newest other
        # object's; 0 when unknown.
        self.idle_seconds = 0.0
        self.listed_at = time.monotonic()  # when that LIST ran, on this process's clock

    @classmethod
    def load(cls, store: ObjectStore) -> "Catalog":
        """One LIST: for each file the highest epoch holds the live version; older
        epochs' objects of the same name (left by a crashed or fenced writer) are
        never read and are only remembered as garbage."""
        catalog = cls()
        versions: dict[tuple[str, int], FileRecord] = {}
        current_time, newest = None, None
        for info in store.list(""):
            if info.key.startswith(CHECKPOINT_PREFIX):
                name = checkpoint_name(info.key)
                if name is not None:  # anything else there is not ours: left alone
                    catalog.checkpoints.append(name)
                continue
            parsed = parse_key(info.key)
            if info.key in (CURRENT_NAME, LOCK_KEY):
                if info.last_modified is not None:
                    current_time = max(current_time or info.last_modified, info.last_modified)
            elif info.last_modified is not None and parsed is not None:
                newest = max(newest or info.last_modified, info.last_modified)
            if parsed is None:
                continue
            record = versions.setdefault((parsed.name, parsed.epoch), FileRecord(parsed.name, parsed.epoch))
            record.objects.append(StoredObject(info.key, parsed.offset or 0, info.size, info.etag, parsed.level,
                                               parsed.end))
        for (name, _epoch), record in sorted(versions.items()):
            older = catalog._files.get(name)
            if older is not None:
                catalog.garbage.extend(older.objects)
            catalog._choose_cover(record)
            catalog._files[name] = record
        if current_time is not None and newest is not None:
            catalog.idle_seconds = max(0.0, current_time - newest)
        # Once the LIST is done: every LastModified it reports (CURRENT's may be a fence that
        # landed during the LIST) was then in the past.
        catalog.listed_at = time.monotonic()
        return catalog

    @property
    def max_epoch(self) -> int:
        """The highest writer epoch any object of ours carries (0 for none)."""
        with self._lock:
            keys = [o.key for r in self._files.values() for o in r.objects] + [o.key for o in self.garbage]
        return max([p.epoch for p in map(parse_key, keys) if p is not None] + [0])

    def _choose_cover(self, record: FileRecord) -> None:
        """Keep the fewest objects that cover the file from offset 0: at each
        position the longest one of the right size (a merge wins over the
        segments it replaced, which become garbage).

        Segments are uploaded in order and every key names the end of its
        bytes, so the file is as long as the furthest end any object names. If
        the chain stops short of that, bytes that were uploaded (and may have
        been acknowledged) are missing: an object was deleted or truncated.
        That is damage, never a torn tail: the record then keeps every object
        (nothing of it is garbage) and says what is missing (``damage``).
        """
        by_start: dict[int, StoredObject] = {}
        for obj in record.objects:
            best = by_start.get(obj.offset)
            if best is None or (not obj.wrong_size, obj.end) > (not best.wrong_size, best.end):
                by_start[obj.offset] = obj
        chosen: list[StoredObject] = []
        position = 0
        while position in by_start:
            chosen.append(by_start.pop(position))  # popped: an empty object cannot loop forever
            position = chosen[-1].end
        length = max((o.expected_end for o in record.objects), default=0)
        if position == length:  # beyond it would be bytes no key names
            keep = {id(o) for o in chosen}
            self.garbage.extend(o for o in record.objects if id(o) not in keep)
            record.objects = chosen
            return
        record.objects.sort(key=lambda o: (o.offset, -o.end))
        record.missing = _missing_ranges(record.objects, length)
        record.damage = _describe_damage(record, chosen)

    @classmethod
    def from_checkpoint(cls, files: dict[str, list[list[Any]]]) -> "Catalog":
        """The catalog a checkpoint recorded: name -> [key, offset, size, etag, level] rows."""
        catalog = cls()
        for name, rows in files.items():
            objects = [StoredObject(str(k), int(o), int(n), str(e), int(lv), _declared_end(str(k)))
                       for k, o, n, e, lv in rows]
            parsed = parse_key(objects[0].key) if objects else None
            catalog._files[name] = FileRecord(name, parsed.epoch if parsed else 0, objects)
        return catalog

    def get(self, name: str) -> FileRecord | None:
        with self._lock:
            return self._files.get(name)

    def put(self, record: FileRecord) -> None:
        with self._lock:
            self._files[record.name] = record

    def pop(self, name: str) -> FileRecord | None:
        with self._lock:
            return self._files.pop(name, None)

    def names(self, directory: str = "") -> list[str]:
        """File names directly inside ``directory`` ("" = the database directory)."""
        prefix = f"{directory}/" if directory else ""
        with self._lock:
            return [n[len(prefix):] for n in self._files
                    if n.startswith(prefix) and "/" not in n[len(prefix):]]

    def records(self) -> list[FileRecord]:
        with self._lock:
            return list(self._files.values())

    def damaged(self) -> list[FileRecord]:
        """The files whose objects do not cover them (see _choose_cover)."""
        return [r for r in self.records() if r.damage is not None]


def _declared_end(key: str) -> int | None:
    parsed = parse_key(key)
    return parsed.end if parsed is not None else None


def _missing_ranges(objects: list[StoredObject], length: int) -> list[tuple[int, int]]:
    """The byte ranges of [0, length) that no object holds (objects sorted by offset)."""
    missing: list[tuple[int, int]] = []
    covered = 0
    for obj in objects:
        if obj.offset > covered:
            missing.append((covered, obj.offset))
        covered = max(covered, obj.end)
    if covered < length:
        missing.append((covered, length))
    return missing


def _describe_damage(record: FileRecord, chosen: list[StoredObject]) -> str:
    """What is wrong with a file whose objects do not cover it, naming the objects."""
    prefix = file_key(record.name, record.epoch)
    problems = [f"object {o.key} holds {o.size} bytes, its key says {o.expected_end - o.offset}"
                for o in record.objects if o.wrong_size]
    for start, end in record.missing:
        before = next((o for o in reversed(chosen) if o.end == start), None)
        after = f" (the object before them is {before.key})" if before is not None else ""
        problems.append(f"no object of {prefix} holds bytes [{start}, {end}){after}")
    if not problems:  # the chain stopped at a short object whose bytes others hold in part
        problems.append(f"no chain of its objects covers {prefix} from offset 0")
    return f"{record.name} is damaged in the store: " + "; ".join(problems)
