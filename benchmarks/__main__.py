"""Run the benchmark suite: ``python -m benchmarks [--quick] [--keys N] [--moto-keys N] [--slatedb-keys N]``.

Each engine column runs in a fresh subprocess (so peak RSS is per column); the moto S3 server runs in this
process, on 127.0.0.1 at a random port, so its memory is not charged to the columns it serves.
"""

from __future__ import annotations

import argparse
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


def fake_aws_env() -> None:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_ARN"):
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


def slatedb_unavailable() -> str | None:
    try:
        import slatedb.uniffi  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any failure to load means the column is n/a
        return f"slatedb does not import: {exc!r}"
    return None


def run_subprocess(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.workloads", json.dumps(spec)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes, for CI smoke runs")
    p.add_argument("--keys", type=int, help="keys of the local columns (levels3 local, plyvel); default 1M")
    p.add_argument("--moto-keys", type=int, help="keys of the levels3-on-moto column; default 1M")
    p.add_argument("--slatedb-keys", type=int, help="keys of the slatedb columns; default 100k")
    p.add_argument("--reads", type=int, help="random reads per readrandom (default: one per key)")
    p.add_argument("--cold-reads", type=int, help="random reads of readrandom cold (default 20k)")
    p.add_argument("--sync-seconds", type=float, help="duration of each synced-writes run (default 3 s)")
    p.add_argument("--columns", help="comma-separated subset of: " + ",".join(report.COLUMNS))
    p.add_argument("--json", default=str(HERE / "results.json"), help="where to write the results")
    p.add_argument("--timeout", type=float, default=900, help="per-column timeout, seconds")
    args = p.parse_args(argv)
    quick = args.quick
    args.keys = args.keys or (2000 if quick else 1_000_000)
    args.moto_keys = args.moto_keys or (2000 if quick else 1_000_000)
    args.slatedb_keys = args.slatedb_keys or (2000 if quick else 100_000)
    args.cold_reads = args.cold_reads or (500 if quick else 20_000)
    args.sync_seconds = args.sync_seconds or (0.3 if quick else 3.0)
    args.columns = args.columns.split(",") if args.columns else list(report.COLUMNS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fake_aws_env()
    workdir = tempfile.mkdtemp(prefix="levels3-bench-")
    server, endpoint = start_moto()
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    sizes = {"levels3-local": args.keys, "plyvel": args.keys, "levels3-moto": args.moto_keys}
    sizes.update({"slatedb-local": args.slatedb_keys, "slatedb-moto": args.slatedb_keys})
    no_slatedb = slatedb_unavailable()
    results: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        for column in args.columns:
            engine, store = column.split("-") if "-" in column else (column, "local")
            if engine == "slatedb" and no_slatedb:
                results[column] = {"error": no_slatedb}
                continue
            spec: dict[str, Any] = {
                "engine": engine,
                "keys": sizes[column],
                "reads": args.reads,
                "cold_reads": args.cold_reads,
                "sync_seconds": args.sync_seconds,
                "workdir": tempfile.mkdtemp(prefix=f"{column}-", dir=workdir),
            }
            spec["root"] = os.path.join(spec["workdir"], "db")
            os.makedirs(spec["root"])
            if store == "moto":
                bucket = f"bench-{uuid.uuid4().hex[:12]}"
                s3.create_bucket(Bucket=bucket)
                if engine == "levels3":
                    spec["root"] = f"s3://{bucket}/bench"
                    spec["options"] = {"endpoint_url": endpoint, "region": REGION, "request_timeout": 60}
                else:
                    spec.update(root="bench", endpoint_url=endpoint, bucket=bucket)
            print(f"[{time.perf_counter() - started:6.0f} s] {column}: {sizes[column]:,} keys ...", flush=True)
            results[column] = run_subprocess(spec, args.timeout)
            if store == "moto":  # drop what moto holds in memory (the next columns' RSS is not charged, but ours is)
                urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
            if "error" in results[column]:
                print(f"         {column}: {results[column]['error']}", flush=True)
    finally:
        server.stop()
    doc = {
        "command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
        "machine": report.machine(),
        "python": platform.python_version(),
        "sizes": sizes,
        "total_s": time.perf_counter() - started,
        "columns": results,
    }
    doc["ratios"] = report.ratios(results)
    print(report.render(doc))
    Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
