"""Writes that must never make a database unopenable, and damage that must never pass silently
(issue 14, items 3 and 4). They run on the local store and on real HTTP servers (moto, SeaweedFS);
what needs no process of its own also runs on moto in-process.

Item 3: ``max_object_size`` caps objects. A write that would need an object above the cap is
refused when it is made, with an error naming the limit; anything acknowledged reopens under
the options it was written with.

Item 4: a gap or a short object inside a WAL or MANIFEST is corruption. The open raises
CorruptionError naming the object (and changes nothing); ``levels3 verify`` fails and names
it; ``levels3 gc`` deletes no object of that file; ``repair_db`` is the explicit salvage, and
reports the loss.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass

import pytest

import levels3
from levels3.engine.catalog import Catalog
from levels3.engine.layout import object_key, parse_key
from levels3.engine.sizing import MIN_WRITE_BYTES, table_limits
from levels3.stores import FaultInjectingStore, LocalDirStore

from .locations import KINDS, REGION, DBLocation
from .processes import ROOT, assert_clean_exit, run_python

MiB = 1024 * 1024

# The legs that can run a crashed writer in a process of its own (mock_aws lives in this one).
SERVED = [kind for kind in KINDS if kind != "mock_aws"]


@pytest.fixture(scope="module")
def weed_bucket(request) -> str:
    """One SeaweedFS bucket for this module's databases (each under its own prefix): the
    throwaway server has room for only so many buckets' volumes."""
    weed = request.getfixturevalue("seaweedfs")
    bucket = f"levels3-{uuid.uuid4().hex[:12]}"
    weed.create_bucket(bucket)
    return bucket


@pytest.fixture
def location_factory(location_factory, request):
    """conftest's, but SeaweedFS databases share weed_bucket."""
    def make(kind: str) -> DBLocation:
        if kind != "seaweedfs":
            return location_factory(kind)
        bucket, prefix = request.getfixturevalue("weed_bucket"), f"tests/{uuid.uuid4().hex[:12]}"
        options = request.getfixturevalue("seaweedfs").options(request_timeout=10)
        return DBLocation(kind, f"s3://{bucket}/{prefix}", options, bucket, prefix)
    return make


# -- item 3: max_object_size ------------------------------------------------------------------


def _object_sizes(location) -> dict[str, int]:
    store = location.raw_store()
    try:
        return {info.key: info.size for info in store.list("")}
    finally:
        store.close()


# The issue's own sizes: a 2 MiB cap, the smallest there is. LevelDB clips max_file_size to at
# least 1 MiB, so tables of about that size exist whatever levels3 does.
CAP = 2 * MiB


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["put", "put_sync", "write_batch", "delete"])
def test_write_needing_an_object_above_the_cap_is_refused(location_factory, kind, how):
    """A 4 MiB value (or key) under max_object_size=2 MiB: refused at the write, naming the
    limit; the database stays usable and reopens."""
    location = location_factory(kind)
    big = os.urandom(4 * MiB)  # incompressible: no object within the cap could hold it
    with location.open(create_if_missing=True, max_object_size=CAP) as db:
        db.put(b"small-before", b"v", sync=True)
        with pytest.raises(levels3.WriteTooLargeError, match="max_object_size"):
            if how == "write_batch":
                with db.write_batch(sync=True) as batch:
                    batch.put(b"big", big)
            elif how == "delete":
                db.delete(big)
            else:
                db.put(b"big", big, sync=how == "put_sync")
        db.put(b"small-after", b"v", sync=True)
    with location.open(max_object_size=CAP) as db:
        assert db.get(b"small-before") == b"v" and db.get(b"small-after") == b"v"
        assert db.get(b"big") is None


def test_the_largest_write_is_accepted_and_one_byte_more_is_not(location_factory):
    """The limit is exactly what engine.sizing says: a put of that weight goes through (and
    reopens), one byte heavier is refused; a batch of many small entries counts them."""
    location = location_factory("local")
    limit = table_limits(CAP).max_write_bytes
    overhead = 12 + 1 + 10 + 16  # the put's batch header and varints, and the per-entry weight
    key = b"k"
    value = os.urandom(limit - 2 * len(key) - overhead)
    with location.open(create_if_missing=True, max_object_size=CAP) as db:
        db.put(key, value)
        with pytest.raises(levels3.WriteTooLargeError):
            db.put(key, value + b"x")
        batch = db.write_batch()
        for i in range(limit // 20):  # 11 bytes each in the batch, but weighing 35: too heavy by entries
            batch.put(b"%08d" % i, b"")
        assert batch.approximate_size() < limit
        with pytest.raises(levels3.WriteTooLargeError):
            batch.write()
        batch.clear()
        batch.put(b"after", b"clear")
        batch.write()
    with location.open(max_object_size=CAP) as db:
        assert db.get(key) == value and db.get(b"after") == b"clear"
    _assert_no_object_above(location, CAP)


SMALL_SYNCED = 45  # 50 kB each: 2.25 MB of WAL, above the 2 MiB cap; each write needs one small segment


def _write_small_synced(db) -> None:
    for i in range(SMALL_SYNCED):
        db.put(b"s%04d" % i, os.urandom(50_000), sync=True)


def _assert_no_object_above(location, cap: int) -> None:
    oversized = {k: n for k, n in _object_sizes(location).items() if n > cap}
    assert not oversized, f"objects above max_object_size: {oversized}"


@pytest.mark.parametrize("kind", KINDS)
def test_small_synced_writes_reopen_under_a_small_cap(location_factory, kind):
    """Small synced writes filling a WAL beyond the cap, with the default write buffer: every
    one reopens, and no object in the store exceeds the cap."""
    location = location_factory(kind)
    with location.open(create_if_missing=True, max_object_size=CAP) as db:
        _write_small_synced(db)
    with location.open(max_object_size=CAP) as db:
        assert sum(1 for _ in db) == SMALL_SYNCED
    _assert_no_object_above(location, CAP)


@pytest.mark.parametrize("option, value", [("write_buffer_size", 8 * MiB), ("max_file_size", 2 * MiB),
                                           ("block_size", 1 * MiB)])
def test_table_options_that_cannot_fit_the_cap_are_refused(location_factory, option, value):
    """An explicit LevelDB option that would make tables larger than max_object_size: the open
    refuses the pair, naming both, before anything is written."""
    location = location_factory("moto_server")
    with pytest.raises(levels3.ConfigurationError) as refused:
        location.open(create_if_missing=True, max_object_size=CAP, **{option: value})
    assert "max_object_size" in str(refused.value) and option in str(refused.value), refused.value
    assert not {k for k in _object_sizes(location) if k != "LOCK"}, "the refused open wrote objects"
    with location.open(create_if_missing=True, max_object_size=8 * CAP, **{option: value}) as db:
        db.put(b"k", b"v")  # a cap large enough takes the same option


def test_a_cap_below_the_minimum_is_refused():
    with pytest.raises(levels3.ConfigurationError, match="max_object_size"):
        levels3.StoreOptions(max_object_size=1 * MiB)


def test_table_limits_defaults_and_bounds():
    """The defaults fit every cap from the minimum up; LevelDB's own defaults at 64 MiB."""
    assert table_limits(64 * MiB) == table_limits(64 * MiB, write_buffer_size=4 * MiB, max_file_size=2 * MiB)
    assert table_limits(64 * MiB).write_buffer_size == 4 * MiB
    for cap in (2 * MiB, 3 * MiB + 17, 8 * MiB, 64 * MiB, 5 << 30):
        limits = table_limits(cap)
        # a flushed table: the memtable, plus a write group or the write that overflowed it
        assert limits.write_buffer_size + max(1 * MiB, limits.max_write_bytes) <= cap * 3 // 4
        # a compacted table: max_file_size, one block, one write
        assert limits.max_file_size + 4096 + limits.max_write_bytes <= cap * 3 // 4
        assert limits.max_write_bytes >= MIN_WRITE_BYTES
    assert table_limits(2 * MiB).max_file_size == 1 * MiB  # LevelDB's minimum


@pytest.mark.parametrize("kind", KINDS)
def test_a_tail_above_the_cap_goes_as_several_segments(location_factory, kind):
    """The writer's control path, driven directly: a tail above max_object_size becomes
    several segments within it (each key naming its end), the file reads back whole, and a
    tail within the cap is still one PUT."""
    from levels3.engine.writer import WriterControl

    location = location_factory(kind)
    control = WriterControl.open(location.url, None, {**location.options, "max_object_size": CAP},
                                 create_if_missing=True)
    try:
        name = "000042.log"
        path = control.create(name)
        data = os.urandom(5 * MiB + 123)
        with open(path, "wb") as f:
            f.write(data)
        puts = control.counters.requests["put"]
        control.persist(name, len(data), False)
        assert control.counters.requests["put"] - puts == 3
        with open(path, "ab") as f:
            f.write(b"x" * 1000)
        puts = control.counters.requests["put"]
        control.persist(name, len(data) + 1000, False)
        assert control.counters.requests["put"] - puts == 1
        store = location.raw_store()
        try:
            catalog = Catalog.load(store)
            record = catalog.get(name)
            assert record.damage is None and record.size == len(data) + 1000
            assert all(o.size <= CAP and o.declared_end == o.end for o in record.objects)
            assert b"".join(store.get(o.key) for o in record.objects) == data + b"x" * 1000
        finally:
            store.close()
    finally:
        control.close()


class _RecordingGets(FaultInjectingStore):
    largest_get = 0

    def get(self, key, start=0, end=None):
        data = super().get(key, start, end)
        _RecordingGets.largest_get = max(_RecordingGets.largest_get, len(data))
        return data


@pytest.mark.parametrize("kind", KINDS)
def test_objects_above_a_smaller_cap_are_read_in_ranges(location_factory, kind):
    """A database written under a larger cap (tables and a sealed WAL of several MiB) opens
    under the smallest one: each GET asks for at most max_object_size bytes."""
    location = location_factory(kind)
    values = {b"v%03d" % i: os.urandom(30_000) for i in range(100)}
    # A custom comparator: a clean close then leaves the memtable in the WAL (sealed in one object)
    # instead of writing it to a table, so that a WAL of several MiB is read back here too.
    order = {"comparator": lambda a, b: (a > b) - (a < b), "comparator_name": b"bytes-in-python"}
    with location.open(create_if_missing=True, max_object_size=64 * MiB, write_buffer_size=8 * MiB, **order) as db:
        for key, value in values.items():
            db.put(key, value)
        db.compact_range()
    with location.open(max_object_size=64 * MiB, write_buffer_size=8 * MiB, **order) as db:
        for key, value in values.items():  # unsynced: the WAL is sealed at close, in one object
            db.put(key + b"-wal", value)
    assert max(size for key, size in _object_sizes(location).items() if ".log/" in key) > CAP
    _RecordingGets.largest_get = 0
    with location.open(max_object_size=CAP, wrap_store=lambda s: _RecordingGets(s, rate=0.0), **order) as db:
        assert dict(db) == {**values, **{k + b"-wal": v for k, v in values.items()}}
    assert 0 < _RecordingGets.largest_get <= CAP


# -- item 4: damage to the WAL -----------------------------------------------------------------

CRASHING_WRITER = r"""
import json, os, sys
import levels3
url, options = sys.argv[1], json.loads(sys.argv[2])
db = levels3.DB(url, create_if_missing=True, deletion_grace=0, **options)
for i in range(120):  # one WAL segment per synced put, merged 16 at a time
    db.put(b"key%04d" % i, b"%04d" % i * 250, sync=True)
print("acked 120", flush=True)
os._exit(0)  # crashed: the WAL stays in its segments, the lease stays taken
"""

_SEGMENT = re.compile(r"w\d+/(\d+\.log)/(\d{20})(?:-(\d{20})(?:-(\d+))?)?")


@dataclass
class Segment:
    key: str
    offset: int
    size: int


def _template_location(kind: str, request, tmp_path_factory) -> DBLocation:
    if kind == "local":
        return DBLocation(kind, str(tmp_path_factory.mktemp("template") / "db"))
    bucket = f"levels3-{uuid.uuid4().hex[:12]}"
    if kind == "seaweedfs":
        bucket = request.getfixturevalue("weed_bucket")
        options = request.getfixturevalue("seaweedfs").options(request_timeout=10)
    else:
        import boto3

        endpoint = request.getfixturevalue("moto_endpoint")
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(Bucket=bucket)
        options = {"region": REGION, "endpoint_url": endpoint, "request_timeout": 10}
    return DBLocation(kind, f"s3://{bucket}/template", options, bucket, "template")


@pytest.fixture(scope="module")
def crashed_templates(request, tmp_path_factory):
    """Per store kind, a database whose writer made 120 synced puts and was killed, made once
    per module (on first use): its objects are copied for each test."""
    made: dict[str, DBLocation] = {}

    def template(kind: str) -> DBLocation:
        if kind not in made:
            location = _template_location(kind, request, tmp_path_factory)
            result = run_python(CRASHING_WRITER, location.url, location.options, timeout=120)
            assert_clean_exit(result)
            assert "acked 120" in result.stdout
            made[kind] = location
        return made[kind]

    return template


def crashed_database(location, template: DBLocation) -> list[Segment]:
    """The crashed template copied to ``location``, without its dead lease (removed, as an
    operator would). Returns the objects of its live WAL, in offset order."""
    source = template.raw_store()
    target = LocalDirStore(location.url, create=True) if location.kind == "local" else location.raw_store()
    segments = []
    try:
        for info in source.list(""):
            if info.key == "LOCK":
                continue
            metadata = source.head(info.key).metadata if info.key == "CURRENT" else None  # the epoch
            target.put(info.key, source.get(info.key), metadata=metadata)
            match = _SEGMENT.fullmatch(info.key)
            if match:
                segments.append(Segment(info.key, int(match.group(2)), info.size))
    finally:
        source.close()
        target.close()
    segments.sort(key=lambda s: s.offset)
    assert len(segments) > 8, [s.key for s in segments]
    assert all(a.offset + a.size == b.offset for a, b in zip(segments, segments[1:])), "the WAL had a gap already"
    return segments


def damage(location, segment: Segment, how: str) -> None:
    store = location.raw_store()
    try:
        if how == "delete":
            store.delete(segment.key)
        else:
            store.put(segment.key, store.get(segment.key)[:segment.size // 2])
    finally:
        store.close()


DAMAGE = {  # name: (which object, what is done to it)
    "first-deleted": (0, "delete"),
    "first-truncated": (0, "truncate"),
    "middle-deleted": (4, "delete"),
    "last-truncated": (-1, "truncate"),
}


def expected_name(segment: Segment, how: str) -> str:
    """What an error about this damage must name: a truncated object by its key; a deleted one
    (whose full key nobody can know) by its file's key prefix."""
    return segment.key if how == "truncate" else segment.key.rsplit("/", 1)[0]


def _without_lock(sizes: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in sizes.items() if k != "LOCK"}


@pytest.mark.parametrize("kind", SERVED)
@pytest.mark.parametrize("damage_name, paranoid_checks",
                         [(name, None) for name in DAMAGE] + [("first-deleted", True), ("last-truncated", True)])
def test_open_refuses_a_damaged_wal(location_factory, crashed_templates, kind, damage_name, paranoid_checks):
    location = location_factory(kind)
    segments = crashed_database(location, crashed_templates(kind))
    index, how = DAMAGE[damage_name]
    damaged = segments[index]
    damage(location, damaged, how)
    before = _object_sizes(location)
    # deletion_grace=0: an open that deleted anything before refusing would show it here
    with pytest.raises(levels3.CorruptionError, match=re.escape(expected_name(damaged, how))):
        with location.open(paranoid_checks=paranoid_checks, deletion_grace=0):
            pass
    assert _without_lock(before) == _without_lock(_object_sizes(location)), \
        "the refused open changed what the store holds"


@pytest.mark.parametrize("kind", SERVED)
def test_open_refuses_a_truncated_manifest(location_factory, crashed_templates, kind):
    location = location_factory(kind)
    crashed_database(location, crashed_templates(kind))
    store = location.raw_store()
    try:
        name = store.get("CURRENT").decode().strip()
    finally:
        store.close()
    manifest = max((parse_key(k).offset, k, n) for k, n in _object_sizes(location).items()
                   if f"/{name}/" in k)
    damage(location, Segment(manifest[1], manifest[0], manifest[2]), "truncate")
    before = _object_sizes(location)
    with pytest.raises(levels3.CorruptionError, match=re.escape(manifest[1])):
        location.open(deletion_grace=0)
    with pytest.raises(levels3.CorruptionError, match=re.escape(manifest[1])):
        location.open(read_only=True)
    assert _without_lock(before) == _without_lock(_object_sizes(location))


@pytest.mark.parametrize("kind", ["local", "moto_server"])
def test_segments_with_keys_of_the_earlier_form_still_open(location_factory, crashed_templates, kind):
    """Keys without their end (``<offset>``, written before ends were recorded) parse and open;
    a gap among them is still damage."""
    location = location_factory(kind)
    segments = crashed_database(location, crashed_templates(kind))
    store = location.raw_store()
    try:
        legacy = []
        for s in segments:
            parsed = parse_key(s.key)
            if parsed.level == 0:
                legacy.append(object_key(parsed.name, parsed.epoch, parsed.offset))
                store.put(legacy[-1], store.get(s.key))
                store.delete(s.key)
        infos = list(store.list(""))
    finally:
        store.close()
    assert len(legacy) > 2 and all(parse_key(k).end is None for k in legacy)
    without_one = [info for info in infos if info.key != legacy[1]]
    record = Catalog.load(_Listing(without_one)).get(parse_key(legacy[1]).name)
    assert record.damage is not None and legacy[1].rsplit("/", 1)[0] in record.damage
    with location.open() as db:
        assert sum(1 for _ in db) == 120


class _Listing:
    """A store stand-in that answers list() with given objects."""

    def __init__(self, infos) -> None:
        self.infos = infos

    def list(self, prefix=""):
        return iter(self.infos)


class _TornFirstListing(FaultInjectingStore):
    """The first LIST misses one WAL object, as a LIST paging past a merge's key before it
    landed and past its segments after they were deleted would; later LISTs see everything."""

    lists = 0

    def list(self, prefix=""):
        listing = list(super().list(prefix))
        type(self).lists += 1
        if type(self).lists == 1:
            wal = [info for info in listing if ".log/" in info.key]
            listing.remove(wal[len(wal) // 2])
        return iter(listing)


@pytest.mark.parametrize("kind", ["local", "moto_server"])
def test_a_follower_lists_again_before_calling_a_gap_corruption(location_factory, crashed_templates, kind):
    location = location_factory(kind)
    segments = crashed_database(location, crashed_templates(kind))
    _TornFirstListing.lists = 0
    with location.open(read_only=True, wrap_store=lambda s: _TornFirstListing(s, rate=0.0)) as follower:
        assert sum(1 for _ in follower) == 120
    assert _TornFirstListing.lists == 2
    damage(location, segments[4], "delete")  # a gap every listing sees: corruption after the retries
    with pytest.raises(levels3.CorruptionError, match=re.escape(expected_name(segments[4], "delete"))):
        location.open(read_only=True)


def _cli(command: str, location, *args: str) -> subprocess.CompletedProcess:
    options = location.options
    store_args = ["--endpoint-url", options["endpoint_url"], "--region", options["region"]] if options else []
    env = dict(os.environ)
    if "access_key" in options:
        env.update(AWS_ACCESS_KEY_ID=options["access_key"], AWS_SECRET_ACCESS_KEY=options["secret_key"])
        env.pop("AWS_SESSION_TOKEN", None)
        env.pop("AWS_SECURITY_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "levels3", command, location.url, *store_args, *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=ROOT, timeout=120, env=env)


@pytest.mark.parametrize("kind", SERVED)
def test_verify_fails_and_names_the_missing_wal_object(location_factory, crashed_templates, kind):
    location = location_factory(kind)
    segments = crashed_database(location, crashed_templates(kind))
    damage(location, segments[4], "delete")
    before = _object_sizes(location)
    result = _cli("verify", location)
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert expected_name(segments[4], "delete") in result.stdout + result.stderr
    assert _object_sizes(location) == before, "verify changed the store"


@pytest.mark.parametrize("kind", ["local", "moto_server"])
def test_verify_checks_a_sound_database_without_changing_it(location_factory, crashed_templates, kind):
    """verify opens as a follower: no lock taken, no MANIFEST or table written, nothing removed."""
    location = location_factory(kind)
    crashed_database(location, crashed_templates(kind))
    before = _object_sizes(location)
    result = _cli("verify", location)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "120 entries" in result.stdout
    assert _object_sizes(location) == before, "verify changed the store"


@pytest.mark.parametrize("kind", SERVED)
def test_gc_deletes_no_object_of_a_damaged_wal(location_factory, crashed_templates, kind):
    location = location_factory(kind)
    segments = crashed_database(location, crashed_templates(kind))
    damage(location, segments[4], "delete")
    result = _cli("gc", location, "--grace", "0", "--delete")
    left = set(_object_sizes(location))
    gone = [s.key for i, s in enumerate(segments) if i != 4 and s.key not in left]
    assert not gone, f"gc deleted {len(gone)} objects of the damaged WAL:\n{result.stdout}"
    assert result.returncode != 0, result.stdout
    assert expected_name(segments[4], "delete") in result.stderr


@pytest.mark.parametrize("kind", ["local", "moto_server"])
def test_export_refuses_a_damaged_wal(location_factory, crashed_templates, kind, tmp_path):
    """Exporting copies the objects of each file back to back: with a gap, that would be a
    plain LevelDB directory with a log nobody wrote."""
    location = location_factory(kind)
    segments = crashed_database(location, crashed_templates(kind))
    damage(location, segments[4], "delete")
    result = _cli("export", location, str(tmp_path / "plain"))
    assert result.returncode == 1, result.stdout
    assert expected_name(segments[4], "delete") in result.stderr
    assert not (tmp_path / "plain").exists()


@pytest.mark.parametrize("kind", SERVED)
def test_repair_db_salvages_around_a_gap_and_reports_it(location_factory, crashed_templates, caplog, kind):
    """After the repair the database opens; the writes recorded before the gap, and those in the
    log blocks after the one holding the gap, are back; a warning names the damaged file."""
    location = location_factory(kind)
    segments = crashed_database(location, crashed_templates(kind))
    lost = segments[4]
    store = location.raw_store()
    try:
        wal = bytearray(segments[-1].offset + segments[-1].size)
        for s in segments:
            wal[s.offset:s.offset + s.size] = store.get(s.key)
    finally:
        store.close()
    damage(location, lost, "delete")
    block = 32768  # LevelDB's log block: reading resumes at the next block after damage
    resume = (lost.offset + lost.size + block - 1) // block * block
    before_gap, after_gap = [], []
    for i in range(120):
        position = wal.find(b"key%04d" % i)
        record_end = position + 4 + 1000 + 16  # key, value, and the record's few header bytes
        if record_end < lost.offset:
            before_gap.append(b"key%04d" % i)
        elif position - 32 >= resume:
            after_gap.append(b"key%04d" % i)
    assert before_gap and after_gap, (lost, resume, len(wal))
    with caplog.at_level(logging.WARNING, logger="levels3"):
        levels3.repair_db(location.url, **location.options)
    with location.open() as db:
        present = dict(db)
    assert set(before_gap) <= set(present)
    assert set(after_gap) <= set(present), \
        f"{len(set(after_gap) - set(present))} of {len(after_gap)} readable writes not salvaged"
    assert all(present[k] == b"%s" % k[3:] * 250 for k in present), "a salvaged value is not what was written"
    file_name = _SEGMENT.fullmatch(lost.key).group(1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(file_name in m and expected_name(lost, "delete") in m for m in warnings), warnings
    assert any("lost" in m for m in warnings), warnings
