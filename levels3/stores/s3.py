"""The S3 backend: one boto3 client, every botocore error mapped to a levels3 error.

Messages, reprs and logs name the bucket, prefix, key and endpoint, never a
credential (botocore's own DEBUG records are redacted too: see redaction.py).
boto3's own retries are switched off: RetryingStore is the single place that
retries, so attempts do not multiply. Owns the botocore error classification
(is_transient and the transient codes) and the probe for conditional writes.
Imports boto3, the store interface and levels3.errors.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping, Sequence

import boto3
import botocore.config
import botocore.exceptions
import urllib3.exceptions

from ..errors import ConfigurationError, ObjectNotFound, PreconditionFailed, StoreError
from ..options import StoreOptions
from ..parallel import run_parallel
from .base import DELETE_BATCH, ObjectInfo, ObjectStore, PutCondition, PutMode
from .local import validate_key
from .redaction import redact_credentials_in_logs

_ACCESS_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"})
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId": "the access key is not known to the endpoint: check access_key (or the AWS credential chain) and endpoint_url",
    "SignatureDoesNotMatch": "the secret key does not match the access key (the request signature was rejected): "
                             "check secret_key and region",
    "InvalidToken": "the session token is invalid: check session_token",
    "ExpiredToken": "the session token has expired: refresh the credentials",
    "TokenRefreshRequired": "the session token has expired: refresh the credentials",
    "RequestTimeTooSkewed": "the host clock differs too much from the endpoint's: fix the clock",
}
_NOT_IMPLEMENTED_CODES = frozenset({"NotImplemented", "501"})
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "IDPCommunicationError",
        "EC2ThrottledException",
        # S3 answers 409 when two conditional writes race; AWS documents it as retryable.
        "ConditionalRequestConflict",
    }
)


def build_client(options: StoreOptions) -> Any:
    """A boto3 S3 client from ``options``: its own client, its session, explicit keys, or the standard chain.

    A client levels3 builds from explicit keys or the standard chain is built once per
    process for each configuration and shared (see _ClientCache); one from the caller's
    session is built for this store alone, and the caller's own client is used as given."""
    if options.client is not None:
        return options.client
    if options.session is not None:
        return _new_client(options, options.session)
    return _clients.get(options)


def _new_client(options: StoreOptions, session: Any = None) -> Any:
    config = botocore.config.Config(
        connect_timeout=options.request_timeout,
        read_timeout=options.request_timeout,
        max_pool_connections=32,
        # total_max_attempts counts attempts (max_attempts counts *retries*: 1 would resend
        # once, below RetryingStore, and a landed conditional PUT would come back 412
        # with no token check).  RetryingStore decides every retry.
        retries={"total_max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path"} if options.path_style else None,
        # Newer boto3 adds CRC checksums to every request by default, which several
        # S3-compatible stores reject; LevelDB checksums its own blocks anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="levels3",
    )
    if session is None:
        if (options.access_key is None) != (options.secret_key is None):
            raise ConfigurationError("access_key and secret_key must be given together")
        session = boto3.session.Session(
            aws_access_key_id=options.access_key,
            aws_secret_access_key=options.secret_key,
            aws_session_token=options.session_token,
        )
    client = session.client("s3", endpoint_url=options.endpoint_url, region_name=options.region, config=config)
    client.meta.events.register("request-created.s3", _drop_expect_continue)
    return client


class _ClientCache:
    """The clients levels3 builds itself, one per configuration, kept for the life of the process.

    Building a client costs 100-500 ms of CPU (botocore loads and parses the S3 service
    model for every new session), which a cold open over a fast network would spend
    before its first request; boto3 clients are thread-safe and meant to be shared. The
    key is everything the client is built from: endpoint, region, addressing, timeout and
    the credentials, as a digest (explicit keys, or the AWS_* environment the standard
    chain reads first), so a process that changes its credentials gets a new client.
    A forked child starts with none: the parent's connections are not the child's.
    """

    def __init__(self, capacity: int = 16) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._clients: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    @staticmethod
    def key(options: StoreOptions) -> tuple[Any, ...]:
        if options.access_key is not None or options.secret_key is not None:
            secrets: Any = ("explicit", options.access_key, options.secret_key, options.session_token)
        else:
            secrets = ("chain", sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
        digest = hashlib.sha256(repr(secrets).encode()).hexdigest()
        return options.endpoint_url, options.region, options.path_style, options.request_timeout, digest

    def get(self, options: StoreOptions) -> Any:
        key = self.key(options)
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
        client = _new_client(options)  # slow: outside the lock (two threads may both build one)
        with self._lock:
            client = self._clients.setdefault(key, client)
            self._clients.move_to_end(key)
            while len(self._clients) > self._capacity:
                self._clients.popitem(last=False)  # not closed: a store may still use it
        return client

    def forget_all(self) -> None:
        self._lock = threading.Lock()
        self._clients = OrderedDict()


_clients = _ClientCache()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_clients.forget_all)


def _drop_expect_continue(request: Any, **_: Any) -> None:
    """No ``Expect: 100-continue``: botocore waits up to 1 s for a server to answer it, and with
    SeaweedFS a 1-byte PUT then hangs until the read timeout.  levels3's bodies are small
    (at most max_object_size), so the handshake would only save bytes on a refused request."""
    if "Expect" in request.headers:
        del request.headers["Expect"]


def _client_error_parts(exc: botocore.exceptions.ClientError) -> tuple[str, int, str]:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return str(error.get("Code", "")), int(status), str(error.get("Message", "") or "")


def is_transient(exc: BaseException) -> bool:
    """Whether botocore's failure may go away when the request is repeated (5xx,
    throttling, timeouts, resets): what S3Store puts in StoreError.transient."""
    if isinstance(exc, botocore.exceptions.ClientError):
        code, status, _ = _client_error_parts(exc)
        return code in _TRANSIENT_CODES or status >= 500 or status == 429
    if isinstance(exc, botocore.exceptions.SSLError):
        return False  # a certificate problem does not fix itself
    if isinstance(
        exc,
        (
            botocore.exceptions.HTTPClientError,  # connection closed/reset, read timeouts
            botocore.exceptions.ConnectionError,  # connection refused, connect timeouts
            botocore.exceptions.IncompleteReadError,
        ),
    ):
        return True
    # Raw socket errors from the body stream, and a body cut midway, which can
    # surface from urllib3 unwrapped ("Connection broken: IncompleteRead").
    return isinstance(exc, (ConnectionError, TimeoutError, http.client.IncompleteRead,
                            urllib3.exceptions.ProtocolError))


class S3Store(ObjectStore):
    """Objects under ``s3://bucket/prefix``; keys are relative to the prefix."""

    def __init__(self, bucket: str, prefix: str, options: StoreOptions) -> None:
        if not bucket:
            raise ConfigurationError("bucket name is empty")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._endpoint = options.endpoint_url or "AWS S3"
        # Only a client built from the caller's session is this store's alone to close.
        self._owns_client = options.client is None and options.session is not None
        self._client = build_client(options)
        redact_credentials_in_logs(self._client)
        self._log = options.logger or logging.getLogger("levels3.store")

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def _full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, operation: str, key: str, *, conditional: bool = False) -> StoreError:
        """Translate a botocore/socket exception; the caller raises it ``from exc``."""
        where = f"{operation} {key!r} on {self.url}"
        code, status, message = "", 0, ""
        kind: type[StoreError] = StoreError
        if isinstance(exc, botocore.exceptions.ClientError):
            code, status, message = _client_error_parts(exc)
            if code == "NoSuchBucket":
                text = (f"{where}: bucket {self.bucket!r} does not exist at {self._endpoint} "
                        "(check the bucket name, endpoint_url and region)")
            elif code in ("NoSuchKey", "NotFound", "404") or status == 404:
                if conditional:
                    kind, text = PreconditionFailed, f"{where}: object does not exist"
                else:
                    kind, text = ObjectNotFound, f"{where}: no such object"
            elif code == "PreconditionFailed" or status == 412:
                kind, text = PreconditionFailed, f"{where}: condition not met"
            elif code in _CREDENTIAL_CODES:
                text = f"{where}: {_CREDENTIAL_CODES[code]}"
            elif code in _ACCESS_CODES or status == 403:
                text = (f"{where}: access denied by {self._endpoint} ({code}); check that the credentials are "
                        f"right and allowed s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket "
                        f"on bucket {self.bucket!r}")
            elif code in _NOT_IMPLEMENTED_CODES or status == 501:
                text = f"{where}: the endpoint {self._endpoint} does not implement this request ({code}: {message})"
            else:
                text = f"{where} failed: {code} (HTTP {status}): {message}"
        elif isinstance(exc, botocore.exceptions.NoCredentialsError):
            text = (f"{where}: no credentials found; pass access_key/secret_key, a session or client, "
                    "or configure the standard AWS credential chain")
        else:
            text = f"{where} failed: {type(exc).__name__}: {exc}"
        # -vv shows every request, the refused and failed ones too (a follower's first GET may be its last)
        self._log.debug("%s %s %r answered %s", operation, self.url, key,
                        f"{code or '?'} (HTTP {status})" if status else type(exc).__name__)
        return kind(text, operation=operation, key=key, transient=is_transient(exc), code=code, status=status)

    def _debug(self, operation: str, key: str, began: float, nbytes: int | None = None) -> None:
        if self._log.isEnabledFor(logging.DEBUG):
            size = "" if nbytes is None else f" bytes={nbytes}"
            self._log.debug("%s %s %r%s latency=%.1fms", operation, self.url, key, size, (time.monotonic() - began) * 1000)

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        full = self._full_key(key)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad range [{start}, {end})")
        if end is not None and end == start:
            return b""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        return self._get_object(key, kwargs)[0]

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        data, response = self._get_object(key, {"Bucket": self.bucket, "Key": self._full_key(key)})
        return data, ObjectInfo(key=key, size=len(data), etag=response["ETag"],
                                metadata=dict(response.get("Metadata") or {}),
                                last_modified=_timestamp(response.get("LastModified")))

    def _get_object(self, key: str, kwargs: dict[str, Any]) -> tuple[bytes, Mapping[str, Any]]:
        """One GetObject: its body and its response (empty for a range past the end)."""
        began = time.monotonic()
        try:
            response = self._client.get_object(**kwargs)
            data = response["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if "Range" in kwargs and _client_error_parts(exc)[0] == "InvalidRange":
                data, response = b"", {}  # starts past the end: like reading a file past EOF
            else:
                raise self._error(exc, "get", key) from exc
        except Exception as exc:
            raise self._error(exc, "get", key) from exc
        self._debug("get", key, began, len(data))
        return data, response

    def head(self, key: str) -> ObjectInfo:
        full = self._full_key(key)
        began = time.monotonic()
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            raise self._error(exc, "head", key) from exc
        self._debug("head", key, began)
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=response["ETag"],
            metadata=dict(response.get("Metadata") or {}),
            last_modified=_timestamp(response.get("LastModified")),
        )

    def put(
        self,
        key: str,
        data: bytes,
        *,
        mode: PutMode = PutMode.OVERWRITE,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        full = self._full_key(key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full, "Body": data}
        if mode.condition is PutCondition.CREATE:
            kwargs["IfNoneMatch"] = "*"
        elif mode.condition is PutCondition.REPLACE:
            kwargs["IfMatch"] = mode.etag
        if metadata:
            kwargs["Metadata"] = dict(metadata)
        began = time.monotonic()
        try:
            response = self._client.put_object(**kwargs)
        except Exception as exc:
            raise self._error(exc, "put", key, conditional=mode.condition is PutCondition.REPLACE) from exc
        self._debug("put", key, began, len(data))
        return response["ETag"]

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        # S3 and moto (5.2+) both honour If-Match on DeleteObject, so no emulation is needed.
        full = self._full_key(key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        began = time.monotonic()
        try:
            self._client.delete_object(**kwargs)
        except Exception as exc:
            raise self._error(exc, "delete", key, conditional=if_match is not None) from exc
        self._debug("delete", key, began)

    def delete_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        if len(keys) > DELETE_BATCH:
            raise ValueError(f"delete_many takes at most {DELETE_BATCH} keys, got {len(keys)}")
        objects = [{"Key": self._full_key(key)} for key in keys]
        began = time.monotonic()
        try:
            response = self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
        except Exception as exc:
            raise self._error(exc, "delete", keys[0]) from exc
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreError(f"delete {len(keys)} objects on {self.url}: {len(errors)} refused, the first "
                             f"{first.get('Key')!r}: {first.get('Code')}: {first.get('Message')}",
                             operation="delete", key=str(first.get("Key", "")))
        self._debug("delete", f"{keys[0]} (+{len(keys) - 1} more)", began)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_key(prefix, prefix=True)
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        began = time.monotonic()
        pages = paginator.paginate(Bucket=self.bucket, Prefix=base + prefix)
        try:
            for page in pages:
                self._debug("list", prefix, began)
                for item in page.get("Contents", ()):
                    yield ObjectInfo(key=item["Key"][len(base) :], size=int(item["Size"]), etag=item["ETag"],
                                     last_modified=_timestamp(item.get("LastModified")))
                began = time.monotonic()
        except Exception as exc:
            raise self._error(exc, "list", prefix) from exc

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _timestamp(value: Any) -> float | None:
    """botocore's LastModified (a datetime) as seconds since the epoch."""
    return value.timestamp() if value is not None else None


def probe_conditional_writes(store: ObjectStore) -> None:
    """Check that the endpoint honours If-None-Match and If-Match on PUT, and If-Match on
    DELETE; raise StoreError naming the missing feature if not.

    Some S3-compatible stores answer 501 to conditional writes, and some ignore
    the header and overwrite: the single-writer lease would then be unsafe.

    Two round trips and a clean-up: two probe objects are created at once; then the three
    requests that must be refused go out together (a second create and a PUT
    with a wrong If-Match on the first object, a DELETE with a wrong If-Match on the
    second), so that no outcome depends on another. One DeleteObjects removes both after.
    """
    run = uuid.uuid4().hex
    put_key, delete_key = f".levels3-probe/{run}", f".levels3-probe/{run}-delete"
    try:
        _check_probe(store, put_key, delete_key)
    finally:
        try:
            store.delete_many([put_key, delete_key])
        except StoreError:
            pass  # a leftover probe object is harmless


def _outcomes(*calls: Callable[[], Any]) -> list[BaseException | None]:
    def outcome(call: Callable[[], Any]) -> Callable[[], BaseException | None]:
        def run() -> BaseException | None:
            try:
                call()
            except StoreError as exc:  # PreconditionFailed included
                return exc
            return None
        return run

    return run_parallel(*(outcome(call) for call in calls))


def _check_probe(store: ObjectStore, put_key: str, delete_key: str) -> None:
    created = _outcomes(lambda: store.put(put_key, b"probe", mode=PutMode.CREATE),
                        lambda: store.put(delete_key, b"probe", mode=PutMode.CREATE))
    for exc in created:
        if isinstance(exc, StoreError) and (exc.status == 501 or exc.code in _NOT_IMPLEMENTED_CODES):
            raise StoreError(
                f"{store.url} does not support conditional writes (If-None-Match answered "
                f"{exc.code or 'NotImplemented'}); levels3 needs them for its writer lock",
                operation="probe",
                key=put_key,
            ) from exc
    for exc in created:
        if exc is not None:
            raise exc
    mismatch = '"levels3-probe-mismatch"'
    refused = _outcomes(lambda: store.put(put_key, b"probe again", mode=PutMode.CREATE),
                        lambda: store.put(put_key, b"probe again", mode=PutMode.replace(mismatch)),
                        lambda: store.delete(delete_key, if_match=mismatch))
    ignored = (
        f"{store.url} ignored If-None-Match: * and overwrote an existing object; "
        "levels3 needs conditional writes for its writer lock",
        f"{store.url} ignored If-Match and overwrote an object; levels3 needs conditional writes for its writer lock",
        # A closing writer releases its lease with a conditional DELETE: where If-Match
        # is ignored (LocalStack 4.4), it could delete its successor's lease.
        f"{store.url} ignored If-Match on DELETE (conditional delete) and deleted an object; "
        "levels3 needs conditional deletes to release its writer lock safely",
    )
    for exc, message in zip(refused, ignored):
        if exc is None:
            raise StoreError(message, operation="probe", key=put_key)
    for exc in refused:
        if not isinstance(exc, PreconditionFailed):
            raise exc  # type: ignore[misc]
