// A leveldb::Env whose files live in an object store.
//
// LevelDB sees ordinary paths under a local cache directory. The data path
// (Append, Read, Skip) runs in C++ on those local files; every control
// operation that has a remote effect (fetch on a cache miss, upload on sync or
// close, remove, rename, list, lock) goes through a small table of callbacks
// into the Python control path (levels3/engine/control.py). Nothing here holds
// the GIL or touches a Python object: the callbacks take the GIL themselves.
//
// Only NewObjectEnv is exported (as memenv exports only NewMemEnv); the Env
// and its file classes are private to object_env.cc.
//
// Lifetimes. The Env copies the callback table; the opaque `backend` pointer in
// it is borrowed: its owner (the bridge's _Handle) keeps it alive until after
// the Env is deleted. Every file and logger object the Env hands out holds a
// reference into the Env's callback table, so LevelDB must delete them all
// before the Env (it does: DB::~DB, DestroyDB and RepairDB release their files
// before returning). Strings passed to a callback are valid for the call only.
//
// Concurrency. LevelDB calls the Env, and so the callbacks, from its callers'
// threads and from its background compaction thread at the same time, some of
// them while it holds its DB mutex (GetChildren, NewWritableFile for a new WAL,
// everything during open). Every callback must be safe to call concurrently
// and must not call back into LevelDB.
#ifndef LEVELS3_OBJECT_ENV_H_
#define LEVELS3_OBJECT_ENV_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "leveldb/db.h"
#include "leveldb/env.h"
#include "leveldb/status.h"

namespace levels3 {

// What a callback reports. Anything but kOk comes with a message in *error.
enum CallbackResult : int { kOk = 0, kIOError = 1, kNotFound = 2, kCorruption = 3 };

// The control path. `name` is relative to the database directory
// ("000005.log", "CURRENT", "lost/000007.ldb"). `backend` is opaque here (the
// Python control path, borrowed; see Lifetimes above).
struct BackendCallbacks {
  void* backend;
  // Make the file readable on local disk (fetching it on a cache miss) and pin
  // it in the cache until release_read; *local_path receives where it is.
  int (*open_read)(void* backend, const std::string& name, std::string* local_path,
                   std::string* error);
  void (*release_read)(void* backend, const std::string& name);
  // A new file is being written: *local_path receives where to write it.
  int (*create)(void* backend, const std::string& name, std::string* local_path,
                std::string* error);
  // The first `size` bytes of a file being written are on local disk; make them
  // durable in the store. `final` is set on Close (or destruction).
  int (*persist)(void* backend, const std::string& name, uint64_t size, int final,
                 std::string* error);
  int (*remove)(void* backend, const std::string& name, std::string* error);
  int (*rename)(void* backend, const std::string& src, const std::string& dst,
                std::string* error);
  // Names of the files in directory `dir` ("" = the database directory).
  int (*list)(void* backend, const std::string& dir, std::vector<std::string>* names,
              std::string* error);
  int (*size)(void* backend, const std::string& name, uint64_t* size, std::string* error);
  int (*lock)(void* backend, std::string* error);
  int (*unlock)(void* backend, std::string* error);
  // One line of LevelDB's info log.
  void (*log)(void* backend, const char* line, size_t length);
  // Paged tables (paged_env.h). kOk with the table's size, fingerprint and object key if
  // it is read in pages, kNotFound if it is read whole. `adopting`: the page cache takes
  // over the local file LevelDB just wrote, and the control path must let go of it.
  int (*describe_table)(void* backend, const std::string& name, int adopting, uint64_t* size,
                        std::string* fingerprint, std::string* object, std::string* error);
  // Exactly `length` bytes of table `name` from `offset` into `buffer`: one ranged GET.
  int (*fetch_range)(void* backend, const std::string& name, uint64_t offset, uint64_t length,
                     char* buffer, std::string* error);
};

// Set once the interpreter is shutting down: callbacks must not ask for the
// GIL any more (CPython would kill the asking thread, hanging LevelDB).
extern std::atomic<bool> g_interpreter_exiting;

// A new Env for a database opened on the local directory `dbname`; the caller
// owns it and deletes it after the DB (or DestroyDB/RepairDB) that used it.
leveldb::Env* NewObjectEnv(const std::string& dbname, const BackendCallbacks& callbacks);

class PageCache;

// The same, reading tables in pages from `pages` (page_cache.h, paged_env.h): the
// Env shares the page cache (a follower's generations use one) and charges every
// whole file it keeps on local disk to its bound.
leveldb::Env* NewObjectEnv(const std::string& dbname, const BackendCallbacks& callbacks,
                           std::shared_ptr<PageCache> pages);

// A paged Env's compactions guess their next input from `db`'s version (paged_env.h): `db` is
// the DB open on `env` (made by NewObjectEnv), attached once DB::Open returned; `bytewise`: it
// uses LevelDB's default comparator. Nothing happens for an Env without pages.
void AttachDatabase(leveldb::Env* env, leveldb::DB* db, bool bytewise);

// The Status for a callback's result; `context` names the file.
leveldb::Status StatusFromCallback(int result, const std::string& context, const std::string& error);

}  // namespace levels3

#endif  // LEVELS3_OBJECT_ENV_H_
