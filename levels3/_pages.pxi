# Included by _native.pyx: the bridge's side of the page cache (csrc/page_cache.h; its
# callbacks are in _callbacks.pyx, its Python side is levels3/engine/pages.py).

from libc.stdint cimport uint32_t
from libcpp.memory cimport shared_ptr
from libcpp.set cimport set as cppset

cimport levels3._page_cache as pc


cdef class NativePageCache:
    """The C++ page cache of one database (shared by a follower's generations).

    Opening it reads and deletes the index a clean close left in ``directory`` and
    deletes every page file the index does not list."""
    cdef shared_ptr[pc.PageCache] cache

    def __cinit__(self, str directory, uint64_t max_bytes, uint32_t page_size):
        cdef string path = directory.encode()
        cdef Status st
        with nogil:
            st = pc.PageCache.Open(path, max_bytes, page_size, &self.cache)
        if not st.ok():
            raise IOError(st.ToString().decode("utf-8", "replace"))

    def retain(self, fingerprints):
        """Drop every page file whose fingerprint is not among ``fingerprints``."""
        cdef cppset[string] live
        for fingerprint in fingerprints:
            live.insert(fingerprint.encode())
        with nogil:
            self.cache.get().Retain(live)

    def stats(self):
        cdef pc.PageCacheStats s
        with nogil:
            s = self.cache.get().Stats()
        return {
            "page_size": s.page_size, "max_bytes": s.max_bytes, "bytes": s.bytes, "peak_bytes": s.peak_bytes,
            "page_bytes": s.page_bytes, "whole_file_bytes": s.whole_file_bytes, "pages": s.pages_present, "mapped_bytes": s.mapped_bytes,
            "hits": s.hits, "misses": s.misses, "evictions": s.evictions, "readahead_wasted_bytes": s.readahead_wasted_bytes, "files": s.files,
            "reused_pages": s.reused_pages, "tail_estimate": s.tail_estimate, "punch_holes": s.punch_holes,
            "tails_prefetched": s.tails_prefetched, "compaction_inputs_fetched_ahead": s.compaction_inputs_fetched_ahead,
            "requests": {"tail": s.requests[0], "data": s.requests[1], "readahead": s.requests[2]},
            "bytes_fetched": {"tail": s.bytes_fetched[0], "data": s.bytes_fetched[1],
                              "readahead": s.bytes_fetched[2]},
            "compaction_requests": {"tail": s.compaction_requests[0], "data": s.compaction_requests[1],
                                    "readahead": s.compaction_requests[2]},
            "compaction_bytes_fetched": {"tail": s.compaction_bytes_fetched[0],
                                         "data": s.compaction_bytes_fetched[1],
                                         "readahead": s.compaction_bytes_fetched[2]},
        }

    def claim_tail(self, str fingerprint, str object_key, uint64_t size):
        """Claim a table's tail for a prefetch: a TailClaim (its offset and length to fetch,
        then complete()), or None when there is nothing to fetch."""
        cdef TailClaim claim = TailClaim.__new__(TailClaim)
        cdef string fp = fingerprint.encode(), obj = object_key.encode()
        cdef bint claimed
        with nogil:
            claimed = self.cache.get().ClaimTail(fp, obj, size, &claim.claim)
        if not claimed:
            return None
        claim.owner = self
        return claim

    def close(self, bint keep):
        """Stop read-ahead; keep: write the index a clean restart reuses, else delete the pages."""
        cdef Status st
        with nogil:
            st = self.cache.get().Close(keep)
        if not st.ok():
            raise IOError(st.ToString().decode("utf-8", "replace"))

    def _disable_hole_punching(self):
        """Tests: evict whole files, as on a file system that cannot punch holes."""
        self.cache.get().DisableHolePunchingForTesting()


cdef class TailClaim:
    """A table tail claimed for a prefetch (NativePageCache.claim_tail): fetch bytes
    [offset, offset + length) of the object, then complete(data), or complete(None) if
    the fetch failed. Until then LevelDB's reads of those pages wait."""
    cdef pc.TailClaim claim
    cdef NativePageCache owner

    @property
    def offset(self):
        return self.claim.offset

    @property
    def length(self):
        return self.claim.length

    def complete(self, data):
        """Hand the fetched bytes to the page cache (None: the fetch failed)."""
        cdef const char* buffer = NULL
        cdef size_t n = 0
        cdef Status st
        if self.owner is None:
            return
        if data is not None:
            buffer = data
            n = len(data)
        with nogil:
            st = self.owner.cache.get().CompleteTail(&self.claim, buffer, n)
        self.owner = None
        if not st.ok():
            raise IOError(st.ToString().decode("utf-8", "replace"))

    def __dealloc__(self):
        # A claim dropped unfinished must not leave LevelDB waiting for its pages.
        if self.owner is not None:
            with nogil:
                self.owner.cache.get().CompleteTail(&self.claim, NULL, 0)


cdef ldb.Env* new_env(object control, const ldb.Options& opts) except NULL:
    """The object-store Env for ``control``: reading tables in pages when it has a page cache."""
    cdef string local_dir = control.local_dir.encode()
    pages = getattr(control, "pages", None)
    if pages is None:
        return ldb.NewObjectEnv(local_dir, make_callbacks(control))
    cdef NativePageCache native = pages.native
    # What LevelDB holds in whole files at once, at most: the WAL, the previous WAL and the
    # table its memtable becomes while it is flushed, one compaction output, the MANIFEST
    # (LevelDB clips its sizes to at least 64 KiB and 1 MiB). Zero-copy tables leave it free.
    cdef uint64_t buffer = max(<uint64_t>opts.write_buffer_size, <uint64_t>(64 << 10))
    cdef uint64_t table = max(<uint64_t>opts.max_file_size, <uint64_t>(1 << 20))
    native.cache.get().ReserveForWholeFiles(3 * buffer + table + (1 << 20))
    return pc.NewPagedObjectEnv(local_dir, make_callbacks(control), native.cache)
