# Declarations of the parts of C++ LevelDB 1.23 and of csrc/ that levels3's bridge (_native.pyx) uses.

from libc.stdint cimport uint64_t
from libcpp cimport bool
from libcpp.string cimport string
from libcpp.vector cimport vector


cdef extern from "leveldb/slice.h" namespace "leveldb" nogil:
    cdef cppclass Slice:
        Slice()
        Slice(const char* data, size_t n)
        const char* data()
        size_t size()


cdef extern from "leveldb/status.h" namespace "leveldb" nogil:
    cdef cppclass Status:
        bool ok()
        bool IsNotFound()
        bool IsCorruption()
        bool IsIOError()
        bool IsNotSupportedError()
        bool IsInvalidArgument()
        string ToString()


cdef extern from "leveldb/comparator.h" namespace "leveldb" nogil:
    cdef cppclass Comparator:
        int Compare(const Slice& a, const Slice& b)
    const Comparator* BytewiseComparator()


cdef extern from "leveldb/filter_policy.h" namespace "leveldb" nogil:
    cdef cppclass FilterPolicy:
        pass
    const FilterPolicy* NewBloomFilterPolicy(int bits_per_key)


cdef extern from "leveldb/cache.h" namespace "leveldb" nogil:
    cdef cppclass Cache:
        pass
    Cache* NewLRUCache(size_t capacity)


cdef extern from "leveldb/env.h" namespace "leveldb" nogil:
    cdef cppclass Env:
        pass


cdef extern from "leveldb/options.h" namespace "leveldb" nogil:
    ctypedef enum CompressionType:
        kNoCompression
        kSnappyCompression

    cdef cppclass Options:
        const Comparator* comparator
        bool create_if_missing
        bool error_if_exists
        bool paranoid_checks
        Env* env
        size_t write_buffer_size
        int max_open_files
        Cache* block_cache
        size_t block_size
        int block_restart_interval
        size_t max_file_size
        CompressionType compression
        bool reuse_logs
        const FilterPolicy* filter_policy

    cdef cppclass Snapshot:
        pass

    cdef cppclass ReadOptions:
        bool verify_checksums
        bool fill_cache
        const Snapshot* snapshot

    cdef cppclass WriteOptions:
        bool sync


cdef extern from "leveldb/iterator.h" namespace "leveldb" nogil:
    cdef cppclass Iterator:
        bool Valid()
        void SeekToFirst()
        void SeekToLast()
        void Seek(const Slice& target)
        void Next()
        void Prev()
        Slice key()
        Slice value()
        Status status()


cdef extern from "leveldb/write_batch.h" namespace "leveldb" nogil:
    cdef cppclass WriteBatch:
        void Put(const Slice& key, const Slice& value)
        void Delete(const Slice& key)
        void Clear()
        size_t ApproximateSize()
        void Append(const WriteBatch& source)


cdef extern from "leveldb/db.h" namespace "leveldb" nogil:
    int kMajorVersion
    int kMinorVersion

    cdef cppclass Range:
        Range(const Slice& start, const Slice& limit)

    cdef cppclass DB:
        Status Put(const WriteOptions& options, const Slice& key, const Slice& value)
        Status Delete(const WriteOptions& options, const Slice& key)
        Status Write(const WriteOptions& options, WriteBatch* updates)
        Status Get(const ReadOptions& options, const Slice& key, string* value)
        Iterator* NewIterator(const ReadOptions& options)
        const Snapshot* GetSnapshot()
        void ReleaseSnapshot(const Snapshot* snapshot)
        bool GetProperty(const Slice& property, string* value)
        void GetApproximateSizes(const Range* ranges, int n, uint64_t* sizes)
        void CompactRange(const Slice* begin, const Slice* end)

    Status DB_Open "leveldb::DB::Open"(const Options& options, const string& name, DB** dbptr)
    Status DestroyDB(const string& name, const Options& options)
    Status RepairDB(const string& name, const Options& options)


cdef extern from "object_env.h" namespace "levels3" nogil:
    cdef struct BackendCallbacks:
        void* backend
        int (*open_read)(void*, const string&, string*, string*) noexcept
        void (*release_read)(void*, const string&) noexcept
        int (*create)(void*, const string&, string*, string*) noexcept
        int (*persist)(void*, const string&, uint64_t, int, string*) noexcept
        int (*remove)(void*, const string&, string*) noexcept
        int (*rename)(void*, const string&, const string&, string*) noexcept
        int (*list)(void*, const string&, vector[string]*, string*) noexcept
        int (*size)(void*, const string&, uint64_t*, string*) noexcept
        int (*lock)(void*, string*) noexcept
        int (*unlock)(void*, string*) noexcept
        void (*log)(void*, const char*, size_t) noexcept
        int (*describe_table)(void*, const string&, int, uint64_t*, string*, string*, string*) noexcept
        int (*fetch_range)(void*, const string&, uint64_t, uint64_t, char*, string*) noexcept

    Env* NewObjectEnv(const string& dbname, const BackendCallbacks& callbacks)

    int kOk
    int kIOError
    int kNotFound
    int kCorruption

    cdef cppclass atomic_bool "std::atomic<bool>":
        void store(bool)
    atomic_bool g_interpreter_exiting


cdef extern from "callback_comparator.h" namespace "levels3" nogil:
    ctypedef int (*CompareFn)(void*, const char*, size_t, const char*, size_t) noexcept
    cdef cppclass CallbackComparator(Comparator):
        CallbackComparator(string name, void* callable, CompareFn compare)


cdef extern from "group_commit.h" namespace "levels3" nogil:
    cdef cppclass GroupCommit:
        GroupCommit(DB* db)
        Status Write(WriteBatch* batch)


cdef extern from "thread_calls.h" namespace "levels3" nogil:
    int CallsOnThisThread() noexcept


cdef extern from "live_database.h" namespace "levels3" nogil:
    cdef cppclass LiveDatabase:
        LiveDatabase()
        void Adopt(DB* db)
        bool Enter() noexcept
        void Leave() noexcept
        bool refused() noexcept
        bool inherited() noexcept
        void Refuse() noexcept
        void StopCalls()
        void RefuseInherited() noexcept
        DB* db() noexcept
        GroupCommit* synced() noexcept
        Iterator* NewIterator(const ReadOptions& options)
        void DeleteIterator(Iterator* it)
        const Snapshot* GetSnapshot()
        void ReleaseSnapshot(const Snapshot* snapshot)
        void Free()
