#include "paged_env.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "compaction_reader.h"

namespace levels3 {

using leveldb::Slice;
using leveldb::Status;

namespace {

bool InterpreterGone(std::string* error) {
  if (!g_interpreter_exiting.load(std::memory_order_acquire)) return false;
  *error = "the Python interpreter is shutting down";
  return true;
}

// Misses of one Env generation go to its backend (which maps the table name to the
// object its catalog holds).
class TableSource final : public RangeSource {
 public:
  explicit TableSource(const BackendCallbacks& cb) : cb_(cb) {}

  Status Fetch(const std::string& name, uint64_t offset, size_t length, char* buffer) override {
    std::string error;
    if (InterpreterGone(&error)) return Status::IOError(name, error);
    int r = cb_.fetch_range(cb_.backend, name, offset, length, buffer, &error);
    if (r == kOk) return Status::OK();
    if (r == kCorruption) return Status::Corruption(name, error);
    // Never NotFound: LevelDB's Get would report a key as absent.
    return Status::IOError(name, error);
  }

 private:
  const BackendCallbacks cb_;
};

class PagedRandomAccessFile final : public leveldb::RandomAccessFile {
 public:
  PagedRandomAccessFile(std::shared_ptr<PageCache> cache, std::shared_ptr<PageFile> file,
                        std::shared_ptr<RangeSource> source, std::string name, NextInputs* next)
      : cache_(std::move(cache)),
        file_(std::move(file)),
        source_(std::move(source)),
        name_(std::move(name)),
        next_(next) {}
  ~PagedRandomAccessFile() override {
    if (map_.load(std::memory_order_acquire) != nullptr) cache_->Unmap(file_.get());
    cache_->Release(file_);
  }

  // Through scratch, since pages may be evicted while LevelDB holds the block; once the
  // whole file is present (and the cache agrees to keep it), straight from its mapping.
  // A compaction's reads go to its reader even when the file is mapped: the reader is how the
  // compaction's other inputs are guessed, and a copy costs it little.
  Status Read(uint64_t offset, size_t n, Slice* result, char* scratch) const override {
    size_t got = 0;
    if (PageCache::OnCompactionThread()) {
      if (std::shared_ptr<CompactionReader> reader = CompactionReaderFor(offset)) {
        Status s = reader->Read(offset, n, scratch, &got);
        *result = Slice(scratch, s.ok() ? got : 0);
        return s;
      }
    }
    const char* map = map_.load(std::memory_order_acquire);
    if (map != nullptr) {
      if (offset >= file_->size()) {
        *result = Slice();
        return Status::OK();
      }
      *result = Slice(map + offset, static_cast<size_t>(std::min<uint64_t>(n, file_->size() - offset)));
      return Status::OK();
    }
    bool whole = false;
    Status s = cache_->Read(file_.get(), source_, name_, offset, n, scratch, &got, &whole);
    *result = Slice(scratch, s.ok() ? got : 0);
    if (s.ok() && whole) TryMap();
    return s;
  }

 private:
  // A compaction's input read from its first block on: see compaction_reader.h.
  std::shared_ptr<CompactionReader> CompactionReaderFor(uint64_t offset) const {
    std::lock_guard<std::mutex> l(map_mu_);
    if (compaction_ == nullptr) {
      if (offset != 0) return nullptr;
      compaction_ = std::make_shared<CompactionReader>(cache_, file_, source_, name_, next_);
    }
    return compaction_->Serves(offset) ? compaction_ : nullptr;
  }

  void TryMap() const {
    std::lock_guard<std::mutex> l(map_mu_);
    if (map_.load(std::memory_order_relaxed) != nullptr) return;
    // Refused (the pinned share is used up): ask again only now and then.
    if (refused_ > 0) {
      --refused_;
      return;
    }
    const char* map = cache_->MapWhole(file_.get());
    if (map == nullptr) {
      refused_ = 256;
      return;
    }
    map_.store(map, std::memory_order_release);
  }

  std::shared_ptr<PageCache> cache_;
  std::shared_ptr<PageFile> file_;
  std::shared_ptr<RangeSource> source_;
  const std::string name_;
  NextInputs* const next_;
  mutable std::mutex map_mu_;
  mutable std::atomic<const char*> map_{nullptr};
  mutable int refused_ = 0;
  mutable std::shared_ptr<CompactionReader> compaction_;  // guarded by map_mu_
};

// What a whole file of `bytes` takes on disk: whole blocks (a file system allocates no less).
int64_t Charge(uint64_t bytes) {
  constexpr uint64_t kBlock = 4096;
  return static_cast<int64_t>((bytes + kBlock - 1) / kBlock * kBlock);
}

bool EndsWith(const std::string& s, const char* suffix) {
  size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

}  // namespace

PagedTables::PagedTables(std::shared_ptr<PageCache> cache, const BackendCallbacks& callbacks)
    : cache_(std::move(cache)), callbacks_(callbacks), source_(std::make_shared<TableSource>(callbacks)) {}

PagedTables::~PagedTables() {
  source_->Close();  // waits for this generation's read-ahead
  CompactionReader::ForgetParked(source_.get());
  int64_t total = 0;
  for (auto& entry : whole_) total += Charge(entry.second);
  if (total > 0) cache_->ChargeWhole(-total);
}

bool PagedTables::IsTable(const std::string& name) {
  return name.find('/') == std::string::npos && (EndsWith(name, ".ldb") || EndsWith(name, ".sst"));
}

Status PagedTables::AcquireTable(const std::string& name, std::shared_ptr<PageFile>* file) {
  file->reset();
  if (!IsTable(name)) return Status::OK();
  uint64_t size = 0;
  std::string fingerprint, object, error;
  if (InterpreterGone(&error)) return Status::IOError(name, error);
  int r = callbacks_.describe_table(callbacks_.backend, name, 0, &size, &fingerprint, &object, &error);
  if (r == kNotFound) return Status::OK();
  if (r != kOk) return StatusFromCallback(r, name, error);
  Status s = cache_->Acquire(fingerprint, object, size, file);
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> l(mu_);
  paged_[name] = fingerprint;
  return Status::OK();
}

Status PagedTables::OpenTable(const std::string& name, leveldb::RandomAccessFile** result) {
  *result = nullptr;
  std::shared_ptr<PageFile> file;
  Status s = AcquireTable(name, &file);
  if (s.ok() && file != nullptr) *result = new PagedRandomAccessFile(cache_, std::move(file), source_, name, this);
  return s;
}

std::shared_ptr<PageFile> PagedTables::Open(const std::string& name) {
  std::shared_ptr<PageFile> file;
  return AcquireTable(name, &file).ok() ? file : nullptr;
}

void PagedTables::AttachDatabase(leveldb::DB* db, bool bytewise) {
  bytewise_.store(bytewise, std::memory_order_relaxed);
  db_.store(db, std::memory_order_release);
}

std::vector<std::string> PagedTables::Guess(const std::string& name, const std::vector<std::string>& reading,
                                            bool starting) {
  leveldb::DB* db = db_.load(std::memory_order_acquire);
  if (db == nullptr || !bytewise_.load(std::memory_order_relaxed)) return {};
  const uint64_t writes = manifest_writes_.load(std::memory_order_relaxed);
  if (listed_ == nullptr || listed_at_ != writes) {
    std::string listing;
    if (!db->GetProperty("leveldb.sstables", &listing)) return {};
    listed_ = ParseVersion(listing);
    listed_at_ = writes;
  }
  std::vector<std::string> guesses = GuessInputs(*listed_, name, reading, starting);
  // Tables wholly on local disk need no fetch (a database that fits its cache guesses nothing).
  std::lock_guard<std::mutex> l(mu_);
  guesses.erase(std::remove_if(guesses.begin(), guesses.end(), [&](const std::string& guess) {
                  auto it = paged_.find(guess);
                  return it != paged_.end() && cache_->WhollyPresent(it->second);
                }), guesses.end());
  return guesses;
}

uint64_t PagedTables::SetWholeLocked(const std::string& name, uint64_t bytes) {
  uint64_t& counted = whole_[name];
  uint64_t before = counted;
  counted = bytes;
  if (bytes == 0) whole_.erase(name);
  return before;
}

void PagedTables::Growing(const std::string& name, uint64_t bytes) {
  if (bytes == 0) return;
  if (name.compare(0, 9, "MANIFEST-") == 0) manifest_writes_.fetch_add(1, std::memory_order_relaxed);
  int64_t delta;
  {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t& counted = whole_[name];
    delta = Charge(counted + bytes) - Charge(counted);
    counted += bytes;
  }
  if (delta > 0) cache_->ChargeWhole(delta);  // may punch pages: outside mu_
}

uint64_t PagedTables::Holding(const std::string& name, uint64_t bytes) {
  uint64_t before;
  {
    std::lock_guard<std::mutex> l(mu_);
    before = whole_.count(name) ? whole_[name] : 0;
    if (bytes <= before) return before;
    SetWholeLocked(name, bytes);
  }
  cache_->ChargeWhole(Charge(bytes) - Charge(before));
  return before;
}

void PagedTables::Restore(const std::string& name, uint64_t bytes) {
  uint64_t before;
  {
    std::lock_guard<std::mutex> l(mu_);
    before = SetWholeLocked(name, bytes);
  }
  cache_->ChargeWhole(Charge(bytes) - Charge(before));
}

void PagedTables::Written(const std::string& name, const std::string& local_path) {
  if (!IsTable(name)) return;
  uint64_t size = 0;
  std::string fingerprint, object, error;
  if (InterpreterGone(&error)) return;
  int r = callbacks_.describe_table(callbacks_.backend, name, 1, &size, &fingerprint, &object, &error);
  if (r != kOk) return;  // read whole: it stays a whole file
  uint64_t counted;
  {
    std::lock_guard<std::mutex> l(mu_);
    counted = SetWholeLocked(name, 0);
  }
  Status s = cache_->AdoptWritten(local_path, fingerprint, object, size, static_cast<uint64_t>(Charge(counted)));
  if (!s.ok()) {
    // The backend has let go of the file and the store has it: read it in pages later.
    ::unlink(local_path.c_str());
    cache_->ChargeWhole(-Charge(counted));
    return;
  }
  std::lock_guard<std::mutex> l(mu_);
  paged_[name] = fingerprint;
}

void PagedTables::DropPagedLocked(const std::string& name) {
  auto it = paged_.find(name);
  if (it == paged_.end()) return;
  std::string fingerprint = it->second;
  paged_.erase(it);
  cache_->Drop(fingerprint);
}

void PagedTables::Removing(const std::string& name) {
  if (!IsTable(name)) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (paged_.count(name)) return;
  }
  uint64_t size = 0;
  std::string fingerprint, object, error;
  if (InterpreterGone(&error)) return;
  if (callbacks_.describe_table(callbacks_.backend, name, 0, &size, &fingerprint, &object, &error) != kOk) return;
  std::lock_guard<std::mutex> l(mu_);
  paged_.emplace(name, fingerprint);
}

void PagedTables::Removed(const std::string& name) {
  uint64_t before;
  {
    std::lock_guard<std::mutex> l(mu_);
    before = SetWholeLocked(name, 0);
    DropPagedLocked(name);
  }
  if (before > 0) cache_->ChargeWhole(-Charge(before));
}

void PagedTables::Renamed(const std::string& src, const std::string& dst) {
  uint64_t released;
  {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t moved = SetWholeLocked(src, 0);
    released = SetWholeLocked(dst, moved);
    DropPagedLocked(src);
    DropPagedLocked(dst);
  }
  if (released > 0) cache_->ChargeWhole(-Charge(released));
}

}  // namespace levels3
