"""The workloads of one engine column, run in a fresh process (``python -m benchmarks.workloads SPEC_JSON``,
or ``levels3.bench.workloads`` installed).

Prints one JSON object (the column's results) as the last line of stdout.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import sys
import tempfile
import time
import uuid
from typing import Any

from .engines import REQUEST_KINDS, Levels3, Plyvel, SlateDB

KEY_SIZE, VALUE_SIZE = 16, 100
TINY_KEYS = 1000  # the small database the cold-open request count of the big one is compared with
SYNC_ROUNDS = 3  # the synced-writes time is split into this many alternating 1-thread / 8-thread rounds


def make_keys(n: int, seed: int = 1) -> list[bytes]:
    """n distinct random 16-byte keys, the same for every column (a smaller column uses a prefix of them)."""
    blob = random.Random(seed).randbytes(KEY_SIZE * n)
    keys = list(dict.fromkeys(blob[i : i + KEY_SIZE] for i in range(0, len(blob), KEY_SIZE)))
    return keys


def make_values(seed: int = 2) -> list[bytes]:
    """1024 100-byte values, half random and half zeros (compressible to ~50%, like db_bench)."""
    rng = random.Random(seed)
    return [rng.randbytes(VALUE_SIZE // 2) + bytes(VALUE_SIZE - VALUE_SIZE // 2) for _ in range(1024)]


def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM (ru_maxrss would carry the parent's peak over fork+exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def requests_of(stats: dict[str, Any]) -> dict[str, int]:
    return {kind: stats.get("requests", {}).get(kind, 0) for kind in REQUEST_KINDS}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {kind: after[kind] - before[kind] for kind in after}


def leveldb_bytes_written(leveldb_stats: str, puts: int, cache_dir: str) -> int | None:
    """Bytes LevelDB wrote: tables (the Write(MB) column of `leveldb.stats`: flushes and compactions) + the WAL
    (one record per put: 7-byte header + 12-byte batch header + tag + varint lengths + key + value) + the
    MANIFEST files now in the cache directory."""
    rows = re.findall(r"^\s*\d+\s+\d+\s+\d+\s+\d+\s+\d+\s+(\d+)\s*$", leveldb_stats, re.M)
    if not leveldb_stats:
        return None
    tables = sum(int(mb) for mb in rows) * 1024 * 1024
    wal = puts * (7 + 12 + 1 + 1 + KEY_SIZE + 1 + VALUE_SIZE)
    manifest = sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(cache_dir)
        for f in files
        if f.startswith("MANIFEST-")
    )
    return tables + wal + manifest


def timed(fn, *args) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def make_engine(spec: dict[str, Any]):
    kind, root = spec["engine"], spec["root"]
    if kind == "plyvel":
        return Plyvel(root)
    if kind == "levels3":
        return Levels3(root, **spec.get("options", {}))
    return SlateDB(root, spec.get("endpoint_url"), spec.get("bucket"))


def run_column(spec: dict[str, Any]) -> dict[str, Any]:
    n, seconds, workdir = spec["keys"], spec["sync_seconds"], spec["workdir"]
    keys, values = make_keys(n), make_values()
    rng = random.Random(3)
    reads = [keys[i] for i in rng.choices(range(n), k=spec.get("reads") or n)]
    order = keys[:]
    rng.shuffle(order)
    keys.sort()
    engine, has_store = make_engine(spec), spec["engine"] != "plyvel"
    out: dict[str, Any] = {"keys": n, "reads": len(reads), "rss_baseline_bytes": peak_rss_bytes()}
    cache = lambda: tempfile.mkdtemp(prefix="cache-", dir=workdir)  # noqa: E731
    run = uuid.uuid4().hex[:8]

    # fillseq: a database of its own, sorted keys.
    engine.open(f"fillseq-{run}", cache())
    _, t = timed(engine.fill, keys, values)
    out["fillseq_ops_s"] = n / t
    engine.close()

    # fillrandom: the database every later workload uses; requests and bytes measured from open to close.
    main_cache = cache()
    engine.open(f"main-{run}", main_cache)
    _, t = timed(engine.fill, order, values)
    out["fillrandom_ops_s"] = n / t
    leveldb_stats = engine.leveldb_stats()
    _, out["fillrandom_close_s"] = timed(engine.close)
    stats = engine.stats()
    fill_requests = requests_of(stats)
    # writing the n keys, open to close: as measured, not scaled to another size
    out["fillrandom_requests"] = fill_requests if has_store else None
    out["bytes_uploaded"] = stats.get("bytes_uploaded")
    out["bytes_written_by_leveldb"] = leveldb_bytes_written(leveldb_stats, n, main_cache)
    peak_cache = stats.get("cache_peak_bytes")

    # Reopen on the same cache directory (reused after a clean close): warm reads, scan, synced writes.
    engine.open(f"main-{run}", main_cache)
    found, t = timed(engine.read, reads)
    out["readrandom_warm_ops_s"], out["readrandom_warm_found"] = len(reads) / t, found
    count, t = timed(engine.scan)
    out["scan_keys_s"], out["scan_keys"] = count / t, count
    value = values[0]
    # 1 and 8 threads alternate in short rounds, so both see the same (shared, noisy) disk and CPU.
    totals = {threads: {"ops": 0, "s": 0.0, "puts": 0, "lease_puts": 0} for threads in (1, 8)}
    for _round in range(SYNC_ROUNDS):
        for threads in (1, 8):
            before = engine.stats()
            ops, t = timed(engine.synced, keys, value, threads, seconds / SYNC_ROUNDS)
            after = engine.stats()
            # the lease's renewal PUTs (one per lease_renewal, whatever the load) are not the batches' PUTs
            lease_puts = after.get("lease_puts", 0) - before.get("lease_puts", 0)
            total = totals[threads]
            total["ops"] += ops
            total["s"] += t
            total["puts"] += delta(requests_of(after), requests_of(before))["put"] - lease_puts
            total["lease_puts"] += lease_puts
    for threads, total in totals.items():
        out[f"synced_{threads}t_ops_s"] = total["ops"] / total["s"]
        out[f"synced_{threads}t_puts_per_op"] = total["puts"] / total["ops"] if has_store and total["ops"] else None
        out[f"synced_{threads}t_lease_puts"] = total["lease_puts"]
    stats = engine.stats()
    peak_cache = max(peak_cache or 0, stats.get("cache_peak_bytes") or 0) if "cache_peak_bytes" in stats else None
    engine.close()

    # Cold: open with an empty cache directory, first get, then random reads.
    if has_store:
        for label, name in (("open_cold", f"main-{run}"), ("open_cold_tiny", f"tiny-{run}")):
            if label == "open_cold_tiny":  # a small database written once, for the "does not grow" comparison
                engine.open(name, cache())
                engine.fill(keys[:TINY_KEYS], values)
                engine.close()
            start = time.perf_counter()
            engine.open(name, cache())
            opened = engine.stats()
            engine.read(keys[:1])
            out[f"{label}_s"] = time.perf_counter() - start
            # The open's own requests, which must not grow with the database. The table tails a cold
            # open prefetches once LevelDB has opened (one GET each, in the background, within a share
            # of the bound) are counted apart, and so is the first get (its tails and data blocks).
            out[f"{label}_requests_by_kind"] = requests_of(opened)
            prefetched = opened.get("tails_prefetched", 0)
            out[f"{label}_tails_prefetched"] = prefetched if "tails_prefetched" in opened else None
            out[f"{label}_requests"] = sum(out[f"{label}_requests_by_kind"].values()) - prefetched
            out[f"{label}_first_get_requests"] = (sum(requests_of(engine.stats()).values())
                                                  - sum(out[f"{label}_requests_by_kind"].values()))
            if label == "open_cold":
                before = requests_of(engine.stats())
                cold = reads[: spec.get("cold_reads") or len(reads)]
                found, t = timed(engine.read, cold)
                out["readrandom_cold_ops_s"], out["readrandom_cold_reads"] = len(cold) / t, len(cold)
                out["readrandom_cold_gets"] = delta(requests_of(engine.stats()), before)["get"]
                stats = engine.stats()
                if peak_cache is not None:
                    peak_cache = max(peak_cache, stats.get("cache_peak_bytes") or 0)
            engine.close()
    out["cache_peak_bytes"] = peak_cache
    out["max_cache_bytes"] = spec.get("options", {}).get("max_cache_bytes", 1024**3) if spec["engine"] == "levels3" else None
    out["rss_peak_bytes"] = peak_rss_bytes()
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = run_column(spec)
    sys.stdout.write("\n" + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
