"""The object-store layer: backends (local directory, S3 via moto) and the wrappers around them."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from typing import Iterator, Mapping

import pytest

import levels3

from .conftest import REGION
from levels3.errors import ConfigurationError, ObjectNotFound, PreconditionFailed, StoreError
from levels3.options import S3Options, parse_location
from levels3.stores import (
    TOKEN_METADATA_KEY,
    CountingStore,
    FaultInjectingStore,
    InjectedFault,
    LocalDirStore,
    ObjectInfo,
    ObjectStore,
    PutCondition,
    PutMode,
    RetryingStore,
    S3Store,
    is_transient,
    open_store,
    probe_conditional_writes,
)


def no_sleep(_: float) -> None:
    pass


# -- basic semantics, identical on every backend and through every wrapper ---------

#: Each wrapper must keep the interface's semantics: these tests run over all of them.
WRAPPERS = {
    "bare": lambda inner: inner,
    "counting": lambda inner: CountingStore(inner),
    "retrying": lambda inner: RetryingStore(inner, max_attempts=3, base_delay=0.001, sleep=no_sleep),
    "faults-off": lambda inner: FaultInjectingStore(inner, rate=0.0),
    "all-layers": lambda inner: RetryingStore(CountingStore(FaultInjectingStore(inner, rate=0.0)), max_attempts=3,
                                              base_delay=0.001, sleep=no_sleep),
}


@pytest.fixture(params=list(WRAPPERS))
def layered(request, store: ObjectStore) -> ObjectStore:
    """The backend under test, as is or inside a wrapper (retry, counting, faults)."""
    return WRAPPERS[request.param](store)


def test_put_get_and_ranges(layered: ObjectStore) -> None:
    etag = layered.put("000005.ldb", b"hello world")
    assert etag
    assert layered.get("000005.ldb") == b"hello world"
    assert layered.get("000005.ldb", 2, 5) == b"llo"
    assert layered.get("000005.ldb", 6) == b"world"
    assert layered.get("000005.ldb", 6, 100) == b"world"
    assert layered.get("000005.ldb", 4, 4) == b""
    assert layered.get("000005.ldb", 50) == b""
    layered.put("empty", b"")
    assert layered.get("empty") == b""


def test_head_returns_size_etag_and_metadata(layered: ObjectStore) -> None:
    etag = layered.put("CURRENT", b"MANIFEST-000002\n", metadata={"levels3-token": "abc123"})
    info = layered.head("CURRENT")
    assert (info.key, info.size, info.etag) == ("CURRENT", 16, etag)
    assert info.metadata == {"levels3-token": "abc123"}
    layered.put("no-meta", b"x")
    assert layered.head("no-meta").metadata == {}


def test_get_with_info_returns_the_bytes_with_their_etag_and_metadata(layered: ObjectStore) -> None:
    first = layered.put("CURRENT", b"MANIFEST-000002\n", metadata={"levels3-epoch": "3"})
    second = layered.put("CURRENT", b"MANIFEST-000009\n", mode=PutMode.replace(first), metadata={"levels3-epoch": "4"})
    data, info = layered.get_with_info("CURRENT")
    assert (data, info.key, info.size, info.etag) == (b"MANIFEST-000009\n", "CURRENT", 16, second)
    assert info.metadata["levels3-epoch"] == "4"  # (the retry layer adds its token to a conditional put's)
    with pytest.raises(ObjectNotFound):
        layered.get_with_info("nothing-here")


def test_get_with_info_by_default_reads_between_heads_until_they_agree(tmp_path) -> None:
    """A store without a one-request answer: a version replaced between the HEAD and the GET is
    read again, never paired with the other version's ETag."""

    class ReplacedOnFirstRead(LocalDirStore):
        get_with_info = ObjectStore.get_with_info  # the interface's default
        replaced = False

        def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
            data = super().get(key, start, end)
            if not self.replaced:
                self.replaced = True
                self.put(key, b"second")
            return data

    store = ReplacedOnFirstRead(str(tmp_path / "store"), create=True)
    store.put("k", b"first")
    data, info = store.get_with_info("k")
    assert data == b"second" and info.etag == store.head("k").etag


def test_replacing_changes_etag(layered: ObjectStore) -> None:
    first = layered.put("k", b"one")
    second = layered.put("k", b"two")
    assert first != second
    assert layered.head("k").etag == second
    assert layered.get("k") == b"two"


def test_list_is_in_key_order_and_filters_by_prefix(layered: ObjectStore, store_kind: str) -> None:
    keys = ["dir/y/z", "MANIFEST-000002", "000010.log", "dir-x", "CURRENT", "dir/x", "000005.ldb", "LOCK"]
    for i, key in enumerate(keys):
        layered.put(key, b"x" * i)
    listed = list(layered.list())
    # S3 lists in byte order; SeaweedFS walks its directory tree ("dir/x" before "dir-x").
    # The keys levels3 writes sort the same both ways (test_layout_keys_sort_the_same_in_both_orders).
    order = (lambda k: k.split("/")) if store_kind == "seaweedfs" else None
    assert [info.key for info in listed] == sorted(keys, key=order)
    sizes = {info.key: info.size for info in listed}
    assert sizes == {key: i for i, key in enumerate(keys)}
    assert all(info.etag == layered.head(info.key).etag for info in listed)
    assert [i.key for i in layered.list("dir/")] == ["dir/x", "dir/y/z"]
    assert [i.key for i in layered.list("dir")] == sorted(["dir-x", "dir/x", "dir/y/z"], key=order)
    assert [i.key for i in layered.list("0000")] == ["000005.ldb", "000010.log"]
    assert list(layered.list("nothing")) == []


def test_layout_keys_sort_the_same_in_both_orders() -> None:
    """A listing in directory-tree order (SeaweedFS) yields levels3's own keys in S3's byte order
    too, so whatever reads them in listing order sees the same order on both servers."""
    from levels3.engine.layout import object_key

    keys = ["CURRENT", "LOCK", "checkpoints/nightly.json", ".levels3-probe/ab12"]
    for epoch in (1, 2, 9, 10, 11, 100):
        keys += [object_key(name, epoch) for name in ("000005.ldb", "000123.ldb", "001000.ldb")]
        for name in ("000010.log", "MANIFEST-000002", "MANIFEST-000123"):
            keys += [object_key(name, epoch, 0), object_key(name, epoch, 100),
                     object_key(name, epoch, 100, end=200, level=1), object_key(name, epoch, 4096)]
    assert sorted(keys) == sorted(keys, key=lambda k: k.split("/"))


def test_delete(layered: ObjectStore) -> None:
    layered.put("a/b/c", b"1")
    layered.put("keep", b"2")
    layered.delete("a/b/c")
    with pytest.raises(ObjectNotFound):
        layered.get("a/b/c")
    layered.delete("a/b/c")  # missing is fine without a condition
    assert [i.key for i in layered.list()] == ["keep"]


def test_delete_many_is_one_request_and_ignores_missing_keys(layered: ObjectStore) -> None:
    from levels3.stores.counting import CountingStore

    for i in range(5):
        layered.put(f"batch/{i}", b"x")
    counting = CountingStore(layered)
    counting.delete_many(["batch/0", "batch/2", "batch/4", "batch/never-was"])
    assert [o.key for o in layered.list("batch/")] == ["batch/1", "batch/3"]
    assert counting.requests["delete"] == 1
    counting.delete_many([])


def test_local_delete_many_frees_space_after_releasing_the_lock(tmp_path, monkeypatch) -> None:
    """The reaper's batches of hundreds of deletes once unlinked every file under the update lock (about
    0.5 ms a file here), stalling every WAL upload behind them; freeing the space now comes after it."""
    store = LocalDirStore(tmp_path, create=True, lock_wait=0.2)
    for i in range(3):
        store.put(f"old/{i}", b"x")
    landed: list[str] = []
    free = LocalDirStore._free

    def put_then_free(self, removed):
        worker = threading.Thread(target=lambda: landed.append(store.put("new", b"y", mode=PutMode.CREATE)))
        worker.start()
        worker.join()  # a put while the batch is still freeing must not wait for it
        free(self, removed)

    monkeypatch.setattr(LocalDirStore, "_free", put_then_free)
    store.delete_many([f"old/{i}" for i in range(3)])
    assert landed and store.get("new") == b"y"
    assert [o.key for o in store.list()] == ["new"]
    assert not os.path.exists(tmp_path / "old")  # the emptied directory was pruned
    assert [f for f in os.listdir(tmp_path / ".levels3-tmp") if f.endswith(".deleted")] == []


def test_local_store_frees_what_crashed_deletes_and_puts_left(tmp_path, monkeypatch) -> None:
    store = LocalDirStore(tmp_path, create=True)
    store.put("old/0", b"x" * 1000)
    monkeypatch.setattr(LocalDirStore, "_free", lambda self, removed: None)  # the process dies before freeing
    store.delete_many(["old/0"])
    assert [f for f in os.listdir(tmp_path / ".levels3-tmp") if f.endswith(".deleted")] != []
    stale, fresh = tmp_path / ".levels3-tmp" / "a.tmp", tmp_path / ".levels3-tmp" / "b.tmp"
    stale.write_bytes(b"a put that crashed")
    fresh.write_bytes(b"a put still writing")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    monkeypatch.undo()
    LocalDirStore(tmp_path, create=False)
    left = sorted(f for f in os.listdir(tmp_path / ".levels3-tmp") if f.endswith((".deleted", ".tmp")))
    assert left == ["b.tmp"]
    assert list(store.list()) == []


def test_local_delete_many_waits_for_a_conditional_put_in_progress(tmp_path, monkeypatch) -> None:
    """A put(PutMode.replace) checks and replaces under the lock; a delete in between would let it succeed on an
    object that was already gone, which no order of the two requests explains."""
    store = LocalDirStore(tmp_path, create=True, lock_wait=0.1)
    first = store.put("k", b"1")
    outcome: list[BaseException | None] = []
    untouched: list[bool] = []
    replace = os.replace

    def delete_between_check_and_replace(src, dst):
        def delete() -> None:
            try:
                store.delete_many(["k"])
                outcome.append(None)
            except StoreError as exc:
                outcome.append(exc)

        worker = threading.Thread(target=delete)
        worker.start()
        worker.join()
        untouched.append(os.path.exists(dst))  # the version the put checked is still the current one
        replace(src, dst)

    monkeypatch.setattr(os, "replace", delete_between_check_and_replace)
    store.put("k", b"2", mode=PutMode.replace(first))
    monkeypatch.setattr(os, "replace", replace)
    assert untouched == [True]
    assert isinstance(outcome[0], StoreError) and outcome[0].transient  # it waited for the lock, then gave up
    assert store.get("k") == b"2"


def test_missing_key_is_object_not_found(layered: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as info:
        layered.get("nope")
    assert info.value.operation == "get" and info.value.key == "nope"
    with pytest.raises(ObjectNotFound):
        layered.get("nope", 3, 9)
    with pytest.raises(ObjectNotFound):
        layered.head("nope")


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "../x", "a/../b", "./a", "a/", ".levels3-tmp/x"])
def test_invalid_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(ConfigurationError):
        store.put(key, b"x")
    with pytest.raises(ValueError):  # ConfigurationError is a ValueError
        store.get(key)


# -- conditional requests -----------------------------------------------------


def test_create_mode_creates_only_once(layered: ObjectStore) -> None:
    layered.put("LOCK", b"first", mode=PutMode.CREATE)
    with pytest.raises(PreconditionFailed):
        layered.put("LOCK", b"second", mode=PutMode.CREATE)
    assert layered.get("LOCK") == b"first"


def test_create_mode_race_has_one_winner(tmp_path) -> None:
    # Local store only: moto checks If-None-Match and then stores the object without a
    # lock (moto/s3/responses.py), so a thread race against moto tests moto, not us.
    store = LocalDirStore(tmp_path, create=True)
    winners: list[bytes] = []
    losers: list[BaseException] = []
    others: list[BaseException] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        data = f"writer-{i}".encode()
        barrier.wait()
        try:
            store.put("LOCK", data, mode=PutMode.CREATE)
            winners.append(data)
        except PreconditionFailed as exc:
            losers.append(exc)
        except BaseException as exc:  # reported by the assertion below
            others.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not others
    assert len(winners) == 1 and len(losers) == 7
    assert store.get("LOCK") == winners[0]


def test_put_mode_carries_an_etag_exactly_when_it_replaces() -> None:
    from levels3.stores import PutCondition

    assert PutMode.replace('"e1"').etag == '"e1"' and PutMode.replace('"e1"').conditional
    assert PutMode.CREATE.conditional and not PutMode.OVERWRITE.conditional
    assert repr(PutMode.CREATE) == "PutMode.CREATE"
    for bad in (lambda: PutMode(PutCondition.REPLACE), lambda: PutMode(PutCondition.CREATE, '"e1"')):
        with pytest.raises(ValueError):
            bad()


def test_replace_mode_compare_and_swap(layered: ObjectStore) -> None:
    e1 = layered.put("CURRENT", b"MANIFEST-1")
    e2 = layered.put("CURRENT", b"MANIFEST-2", mode=PutMode.replace(e1))
    assert e2 != e1
    with pytest.raises(PreconditionFailed):
        layered.put("CURRENT", b"MANIFEST-3", mode=PutMode.replace(e1))  # stale ETag
    assert layered.get("CURRENT") == b"MANIFEST-2"
    with pytest.raises(PreconditionFailed):
        layered.put("absent", b"x", mode=PutMode.replace(e2))  # nothing to replace


def test_conditional_delete(layered: ObjectStore) -> None:
    etag = layered.put("LOCK", b"lease")
    with pytest.raises(PreconditionFailed):
        layered.delete("LOCK", if_match=layered.put("other", b"o"))
    assert layered.get("LOCK") == b"lease"
    layered.delete("LOCK", if_match=etag)
    with pytest.raises(ObjectNotFound):
        layered.head("LOCK")
    with pytest.raises(PreconditionFailed):
        layered.delete("LOCK", if_match=etag)  # already gone: the condition cannot hold


def test_probe_conditional_writes_passes_and_cleans_up(layered: ObjectStore) -> None:
    probe_conditional_writes(layered)
    assert list(layered.list()) == []


class _IgnoresConditions(LocalDirStore):
    def put(self, key, data, *, mode=PutMode.OVERWRITE, metadata=None):  # type: ignore[override]
        return super().put(key, data, metadata=metadata)


class _AnswersNotImplemented(LocalDirStore):
    def put(self, key, data, *, mode=PutMode.OVERWRITE, metadata=None):  # type: ignore[override]
        if mode.conditional:
            raise StoreError("501 NotImplemented", operation="put", key=key, status=501, code="NotImplemented")
        return super().put(key, data, metadata=metadata)


def test_probe_refuses_stores_without_conditional_writes(tmp_path) -> None:
    with pytest.raises(StoreError, match="ignored If-None-Match"):
        probe_conditional_writes(_IgnoresConditions(tmp_path / "a", create=True))
    with pytest.raises(StoreError, match="does not support conditional writes"):
        probe_conditional_writes(_AnswersNotImplemented(tmp_path / "b", create=True))


class _IgnoresIfMatch(LocalDirStore):
    def put(self, key, data, *, mode=PutMode.OVERWRITE, metadata=None):  # type: ignore[override]
        if mode.condition is PutCondition.REPLACE:
            mode = PutMode.OVERWRITE
        return super().put(key, data, mode=mode, metadata=metadata)


class _IgnoresIfMatchOnDelete(LocalDirStore):
    def delete(self, key, *, if_match=None):  # type: ignore[override]
        return super().delete(key)


def test_probe_refuses_stores_that_ignore_if_match(tmp_path) -> None:
    # Each condition is checked on its own: the probe sends its refusals together.
    with pytest.raises(StoreError, match="ignored If-Match and overwrote"):
        probe_conditional_writes(_IgnoresIfMatch(tmp_path / "a", create=True))
    store = _IgnoresIfMatchOnDelete(tmp_path / "b", create=True)
    with pytest.raises(StoreError, match="ignored If-Match on DELETE"):
        probe_conditional_writes(store)
    assert list(store.list()) == []  # the probe's objects are removed when it fails too


def test_s3_clients_are_built_once_per_configuration(moto_endpoint: str, server_bucket: str) -> None:
    options = S3Options(endpoint_url=moto_endpoint, region=REGION, access_key="AKIALEVELS3SHARED01",
                        secret_key="levels3-shared-secret")
    first, second = S3Store(server_bucket, "a", options), S3Store(server_bucket, "b", options)
    assert first._client is second._client
    first.close()  # a shared client stays open for the other stores
    second.put("k", b"v")
    assert second.get("k") == b"v"
    other = S3Store(server_bucket, "a", S3Options(endpoint_url=moto_endpoint, region=REGION,
                                                  access_key="AKIALEVELS3SHARED01", secret_key="another-secret"))
    assert other._client is not first._client


def test_s3_answering_501_is_reported_clearly(mocked_aws) -> None:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name=REGION)
    store = S3Store("bucket-501", "db", S3Options(client=client))
    with Stubber(client) as stub:
        stub.add_client_error("put_object", "NotImplemented", "A header you provided implies functionality that is not implemented", 501)
        with pytest.raises(StoreError, match="does not support conditional writes"):
            probe_conditional_writes(store)


# -- local directory specifics ------------------------------------------------


def test_local_missing_directory(tmp_path) -> None:
    with pytest.raises(ObjectNotFound, match="no database directory at"):
        LocalDirStore(tmp_path / "absent", create=False)
    LocalDirStore(tmp_path / "absent", create=True)
    assert (tmp_path / "absent").is_dir()


def test_local_delete_prunes_empty_directories(tmp_path) -> None:
    store = LocalDirStore(tmp_path, create=True)
    store.put("a/b/c", b"1")
    store.put("a/keep", b"2")
    store.delete("a/b/c")
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a").is_dir()
    store.delete("a/keep")
    assert not (tmp_path / "a").exists()
    assert sorted(os.listdir(tmp_path)) == [".levels3-tmp"]


def test_local_metadata_follows_the_current_version(tmp_path) -> None:
    store = LocalDirStore(tmp_path, create=True)
    store.put("k", b"1", metadata={"levels3-token": "t1"})
    store.put("k", b"2")
    assert store.head("k").metadata == {}
    store.delete("k")
    assert os.listdir(tmp_path / ".levels3-tmp" / "meta") == []
    assert not [n for n in os.listdir(tmp_path / ".levels3-tmp") if n.endswith(".tmp")]


def _create_worker(root: str, keys: list[str], barrier, results) -> None:
    store = LocalDirStore(root, create=False)
    won = []
    for key in keys:
        barrier.wait()
        try:
            store.put(key, str(os.getpid()).encode(), mode=PutMode.CREATE)
            won.append(key)
        except PreconditionFailed:
            pass
    results.put(won)


def _increment_worker(root: str, rounds: int) -> None:
    store = LocalDirStore(root, create=False)
    done = 0
    while done < rounds:
        info = store.head("counter")
        value = int(store.get("counter"))
        try:
            store.put("counter", str(value + 1).encode(), mode=PutMode.replace(info.etag))
            done += 1
        except PreconditionFailed:
            continue  # lost the race: read again


def test_local_create_mode_across_processes(tmp_path) -> None:
    LocalDirStore(tmp_path, create=True)
    ctx = multiprocessing.get_context("fork")
    keys = [f"LOCK-{i}" for i in range(20)]
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_create_worker, args=(str(tmp_path), keys, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    won = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(won[0] + won[1]) == sorted(keys)  # every key won exactly once


def test_local_compare_and_swap_across_processes(tmp_path) -> None:
    LocalDirStore(tmp_path, create=True).put("counter", b"0")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_increment_worker, args=(str(tmp_path), 25)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert LocalDirStore(tmp_path, create=False).get("counter") == b"75"


# -- S3 specifics ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["mock_aws", "moto_server"])
def test_missing_bucket_fails_fast_and_clearly(where: str, request: pytest.FixtureRequest) -> None:
    if where == "mock_aws":
        request.getfixturevalue("mocked_aws")
        options = S3Options(region=REGION)
    else:
        options = request.getfixturevalue("server_options")
    counting = CountingStore(S3Store("levels3-no-such-bucket", "db", options))
    store = RetryingStore(counting, max_attempts=5, base_delay=1.0)
    began = time.monotonic()
    for call in (lambda: store.get("CURRENT"), lambda: list(store.list()), lambda: store.put("LOCK", b"x", mode=PutMode.CREATE)):
        with pytest.raises(StoreError, match="bucket 'levels3-no-such-bucket' does not exist") as info:
            call()
        assert not isinstance(info.value, ObjectNotFound)
    assert counting.total_requests == 3  # one attempt each: no retry storm
    assert time.monotonic() - began < 5


@pytest.mark.parametrize(
    "case, message",
    [
        ("unknown key", "access key is not known"),
        ("wrong secret", "secret key does not match"),
        ("no permission", "access denied"),
    ],
)
def test_bad_credentials_fail_once_and_clearly(
    case: str, message: str, moto_auth: dict[str, str], moto_endpoint: str, server_bucket: str, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    access_key, secret_key = {
        "unknown key": ("AKIALEVELS3UNKNOWN01", "levels3-bogus-secret-Q7"),
        "wrong secret": (moto_auth["AccessKeyId"], moto_auth["SecretAccessKey"] + "Q7"),
        "no permission": (moto_auth["AccessKeyId"], moto_auth["SecretAccessKey"]),
    }[case]
    options = S3Options(endpoint_url=moto_endpoint, region=REGION, access_key=access_key, secret_key=secret_key)
    counting = CountingStore(S3Store(server_bucket, "db", options))
    store = RetryingStore(counting, max_attempts=4, base_delay=0.5)
    with pytest.raises(StoreError, match=message) as info:
        store.put("CURRENT", b"x")
    assert counting.total_requests == 1 and not is_transient(info.value)
    if case == "no permission":
        assert server_bucket in str(info.value)
    texts = [str(info.value), repr(info.value), str(info.value.__cause__), repr(options), repr(store)]
    assert not [t for t in texts if secret_key in t or access_key in t]
    assert secret_key not in caplog.text


def test_secrets_never_appear(moto_endpoint: str, server_bucket: str, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secret, token, access = "levels3-SECRET-key-9f8e7d", "levels3-SESSION-token-1a2b", "AKIALEVELS3ACCESSID"
    options = S3Options(endpoint_url=moto_endpoint, region=REGION, access_key=access, secret_key=secret, session_token=token)
    store = RetryingStore(CountingStore(S3Store(server_bucket, "db", options)), max_attempts=2, base_delay=0.01)
    store.put("k", b"v", mode=PutMode.CREATE)
    store.get("k")
    list(store.list())
    store.head("k")
    store.delete("k")
    errors: list[BaseException] = []
    for call in (lambda: store.get("missing"), lambda: S3Store("levels3-no-such-bucket", "db", options).get("k")):
        with pytest.raises(StoreError) as info:
            call()
        errors.append(info.value)
    texts = [repr(options), str(options), repr(store), store.url]
    for err in errors:
        texts += [str(err), repr(err), str(err.__cause__), repr(err.__cause__)]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("levels3")]
    assert ours, "the store should log its requests at DEBUG"
    for text in texts + ours:
        for value in (secret, token, access):
            assert value not in text
    # botocore's own DEBUG records (request headers, the canonical request) are redacted too.
    for value in (secret, token, access):
        assert value not in caplog.text


def test_open_store(tmp_path) -> None:
    local = open_store(parse_location(str(tmp_path / "db")), S3Options(), create=True)
    assert isinstance(local, LocalDirStore) and local.url == f"file://{tmp_path / 'db'}"
    s3 = open_store(parse_location("s3://bucket/some/db"), S3Options(region=REGION), create=False)
    assert isinstance(s3, S3Store) and s3.url == "s3://bucket/some/db" and repr(s3) == "S3Store('s3://bucket/some/db')"
    s3.close()


def test_s3_classifies_botocore_failures_as_transient_or_not() -> None:
    import http.client

    import urllib3.exceptions
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    from levels3.stores import s3

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    for exc in (
        client_error("InternalError", 500),
        client_error("ServiceUnavailable", 503),
        client_error("SlowDown", 503),
        client_error("RequestTimeout", 400),
        client_error("ThrottlingException", 400),
        client_error("Whatever", 502),
        ReadTimeoutError(endpoint_url="http://x"),
        ConnectTimeoutError(endpoint_url="http://x"),
        EndpointConnectionError(endpoint_url="http://x"),
        ConnectionResetError(),
        TimeoutError(),
        # A body cut midway, as urllib3 raises it when botocore does not wrap it.
        urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead", http.client.IncompleteRead(b"x", 1)),
        http.client.IncompleteRead(b"x", 1),
    ):
        assert s3.is_transient(exc), exc
    for exc in (
        client_error("AccessDenied", 403),
        client_error("NoSuchBucket", 404),
        client_error("PreconditionFailed", 412),
        client_error("InvalidArgument", 400),
        ValueError("x"),
    ):
        assert not s3.is_transient(exc), exc


def test_s3_store_errors_carry_code_status_and_transient(mocked_aws) -> None:
    import boto3
    from botocore.exceptions import ClientError
    from botocore.stub import Stubber

    client = boto3.client("s3", region_name=REGION)
    store = S3Store("bucket-err", "db", S3Options(client=client))
    with Stubber(client) as stub:
        stub.add_client_error("get_object", "SlowDown", "slow down", 503)
        stub.add_client_error("get_object", "AccessDenied", "no", 403)
        with pytest.raises(StoreError) as slow:
            store.get("k")
        with pytest.raises(StoreError) as denied:
            store.get("k")
    assert (slow.value.code, slow.value.status, slow.value.transient) == ("SlowDown", 503, True)
    assert (denied.value.code, denied.value.status, denied.value.transient) == ("AccessDenied", 403, False)
    assert isinstance(slow.value.__cause__, ClientError)


def test_retry_asks_the_error_whether_it_is_transient() -> None:
    """The retry layer knows no backend: a StoreError says whether it is transient; a bare socket error is."""
    for exc in (StoreError("x", transient=True), InjectedFault("x", operation="get", key="k"),
                ConnectionResetError(), TimeoutError()):
        assert is_transient(exc), exc
    for exc in (StoreError("x"), ObjectNotFound("x"), PreconditionFailed("x"), ValueError("x")):
        assert not is_transient(exc), exc


# -- wrappers ---------------------------------------------------------------------


def test_retry_recovers_from_transient_faults(store: ObjectStore) -> None:
    faults = FaultInjectingStore(store, rate=0.3, seed=7)
    retrying = RetryingStore(faults, max_attempts=12, base_delay=0.001, sleep=no_sleep)
    etags = {}
    for i in range(15):
        etags[i] = retrying.put(f"{i:06d}.ldb", f"table {i}".encode(), mode=PutMode.CREATE)
    for i in range(15):
        assert retrying.get(f"{i:06d}.ldb") == f"table {i}".encode()
        assert retrying.head(f"{i:06d}.ldb").etag == etags[i]
    assert [info.key for info in retrying.list()] == [f"{i:06d}.ldb" for i in range(15)]
    current = retrying.put("CURRENT", b"1", mode=PutMode.CREATE)
    for n in range(2, 8):
        current = retrying.put("CURRENT", str(n).encode(), mode=PutMode.replace(current))
    assert store.get("CURRENT") == b"7"
    retrying.delete("CURRENT", if_match=current)
    assert faults.injected > 5


def test_retry_does_not_repeat_permanent_errors(store: ObjectStore) -> None:
    counting = CountingStore(store)
    retrying = RetryingStore(counting, max_attempts=5, base_delay=0.001, sleep=no_sleep)
    with pytest.raises(ObjectNotFound):
        retrying.get("absent")
    retrying.put("LOCK", b"x", mode=PutMode.CREATE)
    with pytest.raises(PreconditionFailed):
        retrying.put("LOCK", b"y", mode=PutMode.CREATE)
    with pytest.raises(ConfigurationError):
        retrying.put("../escape", b"y")
    assert counting.requests == {"get": 1, "put": 3, "list": 0, "delete": 0, "head": 0}  # one call each


def test_retry_gives_up_with_cause(tmp_path) -> None:
    counting = CountingStore(FaultInjectingStore(LocalDirStore(tmp_path, create=True), rate=1.0, seed=1))
    delays: list[float] = []
    retrying = RetryingStore(counting, max_attempts=4, base_delay=0.1, max_delay=0.25, sleep=delays.append)
    with pytest.raises(StoreError) as info:
        retrying.put("k", b"v")
    assert (info.value.operation, info.value.key) == ("put", "k")
    assert isinstance(info.value.__cause__, InjectedFault)
    assert "after 4 attempts" in str(info.value)
    assert counting.requests["put"] == 4 and counting.errors == 4
    assert len(delays) == 3 and all(0 <= d <= 0.25 for d in delays)  # full jitter, capped


def _fail_once_after(store: ObjectStore) -> tuple[FaultInjectingStore, RetryingStore]:
    """The first request lands but its answer is lost; every later one is clean."""
    faults = FaultInjectingStore(store, rate=1.0, seed=3, kinds=("timeout",), when=("after",))

    def heal(_: float) -> None:
        faults.rate = 0.0

    return faults, RetryingStore(faults, max_attempts=3, base_delay=0.001, sleep=heal)


def test_landed_create_then_412_is_success(store: ObjectStore) -> None:
    faults, retrying = _fail_once_after(store)
    etag = retrying.put("LOCK", b"mine", mode=PutMode.CREATE, metadata={"owner": "me"})
    assert faults.injected == 1
    info = store.head("LOCK")
    assert etag == info.etag and store.get("LOCK") == b"mine"
    assert info.metadata["owner"] == "me" and TOKEN_METADATA_KEY in info.metadata


def test_landed_swap_then_412_is_success(store: ObjectStore) -> None:
    first = store.put("CURRENT", b"MANIFEST-1")
    faults, retrying = _fail_once_after(store)
    etag = retrying.put("CURRENT", b"MANIFEST-2", mode=PutMode.replace(first))
    assert faults.injected == 1 and etag == store.head("CURRENT").etag and etag != first


def test_landed_conditional_delete_is_success(store: ObjectStore) -> None:
    etag = store.put("LOCK", b"lease")
    faults, retrying = _fail_once_after(store)
    retrying.delete("LOCK", if_match=etag)
    assert faults.injected == 1
    with pytest.raises(ObjectNotFound):
        store.head("LOCK")


def test_someone_elses_object_still_refuses_the_retry(store: ObjectStore) -> None:
    store.put("LOCK", b"theirs", mode=PutMode.CREATE)
    faults = FaultInjectingStore(store, rate=1.0, seed=3, kinds=("503",), when=("before",))

    def heal(_: float) -> None:
        faults.rate = 0.0

    retrying = RetryingStore(faults, max_attempts=3, base_delay=0.001, sleep=heal)
    with pytest.raises(PreconditionFailed):
        retrying.put("LOCK", b"mine", mode=PutMode.CREATE)
    assert store.get("LOCK") == b"theirs"


def test_list_retry_yields_each_key_once(tmp_path) -> None:
    class BreaksMidway(LocalDirStore):
        broken = False

        def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
            for n, info in enumerate(super().list(prefix)):
                if n == 2 and not self.broken:
                    self.broken = True
                    raise InjectedFault("reset", operation="list", key=prefix)
                yield info

    inner = BreaksMidway(tmp_path, create=True)
    for i in range(5):
        inner.put(f"k{i}", b"x")
    retrying = RetryingStore(inner, max_attempts=3, base_delay=0.001, sleep=no_sleep)
    assert [i.key for i in retrying.list()] == [f"k{i}" for i in range(5)]
    assert inner.broken


def test_counting_snapshot(tmp_path) -> None:
    counting = CountingStore(LocalDirStore(tmp_path, create=True))
    counting.put("a", b"12345")
    counting.put("b", b"678")
    assert counting.get("a") == b"12345"
    assert counting.get("a", 1, 3) == b"23"
    counting.head("b")
    with pytest.raises(ObjectNotFound):
        counting.get("missing")
    assert len(list(counting.list())) == 2
    counting.delete("b")
    snap = counting.snapshot()
    assert snap["requests"] == {"get": 3, "put": 2, "list": 1, "delete": 1, "head": 1}
    assert snap["total_requests"] == 8
    assert snap["bytes_uploaded"] == 8 and snap["bytes_downloaded"] == 7
    assert snap["errors"] == 0 and snap["refused"] == 1  # "no such object" is an answer, not a failure
    assert set(snap["latency_ms"]["get"]) == {"p50", "p90", "p99"}
    assert snap["latency_ms"]["get"]["p50"] <= snap["latency_ms"]["get"]["p99"]
    counting.reset()
    assert counting.snapshot()["total_requests"] == 0


def test_counting_is_thread_safe(tmp_path) -> None:
    counting = CountingStore(LocalDirStore(tmp_path, create=True))
    counting.put("k", b"v")

    def read() -> None:
        for _ in range(200):
            counting.get("k")

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counting.requests["get"] == 800 and counting.bytes_downloaded == 800


class _Recording(LocalDirStore):
    """Records the metadata every put carried, to see the retry token."""

    seen: list[Mapping[str, str] | None]

    def put(self, key, data, *, mode=PutMode.OVERWRITE, metadata=None):  # type: ignore[override]
        self.seen.append(metadata)
        return super().put(key, data, mode=mode, metadata=metadata)


@pytest.mark.parametrize("ambiguous", [True, False])
def test_conditional_puts_carry_a_token_where_a_failed_attempt_may_have_landed(tmp_path, ambiguous) -> None:
    inner = _Recording(tmp_path, create=True)
    inner.seen = []
    inner.ambiguous_failures = ambiguous  # S3 (a lost response) vs the local store (fails before it publishes)
    retrying = RetryingStore(inner, max_attempts=2, base_delay=0.001)
    retrying.put("a", b"1")
    retrying.put("b", b"1", mode=PutMode.CREATE, metadata={"x": "y"})
    assert inner.seen[0] is None
    assert inner.seen[1]["x"] == "y"
    assert (len(inner.seen[1].get(TOKEN_METADATA_KEY, "")) == 32) == ambiguous


def test_local_segments_leave_no_metadata_files(tmp_path) -> None:
    """A metadata file per WAL segment cost a file creation per synced write on the local store."""
    db = levels3.DB(f"file://{tmp_path}/db", create_if_missing=True, cache_dir=str(tmp_path / "cache"))
    try:
        for i in range(50):
            db.put(b"k%d" % i, b"v", sync=True)
        meta = os.listdir(tmp_path / "db" / ".levels3-tmp" / "meta")
        assert len(meta) <= 4, meta  # the lease, CURRENT and the fence carry metadata; segments do not
    finally:
        db.close()
