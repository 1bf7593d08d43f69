# cython: language_level=3
"""The Env's callbacks: how C++ (the object-store Env, the comparator) calls into Python.

Each function here is called by C++ through a function pointer, from the
thread LevelDB runs it on (a caller's thread, or LevelDB's compaction thread
while another thread waits in LevelDB); it takes the GIL for the call only,
calls one method of the control path (levels3.engine.control.EnvControl) and
lets no exception escape: a failure becomes a callback result plus a message
that starts with the token under which ``control.failures`` keeps the
exception (see csrc/object_env.h for the table and its contract). The control
path object is borrowed here; the bridge's _Handle owns it. May call the
control path and levels3.errors only.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.stdio cimport fflush, fwrite, stderr
from libc.string cimport memcpy
from libc.stdlib cimport abort
from libcpp.string cimport string
from libcpp.vector cimport vector

cimport levels3._leveldb as ldb

import logging
import sys
import traceback

from levels3.errors import CorruptionError, ObjectNotFound
from levels3.leveldb_options import comparison_result

_leveldb_log = logging.getLogger("levels3.leveldb")


# Each runs with the GIL taken for it, possibly on LevelDB's compaction thread
# while another thread waits in LevelDB; none may let an exception escape.

cdef int _failure(object control, object exc, string* error) noexcept:
    try:
        error[0] = control.failures.note(exc).encode("utf-8", "replace")
        if isinstance(exc, (ObjectNotFound, FileNotFoundError)):
            return ldb.kNotFound
        if isinstance(exc, CorruptionError):
            return ldb.kCorruption
    except BaseException:
        error[0] = b"the levels3 control path failed (and its exception could not be described)"
    return ldb.kIOError


cdef int _cb_open_read(void* control, const string& name, string* local_path,
                       string* error) noexcept with gil:
    try:
        local_path[0] = (<object>control).open_read(name.decode()).encode()
        return ldb.kOk
    except BaseException as exc:
        return _failure(<object>control, exc, error)


cdef void _cb_release_read(void* control, const string& name) noexcept with gil:
    try:
        (<object>control).release_read(name.decode())
    except BaseException:
        _leveldb_log.exception("releasing %s failed", name.decode())


cdef int _cb_create(void* control, const string& name, string* local_path,
                    string* error) noexcept with gil:
    try:
        local_path[0] = (<object>control).create(name.decode()).encode()
        return ldb.kOk
    except BaseException as exc:
        return _failure(<object>control, exc, error)


cdef int _cb_persist(void* control, const string& name, uint64_t size, int final,
                     string* error) noexcept with gil:
    try:
        (<object>control).persist(name.decode(), size, bool(final))
        return ldb.kOk
    except BaseException as exc:
        return _failure(<object>control, exc, error)


cdef int _cb_remove(void* control, const string& name, string* error) noexcept with gil:
    try:
        (<object>control).remove(name.decode())
        return ldb.kOk
    except BaseException as exc:
        return _failure(<object>control, exc, error)


cdef int _cb_rename(void* control, const string& src, const string& dst,
                    string* error) noexcept with gil:
    try:
        (<object>control).rename(src.decode(), dst.decode())
        return ldb.kOk
    except BaseException as exc:
        return _failure(<object>control, exc, error)


cdef int _cb_list(void* control, const string& directory, vector[string]* names,
                  string* error) noexcept with gil:
    try:
        for name in (<object>control).list(directory.decode()):
            names.push_back(name.encode())
        return ldb.kOk
    except BaseException as exc:
        return _failure(<object>control, exc, error)


cdef int _cb_size(void* control, const string& name, uint64_t* size,
                  string* error) noexcept with gil:
    try:
        size[0] = (<object>control).size(name.decode())
        return ldb.kOk
    except BaseException as exc:
        return _failure(<object>control, exc, error)


cdef int _cb_lock(void* control, string* error) noexcept with gil:
    try:
        (<object>control).lock()
        return ldb.kOk
    except BaseException as exc:
        return _failure(<object>control, exc, error)


cdef int _cb_unlock(void* control, string* error) noexcept with gil:
    try:
        (<object>control).unlock()
        return ldb.kOk
    except BaseException as exc:
        return _failure(<object>control, exc, error)


cdef void _cb_log(void* control, const char* line, size_t length) noexcept with gil:
    try:
        _leveldb_log.debug("%s", line[:length].decode("utf-8", "replace"))
    except BaseException:
        pass


cdef int _cb_describe_table(void* control, const string& name, int adopting, uint64_t* size,
                            string* fingerprint, string* object_key, string* error) noexcept with gil:
    # The page cache (csrc/paged_env.h) asks whether a table is read in pages.
    try:
        described = (<object>control).pages.describe(name.decode(), bool(adopting))
        if described is None:
            return ldb.kNotFound  # read whole
        table_size, table_fingerprint, key = described
        size[0] = table_size
        fingerprint[0] = table_fingerprint.encode()
        object_key[0] = key.encode()
        return ldb.kOk
    except BaseException as exc:
        code = _failure(<object>control, exc, error)
        return ldb.kIOError if code == ldb.kNotFound else code  # NotFound means "read it whole"


cdef int _cb_fetch_range(void* control, const string& name, uint64_t offset, uint64_t length,
                         char* buffer, string* error) noexcept with gil:
    # A page cache miss: one ranged GET, copied into the C++ buffer.
    try:
        data = (<object>control).pages.fetch(name.decode(), offset, length)
        if type(data) is not bytes or <uint64_t>PyBytes_GET_SIZE(data) != length:
            raise CorruptionError(f"{name.decode()}: a fetch of {length} bytes returned {len(data)}")
        memcpy(buffer, PyBytes_AS_STRING(data), length)
        return ldb.kOk
    except BaseException as exc:
        return _failure(<object>control, exc, error)


cdef ldb.BackendCallbacks make_callbacks(object control) noexcept:
    cdef ldb.BackendCallbacks cb
    cb.backend = <void*>control  # borrowed: the _Handle holding the Env owns the reference
    cb.open_read = _cb_open_read
    cb.release_read = _cb_release_read
    cb.create = _cb_create
    cb.persist = _cb_persist
    cb.remove = _cb_remove
    cb.rename = _cb_rename
    cb.list = _cb_list
    cb.size = _cb_size
    cb.lock = _cb_lock
    cb.unlock = _cb_unlock
    cb.log = _cb_log
    cb.describe_table = _cb_describe_table
    cb.fetch_range = _cb_fetch_range
    return cb


cdef int compare_keys(void* state, const char* a, size_t a_len, const char* b,
                     size_t b_len) noexcept with gil:
    # ``state`` is the (callable, comparator_name) tuple the bridge's _Handle owns.
    # LevelDB cannot be told that a comparison failed; carrying on with a wrong
    # order would corrupt the database, so (like plyvel) abort, after saying why.
    cdef tuple comparator = <tuple>state
    key_a = a[:a_len]
    key_b = b[:b_len]
    try:
        result = comparator[0](key_a, key_b)
        if type(result) is not int:
            result = comparison_result(result)  # raises TypeError for anything but an int
        if result < 0:
            return -1
        return 1 if result > 0 else 0
    except BaseException as exc:
        _abort_for(comparator, key_a, key_b, exc)
        return 0  # not reached


def _shorten(text, limit=80):
    return text if len(text) <= limit else text[:limit - 3] + "..."


cdef void _abort_for(tuple comparator, bytes a, bytes b, BaseException exc) noexcept:
    """Print which comparator failed on which keys, and why; then abort the process."""
    cdef bytes lines = b"levels3: the custom comparator failed; aborting to protect the database\n"
    try:
        fn, name = comparator
        message = (
            f"levels3: comparator {name!r} ({_shorten(repr(fn), 200)}) failed comparing "
            f"{_shorten(repr(a))} with {_shorten(repr(b))}:\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            + "levels3: LevelDB cannot go on without knowing the order of these keys, and going on "
              "with a wrong one would corrupt the database: the process aborts. A comparator must "
              "return a negative, zero or positive int for any two keys, and never raise.\n")
        lines = message.encode("utf-8", "replace")
        # Python's sys.stderr may hold buffered output of the program's: it goes first.
        sys.stderr.flush()
    except BaseException:
        pass
    fwrite(<const char*>lines, 1, len(lines), stderr)
    fflush(stderr)
    abort()
