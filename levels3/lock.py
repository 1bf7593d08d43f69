"""The single-writer lease on a database's ``LOCK`` object.

How it works (the Amazon DynamoDB Lock Client's algorithm, on object storage):

* **Acquire** creates ``LOCK`` with ``If-None-Match: *``; only one creator can win.
* **Renew**: a daemon thread rewrites ``LOCK`` with ``If-Match: <our etag>`` every
  renewal interval.  The body carries a renewal counter, so every renewal changes
  the ETag.
* **Take over**: a contender that observes the *same* ETag, on its own monotonic
  clock, for a whole ``lease_duration`` concludes the holder stopped renewing and
  replaces the object with ``If-Match: <that etag>``; of several contenders exactly
  one wins.  No clock synchronisation between hosts is needed, only clocks that
  tick at roughly the same rate.
* **Release** deletes ``LOCK`` with ``If-Match: <our etag>``, so a lock that
  somebody else owns by now is left alone.
* **Restart on the same host**: the body also records the holder's boot id, pid
  namespace and process start time (levels3.liveness). A contender that sees from
  them that the holder is a process of its own host, boot and pid namespace that
  has exited takes over at once, with the same ``If-Match`` write as any takeover:
  a service restarting after a crash does not wait out the lease. A holder it
  cannot judge (another host, boot or namespace; a live process) is waited for as
  above.

Why the holder gives up early (the renewal deadline)
----------------------------------------------------
A contender starts its lease_duration countdown only once it has *received* a
response showing our latest ETag, and that ETag only exists after our renewal
request was sent.  So no contender can take over before
``start_of_our_last_successful_renewal + lease_duration``.  The holder declares
its lease lost at ``start + lease_duration - safety_margin`` with
``safety_margin = lease_duration / 3``; ``check()`` evaluates that deadline on
the clock itself, so a renewal thread stuck in a hung request cannot keep a
dead lease alive.  The margin absorbs clock-rate differences between hosts,
process pauses between ``check()`` and the upload it guards, and uploads still
in flight when the deadline passes.  The renewal interval is capped at
``lease_duration / 3`` so that a failed renewal still leaves a third of the lease
for retries before the deadline.

This module owns the lease and the LOCK key; it may call only the store
interface (stores.base).
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping

from . import liveness
from .errors import LeaseLostError, LockError, ObjectNotFound, PreconditionFailed, StoreError
from .options import check_lease_timing
from .stores.base import ObjectStore, PutMode
from .stores.retry import is_transient

if TYPE_CHECKING:
    from .options import StoreOptions

log = logging.getLogger("levels3.lock")

LOCK_KEY = "LOCK"
#: User metadata naming the writer and renewal that produced a LOCK version.
WRITER_METADATA_KEY = "levels3-writer"
SEQ_METADATA_KEY = "levels3-seq"
_MAX_BODY = 64 * 1024  # a LOCK body is a few hundred bytes; never trust a huge one


def _wall_clock_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _parse_body(data: bytes) -> dict | None:
    if len(data) > _MAX_BODY:
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_holder(store: ObjectStore, key: str = LOCK_KEY) -> dict | None:
    """Return the parsed body of the lock object, or None when absent or unreadable.

    Meant for messages and the CLI: a garbage or foreign body gives ``None`` (or
    whatever dict it holds) rather than an exception.  Store failures other than
    a missing object still raise ``StoreError``.
    """
    try:
        data = store.get(key)
    except ObjectNotFound:
        return None
    return _parse_body(data)


def describe_holder(holder: Mapping[str, Any] | None) -> str:
    """One-line human description of a lock holder for error messages."""
    if not holder:
        return "an unknown holder (lock body missing or unreadable)"
    host = holder.get("host", "?")
    pid = holder.get("pid", "?")
    since = holder.get("since", "?")
    return f"host {host}, pid {pid}, since {since}"


class LeaseLock:
    """A renewable, take-over-able lease on ``key`` in ``store``.

    ``acquire()`` behaviour when the lock is already held:

    * ``lock_timeout=None`` (default): raise ``LockError`` at once, naming the
      holder (host, pid, since) and what to do.  This also applies to a LOCK left
      by a crashed writer on another host: without a timeout nobody waits long
      enough to see it go stale.  Pass ``lock_timeout >= lease_duration`` (plus a
      little) to take over such a lock automatically.
    * whatever the timeout: a holder that was a process of this host (same
      hostname, boot id and pid namespace) and has exited is taken over at once
      (levels3.liveness decides; anything it cannot judge is not taken over early).
    * ``lock_timeout=T``: wait up to ``T`` seconds.  The lock is taken when it is
      released or when its ETag is observed unchanged for a full lease duration
      (the holder's advertised duration if longer than ours); otherwise
      ``LockError`` is raised after ``T`` seconds.

    While held, a daemon thread renews the lease.  ``check()`` (cheap, call it
    before every upload) raises ``LeaseLostError`` once the lease was taken over,
    deleted, released, or could not be renewed in time.  ``on_lost(reason)`` is
    called once, from whichever thread notices the loss first.

    ``clock`` must be monotonic; it is injectable for tests.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        key: str = LOCK_KEY,
        lease_duration: float,
        lease_renewal: float,
        lock_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        owner_info: Mapping[str, Any] | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        lease_duration, lease_renewal, lock_timeout = check_lease_timing(lease_duration, lease_renewal, lock_timeout)
        self.store = store
        self.key = key
        self.lease_duration = float(lease_duration)
        self.lease_renewal = float(lease_renewal)
        self.lock_timeout = lock_timeout
        self._clock = clock
        self.on_lost = on_lost  # may be set after construction
        self.safety_margin = self.lease_duration / 3
        # Leave room for retries of a failed renewal before the deadline.
        self.renew_interval = min(self.lease_renewal, self.lease_duration / 3)
        self.poll_interval = min(self.lease_renewal, 1.0)
        self.writer_id = uuid.uuid4().hex
        self._owner_info = dict(owner_info or {})

        self._mu = threading.Lock()
        self._held = False
        self._lost_reason: str | None = None
        self._lost_notified = False
        self._etag: str | None = None
        self._deadline = 0.0  # clock value after which we must consider the lease gone
        self._seq = 0
        self._since = ""
        self._attempt_starts: dict[int, float] = {}  # seq -> start of a put not known to have landed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- state
    @property
    def etag(self) -> str | None:
        """ETag of the LOCK version we last wrote (None when not held)."""
        with self._mu:
            return self._etag if self._held else None

    @property
    def deadline(self) -> float:
        """Clock value at which the lease is considered lost unless renewed."""
        with self._mu:
            return self._deadline

    def clock(self) -> float:
        """Now, on the clock deadlines are measured with."""
        return self._clock()

    @property
    def writes(self) -> int:
        """LOCK PUTs started so far: taking the lease, then one per lease_renewal."""
        return self._seq

    @property
    def valid(self) -> bool:
        """True while we hold the lease and no contender can have taken it over."""
        try:
            self.check()
        except LeaseLostError:
            return False
        return True

    def check(self) -> None:
        """Raise ``LeaseLostError`` unless the lease is held and provably still ours."""
        with self._mu:
            reason = self._lost_reason
            if reason is None:
                if not self._held:
                    raise LeaseLostError(f"lock {self._where()} is not held")
                if self._clock() >= self._deadline:
                    reason = self._set_lost_locked(
                        f"lease on {self._where()} could not be renewed within "
                        f"{self.lease_duration - self.safety_margin:.3g} s"
                    )
        if reason is not None:
            self._notify_lost()
            raise LeaseLostError(reason)

    # -------------------------------------------------------------- acquire
    def acquire(self) -> "LeaseLock":
        """Take the lock (see the class docstring for waiting); returns self."""
        self._stop_renewal()  # a thread left from an earlier, lost lease must not renew the new one
        with self._mu:
            if self._held and self._lost_reason is None:
                raise LockError(f"lock {self._where()} is already held by this LeaseLock")
            self._held = False
            self._lost_reason = None
            self._lost_notified = False
            self._etag = None
            self._attempt_starts.clear()
            self._since = _wall_clock_iso()
        self._stop = threading.Event()

        start = self._clock()
        give_up_at = None if self.lock_timeout is None else start + self.lock_timeout
        seen_etag: str | None = None  # the holder's ETag we are timing
        seen_at = 0.0
        seen_holder: dict | None = None
        try_create = True
        while True:
            if try_create:
                if self._try_write(PutMode.CREATE):
                    break
            try_create = False
            current = self._read_current()
            if current is None:  # released meanwhile: race for it
                try_create = True
                continue
            etag, body = current
            now = self._clock()  # after the response: never earlier than the write we saw
            if self._is_ours(body):
                # An earlier attempt of ours landed although its request failed.
                if self._adopt(etag, body):
                    break
            if liveness.provably_gone(body):
                log.warning("taking over lock %s from %s: that process of this host has exited",
                            self._where(), describe_holder(body))
                if self._try_write(PutMode.replace(etag)):
                    break
                seen_etag = None  # somebody else won: start over
                continue
            if etag != seen_etag:
                seen_etag, seen_at, seen_holder = etag, now, body
            stale_after = self._stale_after(seen_holder)
            if give_up_at is None:
                raise LockError(f"database lock {self._where()} is held by {describe_holder(body)}; "
                                f"{self._way_out(stale_after)}")
            if now - seen_at >= stale_after:
                log.warning(
                    "taking over stale lock %s from %s (ETag unchanged for %.3g s)",
                    self._where(), describe_holder(seen_holder), now - seen_at,
                )
                if self._try_write(PutMode.replace(seen_etag)):
                    break
                seen_etag = None  # somebody else won or the holder came back: start over
                continue
            if now >= give_up_at:
                if self.lock_timeout is not None and self.lock_timeout >= stale_after:
                    hint = "its holder kept renewing it: that writer is alive (close it first)"
                else:
                    hint = self._way_out(stale_after)
                raise LockError(
                    f"database lock {self._where()} is held by {describe_holder(body)}; "
                    f"its lease was not observed stale within lock_timeout={self.lock_timeout} s; {hint}"
                )
            time.sleep(max(0.0, min(self.poll_interval, seen_at + stale_after - now, give_up_at - now)))

        log.info("acquired lock %s (writer %s)", self._where(), self.writer_id)
        self._thread = threading.Thread(
            target=self._renew_loop, args=(self._stop,), name=f"levels3-lease-{self.key}", daemon=True
        )
        self._thread.start()
        return self

    def _way_out(self, stale_after: float) -> str:
        url = getattr(self.store, "url", None) or "URL"
        return (f"if that writer is still running, close it first; if it crashed, its lease is taken over once "
                f"unrenewed for {stale_after:g} s: open with lock_timeout={stale_after:g} (or more) to wait for "
                f"that, or run `levels3 lock --break {url}`")

    def _stale_after(self, holder: dict | None) -> float:
        # Respect a holder that renews on a longer lease than ours.
        advertised = holder.get("lease_duration") if holder else None
        if isinstance(advertised, (int, float)) and not isinstance(advertised, bool) and advertised > 0:
            return max(self.lease_duration, float(advertised))
        return self.lease_duration

    def _try_write(self, mode: PutMode) -> bool:
        """Create or take over LOCK; True when we now hold it."""
        with self._mu:
            self._seq += 1
            seq = self._seq
            body = self._encode(seq)
        started = self._clock()
        self._attempt_starts[seq] = started
        try:
            etag = self.store.put(self.key, body, mode=mode, metadata=self._metadata(seq))
        except (PreconditionFailed, ObjectNotFound):
            return False
        except StoreError as exc:
            # Only a transient failure can have landed (retries that ran out chain the last one);
            # a refused request, such as one with bad credentials, did not.
            if is_transient(exc) or (exc.__cause__ is not None and is_transient(exc.__cause__)):
                self._forget_own_attempt()
            raise
        self._won(etag, started)
        return True

    def _forget_own_attempt(self) -> None:
        # A failed create may still have landed; don't leave a LOCK that blocks everyone.
        try:
            current = self._read_current()
            if current is not None and self._is_ours(current[1]):
                self.store.delete(self.key, if_match=current[0])
        except StoreError as exc:
            log.warning("could not clean up lock %s after a failed acquire (it expires after "
                        "lease_duration): %s", self._where(), exc)

    def _adopt(self, etag: str, body: dict | None) -> bool:
        started = self._attempt_start(body)
        if started is None:
            return False
        self._won(etag, started)
        return True

    def _won(self, etag: str, started: float) -> None:
        with self._mu:
            self._etag = etag
            self._held = True
            self._deadline = started + self.lease_duration - self.safety_margin
            self._attempt_starts.clear()

    def _read_current(self) -> tuple[str, dict | None] | None:
        """(etag, parsed body) of the current LOCK, consistent with each other; None if absent."""
        try:
            data, info = self.store.get_with_info(self.key)
        except ObjectNotFound:
            return None
        return info.etag, _parse_body(data)

    def _is_ours(self, body: dict | None) -> bool:
        return body is not None and body.get("writer") == self.writer_id

    def _attempt_start(self, body: dict | None) -> float | None:
        """When our put that wrote ``body`` started, if it is one we are unsure about."""
        renewals = body.get("renewals") if body is not None else None
        return self._attempt_starts.get(renewals) if isinstance(renewals, int) else None

    # -------------------------------------------------------------- renewal
    def _renew_loop(self, stop: threading.Event) -> None:
        wait = self.renew_interval
        while not stop.wait(wait):
            with self._mu:
                if self._lost_reason is not None or not self._held:
                    return
                if self._clock() >= self._deadline:
                    self._set_lost_locked(f"lease on {self._where()} could not be renewed in time")
                    break
                self._seq += 1
                seq = self._seq
                etag = self._etag
                assert etag is not None  # held: set when the lease was won
                body = self._encode(seq)
            started = self._clock()
            self._attempt_starts[seq] = started
            try:
                new_etag = self.store.put(self.key, body, mode=PutMode.replace(etag), metadata=self._metadata(seq))
            except (PreconditionFailed, ObjectNotFound) as exc:
                if self._recovered_own_write():
                    wait = self.renew_interval
                    continue
                with self._mu:
                    if stop.is_set():
                        return  # released concurrently: not a loss
                    self._set_lost_locked(f"lease on {self._where()} was taken over or deleted ({exc})")
                break
            except Exception as exc:  # transient or not, keep trying until the deadline
                log.warning("renewing lock %s failed: %s", self._where(), exc)
                wait = min(self.renew_interval / 2, 1.0)
                continue
            with self._mu:
                if self._lost_reason is None and self._held:
                    self._etag = new_etag
                    self._deadline = started + self.lease_duration - self.safety_margin
                    self._attempt_starts.clear()
            wait = self.renew_interval
        self._notify_lost()

    def _recovered_own_write(self) -> bool:
        """After a refused renewal: is the current LOCK one of our own timed-out writes?"""
        try:
            current = self._read_current()
        except StoreError:
            return False
        if current is None or not self._is_ours(current[1]):
            return False
        started = self._attempt_start(current[1])
        if started is None:
            return False
        with self._mu:
            if self._lost_reason is not None:
                return False
            self._etag = current[0]
            self._deadline = started + self.lease_duration - self.safety_margin
            self._attempt_starts.clear()
        return True

    def _set_lost_locked(self, reason: str) -> str:
        if self._lost_reason is None:
            self._lost_reason = reason
            log.error("%s; this writer must stop writing", reason)
        return self._lost_reason

    def _notify_lost(self) -> None:
        with self._mu:
            if self._lost_reason is None or self._lost_notified:
                return
            self._lost_notified = True
            reason = self._lost_reason
        if self.on_lost is not None:
            try:
                self.on_lost(reason)
            except Exception:
                log.exception("on_lost callback failed")

    def _stop_renewal(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # A renewal stuck in a hung request must not block close forever.
            thread.join(timeout=self.lease_duration)
        self._thread = None

    # -------------------------------------------------------------- release
    def release(self) -> None:
        """Stop renewing and delete LOCK if it is still ours.  Idempotent."""
        self._stop_renewal()
        with self._mu:
            if not self._held:
                return
            etag = self._etag
            self._held = False
            self._etag = None
            if self._lost_reason is None:
                self._lost_reason = f"lock {self._where()} was released"
                self._lost_notified = True  # a release is not a loss
        try:
            self.store.delete(self.key, if_match=etag)
        except (PreconditionFailed, ObjectNotFound):
            log.info("lock %s is owned by someone else now; left in place", self._where())
        except StoreError as exc:
            # It expires on its own after lease_duration.
            log.warning("could not delete lock %s: %s", self._where(), exc)
        else:
            log.info("released lock %s", self._where())

    def __enter__(self) -> "LeaseLock":
        with self._mu:
            held = self._held and self._lost_reason is None
        if not held:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.valid else "not held"
        return f"<LeaseLock {self._where()} {state} writer={self.writer_id}>"

    # -------------------------------------------------------------- helpers
    def _where(self) -> str:
        url = getattr(self.store, "url", None)
        return f"{url}/{self.key}" if url else self.key

    def _body_dict(self, seq: int) -> dict:
        body: dict[str, Any] = dict(self._owner_info)
        body.update(liveness.identity())  # host, pid and what tells a same-host contender it exited
        body.update(
            writer=self.writer_id,
            since=self._since,
            lease_duration=self.lease_duration,
            renewals=seq,
            renewed_at=_wall_clock_iso(),
        )
        return body

    def _encode(self, seq: int) -> bytes:
        return json.dumps(self._body_dict(seq), sort_keys=True).encode("utf-8")

    def _metadata(self, seq: int) -> dict[str, str]:
        return {WRITER_METADATA_KEY: self.writer_id, SEQ_METADATA_KEY: str(seq)}


def database_lease(store: ObjectStore, options: "StoreOptions", *, wait: float | None = None) -> LeaseLock:
    """The lease on a database's LOCK, timed by its StoreOptions (``wait`` overrides lock_timeout)."""
    return LeaseLock(store, key=LOCK_KEY, lease_duration=options.lease_duration, lease_renewal=options.lease_renewal,
                     lock_timeout=options.lock_timeout if wait is None else wait)
