"""The benchmark suite: ``python -m benchmarks [--quick] [--keys N] [--moto-keys N] [--slatedb-keys N]`` in a
checkout, ``levels3 bench`` (or ``python -m levels3.bench``) where levels3 is installed.

Each engine column runs in a fresh subprocess (so peak RSS is per column); the moto S3 server runs in this
process, on 127.0.0.1 at a random port, so its memory is not charged to the columns it serves. An engine
that is not installed (plyvel, slatedb) is skipped, with one line saying so.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from . import report

REGION = "us-east-1"
HERE = Path(__file__).resolve().parent
PACKAGE = __package__ or "benchmarks"  # "benchmarks" in a checkout, "levels3.bench" installed
# In a source checkout (benchmarks/ next to pyproject.toml) results go to benchmarks/results.json by default;
# an installed copy writes nothing into site-packages unless --json says where.
IN_CHECKOUT = (HERE.parent / "pyproject.toml").is_file()
INSTALL_HINT = "pip install 'levels3[bench]'"


def fake_aws_env() -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN",
                 "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):  # a token would be sent with keys it does not belong to
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )


def start_moto():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def missing_engine(engine: str) -> str | None:
    """Why an engine's columns cannot run here (not installed, or does not import), or None."""
    module = {"plyvel": "plyvel", "slatedb": "slatedb.uniffi"}.get(engine)
    if module is None:
        return None
    top = module.split(".")[0]
    hint = INSTALL_HINT if engine == "plyvel" else "pip install slatedb"
    if importlib.util.find_spec(top) is None:
        return f"{top} is not installed ({hint})"
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any failure to load means the engine cannot be measured
        return f"{module} does not import ({type(exc).__name__}: {exc})"
    return None


def moto_missing() -> str | None:
    try:
        import moto.server  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - an unusable moto is reported like a missing one
        return f"the S3 columns need the moto S3 server ({type(exc).__name__}: {exc}): {INSTALL_HINT}"
    return None


def run_subprocess(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", f"{PACKAGE}.workloads", json.dumps(spec)]
    start = time.perf_counter()
    # A checkout's top-level `benchmarks` package is importable from the directory holding it.
    cwd = HERE.parent if PACKAGE == "benchmarks" else None
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {PACKAGE}", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, for CI smoke runs")
    p.add_argument("--keys", type=int, help="keys of the local columns (levels3 local, plyvel); default 1M")
    p.add_argument("--moto-keys", type=int, help="keys of the levels3-on-moto column; default 1M")
    p.add_argument("--slatedb-keys", type=int, help="keys of the slatedb columns; default 100k")
    p.add_argument("--reads", type=int, help="random reads per readrandom (default: one per key)")
    p.add_argument("--cold-reads", type=int, help="random reads of readrandom cold (default 20k)")
    p.add_argument("--sync-seconds", type=float, help="duration of each synced-writes run (default 3 s)")
    p.add_argument("--columns", help="comma-separated subset of: " + ",".join(report.COLUMNS))
    p.add_argument("--json", default=str(HERE / "results.json") if IN_CHECKOUT else None,
                   help="where to write the results (default: benchmarks/results.json in a checkout, "
                        "nowhere when installed)")
    p.add_argument("--timeout", type=float, default=900, help="per-column timeout, seconds")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="the moto columns reach moto through a proxy adding this latency to each request "
                        "(levels3.testing.FaultProxy; default 0: no proxy)")
    p.add_argument("--bandwidth-mbps", type=float, default=0.0,
                   help="... and pacing each request's body to this many megabytes per second per stream "
                        "(default 0: unlimited)")
    args = p.parse_args(argv)
    if args.latency_ms < 0 or args.bandwidth_mbps < 0:
        p.error("--latency-ms and --bandwidth-mbps must be >= 0")
    quick = args.quick
    args.keys = args.keys or (2000 if quick else 1_000_000)
    args.moto_keys = args.moto_keys or (2000 if quick else 1_000_000)
    args.slatedb_keys = args.slatedb_keys or (2000 if quick else 100_000)
    args.cold_reads = args.cold_reads or (500 if quick else 20_000)
    args.sync_seconds = args.sync_seconds or (0.3 if quick else 3.0)
    args.columns = args.columns.split(",") if args.columns else list(report.COLUMNS)
    unknown = [c for c in args.columns if c not in report.COLUMNS]
    if unknown:
        p.error(f"unknown column {', '.join(unknown)}; choose among {', '.join(report.COLUMNS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    skipped: dict[str, str] = {}
    for column in args.columns:
        reason = missing_engine(column.split("-")[0])
        if reason:
            skipped[column] = reason
    columns = [c for c in args.columns if c not in skipped]
    needs_moto = any(c.endswith("-moto") for c in columns)
    if needs_moto and (reason := moto_missing()):
        print(f"levels3 bench: {reason}", file=sys.stderr)
        return 1
    fake_aws_env()
    sizes = {"levels3-local": args.keys, "plyvel": args.keys, "levels3-moto": args.moto_keys}
    sizes.update({"slatedb-local": args.slatedb_keys, "slatedb-moto": args.slatedb_keys})
    results: dict[str, Any] = {}
    started = time.perf_counter()
    server, endpoint = start_moto() if needs_moto else (None, "")
    proxy = None
    if server is not None and (args.latency_ms or args.bandwidth_mbps):
        proxy = start_proxy(endpoint, args.latency_ms, args.bandwidth_mbps)
        print(f"moto columns: through a proxy adding {args.latency_ms:g} ms per request, "
              f"{report.bandwidth(args.bandwidth_mbps)} per stream", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="levels3-bench-") as workdir:
            for column in columns:
                print(f"[{time.perf_counter() - started:6.0f} s] {column}: {sizes[column]:,} keys ...", flush=True)
                results[column] = run_column(column, sizes[column], args, workdir, endpoint,
                                             proxy.url if proxy is not None else endpoint)
    finally:
        if proxy is not None:
            proxy.stop()
        if server is not None:
            server.stop()
    doc = {
        "command": " ".join([f"python -m {PACKAGE}", *(argv if argv is not None else sys.argv[1:])]),
        "machine": report.machine(),
        "python": platform.python_version(),
        "sizes": {c: sizes[c] for c in args.columns},
        "store": {"latency_ms": args.latency_ms, "bandwidth_mbps": args.bandwidth_mbps},
        "total_s": time.perf_counter() - started,
        "columns": results,
        "skipped": skipped,
    }
    doc["ratios"] = report.ratios(results)
    print(report.render(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"results: {args.json}")
    failed = [c for c, r in results.items() if "error" in r]
    return 1 if failed else 0


def start_proxy(endpoint: str, latency_ms: float, bandwidth_mbps: float) -> Any:
    """A FaultProxy in front of ``endpoint`` adding latency and pacing bandwidth (no faults), started."""
    from levels3.testing import FaultProxy

    return FaultProxy(endpoint, latency=latency_ms / 1000, bandwidth=bandwidth_mbps * 1e6 or None).start()


def run_column(column: str, keys: int, args: argparse.Namespace, workdir: str, endpoint: str,
               store_endpoint: str) -> dict[str, Any]:
    """One column; its engine reaches moto at ``store_endpoint`` (``endpoint`` itself, or a proxy)."""
    engine, store = column.split("-") if "-" in column else (column, "local")
    spec: dict[str, Any] = {
        "engine": engine,
        "keys": keys,
        "reads": args.reads,
        "cold_reads": args.cold_reads,
        "sync_seconds": args.sync_seconds,
        "workdir": tempfile.mkdtemp(prefix=f"{column}-", dir=workdir),
    }
    spec["root"] = os.path.join(spec["workdir"], "db")
    os.makedirs(spec["root"])
    if store == "moto":
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION).create_bucket(Bucket=bucket)
        if engine == "levels3":
            spec["root"] = f"s3://{bucket}/bench"
            spec["options"] = {"endpoint_url": store_endpoint, "region": REGION, "request_timeout": 60}
        else:
            spec.update(root="bench", endpoint_url=store_endpoint, bucket=bucket)
    result = run_subprocess(spec, args.timeout)
    if store == "moto":  # drop what moto holds in memory (the next columns' RSS is not charged, but ours is)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
    if "error" in result:
        print(f"         {column}: failed, {result['error']}", flush=True)
    return result
