// ObjectEnv: a leveldb::Env whose files live in an object store.
//
// LevelDB sees ordinary paths under a local cache directory. The data path
// (Append, Read, Skip) runs here in C++ on those local files; every control
// operation that has a remote effect (fetch on a cache miss, upload on sync or
// close, remove, rename, list, lock) goes through a small table of callbacks
// into the Python backend. Callbacks take the GIL themselves; nothing here
// holds it.
#ifndef LEVELS3_OBJECT_ENV_H_
#define LEVELS3_OBJECT_ENV_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "leveldb/env.h"

namespace levels3 {

// What a callback reports. Anything but kOk comes with a message in *error.
enum CallbackResult : int { kOk = 0, kIOError = 1, kNotFound = 2, kCorruption = 3 };

// The control path. `name` is relative to the database directory
// ("000005.log", "CURRENT", "lost/000007.ldb"). `backend` is opaque here.
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
};

// Set once the interpreter is shutting down: callbacks must not ask for the
// GIL any more (CPython would kill the asking thread, hanging LevelDB).
extern std::atomic<bool> g_interpreter_exiting;

class ObjectEnv : public leveldb::EnvWrapper {
 public:
  // `dbname` is the local cache directory LevelDB is opened on.
  ObjectEnv(const std::string& dbname, const BackendCallbacks& callbacks);
  ~ObjectEnv() override;

  leveldb::Status NewSequentialFile(const std::string& fname,
                                    leveldb::SequentialFile** result) override;
  leveldb::Status NewRandomAccessFile(const std::string& fname,
                                      leveldb::RandomAccessFile** result) override;
  leveldb::Status NewWritableFile(const std::string& fname,
                                  leveldb::WritableFile** result) override;
  leveldb::Status NewAppendableFile(const std::string& fname,
                                    leveldb::WritableFile** result) override;
  bool FileExists(const std::string& fname) override;
  leveldb::Status GetChildren(const std::string& dir,
                              std::vector<std::string>* result) override;
  leveldb::Status RemoveFile(const std::string& fname) override;
  leveldb::Status CreateDir(const std::string& dirname) override;
  leveldb::Status RemoveDir(const std::string& dirname) override;
  leveldb::Status GetFileSize(const std::string& fname, uint64_t* file_size) override;
  leveldb::Status RenameFile(const std::string& src, const std::string& target) override;
  leveldb::Status LockFile(const std::string& fname, leveldb::FileLock** lock) override;
  leveldb::Status UnlockFile(leveldb::FileLock* lock) override;
  leveldb::Status NewLogger(const std::string& fname, leveldb::Logger** result) override;
  // Schedule, StartThread, NowMicros, SleepForMicroseconds and
  // GetTestDirectory touch no database file and stay with the default Env.

  const BackendCallbacks& callbacks() const { return callbacks_; }

  // Turns a callback result into a Status; used by the file classes too.
  static leveldb::Status ToStatus(int result, const std::string& context,
                                  const std::string& error);

 private:
  // "dbname/000005.log" -> "000005.log"; false for paths outside dbname.
  bool RelativeName(const std::string& path, std::string* name) const;
  leveldb::Status OpenPinned(const std::string& fname, std::string* name, int* fd);

  std::string dbname_;
  BackendCallbacks callbacks_;
};

}  // namespace levels3

#endif  // LEVELS3_OBJECT_ENV_H_
