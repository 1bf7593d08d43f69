"""Deferred deletion: objects LevelDB no longer needs wait out ``deletion_grace``.

A follower reading an older version may still need a table the writer has
compacted away; so the writer deletes such objects only ``deletion_grace``
after dropping them, and never those a checkpoint names. (Segments a merge
replaced get no grace: see MERGED_SEGMENT_GRACE in segments.) Deletions run in a
background thread, in batches (one DeleteObjects request per 1000 keys), at
most a tenth of the grace period (and 5 s) late: never on the path of a write.
What is still waiting at close stays in the store; the next writer finds it
obsolete again and deletes it once the rest of the grace period (by the store's
clock) has passed. Owns the queue of retired keys and the checkpoints'
protection; may call the store's delete_many and the lease check it is given.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Callable, ContextManager, Iterable

from ..stores.base import DELETE_BATCH, ObjectStore

log = logging.getLogger("levels3.reaper")

MAX_LATENESS = 5.0  # seconds a due object may wait for the next batch


class Reaper:
    def __init__(self, store: ObjectStore, grace: float, check_lease: Callable[[], None]) -> None:
        self.store = store
        self.grace = grace
        self.check_lease = check_lease  # raises once this writer may no longer delete
        self._due: list[tuple[float, str]] = []  # a heap of (monotonic due time, key)
        self._protected: set[str] = set()  # keys a checkpoint needs: never deleted
        self._held: str | None = None  # why nothing may be deleted this session (an unreadable checkpoint)
        self._cv = threading.Condition()
        self._delete_lock = threading.RLock()  # a batch's protection check and its deletion, vs. protect()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def retire(self, keys: Iterable[str], *, dropped_ago: float = 0.0, grace: float | None = None) -> None:
        """Delete these keys once deletion_grace (or a shorter ``grace``) has passed
        since they were dropped (``dropped_ago`` seconds before now). With
        deletion_grace=0, at once, in this thread."""
        keys = list(keys)
        if not keys:
            return
        if self.grace <= 0:
            self._delete(keys)
            return
        grace = self.grace if grace is None else min(grace, self.grace)
        due = time.monotonic() + max(0.0, grace - dropped_ago)
        with self._cv:
            for key in keys:
                heapq.heappush(self._due, (due, key))
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="levels3-reaper", daemon=True)
                self._thread.start()
            self._cv.notify()

    def protect(self, keys: Iterable[str]) -> None:
        with self._delete_lock:
            self._protected.update(keys)

    def hold(self, reason: str) -> None:
        """Delete nothing from now on: what is retired stays in the store for a later writer (or gc)."""
        with self._delete_lock:
            if self._held is None:
                log.warning("%s: deleting nothing this session: %s", self.store.url, reason)
            self._held = reason

    def reap(self, *, everything: bool = False) -> None:
        """Delete what is due now (or everything retired, for destroy_db)."""
        now = time.monotonic()
        with self._cv:
            keys = []
            while self._due and (everything or self._due[0][0] <= now):
                keys.append(heapq.heappop(self._due)[1])
        self._delete(keys)

    def paused(self) -> ContextManager[bool]:
        """Hold deletions (``with reaper.paused(): ...``) while a checkpoint picks what to protect."""
        return self._delete_lock

    def delete_now(self, keys: list[str]) -> None:
        self._delete(keys)

    def forget_protection(self) -> None:
        """destroy_db: the checkpoints go too."""
        with self._delete_lock:
            self._protected.clear()
            self._held = None

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _delete(self, keys: list[str]) -> None:
        with self._delete_lock:
            if self._held is not None:
                return
            keys = [k for k in keys if k not in self._protected]
            if keys:
                self.check_lease()  # only the lease holder deletes
            for i in range(0, len(keys), DELETE_BATCH):
                self.store.delete_many(keys[i:i + DELETE_BATCH])

    def _run(self) -> None:
        lateness = min(MAX_LATENESS, self.grace / 10)
        while True:
            with self._cv:
                while not self._stopped and not (self._due and self._due[0][0] <= time.monotonic()):
                    self._cv.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if self._stopped:
                    return
                # Let more come due, so one request deletes many (still at most `lateness` late).
                self._cv.wait_for(lambda: self._stopped, timeout=lateness)
            try:
                self.reap()
            except Exception as exc:  # noqa: BLE001 - logged; the next writer or gc finds them again
                log.warning("deleting retired objects of %s failed (the next writer or gc will): %s",
                            self.store.url, exc)
