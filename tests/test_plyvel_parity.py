"""levels3 against plyvel 1.5.1: the same random operations, the same answers.

plyvel is the specification, with three exceptions where plyvel's Iterator
plainly misbehaves (it returns entries outside the requested range, or skips
one inside it). To keep plyvel the oracle even there, the iterator checks run
a Python port of plyvel's iterator state machine over a sorted list:

* ``PlyvelModel(fixed=False)`` must agree with plyvel on every step (so the
  port is faithful, bugs included);
* ``PlyvelModel(fixed=True)`` differs only in the three marked places and must
  agree with levels3 on every step.

Where the two model modes agree, levels3 therefore answers exactly as plyvel.
"""

from __future__ import annotations

import functools
import random
from typing import Any, Callable

import pytest

import levels3

plyvel = pytest.importorskip("plyvel")

ALPHABET = [b"\x00", b"a", b"b", b"\xff"]
KEYS = [b""] + [bytes(p) for n in (1, 2, 3) for p in __import__("itertools").product(
    [c[0] for c in ALPHABET], repeat=n)]
PREFIXES = [b"", b"a", b"b", b"\xff", b"a\xff", b"\xff\xff", b"ab"]


def bytewise(a: bytes, b: bytes) -> int:
    return (a > b) - (a < b)


def reverse_bytewise(a: bytes, b: bytes) -> int:
    return bytewise(b, a)


# ---------------------------------------------------------------------------
# The model: plyvel's Iterator over a sorted snapshot of the data
# ---------------------------------------------------------------------------

class ModelCursor:
    """leveldb::Iterator over a sorted list: a position, valid or not."""

    def __init__(self, data: dict[bytes, bytes], cmp: Callable[[bytes, bytes], int]) -> None:
        self.cmp = cmp
        self.keys = sorted(data, key=functools.cmp_to_key(cmp))
        self.data = dict(data)
        self.pos = len(self.keys)

    def valid(self) -> bool:
        return 0 <= self.pos < len(self.keys)

    def key(self) -> bytes:
        assert self.valid()
        return self.keys[self.pos]

    def value(self) -> bytes:
        return self.data[self.key()]

    def seek(self, target: bytes) -> None:
        self.pos = next((i for i, k in enumerate(self.keys) if self.cmp(k, target) >= 0), len(self.keys))

    def seek_to_first(self) -> None:
        self.pos = 0

    def seek_to_last(self) -> None:
        self.pos = len(self.keys) - 1 if self.keys else 0

    def next(self) -> None:
        self.pos += 1

    def prev(self) -> None:
        self.pos -= 1


def bytes_increment(s: bytes) -> bytes | None:
    b = bytearray(s)
    for i in range(len(b) - 1, -1, -1):
        if b[i] != 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return None


class PlyvelModel:
    """A line-by-line port of plyvel 1.5.1's Iterator (plyvel/_plyvel.pyx).

    With fixed=True, the three plyvel bugs levels3 fixes are fixed here too.
    """

    BEFORE_START, AFTER_STOP, IN_BETWEEN, SEEKED = range(4)

    def __init__(self, data, cmp, *, fixed, db_prefix=None, reverse=False, start=None, stop=None,
                 include_start=True, include_stop=False, prefix=None, include_key=True,
                 include_value=True):
        self.fixed = fixed
        self.it = ModelCursor(data, cmp)
        self.cmp = cmp
        self.reverse = reverse
        self.db_prefix = db_prefix
        self.db_prefix_len = len(db_prefix) if db_prefix is not None else 0
        if db_prefix is not None:
            if prefix is not None:
                prefix = db_prefix + prefix
            else:
                if start is None:
                    start, include_start = db_prefix, True
                else:
                    start = db_prefix + start
                if stop is None:
                    stop, include_stop = bytes_increment(db_prefix), False
                else:
                    stop = db_prefix + stop
        if prefix is not None:
            if start is not None or stop is not None:
                raise TypeError("'prefix' cannot be used together with 'start' or 'stop'")
            start, stop = prefix, bytes_increment(prefix)
            include_start, include_stop = True, False
        self.start, self.stop = start, stop
        self.include_start, self.include_stop = include_start, include_stop
        self.include_key, self.include_value = include_key, include_value
        self.state = self.AFTER_STOP if reverse else self.BEFORE_START

    def _before_start(self, key: bytes) -> bool:
        if self.start is None:
            return False
        c = self.cmp(key, self.start)
        return c < 0 or (c == 0 and not self.include_start)

    def current(self):
        if self.include_key and len(self.it.key()) < self.db_prefix_len:
            # Only reachable through plyvel bug 1 (an entry below a PrefixedDB's
            # range); plyvel's slicing then fails like this.
            raise SystemError("Negative size passed to PyBytes_FromStringAndSize")
        key = self.it.key()[self.db_prefix_len:] if self.include_key else None
        value = self.it.value() if self.include_value else None
        if self.include_key and self.include_value:
            return (key, value)
        return key if self.include_key else value

    def __iter__(self):
        return self

    def __next__(self):
        return self.real_prev() if self.reverse else self.real_next()

    def prev(self):
        return self.real_next() if self.reverse else self.real_prev()

    def real_next(self):
        it = self.it
        if self.state == self.IN_BETWEEN:
            it.next()
            if not it.valid():
                self.state = self.AFTER_STOP
                raise StopIteration
        elif self.state == self.SEEKED:
            self.state = self.IN_BETWEEN
        elif self.state == self.BEFORE_START:
            if self.start is None:
                it.seek_to_first()
            else:
                it.seek(self.start)
            if not it.valid():
                raise StopIteration
            if self.start is not None and not self.include_start:
                if self.cmp(it.key(), self.start) == 0:
                    it.next()
                    if not it.valid():
                        raise StopIteration
            self.state = self.IN_BETWEEN
        else:
            raise StopIteration
        if self.stop is not None:
            n = 1 if self.include_stop else 0
            if self.cmp(it.key(), self.stop) >= n:
                self.state = self.AFTER_STOP
                raise StopIteration
        return self.current()

    def real_prev(self):
        it = self.it
        if self.state == self.IN_BETWEEN:
            pass
        elif self.state == self.SEEKED:
            it.prev()
            if not it.valid():
                self.state = self.BEFORE_START
                raise StopIteration
            if self.fixed and self._before_start(it.key()):
                # plyvel bug 1: after seek() to (or below) start, plyvel returns entries below start.
                self.state = self.BEFORE_START
                raise StopIteration
        elif self.state == self.BEFORE_START:
            raise StopIteration
        else:
            if self.stop is None:
                it.seek_to_last()
            else:
                it.seek(self.stop)
                if it.valid():
                    if not self.include_stop:
                        it.prev()
                else:
                    it.seek_to_last()
                if it.valid() and self.cmp(it.key(), self.stop) > 0:
                    it.prev()
            if not it.valid():
                raise StopIteration
            if self.fixed:
                if self._before_start(it.key()):
                    raise StopIteration
            # plyvel bug 2: it stops on an *included* start key too, so
            # iterator(reverse=True, start=k) can miss k.
            elif self.start is not None and self.cmp(self.start, it.key()) >= 0:
                raise StopIteration
        out = self.current()
        it.prev()
        if not it.valid():
            self.state = self.BEFORE_START
        elif self.start is None:
            self.state = self.IN_BETWEEN
        else:
            n = 0 if self.include_start else 1
            self.state = self.IN_BETWEEN if self.cmp(it.key(), self.start) >= n else self.BEFORE_START
        return out

    def seek_to_start(self):
        self.state = self.BEFORE_START

    def seek_to_stop(self):
        self.state = self.AFTER_STOP

    def seek(self, target: bytes):
        it = self.it
        if self.db_prefix is not None:
            target = self.db_prefix + target
        if self.start is not None and self.cmp(target, self.start) < 0:
            target = self.start
        if self.stop is not None and self.cmp(target, self.stop) > 0:
            target = self.stop
        it.seek(target)
        if self.fixed and it.valid() and self.start is not None and not self.include_start \
                and self.cmp(it.key(), self.start) == 0:
            # plyvel bug 3: seek() to an excluded start key makes next() return it.
            it.next()
        if not it.valid():
            self.state = self.AFTER_STOP
            return
        self.state = self.SEEKED


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def outcome(fn: Callable[[], Any]) -> tuple:
    """What one call did, comparable across plyvel, levels3 and the model."""
    try:
        return ("ok", fn())
    except StopIteration:
        return ("stop",)
    except Exception as exc:  # noqa: BLE001 - the type is the result
        return ("raise", error_kind(exc))


def error_kind(exc: BaseException) -> str:
    """plyvel.X and levels3.X compare equal; builtin exceptions by name."""
    for name in ("IteratorInvalidError", "CorruptionError", "IOError", "Error"):
        if isinstance(exc, (getattr(plyvel, name), getattr(levels3, name))):
            return f"leveldb.{name}"
    return type(exc).__name__


class Pair:
    """A plyvel DB and a levels3 DB, plus the expected contents."""

    def __init__(self, tmp_path, cmp=bytewise, **kwargs: Any) -> None:
        self.cmp = cmp
        self.p = plyvel.DB(str(tmp_path / "plyvel"), create_if_missing=True, **kwargs)
        self.l = levels3.DB(str(tmp_path / "levels3"), create_if_missing=True, **kwargs)
        self.data: dict[bytes, bytes] = {}

    def close(self) -> None:
        self.p.close()
        self.l.close()

    def both(self, fn: Callable[[Any], Any]) -> tuple[tuple, tuple]:
        return outcome(lambda: fn(self.p)), outcome(lambda: fn(self.l))


def random_key(rng: random.Random) -> bytes:
    return rng.choice(KEYS)


def random_value(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randrange(6)))


def apply_random_ops(rng: random.Random, pair: Pair, n: int) -> None:
    """The same random writes to both databases and to pair.data."""
    for _ in range(n):
        op = rng.random()
        if op < 0.45:
            k, v = random_key(rng), random_value(rng)
            pair.p.put(k, v)
            pair.l.put(k, v, sync=rng.random() < 0.05)
            pair.data[k] = v
        elif op < 0.65:
            k = random_key(rng)
            pair.p.delete(k)
            pair.l.delete(k)
            pair.data.pop(k, None)
        elif op < 0.85:
            ops = [(rng.random() < 0.7, random_key(rng), random_value(rng)) for _ in range(rng.randrange(1, 6))]
            fail = rng.random() < 0.3
            transaction = rng.random() < 0.7
            for db in (pair.p, pair.l):
                try:
                    with db.write_batch(transaction=transaction) as wb:
                        for is_put, k, v in ops:
                            wb.put(k, v) if is_put else wb.delete(k)
                        if fail:
                            raise KeyError("boom")
                except KeyError:
                    pass
            if not (fail and transaction):
                for is_put, k, v in ops:
                    if is_put:
                        pair.data[k] = v
                    else:
                        pair.data.pop(k, None)
        else:
            prefix = rng.choice(PREFIXES[1:])
            k, v = random_key(rng)[:2], random_value(rng)
            if rng.random() < 0.3:
                for db in (pair.p, pair.l):
                    with db.prefixed_db(prefix).write_batch() as wb:
                        wb.put(k, v)
            else:
                pair.p.prefixed_db(prefix).put(k, v)
                pair.l.prefixed_db(prefix).put(k, v)
            pair.data[prefix + k] = v
    if rng.random() < 0.3:
        pair.p.compact_range()
        pair.l.compact_range()


def random_iterator_kwargs(rng: random.Random) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if rng.random() < 0.5:
        kwargs["reverse"] = rng.random() < 0.5
    if rng.random() < 0.25:
        kwargs["prefix"] = rng.choice(PREFIXES)
    else:
        if rng.random() < 0.5:
            kwargs["start"] = random_key(rng)
        if rng.random() < 0.5:
            kwargs["stop"] = random_key(rng)
    for flag in ("include_start", "include_stop"):
        if rng.random() < 0.5:
            kwargs[flag] = rng.random() < 0.5
    if rng.random() < 0.3:
        kwargs["include_key"] = rng.random() < 0.5
    if rng.random() < 0.3:
        kwargs["include_value"] = rng.random() < 0.5
    return kwargs


STEPS = ("next", "next", "next", "prev", "prev", "seek", "seek_to_start", "seek_to_stop")


def run_step(it: Any, step: str, arg: bytes | None) -> tuple:
    if step == "next":
        return outcome(lambda: next(it))
    if step == "prev":
        return outcome(it.prev)
    if step == "seek":
        return outcome(lambda: it.seek(arg))
    return outcome(getattr(it, step))


def compare_iterators(rng: random.Random, pair: Pair, make: Callable[[Any], Any], model_kwargs: dict,
                      data: dict[bytes, bytes], n_steps: int, context: str) -> int:
    """Drive plyvel's, levels3's and both models' iterators through the same steps.

    Returns how many steps ran, and in how many a plyvel bug showed (the model modes disagreed).
    """
    p_it = outcome(lambda: make(pair.p))
    l_it = outcome(lambda: make(pair.l))
    if p_it[0] != "ok":
        assert l_it == p_it, context
        return 0, 0
    assert l_it[0] == "ok", (context, l_it)
    p_it, l_it = p_it[1], l_it[1]
    buggy = PlyvelModel(data, pair.cmp, fixed=False, **model_kwargs)
    fixed = PlyvelModel(data, pair.cmp, fixed=True, **model_kwargs)
    diverged = 0
    trace = []
    for _ in range(n_steps):
        step = rng.choice(STEPS)
        arg = random_key(rng) if step == "seek" else None
        got_p, got_l = run_step(p_it, step, arg), run_step(l_it, step, arg)
        want_p, want_l = run_step(buggy, step, arg), run_step(fixed, step, arg)
        trace.append((step, arg, got_p, got_l))
        assert got_p == want_p, f"model is not faithful to plyvel: {context} {trace}"
        assert got_l == want_l, f"levels3 differs: {context} {trace}"
        if want_p != want_l:
            diverged += 1
        else:
            assert got_l == got_p
    # Exhausting the iterator in its own direction gives the same tail.
    assert outcome(lambda: list(l_it)) == outcome(lambda: list(fixed)), context
    l_it.close()
    p_it.close()
    assert outcome(lambda: next(l_it)) == ("raise", "RuntimeError")
    return n_steps, diverged


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

@pytest.fixture
def pair(tmp_path):
    result = Pair(tmp_path)
    yield result
    result.close()


def test_model_reproduces_known_plyvel_bugs(pair: Pair) -> None:
    """The three documented plyvel bugs are real in the oracle and absent in levels3."""
    for k in (b"a", b"b", b"c", b"d"):
        pair.p.put(k, k)
        pair.l.put(k, k)
    # Bug 2: reverse iteration misses an included start key that is the first entry seen.
    kwargs = dict(reverse=True, start=b"b", stop=b"c", include_value=False)
    assert list(pair.p.iterator(**kwargs)) == []
    assert list(pair.l.iterator(**kwargs)) == [b"b"]
    # Bug 3: seek() onto an excluded start key.
    for db, want in ((pair.p, b"b"), (pair.l, b"c")):
        it = db.iterator(start=b"b", include_start=False, include_value=False)
        it.seek(b"a")
        assert next(it) == want
    # Bug 1: after seek() below start, a reverse iterator leaves the range.
    for db, want in ((pair.p, ("ok", b"a")), (pair.l, ("stop",))):
        it = db.iterator(reverse=True, start=b"b", include_value=False)
        it.seek(b"a")
        assert outcome(lambda: next(it)) == want


@pytest.mark.parametrize("seed", range(12))
def test_random_operations_match(tmp_path, seed: int) -> None:
    rng = random.Random(seed)
    pair = Pair(tmp_path, write_buffer_size=rng.choice([4096, 64 * 1024, None]) or None)
    try:
        steps = diverged = 0
        for _round in range(4):
            apply_random_ops(rng, pair, rng.randrange(10, 60))
            # Point reads.
            for k in KEYS:
                assert pair.l.get(k) == pair.p.get(k) == pair.data.get(k), k
            assert pair.l.get(b"\x01missing", b"dflt") == b"dflt"
            # Whole-database iteration, both directions and DB.__iter__.
            assert list(pair.l) == list(pair.p) == sorted(pair.data.items())
            assert list(pair.l.iterator(reverse=True)) == list(pair.p.iterator(reverse=True))
            # Iterators with random keyword combinations and random moves.
            for i in range(25):
                kwargs = random_iterator_kwargs(rng)
                context = f"seed={seed} round={_round} iterator {i} {kwargs}"
                ran, bad = compare_iterators(rng, pair, lambda db, kw=kwargs: db.iterator(**kw), kwargs,
                                             pair.data, rng.randrange(1, 20), context)
                steps, diverged = steps + ran, diverged + bad
            # Prefixed views, nested, with their own iterators and reads.
            for i in range(8):
                outer = rng.choice(PREFIXES[1:])
                inner = rng.choice(PREFIXES)
                views = [db.prefixed_db(outer).prefixed_db(inner) if rng.random() < 0.5 else db.prefixed_db(outer + inner)
                         for db in (pair.p, pair.l)]
                assert views[1].prefix == views[0].prefix == outer + inner
                for k in rng.sample(KEYS, 10):
                    assert views[1].get(k) == views[0].get(k)
                kwargs = random_iterator_kwargs(rng)
                context = f"seed={seed} round={_round} prefixed {outer + inner!r} {kwargs}"
                by_db = {id(pair.p): views[0], id(pair.l): views[1]}
                ran, bad = compare_iterators(
                    rng, pair, lambda db, kw=kwargs: by_db[id(db)].iterator(**kw),
                    dict(kwargs, db_prefix=outer + inner), pair.data, rng.randrange(1, 20), context)
                steps, diverged = steps + ran, diverged + bad
        # Most steps are unaffected by plyvel's bugs, so this is a real parity check.
        assert diverged * 5 < steps, (diverged, steps)
    finally:
        pair.close()


@pytest.mark.parametrize("seed", range(4))
def test_snapshots_match(tmp_path, seed: int) -> None:
    rng = random.Random(1000 + seed)
    pair = Pair(tmp_path)
    try:
        taken = []
        for _ in range(4):
            apply_random_ops(rng, pair, 30)
            if rng.random() < 0.5:
                view = rng.choice(PREFIXES[1:])
                snaps = (pair.p.prefixed_db(view).snapshot(), pair.l.prefixed_db(view).snapshot())
            else:
                view = None
                snaps = (pair.p.snapshot(), pair.l.snapshot())
            taken.append((view, dict(pair.data), snaps))
        apply_random_ops(rng, pair, 40)  # later writes must not show in the snapshots
        for view, data, (p_snap, l_snap) in taken:
            strip = len(view or b"")
            for k in KEYS:
                assert l_snap.get(k) == p_snap.get(k) == data.get((view or b"") + k)
            expected = sorted((k[strip:], v) for k, v in data.items() if k.startswith(view or b""))
            assert list(l_snap) == list(p_snap) == expected
            for i in range(10):
                kwargs = random_iterator_kwargs(rng)
                model_kwargs = dict(kwargs, db_prefix=view) if view is not None else kwargs
                snaps = {id(pair.p): p_snap, id(pair.l): l_snap}
                compare_iterators(rng, pair, lambda db, kw=kwargs: snaps[id(db)].iterator(**kw), model_kwargs,
                                  data, rng.randrange(1, 15), f"snapshot {view!r} {kwargs}")
            # A snapshot's raw iterator ignores a PrefixedDB's prefix (plyvel).
            raws = [s.raw_iterator() for s in (p_snap, l_snap)]
            for raw in raws:
                raw.seek_to_first()
            assert [raw.key() if raw.valid() else None for raw in raws] == [min(data, default=None)] * 2
            p_snap.close()
            l_snap.close()
            assert pair.l.prefixed_db(b"").get(b"x") == pair.data.get(b"x")
            for snap in (p_snap, l_snap):
                assert outcome(lambda: snap.get(b"a")) == ("raise", "RuntimeError")
                assert outcome(snap.iterator) == ("raise", "RuntimeError")
    finally:
        pair.close()


RAW_STEPS = ("valid", "seek", "seek_to_first", "seek_to_last", "next", "prev", "key", "value", "item")


@pytest.mark.parametrize("seed", range(4))
def test_raw_iterator_moves_match(tmp_path, seed: int) -> None:
    rng = random.Random(2000 + seed)
    pair = Pair(tmp_path)
    try:
        for _ in range(3):
            apply_random_ops(rng, pair, 50)
            for _ in range(15):
                its = (pair.p.raw_iterator(), pair.l.raw_iterator())
                for _ in range(rng.randrange(1, 25)):
                    step = rng.choice(RAW_STEPS)
                    arg = random_key(rng)
                    results = [outcome(lambda it=it: getattr(it, step)(arg) if step == "seek" else getattr(it, step)())
                               for it in its]
                    assert results[1] == results[0], (step, arg)
                for it in its:
                    it.close()
                    assert outcome(it.valid) == ("raise", "RuntimeError")
    finally:
        pair.close()


def test_custom_comparator_matches(tmp_path) -> None:
    """Iterator bounds follow the database's comparator, as in plyvel."""
    rng = random.Random(7)
    pair = Pair(tmp_path, cmp=reverse_bytewise, comparator=reverse_bytewise, comparator_name=b"ReverseBytewise")
    try:
        apply_random_ops(rng, pair, 80)
        assert list(pair.l) == list(pair.p)
        assert [k for k, _ in pair.l] == sorted(pair.data, reverse=True)
        for i in range(40):
            kwargs = random_iterator_kwargs(rng)
            kwargs.pop("prefix", None)  # prefix ranges assume a bytewise order, in plyvel too
            compare_iterators(rng, pair, lambda db, kw=kwargs: db.iterator(**kw), kwargs, pair.data,
                              rng.randrange(1, 20), f"comparator {kwargs}")
    finally:
        pair.close()


def test_writes_over_moto_match(mocked_aws) -> None:
    """The core calls answer the same on an S3 bucket (moto in-process)."""
    import boto3
    import tempfile
    from pathlib import Path

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bkt")
    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as tmp:
        p = plyvel.DB(str(Path(tmp) / "p"), create_if_missing=True)
        l = levels3.DB("s3://bkt/some/prefix", create_if_missing=True, region="us-east-1")
        pair = Pair.__new__(Pair)
        pair.p, pair.l, pair.cmp, pair.data = p, l, bytewise, {}
        try:
            apply_random_ops(rng, pair, 80)
            for k in KEYS:
                assert l.get(k) == p.get(k)
            assert list(l) == list(p)
            for i in range(10):
                kwargs = random_iterator_kwargs(rng)
                compare_iterators(rng, pair, lambda db, kw=kwargs: db.iterator(**kw), kwargs, pair.data,
                                  rng.randrange(1, 15), f"moto {kwargs}")
        finally:
            p.close()
            l.close()
        l = levels3.DB("s3://bkt/some/prefix")
        try:
            assert list(l) == sorted(pair.data.items())
        finally:
            l.close()


# ---------------------------------------------------------------------------
# Bad inputs: the same exception types
# ---------------------------------------------------------------------------

BAD_CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("get str key", lambda db: db.get("a")),
    ("get None key", lambda db: db.get(None)),
    ("get bytearray key", lambda db: db.get(bytearray(b"a"))),
    ("get int key", lambda db: db.get(1)),
    ("put str key", lambda db: db.put("a", b"v")),
    ("put str value", lambda db: db.put(b"a", "v")),
    ("put None value", lambda db: db.put(b"a", None)),
    ("put int value", lambda db: db.put(b"a", 3)),
    ("put bytearray value", lambda db: (db.put(b"ba", bytearray(b"v")), db.get(b"ba"))[1]),
    ("put memoryview value", lambda db: (db.put(b"mv", memoryview(b"xyz")[1:]), db.get(b"mv"))[1]),
    ("put missing value", lambda db: db.put(b"a")),
    ("put positional sync", lambda db: db.put(b"a", b"v", True)),
    ("delete str key", lambda db: db.delete("a")),
    ("delete None", lambda db: db.delete(None)),
    ("iterator str start", lambda db: db.iterator(start="a")),
    ("iterator str stop", lambda db: db.iterator(stop="a")),
    ("iterator str prefix", lambda db: db.iterator(prefix="a")),
    ("iterator prefix+start", lambda db: db.iterator(prefix=b"a", start=b"a")),
    ("iterator prefix+stop", lambda db: db.iterator(prefix=b"a", stop=b"b")),
    ("iterator positional", lambda db: db.iterator(True)),
    ("iterator unknown kw", lambda db: db.iterator(bogus=1)),
    ("iterator seek str", lambda db: db.iterator().seek("a")),
    ("iterator seek None", lambda db: db.iterator().seek(None)),
    ("no key no value", lambda db: list(db.iterator(include_key=False, include_value=False))),
    ("raw seek str", lambda db: db.raw_iterator().seek("a")),
    ("raw key unpositioned", lambda db: db.raw_iterator().key()),
    ("raw value unpositioned", lambda db: db.raw_iterator().value()),
    ("raw next unpositioned", lambda db: db.raw_iterator().next()),
    ("raw prev unpositioned", lambda db: db.raw_iterator().prev()),
    ("raw item unpositioned", lambda db: db.raw_iterator().item()),
    ("prefixed_db str", lambda db: db.prefixed_db("a")),
    ("prefixed_db None", lambda db: db.prefixed_db(None)),
    ("prefixed get str", lambda db: db.prefixed_db(b"p").get("a")),
    ("prefixed put str", lambda db: db.prefixed_db(b"p").put("a", b"v")),
    ("prefixed put bytearray", lambda db: db.prefixed_db(b"p").put(b"a", bytearray(b"v"))),
    ("prefixed delete str", lambda db: db.prefixed_db(b"p").delete("a")),
    ("nested prefixed str", lambda db: db.prefixed_db(b"p").prefixed_db("a")),
    ("batch put str key", lambda db: db.write_batch().put("a", b"v")),
    ("batch put str value", lambda db: db.write_batch().put(b"a", "v")),
    ("batch put bytearray", lambda db: db.write_batch().put(b"a", bytearray(b"v"))),
    ("batch delete str", lambda db: db.write_batch().delete("a")),
    ("batch append non-batch", lambda db: db.write_batch().append(b"x")),
    ("batch append None", lambda db: db.write_batch().append(None)),
    ("snapshot get str", lambda db: db.snapshot().get("a")),
    ("snapshot iterator str", lambda db: db.snapshot().iterator(start="a")),
    ("get_property str", lambda db: db.get_property("leveldb.stats")),
    ("get_property None", lambda db: db.get_property(None)),
    ("get_property unknown", lambda db: db.get_property(b"leveldb.nonsense")),
    ("compact_range str", lambda db: db.compact_range(start="a")),
    ("compact_range positional", lambda db: db.compact_range(b"a")),
    ("approximate_size str", lambda db: db.approximate_size("a", b"b")),
    ("approximate_size None", lambda db: db.approximate_size(None, b"b")),
    ("approximate_sizes bad", lambda db: db.approximate_sizes((b"a", "b"))),
    ("approximate_sizes empty", lambda db: db.approximate_sizes()),
    ("WriteBatch()", lambda db: type(db.write_batch())()),
]


@pytest.mark.parametrize("name,call", BAD_CALLS, ids=[name for name, _ in BAD_CALLS])
def test_bad_input_raises_like_plyvel(pair: Pair, name: str, call: Callable[[Any], Any]) -> None:
    got_p, got_l = pair.both(call)
    assert got_l == got_p


AFTER_CLOSE_CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("get", lambda db: db.get(b"a")),
    ("put", lambda db: db.put(b"a", b"v")),
    ("delete", lambda db: db.delete(b"a")),
    ("write_batch", lambda db: db.write_batch()),
    ("iterator", lambda db: db.iterator()),
    ("raw_iterator", lambda db: db.raw_iterator()),
    ("iter", lambda db: iter(db)),
    ("snapshot", lambda db: db.snapshot()),
    ("get_property", lambda db: db.get_property(b"leveldb.stats")),
    ("compact_range", lambda db: db.compact_range()),
    ("approximate_size", lambda db: db.approximate_size(b"a", b"b")),
    ("approximate_sizes", lambda db: db.approximate_sizes((b"a", b"b"))),
    ("prefixed_db", lambda db: type(db.prefixed_db(b"p")).__name__),
    ("prefixed get", lambda db: db.prefixed_db(b"p").get(b"a")),
    ("prefixed put", lambda db: db.prefixed_db(b"p").put(b"a", b"v")),
    ("prefixed iterator", lambda db: db.prefixed_db(b"p").iterator()),
    ("prefixed snapshot", lambda db: db.prefixed_db(b"p").snapshot()),
    ("close again", lambda db: db.close()),
    ("closed", lambda db: db.closed),
]


@pytest.mark.parametrize("name,call", AFTER_CLOSE_CALLS, ids=[name for name, _ in AFTER_CLOSE_CALLS])
def test_calls_after_close_like_plyvel(pair: Pair, name: str, call: Callable[[Any], Any]) -> None:
    pair.p.close()
    pair.l.close()
    got_p, got_l = pair.both(call)
    assert got_l == got_p


def test_objects_from_before_close_like_plyvel(pair: Pair) -> None:
    """Iterators, snapshots and batches made before close() fail cleanly afterwards."""
    made = {}
    for db in (pair.p, pair.l):
        db.put(b"a", b"1")
        made[id(db)] = dict(it=db.iterator(), raw=db.raw_iterator(), snap=db.snapshot(), wb=db.write_batch(),
                            pit=db.prefixed_db(b"a").iterator())
        db.close()
    steps = [
        ("next", lambda o: next(o["it"])),
        ("prev", lambda o: o["it"].prev()),
        ("seek", lambda o: o["it"].seek(b"a")),
        ("prefixed next", lambda o: next(o["pit"])),
        ("raw valid", lambda o: o["raw"].valid()),
        ("raw seek", lambda o: o["raw"].seek_to_first()),
        ("snapshot get", lambda o: o["snap"].get(b"a")),
        ("snapshot iterator", lambda o: o["snap"].iterator()),
        ("snapshot close", lambda o: o["snap"].close()),
        ("batch put", lambda o: o["wb"].put(b"b", b"2")),
        ("batch write", lambda o: o["wb"].write()),
        ("batch clear", lambda o: o["wb"].clear()),
        ("batch size", lambda o: o["wb"].approximate_size()),
    ]
    for name, step in steps:
        got_p = outcome(lambda: step(made[id(pair.p)]))
        got_l = outcome(lambda: step(made[id(pair.l)]))
        assert got_l == got_p, name


def test_write_batch_context_semantics_match(pair: Pair) -> None:
    """After a with-block the batch is empty (written or discarded), as in plyvel."""
    for db in (pair.p, pair.l):
        wb = db.write_batch(transaction=True)
        with pytest.raises(ValueError):
            with wb:
                wb.put(b"t", b"1")
                raise ValueError
        with wb:
            wb.put(b"u", b"1")
        wb.write()  # empty now: writes nothing
        wb.put(b"v", b"1")
        plain = db.write_batch()
        with pytest.raises(ValueError):
            with plain:
                plain.put(b"w", b"1")
                raise ValueError  # not a transaction: still written
        other = db.write_batch()
        other.put(b"x", b"1")
        other.delete(b"u")
        wb.append(other)
        assert wb.approximate_size() > db.write_batch().approximate_size()
        wb.write()
    assert list(pair.l) == list(pair.p) == [(b"v", b"1"), (b"w", b"1"), (b"x", b"1")]


def test_a_held_lock_is_caught_as_plyvel_ioerror(tmp_path) -> None:
    """plyvel raises plyvel.IOError for a database another process holds; code catching it keeps working."""
    import plyvel

    with plyvel.DB(str(tmp_path / "plyvel"), create_if_missing=True):
        with pytest.raises(plyvel.IOError):  # what plyvel users write (plyvel.IOError is plyvel's own class)
            plyvel.DB(str(tmp_path / "plyvel"))
    url = str(tmp_path / "levels3")
    with levels3.DB(url, create_if_missing=True):
        with pytest.raises(levels3.IOError) as caught:  # the same line after `import levels3 as plyvel`
            levels3.DB(url)
        assert isinstance(caught.value, levels3.LockError) and isinstance(caught.value, OSError)
        assert not isinstance(caught.value, levels3.StoreError)  # a refusal, not a failed request
