"""Fault injection for tests and benchmarks: transient failures at a chosen rate.

A wrapper like the others (it may call only the ObjectStore interface); its
InjectedFault is a transient StoreError, as a store would raise.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

from ..errors import StoreError
from .base import ObjectInfo, ObjectStore, PutMode

T = TypeVar("T")

_FAULTS = {
    "500": ("InternalError", 500, "injected 500 InternalError"),
    "503": ("SlowDown", 503, "injected 503 SlowDown"),
    "timeout": ("", 0, "injected read timeout"),
    "reset": ("", 0, "injected connection reset by peer"),
}


class InjectedFault(StoreError):
    """A simulated transient failure (always ``transient=True``)."""

    def __init__(self, message: str, *, operation: str, key: str, code: str = "", status: int = 0) -> None:
        super().__init__(message, operation=operation, key=key, transient=True, code=code, status=status)


class FaultInjectingStore(ObjectStore):
    """Fails requests at ``rate`` with a transient error, before or after delegating.

    A fault *after* delegating models a request that landed while its response was
    lost (e.g. a timeout): the case that makes conditional PUT retries tricky.
    ``rate`` may be changed at any time; ``injected`` counts the faults raised.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        rate: float,
        seed: int | None = None,
        kinds: Sequence[str] = ("500", "503", "timeout", "reset"),
        delay: float = 0,
        when: Sequence[str] = ("before", "after"),
    ) -> None:
        unknown = set(kinds) - set(_FAULTS)
        if unknown or not kinds:
            raise ValueError(f"fault kinds must be among {sorted(_FAULTS)}, got {list(kinds)}")
        if not set(when) <= {"before", "after"} or not when:
            raise ValueError("when must contain 'before' and/or 'after'")
        if not 0 <= rate <= 1:
            raise ValueError("rate must be within [0, 1]")
        self.inner = inner
        self.url = inner.url
        self.rate = rate
        self.kinds = tuple(kinds)
        self.delay = delay
        self.when = tuple(when)
        self.injected = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultInjectingStore({self.inner!r}, rate={self.rate})"

    def _roll(self) -> tuple[str, str] | None:
        """(kind, when) of the fault to inject for this request, or None."""
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            self.injected += 1
            return self._random.choice(self.kinds), self._random.choice(self.when)

    def _fault(self, kind: str, operation: str, key: str) -> InjectedFault:
        code, status, message = _FAULTS[kind]
        return InjectedFault(f"{operation} {key!r}: {message}", operation=operation, key=key, code=code, status=status)

    def _call(self, operation: str, key: str, fn: Callable[[], T]) -> T:
        if self.delay:
            time.sleep(self.delay)
        fault = self._roll()
        if fault is not None and fault[1] == "before":
            raise self._fault(fault[0], operation, key)
        result = fn()
        if fault is not None:
            raise self._fault(fault[0], operation, key)  # it landed; the "response" is lost
        return result

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
        return self._call(
            "put", key, lambda: self.inner.put(key, data, mode=mode, metadata=metadata)
        )

    def delete_many(self, keys: Sequence[str]) -> None:
        return self._call("delete", keys[0] if keys else "", lambda: self.inner.delete_many(keys))

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        return self._call("delete", key, lambda: self.inner.delete(key, if_match=if_match))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # The whole listing is fetched first so an "after" fault really follows the requests.
        return iter(self._call("list", prefix, lambda: list(self.inner.list(prefix))))

    def close(self) -> None:
        self.inner.close()
