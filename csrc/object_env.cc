// ObjectEnv and its file classes. The contract (lifetimes, concurrency) is in
// object_env.h: every class here holds a reference to the Env's callback
// table (`cb_`) and so must not outlive the Env.
#include "object_env.h"

#include "page_cache.h"
#include "paged_env.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace levels3 {

using leveldb::Env;
using leveldb::Slice;
using leveldb::Status;

std::atomic<bool> g_interpreter_exiting{false};

namespace {

Status PosixError(const std::string& context, int err) {
  if (err == ENOENT) return Status::NotFound(context, std::strerror(err));
  return Status::IOError(context, std::strerror(err));
}

// Refuse to call into Python once the interpreter is going away.
bool BackendGone(std::string* error) {
  if (!g_interpreter_exiting.load(std::memory_order_acquire)) return false;
  *error = "the Python interpreter is shutting down";
  return true;
}

// Reads a file the control path pinned in the local cache; unpins on destruction.
class PinnedFile {
 public:
  PinnedFile(const BackendCallbacks& cb, std::string name, int fd)
      : cb_(cb), name_(std::move(name)), fd_(fd) {}
  ~PinnedFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!g_interpreter_exiting.load(std::memory_order_acquire)) {
      cb_.release_read(cb_.backend, name_);
    }
  }

 protected:
  const BackendCallbacks& cb_;
  const std::string name_;
  int fd_;
};

class CachedSequentialFile final : public leveldb::SequentialFile, private PinnedFile {
 public:
  using PinnedFile::PinnedFile;

  Status Read(size_t n, Slice* result, char* scratch) override {
    while (true) {
      ssize_t got = ::read(fd_, scratch, n);
      if (got < 0) {
        if (errno == EINTR) continue;
        *result = Slice(scratch, 0);
        return PosixError(name_, errno);
      }
      *result = Slice(scratch, static_cast<size_t>(got));
      return Status::OK();
    }
  }

  Status Skip(uint64_t n) override {
    if (::lseek(fd_, static_cast<off_t>(n), SEEK_CUR) == static_cast<off_t>(-1)) {
      return PosixError(name_, errno);
    }
    return Status::OK();
  }
};

// Tables are immutable once written, so a read-only mapping is safe and lets a
// warm read return a slice without a system call or a copy. LevelDB shares one
// of these between threads (through its table cache): Read keeps no state.
class CachedRandomAccessFile final : public leveldb::RandomAccessFile, private PinnedFile {
 public:
  CachedRandomAccessFile(const BackendCallbacks& cb, std::string name, int fd)
      : PinnedFile(cb, std::move(name), fd) {
    struct stat st;
    if (::fstat(fd_, &st) == 0 && st.st_size > 0) {
      void* base = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd_, 0);
      if (base != MAP_FAILED) {
        map_ = static_cast<const char*>(base);
        map_size_ = static_cast<uint64_t>(st.st_size);
      }
    }
  }
  ~CachedRandomAccessFile() override {
    if (map_ != nullptr) ::munmap(const_cast<char*>(map_), map_size_);
  }

  Status Read(uint64_t offset, size_t n, Slice* result, char* scratch) const override {
    if (map_ != nullptr) {
      if (offset + n > map_size_) {
        *result = Slice();
        return Status::IOError(name_, "read past the end of the file");
      }
      *result = Slice(map_ + offset, n);
      return Status::OK();
    }
    ssize_t got = ::pread(fd_, scratch, n, static_cast<off_t>(offset));
    *result = Slice(scratch, got < 0 ? 0 : static_cast<size_t>(got));
    return got < 0 ? PosixError(name_, errno) : Status::OK();
  }

 private:
  const char* map_ = nullptr;
  uint64_t map_size_ = 0;
};

// Appends go to a local file through a buffer (LevelDB writes each file from
// one thread at a time); Sync and Close hand the bytes written so far to the
// control path, which decides what reaches the store (a whole table on close,
// only the new tail of a log, nothing for a temp file).
class CachedWritableFile final : public leveldb::WritableFile {
 public:
  CachedWritableFile(const BackendCallbacks& cb, std::string name, int fd, PagedTables* paged,
                     std::string local_path)
      : cb_(cb), name_(std::move(name)), fd_(fd), paged_(paged), local_path_(std::move(local_path)) {}

  // LevelDB never closes its WAL and MANIFEST: it deletes them. Their unsynced
  // tail must still reach the store.
  ~CachedWritableFile() override {
    if (fd_ >= 0) Close();
  }

  Status Append(const Slice& data) override {
    const char* p = data.data();
    size_t left = data.size();
    size_t room = kBufferSize - buffered_;
    if (left <= room) {
      std::memcpy(buffer_ + buffered_, p, left);
      buffered_ += left;
      size_ += left;
      return Status::OK();
    }
    std::memcpy(buffer_ + buffered_, p, room);
    buffered_ += room;
    p += room;
    left -= room;
    size_ += room;
    Status s = FlushBuffer();
    if (!s.ok()) return s;
    if (left < kBufferSize) {
      std::memcpy(buffer_, p, left);
      buffered_ = left;
      size_ += left;
      return Status::OK();
    }
    s = WriteAll(p, left);
    if (s.ok()) size_ += left;
    return s;
  }

  Status Flush() override { return FlushBuffer(); }

  Status Sync() override {
    Status s = FlushBuffer();
    if (!s.ok()) return s;
    return Persist(false);
  }

  Status Close() override {
    if (fd_ < 0) return Status::OK();
    Status s = FlushBuffer();
    if (::close(fd_) != 0 && s.ok()) s = PosixError(name_, errno);
    fd_ = -1;
    if (!s.ok()) return s;
    s = Persist(true);
    if (s.ok() && paged_ != nullptr) paged_->Written(name_, local_path_);
    return s;
  }

 private:
  static constexpr size_t kBufferSize = 64 * 1024;

  Status Persist(bool final) {
    std::string error;
    if (BackendGone(&error)) return Status::IOError(name_, error);
    int r = cb_.persist(cb_.backend, name_, size_, final ? 1 : 0, &error);
    return StatusFromCallback(r, name_, error);
  }

  Status FlushBuffer() {
    Status s = WriteAll(buffer_, buffered_);
    buffered_ = 0;
    return s;
  }

  Status WriteAll(const char* p, size_t n) {
    if (paged_ != nullptr) paged_->Growing(name_, n);  // room first: the bound covers whole files
    while (n > 0) {
      ssize_t done = ::write(fd_, p, n);
      if (done < 0) {
        if (errno == EINTR) continue;
        return PosixError(name_, errno);
      }
      p += done;
      n -= static_cast<size_t>(done);
    }
    return Status::OK();
  }

  const BackendCallbacks& cb_;
  const std::string name_;
  int fd_;
  PagedTables* const paged_;  // null: no page cache
  const std::string local_path_;
  uint64_t size_ = 0;
  size_t buffered_ = 0;
  char buffer_[kBufferSize];
};

class BackendLock final : public leveldb::FileLock {};

// LevelDB's info log goes to Python logging instead of a LOG file.
class BackendLogger final : public leveldb::Logger {
 public:
  explicit BackendLogger(const BackendCallbacks& cb) : cb_(cb) {}

  void Logv(const char* format, std::va_list ap) override {
    if (g_interpreter_exiting.load(std::memory_order_acquire)) return;
    char line[1024];
    std::va_list copy;
    va_copy(copy, ap);
    int n = std::vsnprintf(line, sizeof(line), format, copy);
    va_end(copy);
    if (n < 0) return;
    size_t length = static_cast<size_t>(n) < sizeof(line) ? static_cast<size_t>(n) : sizeof(line) - 1;
    while (length > 0 && line[length - 1] == '\n') --length;
    cb_.log(cb_.backend, line, length);
  }

 private:
  const BackendCallbacks& cb_;
};

// The Env itself; see object_env.h for its contract.
class ObjectEnv final : public leveldb::EnvWrapper {
 public:
  // `dbname` is the local cache directory LevelDB is opened on.
  ObjectEnv(const std::string& dbname, const BackendCallbacks& callbacks, std::shared_ptr<PageCache> pages)
      : leveldb::EnvWrapper(leveldb::Env::Default()), dbname_(dbname), callbacks_(callbacks) {
    if (pages != nullptr) paged_.reset(new PagedTables(std::move(pages), callbacks_));
  }

  Status NewSequentialFile(const std::string& fname, leveldb::SequentialFile** result) override;
  Status NewRandomAccessFile(const std::string& fname, leveldb::RandomAccessFile** result) override;
  Status NewWritableFile(const std::string& fname, leveldb::WritableFile** result) override;
  Status NewAppendableFile(const std::string& fname, leveldb::WritableFile** result) override;
  bool FileExists(const std::string& fname) override;
  Status GetChildren(const std::string& dir, std::vector<std::string>* result) override;
  Status RemoveFile(const std::string& fname) override;
  Status CreateDir(const std::string& dirname) override;
  Status RemoveDir(const std::string& dirname) override;
  Status GetFileSize(const std::string& fname, uint64_t* file_size) override;
  Status RenameFile(const std::string& src, const std::string& target) override;
  Status LockFile(const std::string& fname, leveldb::FileLock** lock) override;
  Status UnlockFile(leveldb::FileLock* lock) override;
  Status NewLogger(const std::string& fname, leveldb::Logger** result) override;
  // LevelDB's background work (its compactions) runs on the default Env's thread, marked so that the
  // page cache counts what compactions fetch apart from the reads of gets and scans.
  void Schedule(void (*function)(void*), void* arg) override;
  // StartThread, NowMicros, SleepForMicroseconds and GetTestDirectory touch no
  // database file and stay with the default Env.

  void AttachDatabase(leveldb::DB* db, bool bytewise) {
    if (paged_ != nullptr) paged_->AttachDatabase(db, bytewise);
  }

 private:
  // "dbname/000005.log" -> "000005.log"; InvalidArgument for paths outside dbname.
  Status Relative(const std::string& path, std::string* name) const;
  Status OpenPinned(const std::string& fname, std::string* name, int* fd);

  const std::string dbname_;
  const BackendCallbacks callbacks_;  // file and logger objects hold references to it
  std::unique_ptr<PagedTables> paged_;  // null: tables are read whole
};

}  // namespace

void AttachDatabase(leveldb::Env* env, leveldb::DB* db, bool bytewise) {
  static_cast<ObjectEnv*>(env)->AttachDatabase(db, bytewise);  // every Env the bridge makes is one
}

Status StatusFromCallback(int result, const std::string& context, const std::string& error) {
  switch (result) {
    case kOk:
      return Status::OK();
    case kNotFound:
      return Status::NotFound(context, error);
    case kCorruption:
      return Status::Corruption(context, error);
    default:
      return Status::IOError(context, error);
  }
}

Env* NewObjectEnv(const std::string& dbname, const BackendCallbacks& callbacks) {
  return new ObjectEnv(dbname, callbacks, nullptr);
}

Env* NewObjectEnv(const std::string& dbname, const BackendCallbacks& callbacks,
                  std::shared_ptr<PageCache> pages) {
  return new ObjectEnv(dbname, callbacks, std::move(pages));
}

Status ObjectEnv::Relative(const std::string& path, std::string* name) const {
  if (path.size() <= dbname_.size() + 1 || path.compare(0, dbname_.size(), dbname_) != 0 ||
      path[dbname_.size()] != '/') {
    return Status::InvalidArgument(path, "is outside the database directory");
  }
  *name = path.substr(dbname_.size() + 1);
  return Status::OK();
}

// Asks the control path to make `fname` readable locally (pinned), then opens it.
Status ObjectEnv::OpenPinned(const std::string& fname, std::string* name, int* fd) {
  Status s = Relative(fname, name);
  if (!s.ok()) return s;
  std::string local, error;
  if (BackendGone(&error)) return Status::IOError(fname, error);
  uint64_t counted = 0, expected = 0;
  if (paged_ != nullptr && callbacks_.size(callbacks_.backend, *name, &expected, &error) == kOk) {
    counted = paged_->Holding(*name, expected);  // room before a fetch brings it in
  }
  int r = callbacks_.open_read(callbacks_.backend, *name, &local, &error);
  if (r != kOk) {
    if (paged_ != nullptr) paged_->Restore(*name, counted);
    return StatusFromCallback(r, *name, error);
  }
  *fd = ::open(local.c_str(), O_RDONLY | O_CLOEXEC);
  if (*fd < 0) {
    int err = errno;
    callbacks_.release_read(callbacks_.backend, *name);
    if (paged_ != nullptr) paged_->Restore(*name, counted);
    return PosixError(local, err);
  }
  struct stat st;
  if (paged_ != nullptr && ::fstat(*fd, &st) == 0) {
    paged_->Restore(*name, std::max<uint64_t>(counted, static_cast<uint64_t>(st.st_size)));
  }
  return Status::OK();
}

Status ObjectEnv::NewSequentialFile(const std::string& fname, leveldb::SequentialFile** result) {
  *result = nullptr;
  std::string name;
  int fd = -1;
  Status s = OpenPinned(fname, &name, &fd);
  if (s.ok()) *result = new CachedSequentialFile(callbacks_, name, fd);
  return s;
}

Status ObjectEnv::NewRandomAccessFile(const std::string& fname,
                                      leveldb::RandomAccessFile** result) {
  *result = nullptr;
  std::string name;
  if (paged_ != nullptr && Relative(fname, &name).ok()) {
    Status s = paged_->OpenTable(name, result);
    if (!s.ok() || *result != nullptr) return s;
  }
  int fd = -1;
  Status s = OpenPinned(fname, &name, &fd);
  if (s.ok()) *result = new CachedRandomAccessFile(callbacks_, name, fd);
  return s;
}

Status ObjectEnv::NewWritableFile(const std::string& fname, leveldb::WritableFile** result) {
  *result = nullptr;
  std::string name;
  Status s = Relative(fname, &name);
  if (!s.ok()) return s;
  std::string local, error;
  if (BackendGone(&error)) return Status::IOError(fname, error);
  int r = callbacks_.create(callbacks_.backend, name, &local, &error);
  if (r != kOk) return StatusFromCallback(r, name, error);
  int fd = ::open(local.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return PosixError(local, errno);
  if (paged_ != nullptr) paged_->Restore(name, 0);  // truncated: a new file from zero
  *result = new CachedWritableFile(callbacks_, name, fd, paged_.get(), local);
  return Status::OK();
}

// Only used with Options::reuse_logs, which levels3 never sets: appending to an
// object that may already be in the store is exactly what the segment scheme avoids.
Status ObjectEnv::NewAppendableFile(const std::string& fname, leveldb::WritableFile** result) {
  *result = nullptr;
  return Status::NotSupported(fname, "levels3 does not reopen files for appending (reuse_logs)");
}

bool ObjectEnv::FileExists(const std::string& fname) {
  uint64_t size = 0;
  return GetFileSize(fname, &size).ok();
}

Status ObjectEnv::GetChildren(const std::string& dir, std::vector<std::string>* result) {
  result->clear();
  std::string relative;
  if (dir != dbname_) {
    Status s = Relative(dir, &relative);
    if (!s.ok()) return s;
  }
  std::string error;
  if (BackendGone(&error)) return Status::IOError(dir, error);
  int r = callbacks_.list(callbacks_.backend, relative, result, &error);
  return StatusFromCallback(r, dir, error);
}

Status ObjectEnv::RemoveFile(const std::string& fname) {
  std::string name;
  Status s = Relative(fname, &name);
  if (!s.ok()) return s;
  std::string error;
  if (BackendGone(&error)) return Status::IOError(fname, error);
  if (paged_ != nullptr) paged_->Removing(name);
  s = StatusFromCallback(callbacks_.remove(callbacks_.backend, name, &error), name, error);
  if (s.ok() && paged_ != nullptr) paged_->Removed(name);
  return s;
}

// Directories exist only in the local cache; the store has flat keys.
Status ObjectEnv::CreateDir(const std::string& dirname) {
  if (::mkdir(dirname.c_str(), 0700) != 0 && errno != EEXIST) return PosixError(dirname, errno);
  return Status::OK();
}

Status ObjectEnv::RemoveDir(const std::string& dirname) {
  ::rmdir(dirname.c_str());  // the control path removes the cache directory itself
  return Status::OK();
}

Status ObjectEnv::GetFileSize(const std::string& fname, uint64_t* file_size) {
  *file_size = 0;
  std::string name;
  Status s = Relative(fname, &name);
  if (!s.ok()) return s;
  std::string error;
  if (BackendGone(&error)) return Status::IOError(fname, error);
  return StatusFromCallback(callbacks_.size(callbacks_.backend, name, file_size, &error), name, error);
}

Status ObjectEnv::RenameFile(const std::string& src, const std::string& target) {
  std::string from, to;
  Status s = Relative(src, &from);
  if (s.ok()) s = Relative(target, &to);
  if (!s.ok()) return s;
  std::string error;
  if (BackendGone(&error)) return Status::IOError(src, error);
  s = StatusFromCallback(callbacks_.rename(callbacks_.backend, from, to, &error), from, error);
  if (s.ok() && paged_ != nullptr) paged_->Renamed(from, to);
  return s;
}

Status ObjectEnv::LockFile(const std::string& fname, leveldb::FileLock** lock) {
  *lock = nullptr;
  std::string error;
  if (BackendGone(&error)) return Status::IOError(fname, error);
  int r = callbacks_.lock(callbacks_.backend, &error);
  if (r != kOk) return StatusFromCallback(r, fname, error);
  *lock = new BackendLock;
  return Status::OK();
}

Status ObjectEnv::UnlockFile(leveldb::FileLock* lock) {
  delete lock;
  std::string error;
  if (BackendGone(&error)) return Status::OK();
  return StatusFromCallback(callbacks_.unlock(callbacks_.backend, &error), "LOCK", error);
}

namespace {

struct BackgroundCall {
  void (*function)(void*);
  void* arg;
};

void RunInBackground(void* call) {
  PageCache::MarkCompactionThread();  // the default Env's one background thread runs only such work
  std::unique_ptr<BackgroundCall> c(static_cast<BackgroundCall*>(call));
  c->function(c->arg);
}

}  // namespace

void ObjectEnv::Schedule(void (*function)(void*), void* arg) {
  target()->Schedule(&RunInBackground, new BackgroundCall{function, arg});
}

Status ObjectEnv::NewLogger(const std::string& /*fname*/, leveldb::Logger** result) {
  *result = new BackendLogger(callbacks_);
  return Status::OK();
}

}  // namespace levels3
