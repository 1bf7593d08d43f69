// CompactionReader: a compaction's reads of one input table, from memory, in large requests.
//
// A compaction reads each input front to back, once, and the table is deleted when it ends:
// its pages are worth nothing afterwards, and a store charges per request far more than per
// byte. So when an input is not on local disk, its bytes are not put in the page cache (where
// the bound, a few MiB beside LevelDB's whole files, allows only small windows, and every page
// is written to disk and punched again moments later) but fetched in chunks of up to
// kMaxChunkBytes into memory: one ranged GET per chunk, the next chunk fetched in the
// background once the reader is halfway through the current one.
//
// Memory: every reader shares kBudgetBytes (two chunks each: the one being read and the next),
// so a compaction merging many inputs gets smaller chunks. A reader that no read has used while
// the others read kIdleBytes (an input the compaction finished with, or has not come back to)
// gives its chunks back.
//
// The next inputs: a compaction opens the first input of each level it merges together (level
// 0's all at once), then each level's inputs one after another, in key order, and each input's
// first chunk would be waited for. So when a reader starts (and again once it is halfway through
// its last chunk), the inputs the compaction will open next are guessed (NextInputs: from
// LevelDB's version, compaction_inputs.h) and their first chunks fetched in the background. Such
// a chunk waits ("parked") for its table's reader; one no reader takes while the others read
// kParkedBytes is dropped, counted as wasted read-ahead. A wrong guess costs a request, never a
// wrong byte: a reader takes a parked chunk only for the exact page file it was fetched from.
// Parked chunks count as holders of the shared budget.
//
// Pages already present (a table this process wrote, not evicted yet) are read from the page
// cache instead, and nothing read here enters it. Stats count each chunk as compaction
// read-ahead (PageCacheStats).
//
// Thread safety: Read may be called from any thread; LevelDB calls it from its compaction thread.
#ifndef LEVELS3_COMPACTION_READER_H_
#define LEVELS3_COMPACTION_READER_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "leveldb/status.h"
#include "page_cache.h"

namespace levels3 {

// Which tables a compaction will read next (the Env's answer, paged_env.cc).
class NextInputs {
 public:
  virtual ~NextInputs() = default;
  // The tables (names like "000123.ldb") the compaction reading the tables `reading` will open
  // next: with `name` when `starting` (its first read), else after it. Called on the compaction
  // thread; may be empty.
  virtual std::vector<std::string> Guess(const std::string& name, const std::vector<std::string>& reading,
                                         bool starting) = 0;
  // That table's page file, with one more user (PageCache::Release), or null.
  virtual std::shared_ptr<PageFile> Open(const std::string& name) = 0;
};

struct CompactionChunk;

class CompactionReader : public std::enable_shared_from_this<CompactionReader> {
 public:
  static constexpr uint64_t kBudgetBytes = 32 << 20;   // all readers' chunks, in memory
  static constexpr uint64_t kMaxChunkBytes = 4 << 20;  // one GET: a whole level-0 table of the default write buffer
  static constexpr uint64_t kMinChunkBytes = 256 << 10;
  static constexpr uint64_t kIdleBytes = 2 * kMaxChunkBytes;  // others served this much since its last read: idle
  // A parked chunk no reader took while the readers served this much is dropped: an input of the
  // compaction's first level is reached only once the tables below its predecessor are read (a level
  // holds ten times the one above).
  static constexpr uint64_t kParkedBytes = kBudgetBytes;

  // `next` (null: no guessing) outlives the reader and the background work it starts.
  CompactionReader(std::shared_ptr<PageCache> cache, std::shared_ptr<PageFile> file,
                   std::shared_ptr<RangeSource> source, std::string name, NextInputs* next);
  ~CompactionReader();

  CompactionReader(const CompactionReader&) = delete;
  CompactionReader& operator=(const CompactionReader&) = delete;

  // True for the reads this reader serves: an input's first block, and each read that continues
  // the one before it. Others (Table::Open's footer and index) go to the page cache as usual.
  bool Serves(uint64_t offset) const;

  // Bytes [offset, offset+n) (clipped to the file) into scratch.
  leveldb::Status Read(uint64_t offset, size_t n, char* scratch, size_t* got);

  // Frees the chunks (the registry, when this reader has been idle; see above).
  void DropChunks();

  // Drops the parked chunks fetched through `source` (its Env is closing; call after
  // source->Close(), which waits for the fetches).
  static void ForgetParked(const RangeSource* source);

 private:
  using Chunk = CompactionChunk;

  std::shared_ptr<Chunk> Start(uint64_t offset, uint64_t length, bool background);
  leveldb::Status Wait(Chunk* chunk, bool* waited);  // sets *waited if it was not done yet
  // Fetches the chunk after the current one in the background; true when the current one is
  // this table's last and the input after it should be guessed now.
  bool Prefetch(uint64_t consumed_to);
  // Fetches the first chunks of the inputs NextInputs guesses, in the background. Without mu_
  // held (NextInputs::Guess reads LevelDB's version).
  void FetchGuessed(bool starting);
  uint64_t ChunkLength(uint64_t from, uint64_t at_least) const;

  const std::shared_ptr<PageCache> cache_;
  const std::shared_ptr<PageFile> file_;
  const std::shared_ptr<RangeSource> source_;
  const std::string name_;
  NextInputs* const next_inputs_;

  mutable std::mutex mu_;
  bool started_ = false;             // its first read has happened
  bool guessed_ = false;             // the input after it has been guessed
  uint64_t next_ = 0;                // where a read that continues the last one starts
  std::shared_ptr<Chunk> current_;   // holds next_ (or is null)
  std::shared_ptr<Chunk> ahead_;     // the chunk after it, fetched in the background
};

}  // namespace levels3

#endif  // LEVELS3_COMPACTION_READER_H_
