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

#include "leveldb/status.h"
#include "page_cache.h"

namespace levels3 {

class CompactionReader : public std::enable_shared_from_this<CompactionReader> {
 public:
  static constexpr uint64_t kBudgetBytes = 32 << 20;   // all readers' chunks, in memory
  static constexpr uint64_t kMaxChunkBytes = 4 << 20;  // one GET: a whole level-0 table of the default write buffer
  static constexpr uint64_t kMinChunkBytes = 256 << 10;
  static constexpr uint64_t kIdleBytes = 2 * kMaxChunkBytes;  // others served this much since its last read: idle

  CompactionReader(std::shared_ptr<PageCache> cache, std::shared_ptr<PageFile> file,
                   std::shared_ptr<RangeSource> source, std::string name);
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

 private:
  struct Chunk;

  std::shared_ptr<Chunk> Start(uint64_t offset, uint64_t length, bool background);
  leveldb::Status Wait(Chunk* chunk, bool* waited);  // sets *waited if it was not done yet
  void Prefetch(uint64_t consumed_to);
  uint64_t ChunkLength(uint64_t from, uint64_t at_least) const;

  const std::shared_ptr<PageCache> cache_;
  const std::shared_ptr<PageFile> file_;
  const std::shared_ptr<RangeSource> source_;
  const std::string name_;

  mutable std::mutex mu_;
  uint64_t next_ = 0;                // where a read that continues the last one starts
  std::shared_ptr<Chunk> current_;   // holds next_ (or is null)
  std::shared_ptr<Chunk> ahead_;     // the chunk after it, fetched in the background
};

}  // namespace levels3

#endif  // LEVELS3_COMPACTION_READER_H_
