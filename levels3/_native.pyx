# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""The native bridge: bindings from Python to C++ LevelDB running on the object-store Env.

Owns the C++ objects of an open database (_Handle) and the hot API methods
(NativeDB.get/put/delete, write batches, iterators, snapshots), which stay C
methods with no Python layer around them. The other direction, C++ calling
Python (the Env's callbacks into levels3.engine.control, the comparator), is
levels3/_callbacks.pyx. Policy lives in Python:
levels3.database defines the public DB on top of NativeDB (opening, the
follower's retry, the flush and refresh threads, refresh itself).

Every LevelDB call runs without the GIL (a write stall waits for the
compaction thread, which needs the GIL for its Env callbacks). A callback's
exception reaches LevelDB as a Status carrying the token under which the
control path keeps it; the call whose Status reports it raises
``control.error_for(...)``, chained to it. Reference ownership: a _Handle owns a reference to its control path, and
the C++ Env borrows it (as a void*) for exactly as long as the _Handle lives.

Threads and close(): every use of LevelDB is a call on the handle's
LiveDatabase (csrc/live_database.h): begun before, ended before any Python code
of ours runs again. close() refuses new calls (RuntimeError), waits without the
GIL for those in flight, then frees the iterators and snapshots still alive,
then LevelDB: nothing is freed under a call. After os.fork() the child's copies
refuse every call with an error naming the opening process and are never freed
(the child must not call into the parent's LevelDB, not even to free it).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.ref cimport Py_INCREF
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from libcpp.memory cimport unique_ptr
from libcpp.string cimport string
from libcpp.vector cimport vector

cimport levels3._leveldb as ldb
from levels3._callbacks cimport compare_keys, make_callbacks
from levels3._leveldb cimport Slice, Status

import logging
import os
import weakref

from levels3.engine.sizing import ENTRY_OVERHEAD
from levels3.errors import (
    CorruptionError,
    Error,
    IOError,
    IteratorInvalidError,
    LeaseLostError,
    ReadOnlyError,
)

__leveldb_version__ = f"{ldb.kMajorVersion}.{ldb.kMinorVersion}"

_leveldb_log = logging.getLogger("levels3.leveldb")

# A write's weight against its database's max_write_bytes (engine.sizing.write_weight):
# the batch's bytes, its keys once more, ENTRY_OVERHEAD per entry; a put's batch adds
# a header and two varints to its key and value.
cdef size_t _ENTRY_WEIGHT = ENTRY_OVERHEAD
cdef size_t _PUT_BATCH_OVERHEAD = 12 + 1 + 10


# ---------------------------------------------------------------------------
# Status and argument helpers
# ---------------------------------------------------------------------------

cdef int raise_for_status(const Status& st, object control) except -1:
    if st.ok():
        return 0
    status_class = CorruptionError if st.IsCorruption() else IOError if st.IsIOError() else Error
    raise control.error_for(status_class, st.ToString().decode("utf-8", "replace"))


cdef inline Slice to_slice(object data, str what="key") except *:
    if not isinstance(data, bytes):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    return Slice(PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))


cdef class _Value:
    """A value as a Slice: bytes directly, any other buffer (bytearray,
    memoryview ...) held through the buffer protocol, as plyvel accepts."""
    cdef Py_buffer view
    cdef bint held
    cdef Slice slice

    cdef int set(self, object value) except -1:
        if type(value) is bytes:
            self.slice = Slice(PyBytes_AS_STRING(value), <size_t>PyBytes_GET_SIZE(value))
            return 0
        if value is None:
            raise TypeError("value must be a bytes-like object, not None")
        PyObject_GetBuffer(value, &self.view, PyBUF_SIMPLE)
        self.held = True
        self.slice = Slice(<const char*>self.view.buf, <size_t>self.view.len)
        return 0

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)


cdef inline bytes slice_to_bytes(Slice s, size_t skip=0):
    return PyBytes_FromStringAndSize(s.data() + skip, s.size() - skip)


cdef bytes successor(bytes prefix):
    """The smallest key greater than every key starting with prefix (bytewise)."""
    # (wraparound is off in this module: no negative indexes)
    cdef bytearray b = bytearray(prefix)
    cdef Py_ssize_t last = len(b) - 1
    while last >= 0:
        if b[last] != 0xFF:
            b[last] += 1
            return bytes(b[:last + 1])
        last -= 1
    return None


include "_pages.pxi"


def stop_callbacks():
    """From now on the Env calls no Python (the interpreter is finalising: a LevelDB
    thread asking for the GIL would be killed and hang the process)."""
    ldb.g_interpreter_exiting.store(True)


# ---------------------------------------------------------------------------
# The native handle: LevelDB + Env + owned C++ objects
# ---------------------------------------------------------------------------

# Not tracked by the garbage collector. The Env's callbacks borrow `control`, so it
# must outlive LevelDB; a tracked handle that became garbage together with a cycle
# (an exception's traceback holding a frame that held the handle) could have its
# control cleared by the collector first, and freeing LevelDB then called into a
# half-destroyed object (a segfault, seen in follower refreshes under faults).
# Untracked, the handle's reference counts as external: its control is never
# collected before it, and the handle goes when its last referrer does. Nothing it
# references refers back to it, so it cannot be part of a cycle itself.
@cython.final
@cython.no_gc
cdef class _Handle:
    """Owns the C++ objects behind one open database and frees them in order."""
    # Declared in the order free() releases them: LevelDB's own objects first
    # (deleting the DB uploads its WAL and MANIFEST tails through the Env), then
    # what it used.
    cdef ldb.LiveDatabase* live  # the DB, its group commit, iterators, snapshots, calls in flight; never NULL
    cdef unique_ptr[ldb.Env] env
    cdef unique_ptr[ldb.Comparator] comparator
    cdef unique_ptr[ldb.FilterPolicy] filter_policy
    cdef unique_ptr[ldb.Cache] block_cache
    cdef const ldb.Comparator* order  # the one LevelDB uses (custom or bytewise); borrowed
    cdef object control  # owned: the Env's callbacks borrow it
    cdef tuple comparator_state  # owned: (callable, comparator_name), the comparator's callback borrows it
    cdef bint retired  # replaced by a follower's refresh(): closes its control path when freed
    cdef bint closing
    cdef object opened_by  # the pid of the process that opened it
    cdef object warming  # a cold open's tail prefetch while it runs (engine/pages.py): told of each get
    cdef str url
    cdef object __weakref__

    def __cinit__(self):
        self.order = ldb.BytewiseComparator()
        self.live = new ldb.LiveDatabase()

    cdef int configure(self, ldb.Options* opts, object control, object config) except -1:
        """Fill ``opts`` from a validated levels3.leveldb_options.LevelDBOptions."""
        self.control = control
        self.url = control.location.url
        opts.reuse_logs = False
        opts.create_if_missing = config.create_if_missing
        opts.error_if_exists = config.error_if_exists
        if config.paranoid_checks is not None:
            opts.paranoid_checks = config.paranoid_checks
        if config.write_buffer_size is not None:
            opts.write_buffer_size = config.write_buffer_size
        if config.max_open_files is not None:
            opts.max_open_files = config.max_open_files
        if config.lru_cache_size is not None:
            self.block_cache.reset(ldb.NewLRUCache(config.lru_cache_size))
            opts.block_cache = self.block_cache.get()
        if config.block_size is not None:
            opts.block_size = config.block_size
        if config.block_restart_interval is not None:
            opts.block_restart_interval = config.block_restart_interval
        if config.max_file_size is not None:
            opts.max_file_size = config.max_file_size
        opts.compression = ldb.kNoCompression if config.compression is None else ldb.kSnappyCompression
        if config.bloom_filter_bits:
            self.filter_policy.reset(<ldb.FilterPolicy*>ldb.NewBloomFilterPolicy(config.bloom_filter_bits))
            opts.filter_policy = self.filter_policy.get()
        if config.comparator is not None:
            self.comparator_state = (config.comparator, config.comparator_name)
            self.comparator.reset(<ldb.Comparator*>new ldb.CallbackComparator(
                config.comparator_name, <void*>self.comparator_state, compare_keys))
            self.order = self.comparator.get()
            opts.comparator = self.order
        self.env.reset(new_env(control, opts[0]))  # last: a paged Env sizes its reserve from opts
        opts.env = self.env.get()
        return 0

    # -- calls: every use of LevelDB is one ------------------------------------------

    cdef inline int begin(self) except -1:
        """Begin a call (raises when the handle refuses them); end it with
        ``self.live.Leave()`` before any code that could raise or run Python."""
        if not self.live.Enter():
            self.refuse()
        return 0

    cdef inline int check_open(self) except -1:
        """Raise as begin() would, without beginning a call."""
        if self.live.refused():
            self.refuse()
        return 0

    cdef int refuse(self) except -1:
        if self.live.inherited():
            raise Error(f"{self.url} was opened in process {self.opened_by}, and this is process "
                        f"{os.getpid()}: a database handle does not survive os.fork(); open the "
                        f"database again after fork, in the process that uses it")
        raise RuntimeError("Database is closed")

    # -- closing ------------------------------------------------------------------

    cdef void free(self) noexcept nogil:
        self.live.Free()
        self.env.reset()
        self.comparator.reset()
        self.filter_policy.reset()
        self.block_cache.reset()

    cdef bint wants_flush(self):
        try:
            return self.control.flush_at_close()
        except BaseException:  # deciding must not stop the close: LevelDB still has to be freed
            _leveldb_log.exception("deciding whether to flush %s at close failed", self.url)
            return False

    cdef void flush_memtable(self) noexcept:
        """Write LevelDB's memtable to a table. LevelDB's one public way is CompactRange, which
        flushes the memtable and then compacts the tables that overlap the range: given the
        inverted range [b"\\x00", b""], only a table spanning from the empty key onwards does
        (bytewise order; the caller skips custom comparators). A failure is LevelDB's
        background error: the WAL still holds every write, and its tail is uploaded at close."""
        cdef Slice after_empty = Slice(b"\x00", 1)
        cdef Slice empty = Slice(b"", 0)
        with nogil:
            self.live.db().CompactRange(&after_empty, &empty)

    def close(self):
        """Refuse new calls, wait for those in flight (without the GIL), free the iterators,
        snapshots and LevelDB (its WAL and MANIFEST upload their tails), then close the control
        path. Must not be called from inside a call of this handle (levels3.DB.close sees to it)."""
        if self.control is None or self.closing:
            return
        if self.live.inherited():
            self.refuse()
        self.closing = True
        with nogil:
            self.live.StopCalls()
        if self.comparator.get() == NULL and self.live.db() != NULL and self.wants_flush():
            self.flush_memtable()
        self.control.begin_close()
        with nogil:
            self.free()
        control, self.control = self.control, None
        control.close()

    def __dealloc__(self):
        if self.live.inherited():
            # The parent's: never freed, not even its Python side (see the module docstring).
            for owned in (self.control, self.comparator_state):
                Py_INCREF(owned)
            self.env.release()
            self.comparator.release()
            self.filter_policy.release()
            self.block_cache.release()
            return
        if self.retired and self.control is not None:
            try:
                self.close()
            except BaseException:
                _leveldb_log.exception("closing a refreshed-away generation failed")
        with nogil:
            self.free()
        del self.live


# Every _Handle with a LevelDB open, for the fork hook.
_open_handles = weakref.WeakSet()


def _refuse_inherited_handles():
    """os.fork()'s hook in the child: every handle inherited from the parent refuses all use."""
    for handle in list(_open_handles):
        (<_Handle>handle).live.RefuseInherited()


os.register_at_fork(after_in_child=_refuse_inherited_handles)


def calls_in_flight_on_this_thread():
    """How many calls into LevelDB (and comparator callbacks) the calling thread is inside."""
    return ldb.CallsOnThisThread()


def open_handle(object control, object config):
    """DB::Open on the control path's cache directory; raises on failure."""
    cdef _Handle handle = _Handle()
    cdef ldb.Options opts
    cdef Status st
    cdef ldb.DB* db = NULL
    cdef string path = control.local_dir.encode()
    handle.configure(&opts, control, control.leveldb_options(config))
    with nogil:
        st = ldb.DB_Open(opts, path, &db)
    if not st.ok():
        with nogil:
            handle.free()
        raise_for_status(st, control)
    handle.live.Adopt(db)
    pc.AttachDatabase(handle.env.get(), db, handle.comparator.get() == NULL)  # compactions guess their next input
    handle.opened_by = os.getpid()
    _open_handles.add(handle)
    control.finish_open()
    if control.pages is not None:
        handle.warming = control.pages.prefetch
    return handle


def run_maintenance(object control, object config, *, bint repair):
    """leveldb::DestroyDB (or RepairDB) through the control path's Env."""
    cdef _Handle handle = _Handle()
    cdef ldb.Options opts
    cdef Status st
    cdef string path = control.local_dir.encode()
    handle.configure(&opts, control, control.leveldb_options(config))
    with nogil:
        st = ldb.RepairDB(path, opts) if repair else ldb.DestroyDB(path, opts)
        handle.free()
    raise_for_status(st, control)


cdef inline double _monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline Status _lookup(_Handle h, const ldb.Snapshot* snapshot, Slice key, string* value,
                           bint verify_checksums, bint fill_cache):
    """One Get without the GIL. The caller has begun a call on ``h``; this ends it."""
    cdef ldb.ReadOptions ro
    cdef Status st
    cdef object warming = h.warming
    ro.verify_checksums = verify_checksums
    ro.fill_cache = fill_cache
    ro.snapshot = snapshot
    if warming is not None:
        try:
            if not _tell_warming(h, warming, key):
                warming = None
        except BaseException:  # a MemoryError, a KeyboardInterrupt: the call ends here
            h.live.Leave()
            raise
    with nogil:
        st = h.live.db().Get(ro, key, value)
        h.live.Leave()
    if warming is not None:
        warming.read_done()  # raises no Exception
    return st


cdef bint _tell_warming(_Handle h, object warming, Slice key):
    """Tell the tail prefetch of a cold open that a get of ``key`` starts, so that its own tables'
    tails go first; False once the prefetch no longer wants to know (the handle then forgets it).
    Under a custom comparator the prefetch cannot order keys: it is told only that a get runs."""
    if warming.reading(PyBytes_FromStringAndSize(key.data(), key.size()) if h.comparator.get() == NULL else None):
        return True
    h.warming = None
    return False


cdef object _get(_Handle h, const ldb.Snapshot* snapshot, Slice key, object default,
                 bint verify_checksums, bint fill_cache):
    """DB.get and Snapshot.get: the value under key, or default. The caller has begun
    a call on ``h``; this ends it."""
    cdef string value
    cdef Status st = _lookup(h, snapshot, key, &value, verify_checksums, fill_cache)
    if st.IsNotFound():
        return default
    raise_for_status(st, h.control)
    return PyBytes_FromStringAndSize(value.data(), value.size())


cdef bint _has(_Handle h, const ldb.Snapshot* snapshot, Slice key) except -1:
    """`key in db` and `key in snapshot`: a lookup (plyvel 1.5.1 iterates pairs instead),
    with LevelDB's default read options. The caller has begun a call on ``h``; this ends it."""
    cdef string value
    cdef Status st = _lookup(h, snapshot, key, &value, False, True)
    if st.IsNotFound():
        return False
    raise_for_status(st, h.control)
    return True


# ---------------------------------------------------------------------------
# NativeDB: the C core of levels3.DB
# ---------------------------------------------------------------------------

cdef class NativeDB:
    """The native core of :class:`levels3.DB` (which opens it): the data calls on one handle.

    Any number of threads may use it at once. close() waits for the calls in
    flight to finish; every call that starts after it began raises
    RuntimeError, and so does every later use of an iterator or snapshot.
    """
    cdef _Handle _h
    cdef object _retired  # handles a follower's refresh() replaced, alive while their iterators are
    cdef readonly bint read_only
    cdef object __weakref__
    # A writer's every write checks its lease: in C while the lease's deadline (as
    # last read) is ahead and no loss was signalled, else through lease.check().
    cdef object _lease
    cdef bint _has_lease
    cdef bint _lease_lost
    cdef double _lease_valid_until  # time.monotonic() seconds
    cdef size_t _max_write  # the heaviest single write accepted (the control path's max_write_bytes)

    def __cinit__(self):
        self._retired = weakref.WeakSet()

    # -- the handle, as levels3.DB manages it -------------------------------

    def _attach(self, _Handle handle not None, bint read_only, lease=None):
        """Use ``handle``; with a lease, check it before every write (_flag_lease_lost flags a loss)."""
        if self._h is not None:
            raise RuntimeError("DB.__init__ called twice")
        self._h = handle
        self.read_only = read_only
        limit = handle.control.max_write_bytes
        self._max_write = <size_t>-1 if limit is None else limit
        if lease is not None:
            self._lease = lease
            self._has_lease = True
            self._note_lease_deadline()

    def _flag_lease_lost(self):
        self._lease_lost = True

    def _swap_handle(self, _Handle new not None):
        """A follower's refresh: later calls use ``new``; the old handle is freed (and its
        control path closed) once the iterators and snapshots made from it are gone, or
        by close()."""
        cdef _Handle old = self._h
        self._h = new
        old.retired = True
        self._retired.add(old)

    def _check_process(self):
        """Raise if this process did not open the database (a forked child)."""
        if self._h is not None and self._h.live.inherited():
            self._h.refuse()

    @property
    def _inherited_from(self):
        """The pid of the process that opened the database, when this process inherited it
        through fork (and so cannot use it); else None."""
        if self._h is not None and self._h.live.inherited():
            return self._h.opened_by
        return None

    def _refuse_calls(self):
        """From now on every call raises RuntimeError; those in flight go on (see close)."""
        if self._h is not None:
            self._h.live.Refuse()

    def _close_handle(self):
        """Wait for the calls in flight, then free the iterators, snapshots and LevelDB of
        every generation, then close their control paths. From a forked child: raises."""
        cdef _Handle handle = self._h
        if handle is None:
            return
        if handle.live.inherited():
            handle.refuse()
        handles = [handle, *self._retired]
        self._h = None
        self._retired = weakref.WeakSet()
        error = None
        for each in handles:
            try:
                each.close()
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error

    cdef inline int _check_writable(self) except -1:
        if self.read_only:
            raise ReadOnlyError(f"{getattr(self, 'name', None)!r} was opened read_only: writes go through its single writer")
        if self._has_lease and (self._lease_lost or _monotonic() >= self._lease_valid_until):
            self._note_lease_deadline()  # raises LeaseLostError
        return 0

    cdef int _refuse_heavy_write(self, size_t weight) except -1:
        """Raise the control path's error for a write above max_write_bytes (engine.sizing)."""
        self._h.control.refuse_write(weight)
        raise AssertionError("refuse_write returned")  # pragma: no cover

    cdef int _note_lease_deadline(self) except -1:
        lease = self._lease
        lease.check()
        # The lease's clock is its own (injectable); keep only the time left, on ours.
        self._lease_valid_until = _monotonic() + (lease.deadline - lease.clock())

    cdef inline _Handle _open_handle(self):
        """The open handle (raises if closed, or inherited through fork), no call begun.
        Callers keep it referenced while they use it, so a follower's refresh() can
        swap in a new one without freeing it under them."""
        cdef _Handle h = self._h
        if h is None:
            raise RuntimeError("Database is closed")
        h.check_open()
        return h

    cdef inline _Handle _begin(self):
        """The open handle with a call begun on it (see _Handle.begin)."""
        cdef _Handle h = self._h
        if h is None:
            raise RuntimeError("Database is closed")
        h.begin()
        return h

    # -- hot path --------------------------------------------------------

    def get(self, key, default=None, *, verify_checksums=False, fill_cache=True):
        """Value stored under key, or default."""
        cdef Slice k = to_slice(key)
        cdef _Handle h = self._h  # (spelled out, not _begin(): this is the hot path)
        if h is None:
            raise RuntimeError("Database is closed")
        h.begin()
        return _get(h, NULL, k, default, verify_checksums, fill_cache)

    def __contains__(self, key):
        cdef Slice k = to_slice(key)
        cdef _Handle h = self._h
        if h is None:
            raise RuntimeError("Database is closed")
        h.begin()
        return _has(h, NULL, k)

    def put(self, key, value, *, sync=False):
        """Store value under key; with sync=True it is in the store on return."""
        cdef ldb.WriteOptions wo
        cdef ldb.WriteBatch batch
        cdef Status st
        cdef Slice k = to_slice(key)
        cdef Slice v
        cdef _Value holder
        if type(value) is bytes:
            v = Slice(PyBytes_AS_STRING(value), <size_t>PyBytes_GET_SIZE(value))
        else:
            holder = _Value()
            holder.set(value)
            v = holder.slice
        cdef _Handle h = self._open_handle()
        self._check_writable()
        if 2 * k.size() + v.size() + _PUT_BATCH_OVERHEAD + _ENTRY_WEIGHT > self._max_write:
            self._refuse_heavy_write(2 * k.size() + v.size() + _PUT_BATCH_OVERHEAD + _ENTRY_WEIGHT)
        if sync:
            batch.Put(k, v)
            h.begin()
            with nogil:
                st = h.live.synced().Write(&batch)
                h.live.Leave()
        else:
            h.begin()
            with nogil:
                st = h.live.db().Put(wo, k, v)
                h.live.Leave()
        raise_for_status(st, h.control)

    def delete(self, key, *, sync=False):
        """Remove key (no error if it is absent)."""
        cdef ldb.WriteOptions wo
        cdef ldb.WriteBatch batch
        cdef Status st
        cdef Slice k = to_slice(key)
        cdef _Handle h = self._open_handle()
        self._check_writable()
        if 2 * k.size() + _PUT_BATCH_OVERHEAD + _ENTRY_WEIGHT > self._max_write:
            self._refuse_heavy_write(2 * k.size() + _PUT_BATCH_OVERHEAD + _ENTRY_WEIGHT)
        if sync:
            batch.Delete(k)
            h.begin()
            with nogil:
                st = h.live.synced().Write(&batch)
                h.live.Leave()
        else:
            h.begin()
            with nogil:
                st = h.live.db().Delete(wo, k)
                h.live.Leave()
        raise_for_status(st, h.control)

    # -- the rest of the data API ------------------------------------------

    def sync(self):
        """Make every write so far durable in the store (like a synced empty write)."""
        cdef _Handle h = self._open_handle()
        self._check_writable()
        cdef ldb.WriteBatch empty
        cdef Status st
        h.begin()
        with nogil:
            st = h.live.synced().Write(&empty)
            h.live.Leave()
        raise_for_status(st, h.control)

    def write_batch(self, *, transaction=False, sync=False):
        """A WriteBatch; as a context manager it writes on exit."""
        self._open_handle()
        return WriteBatch._new(self, b"", transaction, sync)

    def iterator(self, *, reverse=False, start=None, stop=None, include_start=True,
                 include_stop=False, prefix=None, include_key=True, include_value=True,
                 verify_checksums=False, fill_cache=True):
        """An iterator over a key range (plyvel semantics)."""
        self._open_handle()
        return Iterator._new(self, None, b"", reverse, start, stop, include_start, include_stop,
                             prefix, include_key, include_value, verify_checksums, fill_cache)

    def raw_iterator(self, *, verify_checksums=False, fill_cache=True):
        """A thin wrapper around leveldb::Iterator."""
        self._open_handle()
        return RawIterator._new(self, None, verify_checksums, fill_cache)

    def __iter__(self):
        return self.iterator()

    def snapshot(self):
        """A consistent read-only view of the database at this moment."""
        return Snapshot._new(self, b"")

    def prefixed_db(self, bytes prefix not None):
        """A view of the keys starting with prefix, with the prefix stripped.

        Like plyvel, this works on a closed database too; using the view then
        raises RuntimeError.
        """
        return PrefixedDB._new(self, prefix)

    def get_property(self, name):
        """A LevelDB property such as b'leveldb.stats', or None."""
        cdef Slice n = to_slice(name, "property name")
        cdef string value
        cdef bint found
        cdef _Handle h = self._begin()
        with nogil:
            found = h.live.db().GetProperty(n, &value)
            h.live.Leave()
        if not found:
            return None
        return PyBytes_FromStringAndSize(value.data(), value.size())

    def compact_range(self, *, start=None, stop=None):
        """Compact the key range [start, stop] (None: unbounded)."""
        cdef Slice s, e
        cdef Slice* sp = NULL
        cdef Slice* ep = NULL
        if self.read_only:  # its tables would live in its cache alone (engine/follower.py)
            raise ReadOnlyError(f"{getattr(self, 'name', None)!r} was opened read_only: a follower does not "
                                "compact, its writer does")
        if start is not None:
            s = to_slice(start)
            sp = &s
        if stop is not None:
            e = to_slice(stop)
            ep = &e
        cdef _Handle h = self._begin()
        with nogil:
            h.live.db().CompactRange(sp, ep)
            h.live.Leave()
        # CompactRange reports nothing: a lease lost meanwhile must not pass unnoticed.
        if self._has_lease and not self._lease.valid:
            raise LeaseLostError("the lease on the database was lost during compaction")

    def approximate_size(self, start, stop):
        """Approximate bytes on disk for the key range [start, stop)."""
        return self.approximate_sizes((start, stop))[0]

    def approximate_sizes(self, *ranges):
        """Approximate bytes on disk for each (start, stop) range."""
        cdef vector[ldb.Range] cranges
        cdef vector[uint64_t] sizes
        self._open_handle()
        keep = []
        for start, stop in ranges:
            to_slice(start)
            to_slice(stop)
            keep.append((start, stop))
        cdef int n = len(keep)
        if n == 0:
            return []
        sizes.resize(n)
        for start, stop in keep:
            cranges.push_back(ldb.Range(to_slice(start), to_slice(stop)))
        cdef _Handle h = self._begin()
        with nogil:
            h.live.db().GetApproximateSizes(cranges.data(), n, sizes.data())
            h.live.Leave()
        return [sizes[i] for i in range(n)]

    @property
    def closed(self):
        """True once close() has begun (or the database never opened, or this process
        inherited it through fork and so cannot use it)."""
        return self._h is None or self._h.live.refused()


# ---------------------------------------------------------------------------
# Write batches
# ---------------------------------------------------------------------------

cdef class WriteBatch:
    """Puts and deletes applied atomically by write() (plyvel.WriteBatch)."""
    cdef NativeDB _db
    cdef ldb.WriteBatch _batch
    cdef bytes _prefix
    cdef bint _transaction
    cdef bint _sync
    cdef size_t _extra_weight  # what its keys and entries add to its bytes (engine.sizing.write_weight)

    def __init__(self, *args, **kwargs):
        raise TypeError("use db.write_batch()")

    @staticmethod
    cdef WriteBatch _new(NativeDB db, bytes prefix, bint transaction, bint sync):
        cdef WriteBatch self = WriteBatch.__new__(WriteBatch)
        self._db = db
        self._prefix = prefix
        self._transaction = transaction
        self._sync = sync
        return self

    def put(self, key, value):
        cdef Slice k
        cdef Slice v
        cdef _Value holder
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        if type(value) is bytes:
            v = Slice(PyBytes_AS_STRING(value), <size_t>PyBytes_GET_SIZE(value))
        else:
            holder = _Value()
            holder.set(value)
            v = holder.slice
        self._db._open_handle()
        if self._prefix:
            key = self._prefix + key
        k = to_slice(key)
        self._batch.Put(k, v)
        self._extra_weight += k.size() + _ENTRY_WEIGHT

    def delete(self, key):
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        self._db._open_handle()
        if self._prefix:
            key = self._prefix + key
        cdef Slice k = to_slice(key)
        self._batch.Delete(k)
        self._extra_weight += k.size() + _ENTRY_WEIGHT

    def clear(self):
        self._db._open_handle()
        self._batch.Clear()
        self._extra_weight = 0

    def append(self, WriteBatch source not None):
        """Add every operation of another batch to this one."""
        self._db._open_handle()
        self._batch.Append(source._batch)
        self._extra_weight += source._extra_weight

    def approximate_size(self):
        self._db._open_handle()
        return self._batch.ApproximateSize()

    def write(self):
        """Apply the batch atomically; it stays filled (as in plyvel)."""
        cdef _Handle h = self._db._open_handle()
        cdef ldb.WriteOptions wo
        cdef Status st
        self._db._check_writable()
        cdef size_t weight = self._batch.ApproximateSize() + self._extra_weight
        if weight > self._db._max_write:
            self._db._refuse_heavy_write(weight)
        h.begin()
        if self._sync:
            with nogil:
                st = h.live.synced().Write(&self._batch)
                h.live.Leave()
        else:
            with nogil:
                st = h.live.db().Write(wo, &self._batch)
                h.live.Leave()
        raise_for_status(st, h.control)

    def __enter__(self):
        self._db._open_handle()
        return self

    def __exit__(self, exc_type, exc, tb):
        # As plyvel: the batch is empty afterwards, written or not.
        self._db._open_handle()
        if self._transaction and exc_type is not None:
            self._batch.Clear()  # a transaction that raised writes nothing
            self._extra_weight = 0
            return
        self.write()
        self._batch.Clear()
        self._extra_weight = 0


# ---------------------------------------------------------------------------
# Snapshots and prefixed views
# ---------------------------------------------------------------------------

@cython.no_gc_clear  # __dealloc__ needs _h to release the snapshot
cdef class Snapshot:
    """A consistent read-only view (plyvel.Snapshot).

    Any number of threads may read through it at once; close() must not race
    its own reads. Closing the database releases it (later use raises
    RuntimeError).
    """
    cdef NativeDB _db
    cdef _Handle _h  # the LevelDB instance the snapshot belongs to
    cdef const ldb.Snapshot* _snap
    cdef bytes _prefix
    cdef object __weakref__

    def __init__(self, *args, **kwargs):
        raise TypeError("use db.snapshot()")

    @staticmethod
    cdef Snapshot _new(NativeDB db, bytes prefix):
        cdef Snapshot self = Snapshot.__new__(Snapshot)
        cdef _Handle h = db._begin()
        # GetSnapshot/ReleaseSnapshot take the DB mutex, which a compaction
        # thread may hold while it waits for the GIL: never call them holding it.
        with nogil:
            self._snap = h.live.GetSnapshot()
            h.live.Leave()
        self._db = db
        self._h = h
        self._prefix = prefix
        return self

    cdef inline int _begin(self) except -1:
        """Begin a call on the snapshot's handle (end it with self._h.live.Leave())."""
        self._h.begin()
        if self._snap == NULL:
            self._h.live.Leave()
            raise RuntimeError("Snapshot is closed")
        return 0

    cdef inline int _check(self) except -1:
        self._h.check_open()
        if self._snap == NULL:
            raise RuntimeError("Snapshot is closed")
        return 0

    def get(self, key, default=None, *, verify_checksums=False, fill_cache=True):
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        if self._prefix:
            key = self._prefix + key
        cdef Slice k = to_slice(key)
        self._begin()
        return _get(self._h, self._snap, k, default, verify_checksums, fill_cache)

    def __contains__(self, key):
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        if self._prefix:
            key = self._prefix + key
        cdef Slice k = to_slice(key)
        self._begin()
        return _has(self._h, self._snap, k)

    def iterator(self, *, reverse=False, start=None, stop=None, include_start=True,
                 include_stop=False, prefix=None, include_key=True, include_value=True,
                 verify_checksums=False, fill_cache=True):
        self._check()
        return Iterator._new(self._db, self, self._prefix, reverse, start, stop, include_start,
                             include_stop, prefix, include_key, include_value,
                             verify_checksums, fill_cache)

    def raw_iterator(self, *, verify_checksums=False, fill_cache=True):
        """A raw iterator over the whole database as of this snapshot.

        Like plyvel, it ignores the prefix of a PrefixedDB's snapshot.
        """
        self._check()
        return RawIterator._new(self._db, self, verify_checksums, fill_cache)

    def __iter__(self):
        return self.iterator()

    cdef void _release(self) noexcept:
        cdef const ldb.Snapshot* snap = self._snap
        cdef _Handle h = self._h
        self._snap = NULL
        if snap == NULL or h is None:
            return
        # Refused: the database is closing (it releases what is registered) or was
        # inherited through fork (nothing of it may be touched).
        if h.live.Enter():
            with nogil:
                h.live.ReleaseSnapshot(snap)
                h.live.Leave()

    def close(self):
        self._release()

    release = close

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __dealloc__(self):
        self._release()


cdef class PrefixedDB:
    """The keys of `db` that start with `prefix`, with the prefix stripped."""
    cdef readonly NativeDB db
    cdef readonly bytes prefix

    def __init__(self, *args, **kwargs):
        raise TypeError("use db.prefixed_db(prefix)")

    @staticmethod
    cdef PrefixedDB _new(NativeDB db, bytes prefix):
        cdef PrefixedDB self = PrefixedDB.__new__(PrefixedDB)
        self.db = db
        self.prefix = prefix
        return self

    cdef bytes _key(self, key):
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        return self.prefix + key

    def get(self, key, default=None, *, verify_checksums=False, fill_cache=True):
        return self.db.get(self._key(key), default, verify_checksums=verify_checksums,
                           fill_cache=fill_cache)

    def __contains__(self, key):
        return self._key(key) in self.db

    def put(self, key, value, *, sync=False):
        self.db.put(self._key(key), value, sync=sync)

    def delete(self, key, *, sync=False):
        self.db.delete(self._key(key), sync=sync)

    def write_batch(self, *, transaction=False, sync=False):
        return WriteBatch._new(self.db, self.prefix, transaction, sync)

    def iterator(self, *, reverse=False, start=None, stop=None, include_start=True,
                 include_stop=False, prefix=None, include_key=True, include_value=True,
                 verify_checksums=False, fill_cache=True):
        self.db._open_handle()
        return Iterator._new(self.db, None, self.prefix, reverse, start, stop, include_start,
                             include_stop, prefix, include_key, include_value,
                             verify_checksums, fill_cache)

    def __iter__(self):
        return self.iterator()

    def snapshot(self):
        return Snapshot._new(self.db, self.prefix)

    def prefixed_db(self, bytes prefix not None):
        return PrefixedDB._new(self.db, self.prefix + prefix)

    def __repr__(self):
        return f"<levels3.PrefixedDB {self.prefix!r} of {self.db!r}>"


# ---------------------------------------------------------------------------
# Iterators
# ---------------------------------------------------------------------------

@cython.no_gc_clear  # __dealloc__ needs _h to delete the C++ iterator
cdef class _BaseIterator:
    """What both iterators share: the C++ iterator, registered with its handle.

    An iterator is for one thread at a time (as LevelDB's), and its close()
    must not race its own use. Closing the database deletes it (later use raises
    RuntimeError), whether or not its Python object is still waiting for
    garbage collection.
    """
    cdef NativeDB _db
    cdef _Handle _h  # the LevelDB instance the iterator belongs to
    cdef object _snapshot  # keeps a snapshot alive while iterating it
    cdef ldb.Iterator* _it
    cdef object __weakref__

    cdef int _init(self, NativeDB db, Snapshot snapshot, bint verify_checksums, bint fill_cache) except -1:
        cdef ldb.ReadOptions ro
        cdef _Handle h
        ro.verify_checksums = verify_checksums
        ro.fill_cache = fill_cache
        if snapshot is not None:
            snapshot._begin()
            h = snapshot._h
            ro.snapshot = snapshot._snap
        else:
            h = db._begin()
        with nogil:
            self._it = h.live.NewIterator(ro)
            h.live.Leave()
        self._db = db
        self._h = h
        self._snapshot = snapshot
        return 0

    cdef inline int _begin(self) except -1:
        """Begin a call on the iterator's handle; end it with _end() (in a finally)."""
        self._h.begin()
        if self._it == NULL:
            self._h.live.Leave()
            raise RuntimeError("Iterator is closed")
        return 0

    cdef inline void _end(self) noexcept:
        self._h.live.Leave()

    cdef inline int _check(self) except -1:
        """Raise as _begin() would, without beginning a call (for moves that touch no LevelDB)."""
        self._h.check_open()
        if self._it == NULL:
            raise RuntimeError("Iterator is closed")
        return 0

    cdef inline int _check_status(self) except -1:
        cdef Status st = self._it.status()
        raise_for_status(st, self._h.control)
        return 0

    cdef void _release(self) noexcept:
        cdef ldb.Iterator* it = self._it
        cdef _Handle h = self._h
        self._it = NULL
        if it == NULL or h is None:
            return
        # Refused: the database is closing (it deletes what is registered) or was
        # inherited through fork (nothing of it may be touched).
        if h.live.Enter():
            with nogil:  # deleting a DBIter takes the DB mutex
                h.live.DeleteIterator(it)
                h.live.Leave()

    def close(self):
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __dealloc__(self):
        self._release()


cdef enum _Position:
    # Where an Iterator is, in plyvel's terms (the C++ iterator's place in brackets).
    BEFORE_START    # before the first entry of the range
    AFTER_STOP      # after the last entry of the range
    IN_BETWEEN      # just after the entry last returned [on that entry]
    SEEKED          # just before the entry found by seek() [on that entry]


cdef class Iterator(_BaseIterator):
    """Python iterator over a key range, movable both ways (plyvel.Iterator).

    The position is a gap between two entries. next() on a forward iterator
    returns the entry after the gap and moves past it; prev() returns the entry
    before it and moves back; on a reverse iterator the two swap roles.
    seek_to_start() and seek_to_stop() go to the ends of the key range
    (not of the iteration direction), exactly as in plyvel.

    This is plyvel 1.5.1's state machine, with three of its bugs fixed (each
    marked "plyvel bug" below): it never returns an entry outside the range.
    """
    cdef bytes _start
    cdef bytes _stop
    cdef Slice _start_slice
    cdef Slice _stop_slice
    cdef bint _include_start
    cdef bint _include_stop
    cdef bint _reverse
    cdef bint _include_key
    cdef bint _include_value
    cdef _Position _state
    cdef size_t _strip  # length of a PrefixedDB's prefix, cut from returned keys
    cdef bytes _db_prefix
    cdef const ldb.Comparator* _order

    def __init__(self, *args, **kwargs):
        raise TypeError("use db.iterator()")

    @staticmethod
    cdef Iterator _new(NativeDB db, Snapshot snapshot, bytes db_prefix, bint reverse, start, stop,
                       bint include_start, bint include_stop, prefix, bint include_key,
                       bint include_value, bint verify_checksums, bint fill_cache):
        cdef Iterator self = Iterator.__new__(Iterator)
        for what, value in (("start", start), ("stop", stop), ("prefix", prefix)):
            if value is not None and not isinstance(value, bytes):
                raise TypeError(f"{what} must be bytes or None, not {type(value).__name__}")
        if db_prefix:
            # Move the range into the prefixed key space and keep it inside it.
            if prefix is not None:
                prefix = db_prefix + prefix
            else:
                if start is None:
                    start, include_start = db_prefix, True
                else:
                    start = db_prefix + start
                if stop is None:
                    stop, include_stop = successor(db_prefix), False
                else:
                    stop = db_prefix + stop
        if prefix is not None:
            if start is not None or stop is not None:
                raise TypeError("'prefix' cannot be used together with 'start' or 'stop'")
            start, stop = prefix, successor(prefix)
            include_start, include_stop = True, False
        self._start = start
        self._stop = stop
        if start is not None:
            self._start_slice = to_slice(start)
        if stop is not None:
            self._stop_slice = to_slice(stop)
        self._include_start = include_start
        self._include_stop = include_stop
        self._reverse = reverse
        self._include_key = include_key
        self._include_value = include_value
        self._strip = len(db_prefix)
        self._db_prefix = db_prefix
        self._init(db, snapshot, verify_checksums, fill_cache)
        self._order = self._h.order
        self._state = AFTER_STOP if reverse else BEFORE_START
        return self

    cdef inline bint _before_start(self, Slice key):
        """Whether key lies before the range (below start, or on an excluded start)."""
        if self._start is None:
            return False
        cdef int c = self._order.Compare(key, self._start_slice)
        return c < 0 or (c == 0 and not self._include_start)

    cdef inline bint _after_stop(self, Slice key):
        if self._stop is None:
            return False
        cdef int c = self._order.Compare(key, self._stop_slice)
        return c > 0 or (c == 0 and not self._include_stop)

    cdef object _current(self):
        cdef Slice k
        cdef Slice v
        key = value = None
        if self._include_key:
            k = self._it.key()
            key = PyBytes_FromStringAndSize(k.data() + self._strip, k.size() - self._strip)
        if self._include_value:
            v = self._it.value()
            value = PyBytes_FromStringAndSize(v.data(), v.size())
        if self._include_key and self._include_value:
            return (key, value)
        # Both False gives None for every entry, as in plyvel.
        return key if self._include_key else value

    cdef object _real_next(self):
        cdef ldb.Iterator* it = self._it
        if self._state == IN_BETWEEN:
            with nogil:
                it.Next()
            if not it.Valid():
                self._check_status()
                self._state = AFTER_STOP
                raise StopIteration
        elif self._state == SEEKED:
            self._state = IN_BETWEEN
        elif self._state == BEFORE_START:
            with nogil:
                if self._start is None:
                    it.SeekToFirst()
                else:
                    it.Seek(self._start_slice)
            if it.Valid() and self._start is not None and not self._include_start \
                    and self._order.Compare(it.key(), self._start_slice) == 0:
                with nogil:
                    it.Next()
            if not it.Valid():
                self._check_status()
                raise StopIteration
            self._state = IN_BETWEEN
        else:  # AFTER_STOP
            raise StopIteration
        self._check_status()
        if self._after_stop(it.key()):
            self._state = AFTER_STOP
            raise StopIteration
        return self._current()

    cdef object _real_prev(self):
        cdef ldb.Iterator* it = self._it
        if self._state == IN_BETWEEN:
            pass
        elif self._state == SEEKED:
            with nogil:
                it.Prev()
            if not it.Valid():
                self._check_status()
                self._state = BEFORE_START
                raise StopIteration
            self._check_status()
            if self._before_start(it.key()):
                # plyvel bug: after seek() to or below start, plyvel returns
                # entries before the range here.
                self._state = BEFORE_START
                raise StopIteration
        elif self._state == BEFORE_START:
            raise StopIteration
        else:  # AFTER_STOP
            with nogil:
                if self._stop is None:
                    it.SeekToLast()
                else:
                    it.Seek(self._stop_slice)
                    if not it.Valid():
                        it.SeekToLast()
                    elif not self._include_stop:
                        it.Prev()
            if it.Valid() and self._stop is not None \
                    and self._order.Compare(it.key(), self._stop_slice) > 0:
                with nogil:
                    it.Prev()
            if not it.Valid():
                self._check_status()
                raise StopIteration
            if self._before_start(it.key()):
                # plyvel bug: plyvel also stops here when the entry *is* an
                # included start key, so reverse iteration can miss it.
                raise StopIteration
            self._check_status()
        out = self._current()
        with nogil:
            it.Prev()
        if not it.Valid() or self._before_start(it.key()):
            self._state = BEFORE_START
        else:
            self._state = IN_BETWEEN
        self._check_status()
        return out

    def __iter__(self):
        return self

    def __next__(self):
        cdef _Handle h = self._h  # (spelled out, not _begin(): this is the hot path)
        h.begin()
        try:
            if self._it == NULL:
                raise RuntimeError("Iterator is closed")
            return self._real_prev() if self._reverse else self._real_next()
        finally:
            h.live.Leave()

    def prev(self):
        """Move one entry against the iteration direction and return it."""
        self._begin()
        try:
            return self._real_next() if self._reverse else self._real_prev()
        finally:
            self._end()

    def seek_to_start(self):
        """Move before the first entry of the key range (for a reverse iterator: its end)."""
        self._check()
        self._state = BEFORE_START

    def seek_to_stop(self):
        """Move after the last entry of the key range (for a reverse iterator: its beginning)."""
        self._check()
        self._state = AFTER_STOP

    def seek(self, target):
        """Move to just before the first entry >= target, with target clamped to the range.

        Afterwards next() returns that entry on a forward iterator, and the
        entry before it on a reverse one.
        """
        if not isinstance(target, bytes):
            raise TypeError(f"target must be bytes, not {type(target).__name__}")
        if self._db_prefix:
            target = self._db_prefix + target
        self._begin()
        try:
            self._seek(to_slice(target))
        finally:
            self._end()

    cdef int _seek(self, Slice t) except -1:
        cdef ldb.Iterator* it = self._it
        if self._start is not None and self._order.Compare(t, self._start_slice) < 0:
            t = self._start_slice
        if self._stop is not None and self._order.Compare(t, self._stop_slice) > 0:
            t = self._stop_slice
        with nogil:
            it.Seek(t)
        if it.Valid() and self._start is not None and not self._include_start \
                and self._order.Compare(it.key(), self._start_slice) == 0:
            # plyvel bug: plyvel's next() then returns the excluded start key.
            with nogil:
                it.Next()
        if not it.Valid():
            self._check_status()
            self._state = AFTER_STOP
            return 0
        self._state = SEEKED
        self._check_status()
        return 0


cdef class RawIterator(_BaseIterator):
    """leveldb::Iterator as it is (plyvel.RawIterator)."""

    def __init__(self, *args, **kwargs):
        raise TypeError("use db.raw_iterator()")

    @staticmethod
    cdef RawIterator _new(NativeDB db, Snapshot snapshot, bint verify_checksums, bint fill_cache):
        cdef RawIterator self = RawIterator.__new__(RawIterator)
        self._init(db, snapshot, verify_checksums, fill_cache)
        return self

    cdef inline int _begin_valid(self) except -1:
        """_begin(), and raise (ending it) unless the iterator is on an entry."""
        self._begin()
        if not self._it.Valid():
            self._end()
            raise IteratorInvalidError("the iterator is not positioned on an entry")
        return 0

    cdef inline int _end_checked(self) except -1:
        """End the call, then raise if the iterator's status is an error."""
        cdef Status st = self._it.status()
        self._end()
        raise_for_status(st, self._h.control)
        return 0

    def valid(self):
        self._begin()
        cdef bint valid = self._it.Valid()
        self._end()
        return valid

    def seek_to_first(self):
        self._begin()
        with nogil:
            self._it.SeekToFirst()
        self._end_checked()

    def seek_to_last(self):
        self._begin()
        with nogil:
            self._it.SeekToLast()
        self._end_checked()

    def seek(self, target):
        cdef Slice t = to_slice(target, "target")
        self._begin()
        with nogil:
            self._it.Seek(t)
        self._end_checked()

    def next(self):
        self._begin_valid()
        with nogil:
            self._it.Next()
        self._end_checked()

    def prev(self):
        self._begin_valid()
        with nogil:
            self._it.Prev()
        self._end_checked()

    def key(self):
        self._begin_valid()
        try:
            return slice_to_bytes(self._it.key())
        finally:
            self._end()

    def value(self):
        self._begin_valid()
        try:
            return slice_to_bytes(self._it.value())
        finally:
            self._end()

    def item(self):
        self._begin_valid()
        try:
            return slice_to_bytes(self._it.key()), slice_to_bytes(self._it.value())
        finally:
            self._end()
