"""Requests that do not depend on each other, run at the same time.

Over a distant store every request costs a round trip, so requests that need nothing
from each other (today: the conditional-write probe's) go out together. One pool of
threads per process serves every open database; its threads wait on the network with the GIL
released (boto3 is thread-safe). A forked child gets a pool of its own: threads do
not survive fork, and the parent's would never run the child's work.

Imports only the standard library.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

#: Threads of the shared pool: enough for the requests one step sends together.
POOL_THREADS = 16
_THREAD_PREFIX = "levels3-requests"

_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _shared_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=POOL_THREADS,
                                                          thread_name_prefix=_THREAD_PREFIX)
        return _pool


def _forget_pool_in_child() -> None:
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def submit(fn: Callable[..., T], *args: Any) -> "concurrent.futures.Future[T]":
    """Run ``fn(*args)`` on the shared pool."""
    return _shared_pool().submit(fn, *args)


def run_parallel(*calls: Callable[[], Any]) -> list[Any]:
    """Run every call at once (the first on this thread) and return their results in order.

    All of them finish before this returns, whatever fails; then the first failure
    (in argument order) is raised, so the caller can undo what the others did.

    A call no pool thread has started by the time it is waited for is taken back and
    run here. So a call that itself runs calls in parallel (on a pool thread) never
    waits for work queued behind it: everything waited for is already running."""
    if not calls:
        return []
    futures = [submit(call) for call in calls[1:]]
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)
    try:
        results[0] = calls[0]()
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others finished
        errors[0] = exc
    for i, (call, future) in enumerate(zip(calls[1:], futures), start=1):
        try:
            results[i] = call() if future.cancel() else future.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors[i] = exc
    for error in errors:
        if error is not None:
            raise error
    return results
