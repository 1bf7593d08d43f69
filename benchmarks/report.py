"""The terminal table, the ratios we quote and the targets of issue 5 (PASS/FAIL; never weaken one)."""

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
    ("open, empty cache: s", lambda c: c.get("open_cold_s")),
    ("  same, 1k-key DB: requests", lambda c: c.get("open_cold_tiny_requests")),
    ("PUTs per 1M keys written", lambda c: (c.get("requests_per_1m_keys_written") or {}).get("put")),
    ("GETs per 1M keys written", lambda c: (c.get("requests_per_1m_keys_written") or {}).get("get")),
    ("LISTs per 1M keys written", lambda c: (c.get("requests_per_1m_keys_written") or {}).get("list")),
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
throughput at different sizes. Requests and bytes per 1M keys written: the fillrandom database from open to
close. "LevelDB wrote" = Write(MB) of `leveldb.stats` (memtable flushes + compactions) + WAL records
(7+12+1+1+16+1+100 bytes per put) + MANIFEST files. Synced writes: time-bounded, in 3 alternating 1-thread /
8-thread rounds (both see the same noisy disk); PUTs per synced op from db.stats(), less the lease's renewals
(`lease_puts`: one per lease_renewal, 10 s, whatever the load). SlateDB has no disk cache by default, so any
new handle is cold; its requests come from its metrics recorder (slatedb.object_store.request_count). Open
with an empty cache: the fillrandom database right after its writer closed (one LIST page per 1,000 objects,
any garbage the writer had not deleted yet included), then one get. Peak RSS: VmHWM of the column's
process."""


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
    """Every quoted ratio, with its issue-5 target (`>=` or `<=` a bound) and PASS/FAIL/n/a."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, op: str, bound: float) -> None:
        ok = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out.append({"name": name, "value": value, "target": f"{op} {bound:g}", "pass": ok})

    g = lambda col, key: _get(results, col, key)  # noqa: E731
    add("readrandom warm: levels3-local / plyvel", _div(g("levels3-local", "readrandom_warm_ops_s"),
                                                        g("plyvel", "readrandom_warm_ops_s")), ">=", 0.9)
    add("fillrandom: levels3-local / plyvel", _div(g("levels3-local", "fillrandom_ops_s"),
                                                   g("plyvel", "fillrandom_ops_s")), ">=", 0.7)
    for store in ("local", "moto"):
        col = f"levels3-{store}"
        add(f"synced 8 threads / 1 thread ({col})", _div(g(col, "synced_8t_ops_s"), g(col, "synced_1t_ops_s")),
            ">=", 5)
        for t in (1, 8):
            add(f"PUTs per synced op, {t} thread{'s' * (t > 1)} ({col})", g(col, f"synced_{t}t_puts_per_op"),
                "<=", 1)
        add(f"bytes uploaded / bytes LevelDB wrote ({col})",
            _div(g(col, "bytes_uploaded"), g(col, "bytes_written_by_leveldb")), "<=", 1.2)
        add(f"cold open requests: {col} DB / 1k-key DB",
            _div(g(col, "open_cold_requests"), g(col, "open_cold_tiny_requests")), "<=", 1)
        add(f"peak cache / max_cache_bytes ({col})", _div(g(col, "cache_peak_bytes"), g(col, "max_cache_bytes")),
            "<=", 1)
    rss = _div((g("levels3-local", "rss_peak_bytes") or 0) - (g("plyvel", "rss_peak_bytes") or 0), MiB)
    same = g("levels3-local", "keys") == g("plyvel", "keys") and g("plyvel", "rss_peak_bytes")
    add("peak RSS MiB above plyvel's (LevelDB's own buffers), levels3-local", rss if same else None, "<=", 256)
    for store in ("local", "moto"):
        l3, sd = f"levels3-{store}", f"slatedb-{store}"
        for what, key, bound in (("put (fillrandom)", "fillrandom_ops_s", 10),
                                 ("get (readrandom warm)", "readrandom_warm_ops_s", 10),
                                 ("durable writes, 1 thread", "synced_1t_ops_s", 1),
                                 ("durable writes, 8 threads", "synced_8t_ops_s", 1)):
            add(f"{what}: {l3} / {sd}", _div(g(l3, key), g(sd, key)), ">=", bound)
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and v < 100:
        return f"{v:.2f}"
    v = float(v)
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if v >= div * 10:
            return f"{v / div:.1f}{unit}" if v < div * 100 else f"{v / div:.0f}{unit}"
    return f"{v:.0f}"


def render(doc: dict[str, Any]) -> str:
    results = doc["columns"]
    cols = [c for c in COLUMNS if c in results]
    width = [32] + [max(14, len(c) + 2) for c in cols]
    lines = [f"levels3 benchmarks - {doc['machine']}, Python {doc['python']}, {doc['total_s']:.0f} s",
             "".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(["", *cols], width)))]
    for label, fn in ROWS:
        cells = ["n/a" if "error" in results[c] else _fmt(fn(results[c])) for c in cols]
        lines.append(label.ljust(width[0]) + "".join(x.rjust(w) for x, w in zip(cells, width[1:])))
    for c in cols:
        if "error" in results[c]:
            lines.append(f"{c}: n/a - {results[c]['error']}")
    lines += ["", "Ratios (targets from issue 5):"]
    for r in doc["ratios"]:
        verdict = "n/a" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        lines.append(f"  {r['name']:<62} {_fmt(r['value']):>8}  target {r['target']:<7} {verdict}")
    return "\n".join(lines + ["", NOTES])
