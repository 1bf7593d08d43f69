"""Retry wrapper: exponential backoff with full jitter, for transient errors only.

A permanent error (4xx, missing object, refused condition, bad configuration)
is raised at once: retrying it only multiplies requests and hides the cause.
Owns the retry loop and the token that makes conditional PUTs safe to repeat.
It knows no backend: whether an error is transient is the store's to say
(``StoreError.transient``). It may call only the ObjectStore interface.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

from ..errors import ObjectNotFound, PreconditionFailed, StoreError
from .base import ObjectInfo, ObjectStore, PutMode

#: User-metadata key carrying the unique token of a conditional PUT.
TOKEN_METADATA_KEY = "levels3-token"

log = logging.getLogger("levels3.store")
T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """True when repeating the same request may succeed.

    A store says so on its errors (``StoreError.transient``, set where the
    backend classified its client's failure); a plain socket error from a
    custom client or a body stream counts as transient too.
    """
    flag = getattr(exc, "transient", None)
    if flag is not None:
        return bool(flag)
    return isinstance(exc, (ConnectionError, TimeoutError))


class RetryingStore(ObjectStore):
    """Retries transient failures of ``inner`` with exponential backoff and full jitter.

    Conditional writes are made safe to retry: where a failed attempt may have landed
    (``inner.ambiguous_failures``), each carries a unique token in its user metadata,
    so a retry refused with PreconditionFailed can check whether the winner is in fact
    our own earlier attempt.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        max_attempts: int,
        base_delay: float,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.inner = inner
        self.url = inner.url
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._random = random.Random()

    def __repr__(self) -> str:
        return f"RetryingStore({self.inner!r}, max_attempts={self.max_attempts})"

    def _backoff(self, attempt: int) -> float:
        return self._random.uniform(0, min(self.max_delay, self.base_delay * (2**attempt)))

    def _call(
        self,
        operation: str,
        key: str,
        fn: Callable[[], T],
        on_refused: Callable[[PreconditionFailed | ObjectNotFound], T] | None = None,
    ) -> T:
        """Run ``fn`` until it succeeds, fails permanently, or attempts run out.

        ``on_refused`` decides a refusal that follows an attempt that may have landed.
        """
        maybe_landed = False
        last: BaseException | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                delay = self._backoff(attempt - 1)
                log.debug("retry %s %r attempt %d after %.3fs: %s", operation, key, attempt + 1, delay, last)
                self._sleep(delay)
            try:
                return fn()
            except (PreconditionFailed, ObjectNotFound) as exc:
                if maybe_landed and on_refused is not None:
                    return on_refused(exc)
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise  # permanent: the inner store's error already says what went wrong
                last = exc
                maybe_landed = True
        assert last is not None
        raise StoreError(
            f"{operation} {key!r} on {self.url} failed after {self.max_attempts} attempts: {last}",
            operation=operation,
            key=key,
        ) from last

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return self._call("get", key, lambda: self.inner.get(key, start, end))

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        return self._call("get", key, lambda: self.inner.get_with_info(key))

    def head(self, key: str) -> ObjectInfo:
        return self._call("head", key, lambda: self.inner.head(key))

    def put(
        self,
        key: str,
        data: bytes,
        *,
        mode: PutMode = PutMode.OVERWRITE,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        if not mode.conditional:
            # Unconditional PUT is idempotent: repeating it is always safe.
            return self._call("put", key, lambda: self.inner.put(key, data, metadata=metadata))
        if not self.inner.ambiguous_failures:
            # A refused retry can only mean someone else's object: no token needed.
            return self._call(
                "put", key, lambda: self.inner.put(key, data, mode=mode, metadata=metadata)
            )

        token = uuid.uuid4().hex
        tagged = dict(metadata or {})
        tagged[TOKEN_METADATA_KEY] = token

        def attempt() -> str:
            return self.inner.put(key, data, mode=mode, metadata=tagged)

        def refused(exc: PreconditionFailed | ObjectNotFound) -> str:
            # An earlier attempt may have landed and the retry then lost against it.
            try:
                info = self.head(key)
            except ObjectNotFound:
                raise exc from None
            if info.metadata.get(TOKEN_METADATA_KEY) == token:
                log.debug("put %r: earlier attempt had landed (token matched)", key)
                return info.etag
            raise exc

        return self._call("put", key, attempt, refused)

    def delete_many(self, keys: Sequence[str]) -> None:
        # Idempotent: a key deleted by an earlier attempt is simply missing now.
        return self._call("delete", f"{keys[0]} (+{len(keys) - 1} more)" if keys else "", lambda: self.inner.delete_many(keys))

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        if if_match is None:
            return self._call("delete", key, lambda: self.inner.delete(key))

        def refused(exc: PreconditionFailed | ObjectNotFound) -> None:
            # The earlier attempt may have deleted it; still present means someone else's version.
            try:
                self.head(key)
            except ObjectNotFound:
                return None
            raise exc

        return self._call("delete", key, lambda: self.inner.delete(key, if_match=if_match), refused)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # A listing that breaks midway restarts and skips what was already yielded.
        # By key, not by position: not every store lists in byte order (SeaweedFS
        # walks its directory tree, so "dir/x" comes before "dir-x").
        yielded: set[str] = set()
        failures = 0
        while True:
            try:
                for info in self.inner.list(prefix):
                    if info.key in yielded:
                        continue
                    yielded.add(info.key)
                    yield info
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                if failures >= self.max_attempts:
                    raise StoreError(
                        f"list {prefix!r} on {self.url} failed after {self.max_attempts} attempts: {exc}",
                        operation="list",
                        key=prefix,
                    ) from exc
                delay = self._backoff(failures - 1)
                log.debug("retry list %r attempt %d after %.3fs: %s", prefix, failures + 1, delay, exc)
                self._sleep(delay)

    def close(self) -> None:
        self.inner.close()
