"""levels3.aio against the synchronous API, from one event loop: ``python -m benchmarks.aio [--keys N]``.

Every workload runs inside one ``asyncio.run``: the sync calls as a program in an event loop would make them
(blocking the loop), the async ones awaited from one task and from ``--tasks`` concurrent tasks. Rounds
alternate between the variants, so they all see the same (shared, noisy) machine; the ratios are what to
read, side by side in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from . import report
from .workloads import make_keys, make_values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.aio", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes, for CI smoke runs")
    p.add_argument("--keys", type=int, help="keys in the database (default 100k; --quick 2,000)")
    p.add_argument("--reads", type=int, help="gets per round and variant (default: one per key)")
    p.add_argument("--tasks", type=int, default=64, help="concurrent tasks of the concurrent variants")
    p.add_argument("--max-workers", type=int, help="threads of the AsyncDB's pool (default: levels3.aio's)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per workload")
    p.add_argument("--sync-seconds", type=float, help="seconds of synced puts per round and variant (default 1)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    args.keys = args.keys or (2000 if args.quick else 100_000)
    args.reads = args.reads or args.keys
    args.sync_seconds = args.sync_seconds or (0.2 if args.quick else 1.0)
    if args.quick:
        args.rounds = min(args.rounds, 2)
    return args


async def _timed(fn: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    start = time.perf_counter()
    n = await fn()
    return n, time.perf_counter() - start


async def run(args: argparse.Namespace, root: str) -> dict[str, Any]:
    import levels3
    import levels3.aio

    keys, values = make_keys(args.keys), make_values()
    reads = [keys[i] for i in random.Random(3).choices(range(len(keys)), k=args.reads)]
    url = f"{root}/db"
    with levels3.DB(url, create_if_missing=True, cache_dir=f"{root}/cache-fill") as db:
        with db.write_batch() as batch:
            for i, key in enumerate(keys):
                batch.put(key, values[i & 1023])
    pool = {} if args.max_workers is None else {"max_workers": args.max_workers}
    adb = await levels3.aio.open(url, cache_dir=f"{root}/cache", **pool)
    db = adb.db
    tasks = args.tasks

    async def sync_get() -> int:
        get = db.get
        return sum(get(k) is not None for k in reads)

    async def await_get() -> int:
        get = adb.get
        n = 0
        for k in reads:
            n += await get(k) is not None
        return n

    async def concurrent_get() -> int:
        get = adb.get

        async def worker(t: int) -> int:
            n = 0
            for i in range(t, len(reads), tasks):
                n += await get(reads[i]) is not None
            return n

        return sum(await asyncio.gather(*(worker(t) for t in range(tasks))))

    async def sync_scan() -> int:
        return sum(1 for _ in db.iterator())

    async def async_scan() -> int:
        n = 0
        async for _ in adb.iterator():
            n += 1
        return n

    seconds = args.sync_seconds / args.rounds

    async def sync_synced_put() -> int:
        put, value, n = db.put, values[0], 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            put(keys[n % len(keys)], value, sync=True)
            n += 1
        return n

    async def concurrent_synced_put() -> int:
        put, value = adb.put, values[0]
        deadline = time.perf_counter() + seconds

        async def worker(t: int) -> int:
            i, n = t, 0
            while time.perf_counter() < deadline:
                await put(keys[i % len(keys)], value, sync=True)
                i, n = i + tasks, n + 1
            return n

        return sum(await asyncio.gather(*(worker(t) for t in range(tasks))))

    variants: dict[str, list[tuple[str, Callable[[], Awaitable[int]]]]] = {
        "get (warm cache)": [("sync get", sync_get), ("await get, 1 task", await_get),
                             (f"await get, {tasks} tasks", concurrent_get)],
        "scan": [("sync for", sync_scan), ("async for", async_scan)],
        "synced put": [("sync put, 1 thread", sync_synced_put),
                       (f"await put, {tasks} tasks", concurrent_synced_put)],
    }
    results: dict[str, dict[str, Any]] = {}
    await sync_get()  # warm LevelDB's block cache and the local cache files: every variant reads warm
    for workload, runs in variants.items():
        totals: dict[str, list[float]] = {label: [0, 0.0, 0] for label, _ in runs}
        for _ in range(args.rounds):
            for label, fn in runs:
                puts_before = (await adb.stats())["requests"].get("put", 0)
                n, t = await _timed(fn)
                totals[label][0] += n
                totals[label][1] += t
                totals[label][2] += (await adb.stats())["requests"].get("put", 0) - puts_before
        base = totals[runs[0][0]][0] / totals[runs[0][0]][1]
        for label, (ops, secs, puts) in totals.items():
            entry: dict[str, Any] = {"ops": int(ops), "s": secs, "ops_s": ops / secs, "vs_sync": ops / secs / base}
            if workload == "synced put":
                entry["puts_per_op"] = puts / ops if ops else None
            results[f"{workload}: {label}"] = entry
    await adb.close()
    return results


def render(doc: dict[str, Any]) -> str:
    lines = [f"levels3.aio vs the sync API - {doc['machine']}, Python {doc['python']}, {doc['total_s']:.0f} s",
             f"{doc['keys']:,} keys on the local store, {doc['tasks']} tasks, pool of {doc['max_workers']} "
             f"threads, {doc['rounds']} alternating rounds",
             f"{'':<40}{'ops/s':>10}{'vs sync':>10}{'PUTs/op':>10}"]
    for name, r in doc["results"].items():
        puts = report.fmt(r["puts_per_op"]) if "puts_per_op" in r else ""
        lines.append(f"{name:<40}{report.fmt(r['ops_s']):>10}{r['vs_sync']:>10.2f}{puts:>10}")
    lines.append("vs sync: ops/s over the first row of the same workload, measured in the same rounds.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import levels3.aio

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="levels3-bench-aio-") as root:
        results = asyncio.run(run(args, root))
    doc = {
        "command": " ".join(["python -m benchmarks.aio", *(argv if argv is not None else sys.argv[1:])]),
        "machine": report.machine(),
        "python": platform.python_version(),
        "keys": args.keys,
        "tasks": args.tasks,
        "rounds": args.rounds,
        "max_workers": args.max_workers or levels3.aio.DEFAULT_MAX_WORKERS,
        "total_s": time.perf_counter() - started,
        "results": results,
    }
    print(render(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
