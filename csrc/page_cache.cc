#include "page_cache.h"

#include "table_tail.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>

namespace levels3 {

using leveldb::Status;

namespace {

constexpr uint64_t kBlock = 4096;  // disk allocation unit the bound rounds pages up to
constexpr const char* kIndexName = "INDEX";
constexpr const char* kIndexHeader = "levels3-pages 1";

// Set on LevelDB's background (compaction) thread, and on a read-ahead worker while it fetches for a
// compaction's stream.
thread_local bool t_compaction_io = false;

uint64_t RoundUp(uint64_t n, uint64_t unit) { return (n + unit - 1) / unit * unit; }

Status PosixError(const std::string& context, int err) {
  return Status::IOError(context, std::strerror(err));
}

// Frees [offset, offset+length) of the file's blocks (length in whole blocks, possibly
// past the end of a file of `file_size` bytes); false (errno set) if the file system cannot.
bool PunchHole(int fd, uint64_t offset, uint64_t length, uint64_t file_size) {
#if defined(__linux__)
  (void)file_size;
  return ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                     static_cast<off_t>(length)) == 0;
#elif defined(__APPLE__) && defined(F_PUNCHHOLE)
  struct fpunchhole args;
  std::memset(&args, 0, sizeof(args));
  args.fp_offset = static_cast<off_t>(offset);
  args.fp_length = static_cast<off_t>(length);
  if (::fcntl(fd, F_PUNCHHOLE, &args) == 0) return true;
  uint64_t inside = file_size > offset ? (file_size - offset) / kBlock * kBlock : 0;
  if (errno == EINVAL && inside > 0 && inside < length) {
    // Not past the end of the file: the file's last partial block stays allocated.
    args.fp_length = static_cast<off_t>(inside);
    return ::fcntl(fd, F_PUNCHHOLE, &args) == 0;
  }
  return false;
#else
  (void)fd;
  (void)offset;
  (void)length;
  (void)file_size;
  errno = EOPNOTSUPP;
  return false;
#endif
}

bool Unsupported(int err) { return err == EOPNOTSUPP || err == ENOSYS || err == EINVAL || err == ENOTSUP; }

Status WriteAll(int fd, const char* data, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t done = ::pwrite(fd, data, n, static_cast<off_t>(offset));
    if (done < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(path, std::string("cannot store a fetched page in the cache directory: ") +
                                       std::strerror(errno));
    }
    data += done;
    n -= static_cast<size_t>(done);
    offset += static_cast<uint64_t>(done);
  }
  return Status::OK();
}

Status ReadAll(int fd, char* data, size_t n, uint64_t offset, const std::string& path, size_t* got) {
  *got = 0;
  while (*got < n) {
    ssize_t done = ::pread(fd, data + *got, n - *got, static_cast<off_t>(offset + *got));
    if (done < 0) {
      if (errno == EINTR) continue;
      return PosixError(path, errno);
    }
    if (done == 0) break;
    *got += static_cast<size_t>(done);
  }
  return Status::OK();
}

// Bytes of pinned, present pages (or of a mapped file) into scratch: from the file's mapping when
// it has one, which never touches a hole being punched or a file being truncated (either could
// fault), else with pread.
Status CopyOut(const char* map, int fd, const std::string& path, uint64_t offset, size_t n, char* scratch,
               size_t* got) {
  if (map == nullptr) return ReadAll(fd, scratch, n, offset, path, got);
  std::memcpy(scratch, map + offset, n);
  *got = n;
  return Status::OK();
}

std::string HexHash(const std::string& text) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a: only spreads names, nothing relies on it
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char out[17];
  std::snprintf(out, sizeof(out), "%016llx", static_cast<unsigned long long>(h));
  return out;
}

std::string FileNameFor(const std::string& object, const std::string& fingerprint) {
  std::string name;
  for (char c : object) {
    bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
    name.push_back(plain ? c : '_');
  }
  if (name.size() > 120) name.resize(120);
  return name + "-" + HexHash(fingerprint);
}

}  // namespace

// -- RangeSource ----------------------------------------------------------------

bool RangeSource::Enter() {
  std::lock_guard<std::mutex> l(mu_);
  if (closed_) return false;
  ++active_;
  return true;
}

void RangeSource::Leave() {
  std::lock_guard<std::mutex> l(mu_);
  if (--active_ == 0) idle_.notify_all();
}

bool RangeSource::closing() {
  std::lock_guard<std::mutex> l(mu_);
  return closed_;
}

void RangeSource::Close() {
  std::unique_lock<std::mutex> l(mu_);
  closed_ = true;
  idle_.wait(l, [this] { return active_ == 0; });
}

void PageCache::MarkCompactionThread() { t_compaction_io = true; }
bool PageCache::OnCompactionThread() { return t_compaction_io; }

// -- PageFile ---------------------------------------------------------------------

void PageFile::Fd::Map(uint64_t size) {
  if (size == 0) return;
  void* base = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return;  // reads fall back to pread
  map = static_cast<const char*>(base);
  map_size = size;
}

PageFile::Fd::~Fd() {
  if (map != nullptr) ::munmap(const_cast<char*>(map), static_cast<size_t>(map_size));
  if (fd >= 0) ::close(fd);
}

PageFile::PageFile(std::string fingerprint, std::string path, uint64_t size, uint32_t page_size)
    : fingerprint_(std::move(fingerprint)),
      path_(std::move(path)),
      size_(size),
      count_(static_cast<uint32_t>((size + page_size - 1) / page_size)),
      pages_(new Page[count_ == 0 ? 1 : count_]) {}

// -- PageCache: opening, restoring, closing ------------------------------------------

PageCache::PageCache(std::string directory, uint64_t max_bytes, uint32_t page_size)
    : directory_(std::move(directory)), max_bytes_(max_bytes), page_size_(page_size) {
  stats_.page_size = page_size;
  stats_.max_bytes = max_bytes;
}

Status PageCache::Open(const std::string& directory, uint64_t max_bytes, uint32_t page_size,
                       std::shared_ptr<PageCache>* result) {
  result->reset();
  if (page_size < 4096 || (page_size & (page_size - 1)) != 0) {
    return Status::InvalidArgument("cache_page_size", "must be a power of two from 4096");
  }
  if (::mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) return PosixError(directory, errno);
  std::shared_ptr<PageCache> cache(new PageCache(directory, max_bytes, page_size));
  Status s = cache->Restore();
  if (!s.ok()) return s;
  *result = std::move(cache);
  return Status::OK();
}

Status PageCache::Restore() {
  std::unique_lock<std::mutex> l(mu_);
  const std::string index_path = directory_ + "/" + kIndexName;
  std::set<std::string> kept;
  FILE* in = std::fopen(index_path.c_str(), "r");
  if (in != nullptr) {
    std::string text;
    char chunk[65536];
    size_t got;
    while ((got = std::fread(chunk, 1, sizeof(chunk), in)) > 0) text.append(chunk, got);
    std::fclose(in);
    // Deleted at once: a crash from here on leaves no index, and so discards the pages.
    ::unlink(index_path.c_str());
    std::istringstream lines(text);
    std::string line;
    bool valid = std::getline(lines, line) &&
                 line == std::string(kIndexHeader) + " " + std::to_string(page_size_);
    while (valid && std::getline(lines, line)) {
      // size \t file \t bitmap(hex) \t fingerprint
      size_t a = line.find('\t');
      size_t b = a == std::string::npos ? a : line.find('\t', a + 1);
      size_t c = b == std::string::npos ? b : line.find('\t', b + 1);
      if (c == std::string::npos) continue;
      uint64_t size = std::strtoull(line.substr(0, a).c_str(), nullptr, 10);
      std::string file = line.substr(a + 1, b - a - 1);
      std::string bitmap = line.substr(b + 1, c - b - 1);
      std::string fingerprint = line.substr(c + 1);
      if (file.empty() || file.find('/') != std::string::npos || files_.count(fingerprint)) continue;
      std::string path = directory_ + "/" + file;
      struct stat st;
      if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != size) {
        continue;
      }
      auto f = std::shared_ptr<PageFile>(new PageFile(fingerprint, path, size, page_size_));
      if (bitmap.size() != 2 * ((f->count_ + 7) / 8)) continue;
      for (uint32_t p = 0; p < f->count_; ++p) {
        unsigned byte = static_cast<unsigned>(std::strtoul(bitmap.substr(2 * (p / 8), 2).c_str(), nullptr, 16));
        if ((byte >> (p % 8)) & 1) {
          PageFile::Page& page = f->pages_[p];
          page.state = PageFile::kPresent;
          page.lru = lru_.insert(lru_.end(), {f.get(), p});
          ++f->present_;
          used_ += PageCharge(*f, p);
          ++stats_.reused_pages;
        }
      }
      f->tail_seen_ = f->count_ > 0 && f->pages_[f->count_ - 1].state == PageFile::kPresent;
      files_[fingerprint] = f;
      kept.insert(file);
    }
  }
  // Everything the index does not vouch for goes.
  DIR* dir = ::opendir(directory_.c_str());
  if (dir == nullptr) return PosixError(directory_, errno);
  while (struct dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == ".." || kept.count(name)) continue;
    ::unlink((directory_ + "/" + name).c_str());
  }
  ::closedir(dir);
  stats_.peak_bytes = used_;
  ReserveLocked(l, 0);  // the bound may have shrunk since the last run
  return Status::OK();
}

PageCache::~PageCache() { Close(false); }

Status PageCache::Close(bool keep) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (closed_) return Status::OK();
    closed_ = true;
  }
  work_.notify_all();
  for (auto& worker : workers_) worker.join();
  workers_.clear();
  std::unique_lock<std::mutex> l(mu_);
  Status s;
  if (keep) {
    // Files in the order their oldest page was used: a restart rebuilds the LRU from it.
    std::vector<PageFile*> order;
    std::set<PageFile*> seen;
    for (auto& entry : lru_) {
      if (seen.insert(entry.first).second) order.push_back(entry.first);
    }
    std::string text = std::string(kIndexHeader) + " " + std::to_string(page_size_) + "\n";
    for (PageFile* f : order) {
      if (f->busy_ != 0 || f->fingerprint_.find('\n') != std::string::npos) continue;
      std::string bitmap((f->count_ + 7) / 8 * 2, '0');
      for (uint32_t p = 0; p < f->count_; p += 8) {
        unsigned byte = 0;
        for (uint32_t bit = 0; bit < 8 && p + bit < f->count_; ++bit) {
          if (f->pages_[p + bit].state == PageFile::kPresent) byte |= 1u << bit;
        }
        char hex[3];
        std::snprintf(hex, sizeof(hex), "%02x", byte);
        bitmap[p / 8 * 2] = hex[0];
        bitmap[p / 8 * 2 + 1] = hex[1];
      }
      std::string file = f->path_.substr(directory_.size() + 1);
      text += std::to_string(f->size_) + "\t" + file + "\t" + bitmap + "\t" + f->fingerprint_ + "\n";
    }
    const std::string tmp = directory_ + "/" + kIndexName + ".tmp";
    FILE* out = std::fopen(tmp.c_str(), "w");
    if (out == nullptr) {
      s = PosixError(tmp, errno);
    } else {
      bool ok = std::fwrite(text.data(), 1, text.size(), out) == text.size();
      ok = (std::fclose(out) == 0) && ok;
      if (!ok || ::rename(tmp.c_str(), (directory_ + "/" + kIndexName).c_str()) != 0) {
        s = PosixError(tmp, errno);
        ::unlink(tmp.c_str());
      }
    }
  } else {
    for (auto& entry : files_) ::unlink(entry.second->path_.c_str());
  }
  return s;
}

// -- files --------------------------------------------------------------------------

Status PageCache::Acquire(const std::string& fingerprint, const std::string& object, uint64_t size,
                          std::shared_ptr<PageFile>* result) {
  result->reset();
  std::lock_guard<std::mutex> l(mu_);
  if (closed_) return Status::IOError(object, "the page cache is closed");
  std::shared_ptr<PageFile>& f = files_[fingerprint];
  bool fresh = f == nullptr;
  if (fresh) f.reset(new PageFile(fingerprint, directory_ + "/" + FileNameFor(object, fingerprint), size, page_size_));
  if (f->size_ != size) return Status::Corruption(object, "size differs from the cached copy's");
  if (f->fd_ == nullptr) {
    int fd = ::open(f->path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | (fresh ? O_TRUNC : 0), 0600);
    if (fd < 0 || (fresh && ::ftruncate(fd, static_cast<off_t>(size)) != 0)) {
      int err = errno;
      if (fd >= 0) ::close(fd);
      if (fresh) files_.erase(fingerprint);
      return PosixError(directory_, err);
    }
    f->fd_ = std::make_shared<PageFile::Fd>(fd);
    f->fd_->Map(size);
  }
  ++f->users_;
  *result = f;
  return Status::OK();
}

void PageCache::Release(const std::shared_ptr<PageFile>& file) {
  std::lock_guard<std::mutex> l(mu_);
  ReleaseLocked(file.get());
}

void PageCache::ReleaseLocked(PageFile* f) {
  if (--f->users_ == 0) f->fd_.reset();
  ForgetIfUnused(f);
}

void PageCache::ForgetIfUnused(PageFile* f) {
  if (f->users_ != 0 || f->present_ != 0 || f->busy_ != 0) return;
  auto it = files_.find(f->fingerprint_);
  if (it == files_.end() || it->second.get() != f) return;  // already forgotten
  ::unlink(f->path_.c_str());
  files_.erase(it);  // may destroy *f
}

Status PageCache::AdoptWritten(const std::string& local_path, const std::string& fingerprint,
                               const std::string& object, uint64_t size, uint64_t whole_bytes) {
  int fd = ::open(local_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PosixError(local_path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != size) {
    ::close(fd);
    return Status::Corruption(local_path, "size differs from the upload's");
  }
  LearnTail(size, [fd](uint64_t offset, size_t n, std::string* out) {
    out->resize(n);
    size_t got = 0;
    return ReadAll(fd, &(*out)[0], n, offset, "", &got).ok() && got == n;
  });
  ::close(fd);
  std::unique_lock<std::mutex> l(mu_);
  if (closed_) return Status::IOError(object, "the page cache is closed");
  if (files_.count(fingerprint)) return Status::InvalidArgument(object, "already in the page cache");
  const std::string path = directory_ + "/" + FileNameFor(object, fingerprint);
  if (::rename(local_path.c_str(), path.c_str()) != 0) return PosixError(path, errno);
  auto f = std::shared_ptr<PageFile>(new PageFile(fingerprint, path, size, page_size_));
  // The same bytes, counted as pages from now on.
  whole_bytes = std::min(whole_bytes, whole_);
  whole_ -= whole_bytes;
  used_ -= std::min(whole_bytes, used_);
  uint64_t charge = 0;
  for (uint32_t p = 0; p < f->count_; ++p) {
    PageFile::Page& page = f->pages_[p];
    page.state = PageFile::kPresent;
    page.lru = lru_.insert(lru_.end(), {f.get(), p});
    charge += PageCharge(*f, p);
  }
  f->present_ = f->count_;
  f->tail_seen_ = true;
  files_[fingerprint] = f;
  ReserveLocked(l, charge);
  ForgetIfUnused(f.get());  // a bound smaller than the table may have evicted all of it
  return Status::OK();
}

void PageCache::Drop(const std::string& fingerprint) {
  std::unique_lock<std::mutex> l(mu_);
  auto it = files_.find(fingerprint);
  if (it == files_.end()) return;
  DropLocked(l, it->second);
}

void PageCache::DropLocked(std::unique_lock<std::mutex>& l, std::shared_ptr<PageFile> f) {
  if (f->mapped_ > 0) return;  // LevelDB holds slices into it; it goes by the LRU once unmapped
  if (f->users_ == 0 && f->busy_ == 0) {
    // Nobody reads it: unlinking frees every block at once.
    for (uint32_t p = 0; p < f->count_; ++p) {
      PageFile::Page& page = f->pages_[p];
      if (page.state != PageFile::kPresent) continue;
      ForgetAhead(f.get(), p, /*wasted=*/false);
      page.state = PageFile::kAbsent;
      lru_.erase(page.lru);
      used_ -= std::min(PageCharge(*f, p), used_);
    }
    f->present_ = 0;
    ForgetIfUnused(f.get());
    return;
  }
  std::vector<Eviction> victims;
  if (punch_holes_) {
    for (uint32_t p = 0; p < f->count_; ++p) {
      if (f->pages_[p].state == PageFile::kPresent && f->pages_[p].pins.load(std::memory_order_acquire) == 0) {
        ForgetAhead(f.get(), p, /*wasted=*/false);  // the table is gone: nobody will read it
        MarkEvicting(f.get(), p);
        victims.push_back({f.get(), p, 1, f->fd_});
      }
    }
  } else if (WholeFileEvictable(*f)) {
    MarkWholeFileEvicting(f.get());
    victims.push_back({f.get(), 0, 0, f->fd_});
  }
  if (!victims.empty()) EvictLocked(l, &victims, /*count=*/false);
  ForgetIfUnused(f.get());
}

void PageCache::Retain(const std::set<std::string>& live) {
  std::unique_lock<std::mutex> l(mu_);
  std::vector<std::shared_ptr<PageFile>> stale;
  for (auto& entry : files_) {
    if (!live.count(entry.first)) stale.push_back(entry.second);
  }
  for (auto& f : stale) {
    stats_.reused_pages -= std::min<uint64_t>(stats_.reused_pages, f->present_);
    DropLocked(l, f);
  }
}

void PageCache::ReserveForWholeFiles(uint64_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  whole_reserve_ = std::max(whole_reserve_, bytes);
}

void PageCache::ChargeWhole(int64_t delta) {
  std::unique_lock<std::mutex> l(mu_);
  if (delta >= 0) {
    whole_ += static_cast<uint64_t>(delta);
    whole_reserve_ = std::max(whole_reserve_, whole_);
    ReserveLocked(l, static_cast<uint64_t>(delta));
  } else {
    uint64_t release = std::min<uint64_t>(static_cast<uint64_t>(-delta), whole_);
    whole_ -= release;
    used_ -= std::min(release, used_);
  }
}

// -- the budget ------------------------------------------------------------------------

uint64_t PageCache::PageCharge(const PageFile& f, uint32_t page) const {
  uint64_t start = static_cast<uint64_t>(page) * page_size_;
  return RoundUp(std::min<uint64_t>(page_size_, f.size_ - start), kBlock);
}

uint64_t PageCache::FileCharge(const PageFile& f) const {
  uint64_t total = 0;
  for (uint32_t p = 0; p < f.count_; ++p) total += PageCharge(f, p);
  return total;
}

void PageCache::MarkEvicting(PageFile* f, uint32_t p) {
  ForgetAhead(f, p, /*wasted=*/true);
  PageFile::Page& page = f->pages_[p];
  page.state = PageFile::kEvicting;
  lru_.erase(page.lru);
  --f->present_;
  ++f->busy_;
  evicting_ += PageCharge(*f, p);
}

bool PageCache::WholeFileEvictable(const PageFile& f) const {
  if (f.busy_ != 0 || f.truncating_) return false;
  for (uint32_t p = 0; p < f.count_; ++p) {
    if (f.pages_[p].state == PageFile::kPresent && f.pages_[p].pins.load(std::memory_order_acquire) != 0) return false;
  }
  return true;
}

void PageCache::MarkWholeFileEvicting(PageFile* f) {
  f->truncating_ = true;
  for (uint32_t p = 0; p < f->count_; ++p) {
    if (f->pages_[p].state == PageFile::kPresent) MarkEvicting(f, p);
  }
}

bool PageCache::PickVictim(std::vector<Eviction>* victims) {
  // Pages read ahead and not read yet go last: their readers are on the way.
  return PickVictimPass(victims, false) || PickVictimPass(victims, true);
}

bool PageCache::PickVictimPass(std::vector<Eviction>* victims, bool unread_ahead) {
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    PageFile* f = it->first;
    uint32_t p = it->second;
    if (f->pages_[p].pins.load(std::memory_order_acquire) != 0) continue;
    if (f->pages_[p].ahead && !unread_ahead) continue;
    if (punch_holes_) {
      MarkEvicting(f, p);  // erases *it
      victims->push_back({f, p, 1, f->fd_});
      return true;
    }
    if (!WholeFileEvictable(*f)) continue;
    MarkWholeFileEvicting(f);  // erases *it
    victims->push_back({f, 0, 0, f->fd_});
    return true;
  }
  return false;
}

void PageCache::ReserveLocked(std::unique_lock<std::mutex>& l, uint64_t bytes) {
  used_ += bytes;
  const uint64_t floor = FloorBytes();
  int failures = 0;
  while (used_ > max_bytes_) {
    std::vector<Eviction> victims;
    // Pages (present, being fetched or punched) = used_ - whole_: whole files never evict the last
    // `floor` of them.
    while (used_ - std::min(evicting_, used_) > max_bytes_ &&
           used_ - std::min(whole_ + evicting_, used_) > floor && PickVictim(&victims)) {
    }
    if (!victims.empty()) {
      // A punch that failed for want of support is tried again, truncating whole files.
      if (!EvictLocked(l, &victims, /*count=*/true) && ++failures >= 3) break;
      continue;
    }
    // Pages another thread is punching are on disk until its punch returns: wait for it rather than
    // write beside it (the caller writes as soon as this returns).
    if (evicting_ == 0) break;  // nothing evictable: pinned pages, the floor, or whole files alone
    changed_.wait(l);
  }
  // The caller writes only now: the most the directory can hold at this point.
  stats_.peak_bytes = std::max(stats_.peak_bytes, used_);
}

uint64_t PageCache::FloorBytes() const {
  return std::min<uint64_t>(static_cast<uint64_t>(kFloorPages) * page_size_, max_bytes_);
}

uint64_t PageCache::ReadaheadBudget() const {
  // Half of what whole files leave for pages (or of the floor, when they leave less): read-ahead
  // that outgrows the room evicts pages read ahead for other streams before their readers arrive.
  const uint64_t room = max_bytes_ - std::min(max_bytes_, whole_);
  return std::max(room, FloorBytes()) / 2;
}

void PageCache::MarkAhead(PageFile* f, uint32_t first, uint32_t count) {
  for (uint32_t p = first; p < first + count; ++p) {
    PageFile::Page& page = f->pages_[p];
    if (page.ahead) continue;
    page.ahead = true;
    unread_ahead_ += PageCharge(*f, p);
  }
}

void PageCache::ForgetAhead(PageFile* f, uint32_t p, bool wasted) {
  PageFile::Page& page = f->pages_[p];
  if (!page.ahead) return;
  page.ahead = false;
  const uint64_t charge = PageCharge(*f, p);
  unread_ahead_ -= std::min(charge, unread_ahead_);
  if (wasted) stats_.readahead_wasted_bytes += charge;
}

bool PageCache::EvictLocked(std::unique_lock<std::mutex>& l, std::vector<Eviction>* victims, bool count) {
  l.unlock();
  for (Eviction& e : *victims) {
    std::shared_ptr<PageFile::Fd> fd = e.fd;
    if (fd == nullptr) {
      int raw = ::open(e.file->path_.c_str(), O_RDWR | O_CLOEXEC);
      if (raw < 0) {
        e.ok = errno == ENOENT;  // nothing on disk to free
        continue;
      }
      fd = std::make_shared<PageFile::Fd>(raw);
    }
    if (e.count == 0) {
      e.ok = ::ftruncate(fd->fd, 0) == 0 && ::ftruncate(fd->fd, static_cast<off_t>(e.file->size_)) == 0;
    } else {
      uint64_t offset = static_cast<uint64_t>(e.first) * page_size_;
      uint64_t length = std::min<uint64_t>(static_cast<uint64_t>(e.count) * page_size_, e.file->size_ - offset);
      // Whole blocks: a file system only zeroes a partial one (the file's last page).
      e.ok = PunchHole(fd->fd, offset, RoundUp(length, kBlock), e.file->size_);
      e.unsupported = !e.ok && Unsupported(errno);
    }
  }
  l.lock();
  bool all_ok = true;
  for (Eviction& e : *victims) {
    PageFile* f = e.file;
    bool whole = e.count == 0;
    uint32_t first = whole ? 0 : e.first, end = whole ? f->count_ : e.first + e.count;
    for (uint32_t p = first; p < end; ++p) {
      PageFile::Page& page = f->pages_[p];
      if (page.state != PageFile::kEvicting) continue;
      uint64_t charge = PageCharge(*f, p);
      evicting_ -= std::min(charge, evicting_);
      --f->busy_;
      if (e.ok) {
        page.state = PageFile::kAbsent;
        used_ -= std::min(charge, used_);
        if (count) ++stats_.evictions;
      } else {
        page.state = PageFile::kPresent;  // still on disk: back as the oldest
        page.lru = lru_.insert(lru_.begin(), {f, p});
        ++f->present_;
      }
    }
    if (whole) f->truncating_ = false;
    if (e.unsupported) punch_holes_ = false;
    all_ok = all_ok && e.ok;
  }
  changed_.notify_all();
  for (Eviction& e : *victims) e.fd.reset();
  // Forget files left empty (after the loop: forgetting may destroy a file named twice).
  std::set<PageFile*> files;
  for (Eviction& e : *victims) files.insert(e.file);
  for (PageFile* f : files) ForgetIfUnused(f);
  return all_ok;
}

// -- reading ----------------------------------------------------------------------------

uint64_t PageCache::TailEstimate(uint64_t size) const {
  if (tail_ratio_ <= 0) return std::min(size, kDefaultTail);
  uint64_t estimate = static_cast<uint64_t>(static_cast<double>(size) * tail_ratio_ * 1.125) + kBlock;
  return std::min(size, estimate);
}

void PageCache::LearnTail(uint64_t size, const std::function<bool(uint64_t, size_t, std::string*)>& read) {
  if (size == 0) return;
  uint64_t start = TableTailStart(size, read);
  if (start >= size) return;
  double ratio = static_cast<double>(size - start) / static_cast<double>(size);
  std::lock_guard<std::mutex> l(mu_);
  tail_ratio_ = std::max(tail_ratio_, ratio);
}

Status PageCache::FetchRun(std::unique_lock<std::mutex>& l, PageFile* f, RangeSource* source,
                           const std::string& name, uint32_t first, uint32_t count, FetchKind kind,
                           uint32_t pin_first, uint32_t pin_last, uint8_t* mine) {
  uint64_t begin = static_cast<uint64_t>(first) * page_size_;
  uint64_t end = std::min<uint64_t>(f->size_, static_cast<uint64_t>(first + count) * page_size_);
  uint64_t charge = 0;
  for (uint32_t p = first; p < first + count; ++p) charge += PageCharge(*f, p);
  ReserveLocked(l, charge);
  std::shared_ptr<PageFile::Fd> fd = f->fd_;
  l.unlock();
  std::unique_ptr<char[]> buffer(new char[end - begin]);
  Status s = source->Fetch(name, begin, static_cast<size_t>(end - begin), buffer.get());
  if (s.ok()) s = Store(f, fd.get(), begin, end, buffer.get(), kind);
  l.lock();
  Settle(f, first, count, s, kind, end - begin, pin_first, pin_last, mine);
  return s;
}

Status PageCache::Store(PageFile* f, PageFile::Fd* fd, uint64_t begin, uint64_t end, const char* data,
                        FetchKind kind) {
  Status s = WriteAll(fd->fd, data, static_cast<size_t>(end - begin), begin, f->path_);
  if (!s.ok()) {
    PunchHole(fd->fd, begin, RoundUp(end - begin, kBlock), f->size_);  // what a full disk let through
    return s;
  }
  if (kind == kFetchTail) {
    LearnTail(f->size_, [data, begin, end](uint64_t offset, size_t n, std::string* out) {
      if (offset < begin || offset + n > end) return false;
      out->assign(data + (offset - begin), n);
      return true;
    });
  }
  return s;
}

void PageCache::Settle(PageFile* f, uint32_t first, uint32_t count, const Status& s, FetchKind kind,
                       uint64_t bytes, uint32_t pin_first, uint32_t pin_last, uint8_t* mine) {
  for (uint32_t p = first; p < first + count; ++p) {
    PageFile::Page& page = f->pages_[p];
    if (s.ok()) {
      page.state = PageFile::kPresent;
      page.lru = lru_.insert(lru_.end(), {f, p});
      ++f->present_;
      if (mine != nullptr && p >= pin_first && p <= pin_last) {
        page.pins.fetch_add(1, std::memory_order_relaxed);
        mine[p - pin_first] = 1;
      }
    } else {
      ForgetAhead(f, p, /*wasted=*/false);
      page.state = PageFile::kAbsent;
      used_ -= std::min(PageCharge(*f, p), used_);
    }
  }
  f->busy_ -= count;
  if (s.ok()) CountFetchLocked(kind, bytes, t_compaction_io);
  changed_.notify_all();
}

void PageCache::CountFetchLocked(FetchKind kind, uint64_t bytes, bool compaction) {
  ++stats_.requests[kind];
  stats_.bytes_fetched[kind] += bytes;
  if (compaction) {
    ++stats_.compaction_requests[kind];
    stats_.compaction_bytes_fetched[kind] += bytes;
  }
}

// -- prefetching tails ----------------------------------------------------------------

bool PageCache::ClaimTail(const std::string& fingerprint, const std::string& object, uint64_t size,
                          TailClaim* claim) {
  *claim = TailClaim();
  if (size == 0) return false;
  std::shared_ptr<PageFile> file;
  if (!Acquire(fingerprint, object, size, &file).ok()) return false;
  std::unique_lock<std::mutex> l(mu_);
  PageFile* f = file.get();
  uint32_t first = f->count_, count = 0;
  if (!closed_ && !f->tail_seen_ && !f->truncating_ && f->mapped_ == 0) {
    const uint64_t tail = TailEstimate(f->size_);
    const uint32_t tail_first = static_cast<uint32_t>((f->size_ - tail) / page_size_);
    while (first > tail_first && f->pages_[first - 1].state == PageFile::kAbsent) {
      --first;
      ++count;
    }
  }
  if (count == 0) {
    ReleaseLocked(f);
    return false;
  }
  f->tail_seen_ = true;  // LevelDB's first read waits for these pages instead of fetching them
  Claim(f, first, count);
  uint64_t charge = 0;
  for (uint32_t p = first; p < first + count; ++p) charge += PageCharge(*f, p);
  ReserveLocked(l, charge);
  claim->file = std::move(file);
  claim->first = first;
  claim->count = count;
  claim->offset = static_cast<uint64_t>(first) * page_size_;
  claim->length = std::min<uint64_t>(f->size_, static_cast<uint64_t>(first + count) * page_size_) - claim->offset;
  return true;
}

Status PageCache::CompleteTail(TailClaim* claim, const char* data, size_t n) {
  if (claim->file == nullptr) return Status::OK();
  PageFile* f = claim->file.get();
  Status s;
  if (data == nullptr) {
    s = Status::IOError(f->path_, "the tail was not fetched");
  } else if (n != claim->length) {
    s = Status::Corruption(f->path_, "a prefetched tail of the wrong size");
  } else {
    std::shared_ptr<PageFile::Fd> fd;
    {
      std::lock_guard<std::mutex> l(mu_);
      fd = f->fd_;  // the claim keeps the file open
    }
    s = Store(f, fd.get(), claim->offset, claim->offset + claim->length, data, kFetchTail);
  }
  std::unique_lock<std::mutex> l(mu_);
  if (!s.ok()) f->tail_seen_ = false;  // LevelDB's own first read fetches the tail, as without a prefetch
  Settle(f, claim->first, claim->count, s, kFetchTail, claim->length, 0, 0, nullptr);
  ++stats_.tails_prefetched;
  ReleaseLocked(f);
  l.unlock();
  claim->file.reset();
  return s;
}

void PageCache::Claim(PageFile* f, uint32_t first, uint32_t count) {
  for (uint32_t p = first; p < first + count; ++p) f->pages_[p].state = PageFile::kFetching;
  f->busy_ += count;
}

Status PageCache::Read(PageFile* f, const std::shared_ptr<RangeSource>& source, const std::string& name,
                       uint64_t offset, size_t n, char* scratch, size_t* got, bool* whole) {
  *got = 0;
  *whole = false;
  if (offset >= f->size_ || n == 0) return Status::OK();
  n = static_cast<size_t>(std::min<uint64_t>(n, f->size_ - offset));
  const uint32_t p0 = static_cast<uint32_t>(offset / page_size_);
  const uint32_t p1 = static_cast<uint32_t>((offset + n - 1) / page_size_);
  const uint32_t span = p1 - p0 + 1;
  uint8_t inline_mine[16] = {0};
  std::unique_ptr<uint8_t[]> heap_mine;
  uint8_t* mine = inline_mine;
  if (span > sizeof(inline_mine)) {
    heap_mine.reset(new uint8_t[span]());
    mine = heap_mine.get();
  }
  Status s;
  bool missed = false;
  std::unique_lock<std::mutex> l(mu_);
  if (closed_) return Status::IOError(name, "the page cache is closed");
  while (true) {
    if (f->mapped_ > 0 && f->fd_->map != nullptr) {
      // Another reader serves it zero-copy: nothing of it can go, and this one may join.
      // Checked on every pass: the file may have been mapped while this reader waited
      // (MapWhole maps only a file nobody has pinned, so this one holds no pins), and
      // a mapped file's pages are off the LRU list (their list positions are stale).
      ++(missed ? stats_.misses : stats_.hits);
      *whole = true;
      std::shared_ptr<PageFile::Fd> fd = f->fd_;
      l.unlock();
      std::memcpy(scratch, fd->map + offset, n);
      *got = n;
      return Status::OK();
    }
    bool waiting = false;
    uint32_t run_first = 0, run_count = 0;
    for (uint32_t p = p0; p <= p1; ++p) {
      if (mine[p - p0]) continue;
      PageFile::Page& page = f->pages_[p];
      if (page.state == PageFile::kPresent) {
        page.pins.fetch_add(1, std::memory_order_relaxed);
        mine[p - p0] = 1;
        lru_.splice(lru_.end(), lru_, page.lru);
        ForgetAhead(f, p, /*wasted=*/false);  // read ahead, and now read
      } else if (page.state == PageFile::kAbsent && !f->truncating_) {
        if (run_count == 0) {
          run_first = p;
          run_count = 1;
        } else if (p == run_first + run_count) {
          ++run_count;
        }  // a second run waits for the next pass
      } else {
        waiting = true;
      }
    }
    if (run_count > 0) {
      missed = true;
      FetchKind kind = kFetchData;
      if (!f->tail_seen_ && run_first + run_count == f->count_) {
        // Table::Open starts with the footer: fetch the whole tail in the same request.
        uint64_t tail = TailEstimate(f->size_);
        uint32_t tail_first = static_cast<uint32_t>((f->size_ - tail) / page_size_);
        while (run_first > tail_first && f->pages_[run_first - 1].state == PageFile::kAbsent) {
          --run_first;
          ++run_count;
        }
        kind = kFetchTail;
      } else if (run_first + run_count == p1 + 1 && Sequential(*f, offset)) {
        // A scan that caught up with its read-ahead: take the next pages in this request.
        const uint64_t budget = ReadaheadBudget();
        uint64_t extra = 0;
        while (run_count < std::min(kReadaheadRunPages, ReadaheadCap()) && run_first + run_count < f->count_ &&
               f->pages_[run_first + run_count].state == PageFile::kAbsent &&
               unread_ahead_ + extra + PageCharge(*f, run_first + run_count) <= budget) {
          extra += PageCharge(*f, run_first + run_count);
          ++run_count;
        }
      }
      f->tail_seen_ = true;
      Claim(f, run_first, run_count);
      if (kind == kFetchData && run_first + run_count > p1 + 1) {
        MarkAhead(f, p1 + 1, run_first + run_count - (p1 + 1));
      }
      s = FetchRun(l, f, source.get(), name, run_first, run_count, kind, p0, p1, mine);
      if (!s.ok()) break;
      continue;
    }
    if (waiting) {
      missed = true;
      changed_.wait(l);
      if (closed_) {
        s = Status::IOError(name, "the page cache is closed");
        break;
      }
      continue;
    }
    break;
  }
  if (missed) {
    ++stats_.misses;
  } else {
    ++stats_.hits;
  }
  if (s.ok()) MaybeReadahead(f, source, name, offset, n);
  *whole = f->present_ == f->count_ && f->busy_ == 0;
  std::shared_ptr<PageFile::Fd> fd = f->fd_;
  l.unlock();
  if (s.ok()) s = CopyOut(fd->map, fd->fd, f->path_, offset, n, scratch, got);
  for (uint32_t i = 0; i < span; ++i) {
    if (mine[i]) f->pages_[p0 + i].pins.fetch_sub(1, std::memory_order_release);
  }
  return s;
}

bool PageCache::ReadIfPresent(PageFile* f, uint64_t offset, size_t n, char* scratch, size_t* got) {
  *got = 0;
  if (offset >= f->size_ || n == 0) return true;
  n = static_cast<size_t>(std::min<uint64_t>(n, f->size_ - offset));
  const uint32_t p0 = static_cast<uint32_t>(offset / page_size_);
  const uint32_t p1 = static_cast<uint32_t>((offset + n - 1) / page_size_);
  std::unique_lock<std::mutex> l(mu_);
  if (closed_) return false;
  std::shared_ptr<PageFile::Fd> fd = f->fd_;
  if (f->mapped_ > 0 && fd->map != nullptr) {
    l.unlock();
    return CopyOut(fd->map, fd->fd, f->path_, offset, n, scratch, got).ok();  // mapped: nothing of it can go
  }
  if (!PagesPresentLocked(*f, p0, p1)) return false;
  for (uint32_t p = p0; p <= p1; ++p) {
    PageFile::Page& page = f->pages_[p];
    page.pins.fetch_add(1, std::memory_order_relaxed);
    ForgetAhead(f, p, /*wasted=*/false);
    lru_.splice(lru_.begin(), lru_, page.lru);
  }
  l.unlock();
  Status s = CopyOut(fd->map, fd->fd, f->path_, offset, n, scratch, got);
  for (uint32_t p = p0; p <= p1; ++p) f->pages_[p].pins.fetch_sub(1, std::memory_order_release);
  return s.ok() && *got == n;
}

bool PageCache::Present(PageFile* f, uint64_t offset, size_t n) {
  if (offset >= f->size_ || n == 0) return true;
  n = static_cast<size_t>(std::min<uint64_t>(n, f->size_ - offset));
  const uint32_t p0 = static_cast<uint32_t>(offset / page_size_);
  const uint32_t p1 = static_cast<uint32_t>((offset + n - 1) / page_size_);
  std::lock_guard<std::mutex> l(mu_);
  if (closed_) return false;
  return f->mapped_ > 0 || PagesPresentLocked(*f, p0, p1);
}

bool PageCache::PagesPresentLocked(const PageFile& f, uint32_t first, uint32_t last) const {
  for (uint32_t p = first; p <= last; ++p) {
    if (f.pages_[p].state != PageFile::kPresent) return false;
  }
  return true;
}

bool PageCache::WhollyPresent(const std::string& fingerprint) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = files_.find(fingerprint);
  return it != files_.end() && (it->second->mapped_ > 0 || it->second->present_ == it->second->count_);
}

void PageCache::CountCompactionWaste(uint64_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  stats_.readahead_wasted_bytes += bytes;
}

void PageCache::CountCompactionGuess() {
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.compaction_inputs_fetched_ahead;
}

void PageCache::CountCompactionRead(bool missed) {
  std::lock_guard<std::mutex> l(mu_);
  ++(missed ? stats_.misses : stats_.hits);
}

void PageCache::CountCompactionFetch(uint64_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  CountFetchLocked(kFetchReadahead, bytes, /*compaction=*/true);  // from a background chunk's thread too
}

const char* PageCache::MapWhole(PageFile* f) {
  std::lock_guard<std::mutex> l(mu_);
  if (closed_ || f->fd_ == nullptr || f->fd_->map == nullptr) return nullptr;
  if (f->mapped_ == 0) {
    if (f->present_ != f->count_ || f->busy_ != 0) return nullptr;
    uint64_t charge = FileCharge(*f);
    uint64_t share = (max_bytes_ - std::min(max_bytes_, whole_reserve_)) / 2;
    if (mapped_bytes_ + charge > share) return nullptr;
    for (uint32_t p = 0; p < f->count_; ++p) {
      if (f->pages_[p].pins.load(std::memory_order_acquire) != 0) return nullptr;  // a copy in progress
    }
    for (uint32_t p = 0; p < f->count_; ++p) {
      lru_.erase(f->pages_[p].lru);
      ForgetAhead(f, p, /*wasted=*/false);  // read through the mapping from now on
    }
    mapped_bytes_ += charge;
  }
  ++f->mapped_;
  return f->fd_->map;
}

void PageCache::Unmap(PageFile* f) {
  std::lock_guard<std::mutex> l(mu_);
  if (--f->mapped_ > 0) return;
  mapped_bytes_ -= std::min(mapped_bytes_, FileCharge(*f));
  for (uint32_t p = 0; p < f->count_; ++p) f->pages_[p].lru = lru_.insert(lru_.end(), {f, p});
}

// -- read-ahead ---------------------------------------------------------------------------

uint32_t PageCache::ReadaheadCap() const {
  // Pages read ahead must outlive their wait in the LRU: a window of an eighth of the bound at
  // most, or a scan under a small bound evicts its own read-ahead and fetches it again.
  const uint64_t pages = max_bytes_ / page_size_ / 8;
  return static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(pages, kMaxReadaheadPages)));
}

bool PageCache::Sequential(const PageFile& f, uint64_t offset) const {
  for (const auto& stream : f.streams_) {
    if (stream.next == offset && stream.run >= 2) return true;
  }
  return false;
}

void PageCache::MaybeReadahead(PageFile* f, const std::shared_ptr<RangeSource>& source, const std::string& name,
                               uint64_t offset, size_t n) {
  const uint64_t clock = ++stream_clock_;
  PageFile::Stream* stream = nullptr;
  for (auto& candidate : f->streams_) {
    if (candidate.next == offset) stream = &candidate;
  }
  const uint32_t cap = ReadaheadCap();
  if (stream == nullptr) {
    stream = f->streams_[0].used <= f->streams_[1].used ? &f->streams_[0] : &f->streams_[1];
    *stream = PageFile::Stream();
    stream->next = offset + n;
    stream->used = clock;
    // A table read from its first block is a scan or a compaction input far more often than a
    // get: start reading ahead at once, with a small window (a get that reads block 0 wastes
    // little), instead of after two more reads, each a round trip at every table a scan enters.
    if (offset != 0) return;
    stream->run = 2;
    stream->window = std::min(kFirstBlockWindowPages, cap);
  } else {
    stream->next = offset + n;
    stream->used = clock;
    // A scan or a compaction reads a table once: the pages it has read past are the first to go,
    // before pages other readers (and the other streams' read-ahead) still need.
    if (stream->run >= 2) Demote(f, stream->first, static_cast<uint32_t>(offset / page_size_));
    if (++stream->run < 2) {
      stream->first = static_cast<uint32_t>(offset / page_size_);
      return;
    }
  }
  stream->first = static_cast<uint32_t>(offset / page_size_);
  if (source == nullptr || closed_) return;
  const uint32_t last = static_cast<uint32_t>((offset + n - 1) / page_size_);
  if (stream->window == 0) stream->window = std::min(kReadaheadRunPages, cap);
  uint32_t from = std::max(stream->ahead, last + 1);
  if (from > last + 1 + stream->window / 2) return;  // far enough ahead already
  const uint32_t to = std::min(f->count_, last + 1 + stream->window);
  bool scheduled = false;
  while (from < to && static_cast<int>(tasks_.size()) + busy_workers_ < kFetchThreads) {
    if (f->pages_[from].state != PageFile::kAbsent || f->truncating_) {
      ++from;
      continue;
    }
    uint32_t count = 1;
    while (from + count < to && count < std::min(kReadaheadRunPages, cap) &&
           f->pages_[from + count].state == PageFile::kAbsent) {
      ++count;
    }
    // Within the budget of unread read-ahead: more would only evict pages fetched for other streams.
    const uint64_t budget = ReadaheadBudget();
    uint64_t charge = 0;
    for (uint32_t p = from; p < from + count; ++p) charge += PageCharge(*f, p);
    while (count > 0 && unread_ahead_ + charge > budget) charge -= PageCharge(*f, from + --count);
    if (count == 0) break;
    if (!source->Enter()) break;
    Claim(f, from, count);
    MarkAhead(f, from, count);
    ++f->users_;  // the task keeps the file (and its descriptor) open
    tasks_.push_back(Task{files_[f->fingerprint_], source, name, from, count, t_compaction_io});
    from += count;
    scheduled = true;
  }
  stream->ahead = from;
  if (!scheduled) return;
  stream->window = std::min(stream->window * 2, cap);
  if (workers_.empty()) {
    for (int i = 0; i < kFetchThreads; ++i) workers_.emplace_back([this] { Worker(); });
  }
  work_.notify_all();
}

void PageCache::Demote(PageFile* f, uint32_t first, uint32_t end) {
  if (f->mapped_ > 0) return;  // its pages are off the LRU list
  for (uint32_t p = first; p < end && p < f->count_; ++p) {
    PageFile::Page& page = f->pages_[p];
    if (page.state == PageFile::kPresent && !page.ahead) lru_.splice(lru_.begin(), lru_, page.lru);
  }
}

void PageCache::Worker() {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    work_.wait(l, [this] { return closed_ || !tasks_.empty(); });
    if (tasks_.empty()) return;  // closed
    Task task = std::move(tasks_.front());
    tasks_.pop_front();
    ++busy_workers_;
    PageFile* f = task.file.get();
    if (closed_ || task.source->closing()) {
      for (uint32_t p = task.first; p < task.first + task.count; ++p) {
        ForgetAhead(f, p, /*wasted=*/false);
        f->pages_[p].state = PageFile::kAbsent;
      }
      f->busy_ -= task.count;
      changed_.notify_all();
    } else {
      t_compaction_io = task.compaction;
      FetchRun(l, f, task.source.get(), task.name, task.first, task.count, kFetchReadahead, 0, 0, nullptr);
      t_compaction_io = false;
    }
    ReleaseLocked(f);
    task.file.reset();
    --busy_workers_;
    l.unlock();
    task.source->Leave();
    task.source.reset();
    l.lock();
  }
}

// -- stats -------------------------------------------------------------------------------------

PageCacheStats PageCache::Stats() {
  std::lock_guard<std::mutex> l(mu_);
  PageCacheStats out = stats_;
  out.bytes = used_;
  out.whole_file_bytes = whole_;
  uint64_t pages = 0, page_bytes = 0;
  for (auto& entry : files_) {
    const PageFile& f = *entry.second;
    for (uint32_t p = 0; p < f.count_; ++p) {
      if (f.pages_[p].state != PageFile::kPresent) continue;
      ++pages;
      page_bytes += PageCharge(f, p);
    }
  }
  out.mapped_bytes = mapped_bytes_;
  out.pages_present = pages;
  out.page_bytes = page_bytes;
  out.files = files_.size();
  out.tail_estimate = TailEstimate(2 << 20);
  out.punch_holes = punch_holes_;
  return out;
}

}  // namespace levels3
