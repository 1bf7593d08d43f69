"""A fault-injecting HTTP proxy on 127.0.0.1, in front of an S3 endpoint.

Faults injected inside the process (``levels3.stores.FaultInjectingStore``) cannot
see what the HTTP client does with them: whether botocore resends a request by
itself, what a response lost after the request landed looks like, how a body cut
in the middle surfaces.  This proxy sits between boto3 and a real server (moto,
SeaweedFS) and does it to the bytes on the wire::

    with FaultProxy(upstream_url, seed=7) as proxy:
        proxy.add(Rule("drop", method="PUT", key=r"\\.log/", count=1))  # lands, client never hears
        db = levels3.DB(url, endpoint_url=proxy.url, ...)
        ...
        assert proxy.count(method="PUT", key=r"\\.log/") == 2           # the first try and one retry

Actions (``Rule.action``; a tuple picks one per firing, by the proxy's seed):

* ``"error"``: answer ``status`` (503 SlowDown or 500 InternalError) with an S3 XML
  error body, without forwarding;
* ``"drop"``: forward, then close the connection before the response (the request
  landed; the client never hears back);
* ``"reset"``: forward, send the headers and half the body, then reset the
  connection (a GET or LIST cut in the middle; without a body, a reset at once);
* ``"hold"``: forward, then hold the response for ``seconds`` (past the client's
  ``request_timeout``) and close the connection without answering;
* ``"stall"``: wait until ``gate`` (a ``threading.Event``) is set, then forward;
* ``"delay"``: wait ``seconds``, then forward;
* ``"rewrite"``: drop ``drop_headers`` from the request before forwarding (a
  server that ignores a conditional header).  It breaks the request signature of
  servers that check it (SeaweedFS): use it against moto;
* ``"notify"``: call ``callback(arrival)`` once the server has answered, before
  the client hears (to order events across clients).

Every request that arrives is recorded (``arrivals``, ``count``) with its method,
path, query, the headers of interest (never ``Authorization`` or a session
token), what the proxy did with it and the status the client got.  A fixed
``latency`` per request and a ``bandwidth`` limit per stream (bytes/s, each way)
model a distant endpoint for benchmarks.

Only the standard library is used, so an installed ``levels3 bench`` can use it.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Sequence

__all__ = ["ACTIONS", "Arrival", "FaultProxy", "Rule"]

#: What a rule can do to a request (see the module docstring).
ACTIONS = ("error", "drop", "reset", "hold", "stall", "delay", "rewrite", "notify")
#: The actions that decide a request's outcome; the others modify it and let it through.
_OUTCOMES = frozenset({"error", "drop", "reset", "hold"})

_ERROR_CODES = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}
# Recorded request headers; credentials (Authorization, X-Amz-Security-Token) never are.
_RECORDED_HEADERS = ("if-match", "if-none-match", "range", "content-length", "transfer-encoding",
                     "expect", "x-amz-copy-source")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                         "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"})
_CHUNK = 64 * 1024


@dataclass
class Rule:
    """Which requests to act on, and how often.

    A request matches when every given criterion holds: ``method`` (exact, any
    case), ``key`` (a regular expression searched in the unquoted path, which is
    ``/bucket/key`` in path-style addressing), ``query`` (a query parameter that
    must be present, such as ``"list-type"``, or ``"name=value"``; ``""`` for a
    request without a query) and ``headers`` (request headers that must be
    present, such as ``"If-Match"``).  A matching request fires the rule with
    probability ``rate``, for at most ``count`` firings when it is given (``count=N``
    with the default rate: exactly the next N matching requests).
    """

    action: str | Sequence[str]
    method: str | None = None
    key: str | None = None
    query: str | None = None
    headers: Sequence[str] = ()
    rate: float = 1.0
    count: int | None = None
    status: int = 503
    seconds: float = 0.0
    gate: threading.Event | None = None
    drop_headers: Sequence[str] = ()
    callback: Callable[["Arrival"], None] | None = None
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        actions = (self.action,) if isinstance(self.action, str) else tuple(self.action)
        unknown = [a for a in actions if a not in ACTIONS]
        if not actions or unknown:
            raise ValueError(f"rule actions must be among {ACTIONS}, got {actions}")
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if "error" in actions and self.status not in _ERROR_CODES:
            raise ValueError(f"error status must be one of {sorted(_ERROR_CODES)}")
        if "stall" in actions and self.gate is None:
            raise ValueError("a stall rule needs a gate (threading.Event)")
        if "notify" in actions and self.callback is None:
            raise ValueError("a notify rule needs a callback")
        self.actions = actions
        self._key = re.compile(self.key) if self.key is not None else None
        self._headers = tuple(h.lower() for h in self.headers)

    def matches(self, method: str, path: str, query: str, headers: Any) -> bool:
        if self.method is not None and method.upper() != self.method.upper():
            return False
        if self._key is not None and not self._key.search(path):
            return False
        if self.query is not None:
            if self.query == "":
                if query:
                    return False
            else:
                params = urllib.parse.parse_qs(query, keep_blank_values=True)
                name, _, value = self.query.partition("=")
                if name not in params or (value and value not in params[name]):
                    return False
        return all(h in headers for h in self._headers)

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count


@dataclass
class Arrival:
    """One request as the proxy saw it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    actions: list[str] = field(default_factory=list)  # what the proxy did to it, in order
    status: int | None = None  # what the client got; None when it got no (complete) answer
    at: float = field(default_factory=time.monotonic)

    @property
    def forwarded(self) -> bool:
        return "error" not in self.actions and "upstream-failed" not in self.actions


class _Aborted(Exception):
    """The handler closed the client connection on purpose (a drop, reset or hold)."""


class _Server(ThreadingHTTPServer):
    # Daemon threads, so a proxy nobody stopped cannot keep the interpreter alive at
    # exit; stop() joins them itself.
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], proxy: "FaultProxy") -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as boto3's connection pool expects
    # The head and the body go out in two writes. With Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the head (40 ms on Linux once a kept-alive connection leaves quick-ACK
    # mode): every small GET and LIST took an extra 40 ms that no S3 server adds.
    disable_nagle_algorithm = True
    server: _Server

    # -- connection lifecycle ---------------------------------------------------
    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, threading.current_thread())

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        self.server.proxy._track(self.connection, None)

    def handle(self) -> None:
        try:
            super().handle()
        except (_Aborted, OSError):
            pass  # the client went away, or we cut it off on purpose

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        pass  # tests count requests through arrivals, not stderr

    def do_GET(self) -> None:
        self._proxy()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    # -- the proxying -------------------------------------------------------------
    def _proxy(self) -> None:
        proxy = self.server.proxy
        split = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(split.path)
        arrival = Arrival(self.command, path, split.query,
                          {name: value for name, value in self.headers.items() if _recorded(name)})
        proxy._record(arrival)
        body = self._read_body(proxy.bandwidth)
        outcome, modifiers = proxy._decide(self.command, path, split.query, self.headers)

        if proxy.latency:
            proxy._sleep(proxy.latency)
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "expect"]
        for rule, action in modifiers:
            arrival.actions.append(action)
            if action == "delay":
                proxy._sleep(rule.seconds)
            elif action == "stall":
                assert rule.gate is not None
                proxy._wait(rule.gate)
            elif action == "rewrite":
                dropped = {h.lower() for h in rule.drop_headers}
                headers = [(k, v) for k, v in headers if k.lower() not in dropped]

        if outcome is not None and outcome[1] == "error":
            arrival.actions.append("error")
            self._send_error(outcome[0].status, path, arrival)
            return

        try:
            status, reason, response_headers, response_body = proxy._forward(self.command, self.path, headers, body)
        except OSError:
            arrival.actions.append("upstream-failed")
            self._abort(reset=True)
        for rule, action in modifiers:
            if action == "notify":
                assert rule.callback is not None
                rule.callback(arrival)

        if outcome is not None:
            rule, action = outcome
            arrival.actions.append(action)
            if action == "drop":
                self._abort(reset=False)
            if action == "hold":
                proxy._sleep(rule.seconds)
                self._abort(reset=False)
            if action == "reset":
                self._send_head(status, reason, response_headers, len(response_body))
                self._write(response_body[: len(response_body) // 2], proxy.bandwidth)
                self._abort(reset=True)

        self._send_head(status, reason, response_headers, len(response_body))
        if self.command != "HEAD":
            self._write(response_body, proxy.bandwidth)
        arrival.status = status

    def _read_body(self, bandwidth: float | None) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    raise _Aborted()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self._read_exactly(size, bandwidth))
                self.rfile.readline(1024)  # the CRLF after each chunk
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self._read_exactly(length, bandwidth) if length else b""

    def _read_exactly(self, size: int, bandwidth: float | None) -> bytes:
        parts, left = [], size
        while left:
            piece = self.rfile.read(min(left, _CHUNK))
            if not piece:
                raise _Aborted()  # the client gave up mid-body
            parts.append(piece)
            left -= len(piece)
            self._pace(len(piece), bandwidth)
        return b"".join(parts)

    def _send_head(self, status: int, reason: str, headers: list[tuple[str, str]], length: int) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP or (lower == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_error(self, status: int, path: str, arrival: Arrival) -> None:
        code, message = _ERROR_CODES[status]
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message><Resource>{_xml_escape(path)}</Resource>"
            f"<RequestId>levels3-proxy-{id(arrival):x}</RequestId></Error>"
        ).encode()
        reason = "Slow Down" if status == 503 else "Internal Server Error"
        self._send_head(status, reason, [("Content-Type", "application/xml")], len(body))
        if self.command != "HEAD":
            self.wfile.write(body)
        arrival.status = status

    def _write(self, data: bytes, bandwidth: float | None) -> None:
        if not bandwidth:
            self.wfile.write(data)
            return
        for start in range(0, len(data), _CHUNK):
            piece = data[start:start + _CHUNK]
            self._pace(len(piece), bandwidth)  # before the write: the last piece arrives no early
            self.wfile.write(piece)

    def _pace(self, nbytes: int, bandwidth: float | None) -> None:
        if bandwidth:
            self.server.proxy._sleep(nbytes / bandwidth)

    def _abort(self, *, reset: bool) -> None:
        """Close the client connection now: with a RST when ``reset``, else a FIN."""
        try:
            self.wfile.flush()
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True
        raise _Aborted()


def _recorded(name: str) -> bool:
    lower = name.lower()
    return lower in _RECORDED_HEADERS or lower.startswith("x-amz-meta-")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``).

    ``seed`` makes the faults reproducible: the same sequence of arriving requests
    gets the same faults.  ``latency`` (seconds, added before forwarding each
    request) and ``bandwidth`` (bytes per second, per request body and per
    response body) may be changed at any time, as may the rules.
    """

    def __init__(self, upstream: str, *, seed: int = 0, latency: float = 0.0, bandwidth: float | None = None,
                 rules: Iterable[Rule] = (), upstream_timeout: float = 120.0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname or parsed.path not in ("", "/"):
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = upstream
        self._upstream_address = (parsed.hostname, parsed.port or 80)
        self.upstream_timeout = upstream_timeout
        self.seed = seed
        self.latency = latency
        self.bandwidth = bandwidth
        self._mu = threading.Lock()
        self._rules: list[tuple[Rule, random.Random]] = []
        self._added = 0
        self._arrivals: list[Arrival] = []
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for rule in rules:
            self.add(rule)

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> "FaultProxy":
        if self._server is not None:
            raise RuntimeError("the proxy is already running")
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="levels3-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut every open connection (held and stalled requests too), join every thread."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        give_up = time.monotonic() + 10  # a forward stuck on the upstream is not ours to wait for
        while time.monotonic() < give_up:  # a handler that started just before shutdown registers late
            with self._mu:
                connections = dict(self._connections)
            if not connections:
                break
            for conn in connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for thread in connections.values():
                thread.join(timeout=max(0.0, give_up - time.monotonic()))
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The endpoint URL to give boto3 (``endpoint_url``) instead of the upstream's."""
        return f"http://127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"FaultProxy({where} -> {self.upstream}, rules={len(self._rules)})"

    # -- rules ---------------------------------------------------------------------
    def add(self, rule: Rule) -> Rule:
        """Add a rule after the existing ones; returns it (``rule.fired`` counts its firings)."""
        with self._mu:
            self._added += 1
            self._rules.append((rule, random.Random(f"{self.seed}/{self._added}")))
        return rule

    def remove(self, rule: Rule) -> None:
        with self._mu:
            self._rules = [(r, rng) for r, rng in self._rules if r is not rule]

    def clear(self) -> None:
        """Remove every rule (arrivals stay recorded)."""
        with self._mu:
            self._rules = []

    def _decide(self, method: str, path: str, query: str,
                headers: Any) -> tuple[tuple[Rule, str] | None, list[tuple[Rule, str]]]:
        """The outcome (first firing outcome rule) and the modifiers (every firing modifier rule)."""
        lowered = {name.lower() for name in headers.keys()}
        outcome: tuple[Rule, str] | None = None
        modifiers: list[tuple[Rule, str]] = []
        with self._mu:
            for rule, rng in self._rules:
                if rule.exhausted or not rule.matches(method, path, query, lowered):
                    continue
                candidates = [a for a in rule.actions if a not in _OUTCOMES or outcome is None]
                if not candidates:
                    continue
                if rule.rate < 1 and rng.random() >= rule.rate:
                    continue
                action = rng.choice(candidates)
                rule.fired += 1
                if action in _OUTCOMES:
                    outcome = (rule, action)
                else:
                    modifiers.append((rule, action))
        return outcome, modifiers

    # -- what arrived ----------------------------------------------------------------
    def _record(self, arrival: Arrival) -> None:
        with self._mu:
            self._arrivals.append(arrival)

    @property
    def arrivals(self) -> list[Arrival]:
        """Every request that arrived, in order of arrival (a copy)."""
        with self._mu:
            return list(self._arrivals)

    def count(self, *, method: str | None = None, key: str | None = None, query: str | None = None,
              headers: Sequence[str] = ()) -> int:
        """How many arrived requests match these criteria (as for a Rule)."""
        probe = Rule("notify", method=method, key=key, query=query, headers=headers, callback=lambda a: None)
        return sum(1 for a in self.arrivals
                   if probe.matches(a.method, a.path, a.query, {h.lower() for h in a.headers}))

    def reset_arrivals(self) -> None:
        with self._mu:
            self._arrivals = []

    # -- plumbing --------------------------------------------------------------------
    def _track(self, conn: socket.socket, thread: threading.Thread | None) -> None:
        with self._mu:
            if thread is not None:
                self._connections[conn] = thread
            else:
                self._connections.pop(conn, None)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Aborted()

    def _wait(self, gate: threading.Event) -> None:
        while not gate.wait(0.05):
            if self._stopping.is_set():
                raise _Aborted()

    def _forward(self, method: str, target: str, headers: list[tuple[str, str]],
                 body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        # A fresh upstream connection per request: a reused one the server closed while
        # idle would fail in a way the proxy could not tell from a request that landed.
        conn = http.client.HTTPConnection(*self._upstream_address, timeout=self.upstream_timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or method in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
            return response.status, response.reason, list(response.getheaders()), data
        except http.client.HTTPException as exc:
            raise OSError(f"upstream {self.upstream}: {exc}") from exc
        finally:
            conn.close()

