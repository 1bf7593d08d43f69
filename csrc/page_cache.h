// PageCache: table bytes on local disk in fixed-size pages, under one strict byte bound.
//
// The contract (issue 16). Everything below is what the rest of levels3 may rely on.
//
// Layout on disk
//   One sparse file per table object in the page directory (`<cache_dir>/.levels3-pages/`
//   for a writer, a private temporary directory for a follower), named after the object
//   key and a hash of its fingerprint: "w00000003_000123.ldb-5f0c...". The file has the
//   table's logical size; page i holds bytes [i*P, (i+1)*P) at their own offset, so a read
//   needs no translation. An absent page is a hole. Evicting a page punches its hole
//   (Linux: fallocate(FALLOC_FL_PUNCH_HOLE); macOS: fcntl(F_PUNCHHOLE)), which frees its
//   blocks at once, even while other readers hold the file open. Where a file system
//   cannot punch holes, eviction truncates the whole file to zero instead (all its
//   unpinned pages go at once), so the bound still holds, only more coarsely.
//   Writing pages into a file of fixed logical size never extends it, so no file system
//   preallocates speculatively behind our back.
//
// The bound (who owns it)
//   This object owns the byte bound of the whole cache directory. `used` counts
//     - every present page (its bytes rounded up to 4 KiB), pages being fetched (reserved
//       before the request goes out) and pages being evicted (until their hole is punched);
//     - every whole file LevelDB has on local disk: the WAL and MANIFEST being written,
//       CURRENT, WAL/MANIFEST files fetched whole at open, tables being written, a
//       follower's own local tables (ChargeWhole, driven by the Env: see paged_env.h).
//   Before bytes are written (a fetched page, a whole file's next buffer) room is made by
//   punching least-recently-used unpinned pages, and the punch completes before the
//   write (pages another thread is punching count until its punch returns, and a writer
//   waits for it): bytes on disk never exceed max_bytes, except by (a) pages pinned by
//   readers copying them out right now (a few pages per reading thread), (b) the floor:
//   whole files never evict the last kFloorPages pages (at most max_bytes), the working
//   set readers need to use a page before it goes, so when whole files take more than
//   max_bytes minus the floor the pages exceed the bound by that much at most, and (c)
//   whole files LevelDB needs at the same time when they alone exceed max_bytes (which a
//   bound of a few write buffers and tables avoids). Neither max_open_files, the number
//   of tables nor the database size enters: an open table pins no page, only a read in
//   progress does.
//   The writer's new tables start fully present: once uploaded, the file it wrote
//   becomes its page file (a rename, no copy) and its pages enter the LRU as the newest.
//
// The mmap rule
//   LevelDB keeps a slice returned by RandomAccessFile::Read that does not point into the
//   caller's scratch for as long as the file is open (table/format.cc ReadBlock). Pages
//   are evictable, so a paged read is copied into the scratch buffer (from the file's
//   read-only mapping, under a pin that keeps the page from being punched meanwhile), and
//   LevelDB keeps decoded blocks in its own block cache (lru_cache_size). The one
//   exception: a file whose every page is present may be served zero-copy from its
//   mapping; its pages then leave the LRU and stay until every reader serving it that way
//   is closed. Such files never take more than half of what the bound leaves beside the
//   whole files LevelDB may hold at once (ReserveForWholeFiles: its write buffers and a
//   compaction output), so the rest always stays evictable and the bound holds.
//
// Misses
//   A read whose pages are all present is served without taking the GIL or entering
//   Python: one mutex acquisition, one pread. Missing pages of one read are claimed
//   (state "fetching") and fetched as one ranged GET per run of adjacent missing pages,
//   through the Env's fetch_range callback (the only point where Python is entered). A
//   thread that needs a page another thread is fetching waits for it (single-flight). A
//   fetch that returns fewer bytes than asked is a CorruptionError naming the object;
//   a failed write of a fetched page (a full disk) is an IOError; either way the page
//   goes back to absent and nothing is cached.
//
// Opening a table: one request
//   Table::Open reads the footer (the last 48 bytes), the index, the metaindex and the
//   filter: all at the end of the file. The first read of a file that touches its last
//   page extends its fetch backwards over the "tail estimate", so the footer, index and
//   filter arrive in one ranged GET. The estimate starts at kDefaultTail and is learned
//   from the tables seen (footer and metaindex parsed after each tail fetch, and at the
//   writer's own table close): the largest tail/size ratio so far, plus a margin. Only a
//   table whose index is larger than the estimate costs a second request (its index
//   read misses the pages before the tail, one run, one GET).
//
// Read-ahead
//   Each file tracks two sequential streams (two iterators may read one table at once).
//   A read that starts where a stream's last read ended extends it; from the third such
//   read on, the pages after it are fetched in the
//   background, in runs of up to kReadaheadRunPages pages, with a window that doubles up
//   to kMaxReadaheadPages (and an eighth of the bound at most); a read of a table's first
//   block starts a stream at once, with a window of kFirstBlockWindowPages. At most
//   kFetchThreads ranged GETs are in flight for read-ahead across the whole cache; when they are busy, read-ahead is skipped, never
//   queued without bound. Read-ahead pages are charged like any page; those no read has
//   used yet are limited to half of what whole files leave for pages (ReadaheadBudget)
//   and are evicted last, and the pages a stream has read past are evicted first (a scan
//   reads a table once), so a scan of a database larger than the bound fetches each page
//   once instead of evicting what it read ahead before it gets there.
//   A compaction's reads of its inputs do not come here (they fetch into memory, in large
//   chunks: compaction_reader.h) except for pages still present and Table::Open's reads.
//
// Restart
//   At a clean Close(keep=true) the index of present pages (per file: fingerprint, size,
//   bitmap) is written to `<dir>/INDEX`. Open() reads and deletes it at once and deletes
//   every file it does not list, so after a crash (no INDEX) all pages are discarded.
//   Files are reused only for the exact fingerprint (object key, size, ETag) the catalog
//   reports now: Retain() drops the others before any read. One process per directory
//   is enforced by the Python cache's flock on the cache directory that holds this one.
#ifndef LEVELS3_PAGE_CACHE_H_
#define LEVELS3_PAGE_CACHE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "leveldb/status.h"

namespace levels3 {

// Where a page file's bytes come from on a miss: one Env generation's control path.
// Async work (read-ahead) holds it through Enter/Leave; Close() waits for that work, so
// the Env that owns a source can be destroyed safely once Close() returns.
class RangeSource {
 public:
  virtual ~RangeSource() = default;
  // Exactly `length` bytes of table `name` from `offset` into `buffer`.
  virtual leveldb::Status Fetch(const std::string& name, uint64_t offset, size_t length,
                                char* buffer) = 0;
  bool Enter();
  void Leave();
  bool closing();
  void Close();

 private:
  std::mutex mu_;
  std::condition_variable idle_;
  int active_ = 0;
  bool closed_ = false;
};

// Why bytes were fetched (stats).
enum FetchKind : int { kFetchTail = 0, kFetchData = 1, kFetchReadahead = 2, kFetchKinds = 3 };

struct PageCacheStats {
  uint64_t page_size = 0;
  uint64_t max_bytes = 0;
  uint64_t bytes = 0;          // what `used` counts now (pages + reservations + whole files)
  uint64_t peak_bytes = 0;
  uint64_t page_bytes = 0;     // present pages only
  uint64_t whole_file_bytes = 0;
  uint64_t pages_present = 0;
  uint64_t mapped_bytes = 0;   // of wholly present files read zero-copy (pinned while open)
  uint64_t hits = 0;           // reads served without a fetch
  uint64_t misses = 0;         // reads that fetched (or waited for) a page
  uint64_t evictions = 0;      // pages punched out to make room
  uint64_t readahead_wasted_bytes = 0;  // read ahead (pages, compaction chunks) but dropped unused
  uint64_t requests[kFetchKinds] = {0, 0, 0};
  uint64_t bytes_fetched[kFetchKinds] = {0, 0, 0};
  // The part of those fetched for LevelDB's compactions (their own reads and the read-ahead they
  // started): not the cost of the gets and scans that run meanwhile.
  uint64_t compaction_requests[kFetchKinds] = {0, 0, 0};
  uint64_t compaction_bytes_fetched[kFetchKinds] = {0, 0, 0};
  uint64_t files = 0;          // page files known
  uint64_t reused_pages = 0;   // pages kept from the previous clean run
  uint64_t tail_estimate = 0;  // bytes a table's first read fetches (for a 2 MiB table)
  uint64_t tails_prefetched = 0;  // tails fetched by a prefetch (ClaimTail), before LevelDB asked
  uint64_t compaction_inputs_fetched_ahead = 0;  // inputs whose first chunk was guessed and fetched ahead
  bool punch_holes = true;     // false: this file system truncates whole files instead
};

class PageCache;

// One table's page file. Everything but size() belongs to PageCache and is guarded by
// its mutex, except a page's pin count, which a reader drops without it.
class PageFile {
 public:
  uint64_t size() const { return size_; }

 private:
  friend class PageCache;
  enum State : uint8_t { kAbsent, kFetching, kPresent, kEvicting };
  using LruList = std::list<std::pair<PageFile*, uint32_t>>;
  struct Page {
    State state = kAbsent;
    std::atomic<uint16_t> pins{0};  // readers copying it out: not evictable
    bool ahead = false;             // fetched ahead of its reader, not read yet (counted in unread_ahead_)
    LruList::iterator lru;
  };
  // A read-ahead stream: where its next read should start.
  struct Stream {
    uint64_t next = UINT64_MAX;
    uint32_t run = 0;     // consecutive reads that continued it
    uint32_t ahead = 0;   // first page not yet scheduled
    uint32_t window = 0;  // pages to keep ahead
    uint64_t used = 0;    // for replacing the older stream
    uint32_t first = 0;   // first page of its last read: the pages before its next read are done
  };
  // Closes the descriptor (and unmaps the file) once neither the file nor an eviction
  // needs it. Readers copy pinned pages out of the mapping: no system call on a hit.
  struct Fd {
    int fd;
    const char* map = nullptr;  // the whole file, read-only, shared; null if mmap failed
    uint64_t map_size = 0;
    explicit Fd(int f) : fd(f) {}
    void Map(uint64_t size);
    ~Fd();
  };

  PageFile(std::string fingerprint, std::string path, uint64_t size, uint32_t page_size);

  const std::string fingerprint_;
  const std::string path_;
  const uint64_t size_;
  const uint32_t count_;  // pages
  std::unique_ptr<Page[]> pages_;
  std::shared_ptr<Fd> fd_;  // open while users_ > 0
  int users_ = 0;           // open RandomAccessFiles and queued read-ahead
  uint32_t present_ = 0;
  uint32_t busy_ = 0;       // pages fetching or evicting
  bool tail_seen_ = false;  // its first read (Table::Open's footer) has happened
  bool truncating_ = false; // being evicted whole (no hole punching): no fetch into it
  int mapped_ = 0;          // readers served zero-copy: every page present, none evictable
  Stream streams_[2];
};

// The pages of one table's tail, claimed for a prefetch (PageCache::ClaimTail).
struct TailClaim {
  std::shared_ptr<PageFile> file;
  uint32_t first = 0, count = 0;
  uint64_t offset = 0, length = 0;  // the bytes to fetch
};

class PageCache {
 public:
  static constexpr uint64_t kDefaultTail = 64 * 1024;
  static constexpr int kFetchThreads = 4;
  static constexpr uint32_t kReadaheadRunPages = 16;
  static constexpr uint32_t kMaxReadaheadPages = 32;
  static constexpr uint32_t kFirstBlockWindowPages = 4;  // read-ahead of a table read from its start
  // Pages that eviction to make room for whole files leaves in place (never more than the bound): when
  // LevelDB's whole files alone take (nearly) all of the bound, the working set that lets readers use a
  // page before it goes. A compaction merges up to 12 level-0 tables and one of the next level, an
  // iterator reads every level-0 table and one table per level: each needs its current page, and fewer
  // pages than streams read in turn miss on every read (LRU under a cyclic pattern).
  static constexpr uint32_t kFloorPages = 32;

  // Reads and deletes `directory`/INDEX, keeps the files it lists, deletes the rest.
  static leveldb::Status Open(const std::string& directory, uint64_t max_bytes,
                              uint32_t page_size, std::shared_ptr<PageCache>* result);
  ~PageCache();

  PageCache(const PageCache&) = delete;
  PageCache& operator=(const PageCache&) = delete;

  // The calling thread runs LevelDB's compactions (the Env's Schedule marks its background thread):
  // what its reads fetch is counted apart (PageCacheStats::compaction_*).
  static void MarkCompactionThread();
  static bool OnCompactionThread();

  uint32_t page_size() const { return page_size_; }
  const std::string& directory() const { return directory_; }

  // The page file of this exact content, with one more user (Release when done).
  // `object` names the object ("w00000003/000123.ldb") and only shapes the file name.
  leveldb::Status Acquire(const std::string& fingerprint, const std::string& object,
                          uint64_t size, std::shared_ptr<PageFile>* result);
  void Release(const std::shared_ptr<PageFile>& file);

  // A table this process wrote and uploaded: `local_path` (complete, `size` bytes) becomes
  // its page file, fully present. On failure the caller's file is left where it was.
  // `whole_bytes` is what ChargeWhole counted for it while it was written.
  leveldb::Status AdoptWritten(const std::string& local_path, const std::string& fingerprint,
                               const std::string& object, uint64_t size, uint64_t whole_bytes);

  // The table is gone from the database: free its pages (readers that still hold it open
  // fetch again on demand; the file goes with its last user).
  void Drop(const std::string& fingerprint);

  // Drop every file whose fingerprint is not in `live` (called once the catalog is known).
  void Retain(const std::set<std::string>& live);

  // Whole files: bytes LevelDB holds on local disk outside page files. A positive delta
  // makes room first (evicting pages) and never fails.
  void ChargeWhole(int64_t delta);

  // Bytes [offset, offset+n) of `file` into scratch (n clipped to the file's size).
  // *whole is set when every page of the file is present: MapWhole may then succeed.
  leveldb::Status Read(PageFile* file, const std::shared_ptr<RangeSource>& source,
                       const std::string& name, uint64_t offset, size_t n, char* scratch,
                       size_t* got, bool* whole);

  // Read() for a caller that fetches elsewhere (CompactionReader): false, with nothing done or
  // counted, unless every page of the range is present (or the file is mapped). The pages read
  // go to the front of the LRU list: a compaction reads its input once.
  bool ReadIfPresent(PageFile* file, uint64_t offset, size_t n, char* scratch, size_t* got);
  // Whether every page of the range is present (or the file is mapped): nothing to fetch.
  bool Present(PageFile* file, uint64_t offset, size_t n);
  // Whether the page file of this content is known and wholly present.
  bool WhollyPresent(const std::string& fingerprint);
  // A CompactionReader's reads and fetches, counted like a compaction's read-ahead; a chunk
  // fetched ahead that no read used counts as wasted read-ahead.
  void CountCompactionRead(bool missed);
  void CountCompactionFetch(uint64_t bytes);
  void CountCompactionWaste(uint64_t bytes);
  void CountCompactionGuess();  // an input whose first chunk was fetched before its first read

  // Whole files LevelDB may hold at once (the Env's estimate from its options): mapped
  // files leave at least this much of the bound free for them.
  void ReserveForWholeFiles(uint64_t bytes);

  // Zero-copy reading of a wholly present file: its mapping, valid (and the file's pages
  // kept) until Unmap; null when the file is not whole or the pinned share is used up.
  const char* MapWhole(PageFile* file);
  void Unmap(PageFile* file);

  // Prefetching a table's tail before LevelDB opens it (a cold open knows which tables its
  // first reads will open): claims the absent pages of the tail that LevelDB's first read
  // would fetch, and charges them, for the caller to fetch itself (claim->offset,
  // claim->length) and hand to CompleteTail. LevelDB's reads of claimed pages wait for
  // them (single-flight), as for any fetch. False: nothing to fetch (the tail is present,
  // being fetched, or was read already).
  bool ClaimTail(const std::string& fingerprint, const std::string& object, uint64_t size, TailClaim* claim);
  // The claimed bytes (data null: the fetch failed, and the pages go back to absent).
  leveldb::Status CompleteTail(TailClaim* claim, const char* data, size_t n);

  PageCacheStats Stats();

  // Stops read-ahead, then writes the index (keep) or deletes every page file (!keep).
  // Reads after Close fail with an IOError.
  leveldb::Status Close(bool keep);

  // Tests: evict like a file system without hole punching.
  void DisableHolePunchingForTesting() {
    std::lock_guard<std::mutex> l(mu_);
    punch_holes_ = false;
  }

 private:
  struct Eviction {
    PageFile* file;
    uint32_t first, count;              // pages; count == 0: the whole file, by truncation
    std::shared_ptr<PageFile::Fd> fd;   // null: opened by path for the punch
    bool ok = false;
    bool unsupported = false;           // the file system cannot punch holes
  };
  struct Task {
    std::shared_ptr<PageFile> file;
    std::shared_ptr<RangeSource> source;
    std::string name;
    uint32_t first, count;
    bool compaction;  // started by a compaction's read
  };

  PageCache(std::string directory, uint64_t max_bytes, uint32_t page_size);
  leveldb::Status Restore();

  // All of these run with mu_ held; those taking the lock may release it for I/O.
  uint64_t PageCharge(const PageFile& f, uint32_t page) const;
  uint64_t FileCharge(const PageFile& f) const;
  uint64_t TailEstimate(uint64_t size) const;
  void ReleaseLocked(PageFile* f);
  void ForgetIfUnused(PageFile* f);
  void DropLocked(std::unique_lock<std::mutex>& l, std::shared_ptr<PageFile> f);
  void Claim(PageFile* f, uint32_t first, uint32_t count);
  void MarkAhead(PageFile* f, uint32_t first, uint32_t count);  // claimed pages fetched ahead of a reader
  void ForgetAhead(PageFile* f, uint32_t page, bool wasted);    // its read-ahead went (read, failed, evicted)
  uint64_t FloorBytes() const;
  uint64_t ReadaheadBudget() const;  // unread read-ahead bytes allowed at once
  void MarkEvicting(PageFile* f, uint32_t page);
  bool WholeFileEvictable(const PageFile& f) const;
  void MarkWholeFileEvicting(PageFile* f);
  bool PickVictim(std::vector<Eviction>* victims);
  bool PickVictimPass(std::vector<Eviction>* victims, bool unread_ahead);
  void Demote(PageFile* f, uint32_t first, uint32_t end);  // pages a stream has read past: evicted first
  // Counts `bytes` as used, then punches LRU pages until the bound holds again (or
  // nothing is evictable). Returns with the punches done.
  void ReserveLocked(std::unique_lock<std::mutex>& l, uint64_t bytes);
  // Punches (or truncates) without the lock, then settles the pages; false if any failed.
  bool EvictLocked(std::unique_lock<std::mutex>& l, std::vector<Eviction>* victims, bool count);
  // Fetches pages [first, first+count), which the caller claimed, and pins those in
  // [pin_first, pin_last] for it (mine[p - pin_first] = 1).
  leveldb::Status FetchRun(std::unique_lock<std::mutex>& l, PageFile* f, RangeSource* source,
                           const std::string& name, uint32_t first, uint32_t count, FetchKind kind,
                           uint32_t pin_first, uint32_t pin_last, uint8_t* mine);
  // Without mu_: writes fetched bytes [begin, end) into the page file (a tail teaches the
  // tail estimate).
  leveldb::Status Store(PageFile* f, PageFile::Fd* fd, uint64_t begin, uint64_t end, const char* data,
                        FetchKind kind);
  // With mu_: claimed pages become present (s ok) or absent again; wakes their waiters.
  void Settle(PageFile* f, uint32_t first, uint32_t count, const leveldb::Status& s, FetchKind kind,
              uint64_t bytes, uint32_t pin_first, uint32_t pin_last, uint8_t* mine);
  // With mu_: one fetch of `bytes` in the stats (and in the compaction's part of them).
  void CountFetchLocked(FetchKind kind, uint64_t bytes, bool compaction);
  bool Sequential(const PageFile& f, uint64_t offset) const;  // continues a read-ahead stream
  bool PagesPresentLocked(const PageFile& f, uint32_t first, uint32_t last) const;  // every page first..last
  uint32_t ReadaheadCap() const;  // the largest read-ahead window and run, in pages
  void MaybeReadahead(PageFile* f, const std::shared_ptr<RangeSource>& source,
                      const std::string& name, uint64_t offset, size_t n);
  void Worker();

  // Without mu_ (takes it to record what it learned).
  void LearnTail(uint64_t size, const std::function<bool(uint64_t, size_t, std::string*)>& read);

  const std::string directory_;
  const uint64_t max_bytes_;
  const uint32_t page_size_;
  bool punch_holes_ = true;

  std::mutex mu_;
  std::condition_variable changed_;  // a page left the fetching/evicting state
  std::unordered_map<std::string, std::shared_ptr<PageFile>> files_;  // by fingerprint
  PageFile::LruList lru_;                                               // oldest first
  uint64_t used_ = 0;      // bytes on disk or about to be: pages, reservations, whole files
  uint64_t evicting_ = 0;  // part of used_ being punched out right now (still on disk until punched)
  uint64_t unread_ahead_ = 0;  // pages read ahead (or being fetched ahead) that no read has used yet
  uint64_t whole_ = 0;
  uint64_t mapped_bytes_ = 0;  // files served zero-copy: see MapWhole
  uint64_t whole_reserve_ = 0;  // ReserveForWholeFiles, or the most whole_ has been
  bool closed_ = false;
  double tail_ratio_ = 0;  // largest (tail bytes / table size) seen
  uint64_t stream_clock_ = 0;
  PageCacheStats stats_;

  std::deque<Task> tasks_;
  int busy_workers_ = 0;
  std::vector<std::thread> workers_;
  std::condition_variable work_;
};

}  // namespace levels3

#endif  // LEVELS3_PAGE_CACHE_H_
