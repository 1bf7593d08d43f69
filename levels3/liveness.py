"""Whether a process that recorded who it was is provably gone: the same-host rule.

A process records ``identity()``: its hostname, the kernel's boot id, its pid
namespace, its pid and its start time (clock ticks since boot). Another process
may later conclude from that record that the first one has *certainly* exited,
without waiting for a lease to run out, only when all of this holds:

* the same hostname, boot id and pid namespace as its own: a pid means the same
  process only within one namespace of one boot (containers on one host can
  share a hostname and still not see each other's pids);
* this process's ``/proc`` is of its own pid namespace (``/proc/self`` is its pid);
* the recorded pid no longer exists, or it is a zombie (it has exited, only its
  parent has not reaped it), or it belongs to a process with another start time
  (the pid was reused).

Anything it cannot read or compare (another system, a ``/proc`` hiding other
users' processes) means "not provably gone". Linux only; elsewhere nothing is
ever provably gone. Imports only the standard library.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping

#: The keys identity() records (besides ``host`` and ``pid``).
BOOT_ID = "boot_id"
PID_NAMESPACE = "pid_namespace"
STARTED = "started"

_cache: tuple[int, dict[str, Any]] | None = None  # (pid, identity): a forked child is another process


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3, the state, first)."""
    text = _read(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    return text[text.rindex(")") + 1:].split()


def _start_time(fields: list[str] | None) -> int | None:
    try:
        return int(fields[19]) if fields else None  # field 22 of stat(5)
    except (IndexError, ValueError):
        return None


def _own_namespace() -> str | None:
    """This process's pid namespace, if /proc is mounted for it (else pids there are another namespace's)."""
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return None
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def identity() -> dict[str, Any]:
    """Who this process is: host and pid, plus (on Linux) boot id, pid namespace and start time."""
    global _cache
    pid = os.getpid()
    if _cache is None or _cache[0] != pid:
        found: dict[str, Any] = {"host": socket.gethostname(), "pid": pid}
        boot_id, namespace = _read("/proc/sys/kernel/random/boot_id"), _own_namespace()
        started = _start_time(_stat_fields("self"))
        if boot_id and namespace and started is not None:
            found.update({BOOT_ID: boot_id, PID_NAMESPACE: namespace, STARTED: started})
        _cache = (pid, found)
    return dict(_cache[1])


def same_pid_space(recorded: Mapping[str, Any] | None) -> bool:
    """Whether ``recorded`` comes from this host, this boot and this pid namespace."""
    if not recorded:
        return False
    mine = identity()
    return (BOOT_ID in mine and all(recorded.get(k) == mine[k] for k in ("host", BOOT_ID, PID_NAMESPACE))
            and _own_namespace() == mine[PID_NAMESPACE])


def provably_gone(recorded: Mapping[str, Any] | None) -> bool:
    """True only when the process ``recorded`` describes has certainly exited (see the module docstring)."""
    if not same_pid_space(recorded):
        return False
    assert recorded is not None
    pid, started = recorded.get("pid"), recorded.get(STARTED)
    if type(pid) is not int or pid <= 0 or type(started) is not int:
        return False
    try:
        os.kill(pid, 0)  # unlike /proc, not hidden by hidepid: another user's process answers EPERM
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    except OSError:
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return False  # it exists, and /proc does not show it: cannot tell
    if fields[0] in ("Z", "X"):
        return True  # exited; only its parent has not reaped it yet
    now_started = _start_time(fields)
    return now_started is not None and now_started != started
