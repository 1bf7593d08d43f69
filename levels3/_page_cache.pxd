# Declarations of csrc/page_cache.h and of the object-store Env's paged factory (object_env.h).

from libc.stdint cimport int64_t, uint32_t, uint64_t
from libcpp cimport bool
from libcpp.memory cimport shared_ptr
from libcpp.set cimport set as cppset
from libcpp.string cimport string

from levels3._leveldb cimport DB, BackendCallbacks, Env, Status


cdef extern from "page_cache.h" namespace "levels3" nogil:
    cdef struct PageCacheStats:
        uint64_t page_size
        uint64_t max_bytes
        uint64_t bytes
        uint64_t peak_bytes
        uint64_t page_bytes
        uint64_t whole_file_bytes
        uint64_t pages_present
        uint64_t mapped_bytes
        uint64_t hits
        uint64_t misses
        uint64_t evictions
        uint64_t readahead_wasted_bytes
        uint64_t requests[3]
        uint64_t bytes_fetched[3]
        uint64_t compaction_requests[3]
        uint64_t compaction_bytes_fetched[3]
        uint64_t files
        uint64_t reused_pages
        uint64_t tail_estimate
        uint64_t tails_prefetched
        uint64_t compaction_inputs_fetched_ahead
        bool punch_holes

    cdef cppclass PageFile:
        pass

    cdef cppclass TailClaim:
        shared_ptr[PageFile] file
        uint64_t offset
        uint64_t length

    cdef cppclass PageCache:
        @staticmethod
        Status Open(const string& directory, uint64_t max_bytes, uint32_t page_size,
                    shared_ptr[PageCache]* result)
        void Retain(const cppset[string]& live)
        PageCacheStats Stats()
        Status Close(bool keep)
        void ReserveForWholeFiles(uint64_t bytes)
        bool ClaimTail(const string& fingerprint, const string& object, uint64_t size, TailClaim* claim)
        Status CompleteTail(TailClaim* claim, const char* data, size_t n)
        void DisableHolePunchingForTesting()


cdef extern from "object_env.h" namespace "levels3" nogil:
    Env* NewPagedObjectEnv "levels3::NewObjectEnv"(const string& dbname, const BackendCallbacks& callbacks,
                                                   shared_ptr[PageCache] pages)
    void AttachDatabase(Env* env, DB* db, bool bytewise)
