"""The terminal table, the ratios we quote and the targets they must meet (PASS/FAIL; never weaken one).

The targets are levels3's performance goals, as the README's Benchmarks section states them.
"""

from __future__ import annotations

import os
from typing import Any, Callable

COLUMNS = ("levels3-local", "levels3-moto", "plyvel", "slatedb-local", "slatedb-moto")
MiB = 1024 * 1024

ROWS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("keys", lambda c: c.get("keys")),
    ("fillseq ops/s", lambda c: c.get("fillseq_ops_s")),
    ("fillrandom ops/s", lambda c: c.get("fillrandom_ops_s")),
    ("readrandom warm ops/s", lambda c: c.get("readrandom_warm_ops_s")),
    ("readrandom cold ops/s", lambda c: c.get("readrandom_cold_ops_s")),
    ("readrandom cold GETs", lambda c: c.get("readrandom_cold_gets")),
    ("synced 1 thread ops/s", lambda c: c.get("synced_1t_ops_s")),
    ("  PUTs per synced op", lambda c: c.get("synced_1t_puts_per_op")),
    ("synced 8 threads ops/s", lambda c: c.get("synced_8t_ops_s")),
    ("  PUTs per synced op", lambda c: c.get("synced_8t_puts_per_op")),
    ("scan keys/s", lambda c: c.get("scan_keys_s")),
    ("open, empty cache: requests", lambda c: c.get("open_cold_requests")),
    ("  tails prefetched by then", lambda c: c.get("open_cold_tails_prefetched")),
    ("  then the first get (+ prefetch)", lambda c: c.get("open_cold_first_get_requests")),
    ("open, empty cache: s", lambda c: c.get("open_cold_s")),
    ("  same, 1k-key DB: requests", lambda c: c.get("open_cold_tiny_requests")),
    ("fillrandom PUTs (all its keys)", lambda c: (c.get("fillrandom_requests") or {}).get("put")),
    ("fillrandom GETs", lambda c: (c.get("fillrandom_requests") or {}).get("get")),
    ("fillrandom LISTs", lambda c: (c.get("fillrandom_requests") or {}).get("list")),
    ("bytes uploaded / LevelDB wrote", lambda c: _div(c.get("bytes_uploaded"), c.get("bytes_written_by_leveldb"))),
    ("peak cache MiB", lambda c: _div(c.get("cache_peak_bytes"), MiB)),
    ("peak RSS MiB", lambda c: _div(c.get("rss_peak_bytes"), MiB)),
    ("column wall s", lambda c: c.get("wall_s")),
]

NOTES = """\
Notes: every column runs in a fresh process on the same keys (16-byte random keys, 100-byte values ~50%
compressible); a smaller column uses a prefix of the same key set. The moto server (~200-300 requests/s, in
the runner process) and slatedb's Python bindings (async, ~3-5k ops/s) are slower than the local columns, so
their sizes are set separately (--moto-keys, --slatedb-keys); ratios across columns of different sizes compare
throughput at different sizes. fillrandom requests: those made writing the column's keys (the "keys" row)
into the fillrandom database, from open to close, as measured. "LevelDB wrote" = Write(MB) of `leveldb.stats`
(memtable flushes + compactions) + WAL records (7+12+1+1+16+1+100 bytes per put) + MANIFEST files. Synced
writes: time-bounded, in 3 alternating 1-thread / 8-thread rounds (both see the same noisy disk); PUTs per
synced op from db.stats(), less the lease's renewals (`lease_puts`: one per lease_renewal, 10 s, whatever the
load). SlateDB has no disk cache by default, so any new handle is cold; its requests come from its metrics
recorder (slatedb.object_store.request_count). Open with an empty cache: the fillrandom database right after
its writer closed (one LIST page per 1,000 objects, any garbage the writer had not deleted yet included): the
requests of the open itself, less the table tails levels3 prefetches in the background once LevelDB has opened
(one GET each, as many as are done by then, shown apart); then one get, whose requests (and the prefetch's
meanwhile) are shown apart; the time is the open's and the get's. Peak RSS: VmHWM of the column's process."""


def _div(a: Any, b: Any) -> float | None:
    return a / b if a is not None and b else None


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}"


def _get(results: dict[str, Any], column: str, key: str) -> Any:
    c = results.get(column) or {}
    return None if "error" in c else c.get(key)


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every quoted ratio whose columns were measured, with its target (`>=` or `<=` a bound) and PASS/FAIL
    (None when a measured column lacks the figure)."""
    out: list[dict[str, Any]] = []

    def add(name: str, columns: tuple[str, ...], value: float | None, op: str, bound: float) -> None:
        if not all(c in results for c in columns):
            return  # a column that was skipped (engine not installed) or not asked for
        ok = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out.append({"name": name, "columns": list(columns), "value": value, "target": f"{op} {bound:g}",
                    "pass": ok})

    g = lambda col, key: _get(results, col, key)  # noqa: E731
    add("readrandom warm: levels3-local / plyvel", ("levels3-local", "plyvel"),
        _div(g("levels3-local", "readrandom_warm_ops_s"), g("plyvel", "readrandom_warm_ops_s")), ">=", 0.9)
    add("fillrandom: levels3-local / plyvel", ("levels3-local", "plyvel"),
        _div(g("levels3-local", "fillrandom_ops_s"), g("plyvel", "fillrandom_ops_s")), ">=", 0.7)
    for store in ("local", "moto"):
        col = f"levels3-{store}"
        add(f"synced 8 threads / 1 thread ({col})", (col,),
            _div(g(col, "synced_8t_ops_s"), g(col, "synced_1t_ops_s")), ">=", 5)
        for t in (1, 8):
            add(f"PUTs per synced op, {t} thread{'s' * (t > 1)} ({col})", (col,), g(col, f"synced_{t}t_puts_per_op"),
                "<=", 1)
        add(f"bytes uploaded / bytes LevelDB wrote ({col})", (col,),
            _div(g(col, "bytes_uploaded"), g(col, "bytes_written_by_leveldb")), "<=", 1.2)
        add(f"cold open requests: {col} DB / 1k-key DB", (col,),
            _div(g(col, "open_cold_requests"), g(col, "open_cold_tiny_requests")), "<=", 1)
        add(f"peak cache / max_cache_bytes ({col})", (col,),
            _div(g(col, "cache_peak_bytes"), g(col, "max_cache_bytes")), "<=", 1)
    rss = _div((g("levels3-local", "rss_peak_bytes") or 0) - (g("plyvel", "rss_peak_bytes") or 0), MiB)
    same = g("levels3-local", "keys") == g("plyvel", "keys") and g("plyvel", "rss_peak_bytes")
    add("peak RSS MiB above plyvel's (LevelDB's own buffers), levels3-local", ("levels3-local", "plyvel"),
        rss if same else None, "<=", 256)
    for store in ("local", "moto"):
        l3, sd = f"levels3-{store}", f"slatedb-{store}"
        for what, key, bound in (("put (fillrandom)", "fillrandom_ops_s", 10),
                                 ("get (readrandom warm)", "readrandom_warm_ops_s", 10),
                                 ("durable writes, 1 thread", "synced_1t_ops_s", 1),
                                 ("durable writes, 8 threads", "synced_8t_ops_s", 1)):
            add(f"{what}: {l3} / {sd}", (l3, sd), _div(g(l3, key), g(sd, key)), ">=", bound)
    return out


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and v < 100:
        return f"{v:.2f}"
    v = float(v)
    if v >= 1e6:
        return f"{v / 1e6:.2f}M" if v < 1e7 else f"{v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k" if v < 1e5 else f"{v / 1e3:.0f}k"
    return f"{v:.0f}"


def bandwidth(mbps: float) -> str:
    return f"{mbps:g} MB/s" if mbps else "unlimited bandwidth"


def render(doc: dict[str, Any]) -> str:
    """The table of the measured columns (a failed one keeps its place, as n/a, with its error below), the
    columns skipped and why, one line each, then the ratios and their targets."""
    results = doc["columns"]
    cols = [c for c in COLUMNS if c in results]
    width = [32] + [max(14, len(c) + 2) for c in cols]
    lines = [f"levels3 benchmarks - {doc['machine']}, Python {doc['python']}, {doc['total_s']:.0f} s"]
    store = doc.get("store") or {}
    if store.get("latency_ms") or store.get("bandwidth_mbps"):
        lines.append(f"moto columns through a proxy: {store['latency_ms']:g} ms per request, "
                     f"{bandwidth(store['bandwidth_mbps'])} per stream")
    if cols:
        lines.append("".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(["", *cols], width))))
        for label, fn in ROWS:
            cells = ["n/a" if "error" in results[c] else fmt(fn(results[c])) for c in cols]
            lines.append(label.ljust(width[0]) + "".join(x.rjust(w) for x, w in zip(cells, width[1:])))
    for c in cols:
        if "error" in results[c]:
            lines.append(f"{c}: failed - {results[c]['error']}")
    for c, reason in (doc.get("skipped") or {}).items():
        lines.append(f"{c}: skipped, {reason}")
    if doc["ratios"]:
        lines += ["", "Ratios and their targets:"]
    for r in doc["ratios"]:
        verdict = "n/a" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        lines.append(f"  {r['name']:<62} {fmt(r['value']):>8}  target {r['target']:<7} {verdict}")
    return "\n".join(lines + ["", NOTES])
