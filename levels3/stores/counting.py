"""Request accounting: how many requests of each kind, bytes moved, errors and refusals, latency.

Wrap the store *below* RetryingStore to count every attempt S3 would bill, or
above it to count logical operations. May call only the ObjectStore interface.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from ..errors import ObjectNotFound, PreconditionFailed
from .base import ObjectInfo, ObjectStore, PutMode

KINDS = ("get", "put", "list", "delete", "head")
#: S3 ListObjectsV2 returns at most this many keys per page (one request each).
LIST_PAGE_SIZE = 1000
T = TypeVar("T")


def _percentile(sorted_samples: list[float], fraction: float) -> float:
    index = min(len(sorted_samples) - 1, max(0, math.ceil(fraction * len(sorted_samples)) - 1))
    return sorted_samples[index]


class CountingStore(ObjectStore):
    """Thread-safe counters around ``inner``.

    A list() is counted as ceil(objects / 1000) requests (at least one): the pages
    S3 would serve for it.  Latency samples keep the last ``reservoir`` calls per kind.
    A request the store answered with "no such object" (404) or "condition not met"
    (412) is counted as ``refused``, not as an error: the callers expect those answers
    (a new database has no CURRENT, the probe and every lock race are refused by design)
    and decide themselves when one means damage.
    """

    def __init__(self, inner: ObjectStore, *, reservoir: int = 1024) -> None:
        self.inner = inner
        self.url = inner.url
        self.ambiguous_failures = getattr(inner, "ambiguous_failures", True)  # a duck-typed wrapper: assume so
        self._reservoir = reservoir
        self._lock = threading.Lock()
        self.reset()

    def __repr__(self) -> str:
        return f"CountingStore({self.inner!r})"

    def reset(self) -> None:
        with self._lock:
            self._requests = dict.fromkeys(KINDS, 0)
            self._latency: dict[str, deque[float]] = {k: deque(maxlen=self._reservoir) for k in KINDS}
            self.bytes_uploaded = 0
            self.bytes_downloaded = 0
            self.errors = 0
            self.refused = 0

    @property
    def requests(self) -> dict[str, int]:
        with self._lock:
            return dict(self._requests)

    @property
    def total_requests(self) -> int:
        with self._lock:
            return sum(self._requests.values())

    def _record(self, kind: str, began: float, *, requests: int = 1, up: int = 0, down: int = 0, error: bool = False,
                refused: bool = False) -> None:
        elapsed = time.monotonic() - began
        with self._lock:
            self._requests[kind] += requests
            self._latency[kind].append(elapsed)
            self.bytes_uploaded += up
            self.bytes_downloaded += down
            self.errors += error
            self.refused += refused

    def _timed(self, kind: str, fn: Callable[[], T], up: int = 0,
               body: Callable[[T], Any] = lambda result: result) -> T:
        """Run one request and record it; ``body`` picks the bytes downloaded out of its result."""
        began = time.monotonic()
        try:
            result = fn()
        except (ObjectNotFound, PreconditionFailed):
            self._record(kind, began, up=up, refused=True)  # an answer, not a failure
            raise
        except BaseException:
            self._record(kind, began, up=up, error=True)  # the bytes were sent all the same
            raise
        data = body(result)
        self._record(kind, began, up=up, down=len(data) if isinstance(data, (bytes, bytearray)) else 0)
        return result

    def snapshot(self) -> dict[str, Any]:
        """Counts, bytes, errors, refusals and p50/p90/p99 latency in milliseconds per kind."""
        with self._lock:
            latency: dict[str, dict[str, float]] = {}
            for kind, samples in self._latency.items():
                if samples:
                    ordered = sorted(samples)
                    latency[kind] = {
                        f"p{int(p * 100)}": round(_percentile(ordered, p) * 1000, 3) for p in (0.5, 0.9, 0.99)
                    }
            return {
                "requests": dict(self._requests),
                "total_requests": sum(self._requests.values()),
                "bytes_uploaded": self.bytes_uploaded,
                "bytes_downloaded": self.bytes_downloaded,
                "errors": self.errors,
                "refused": self.refused,
                "latency_ms": latency,
            }

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        return self._timed("get", lambda: self.inner.get(key, start, end))

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        return self._timed("get", lambda: self.inner.get_with_info(key), body=lambda result: result[0])

    def head(self, key: str) -> ObjectInfo:
        return self._timed("head", lambda: self.inner.head(key))

    def put(
        self,
        key: str,
        data: bytes,
        *,
        mode: PutMode = PutMode.OVERWRITE,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        return self._timed(
            "put",
            lambda: self.inner.put(key, data, mode=mode, metadata=metadata),
            up=len(data),
        )

    def delete_many(self, keys: Sequence[str]) -> None:
        return self._timed("delete", lambda: self.inner.delete_many(keys))

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        return self._timed("delete", lambda: self.inner.delete(key, if_match=if_match))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        began = time.monotonic()
        seen = 0
        failed = False
        try:
            for info in self.inner.list(prefix):
                seen += 1
                yield info
        except Exception:
            failed = True
            raise
        finally:
            # Also recorded when the consumer stops early: the pages fetched were paid for.
            self._record("list", began, requests=max(1, math.ceil(seen / LIST_PAGE_SIZE)), error=failed)

    def close(self) -> None:
        self.inner.close()
