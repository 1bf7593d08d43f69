// PagedTables: what the object-store Env (object_env.cc) does differently when it is
// made with a PageCache (NewObjectEnv's third argument; page_cache.h).
//
// - NewRandomAccessFile on a table the backend describes as paged (uploaded: it has
//   one object with a fingerprint) returns a PagedRandomAccessFile: reads go through
//   the PageCache, misses become ranged GETs through the fetch_range callback; a
//   compaction's reads of the file from its first block on go to a CompactionReader
//   (compaction_reader.h). Tables the backend reads whole (being written, a follower's
//   own local tables) keep the whole-file path.
// - Whole files are charged to the PageCache's bound, in whole 4 KiB blocks as a file
//   system allocates them, as their bytes reach local disk:
//   before every write of a WritableFile, and before a whole file is fetched for
//   reading (its catalog size, corrected to the local size once it is there). Removing
//   or renaming a file moves or releases its charge; destroying the Env releases all.
// - A table this process wrote and uploaded is adopted by the PageCache (its local file
//   becomes its page file, fully present). If that fails, the local file is deleted
//   and its pages are fetched on demand: the table is in the store already.
// - Once the DB is open (AttachDatabase), it answers a CompactionReader's NextInputs from
//   LevelDB's current version (the "leveldb.sstables" property, read by compaction_inputs.h),
//   for LevelDB's default bytewise comparator only, whose order it can compare.
//
// Thread safety: every method may be called from any LevelDB thread.
#ifndef LEVELS3_PAGED_ENV_H_
#define LEVELS3_PAGED_ENV_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <atomic>
#include <vector>

#include "compaction_inputs.h"
#include "compaction_reader.h"
#include "leveldb/db.h"
#include "leveldb/env.h"
#include "object_env.h"
#include "page_cache.h"

namespace levels3 {

class PagedTables final : public NextInputs {
 public:
  PagedTables(std::shared_ptr<PageCache> cache, const BackendCallbacks& callbacks);
  ~PagedTables() override;

  PagedTables(const PagedTables&) = delete;
  PagedTables& operator=(const PagedTables&) = delete;

  // "000123.ldb" or "000123.sst" directly in the database directory.
  static bool IsTable(const std::string& name);

  // OK with *result null: `name` is not paged, open it whole.
  leveldb::Status OpenTable(const std::string& name, leveldb::RandomAccessFile** result);

  // A WritableFile of `name` is about to write `bytes` more to local disk.
  void Growing(const std::string& name, uint64_t bytes);
  // Whole file `name` is (about to be) on local disk with `bytes` bytes; returns what was
  // counted before, for Restore when the file did not arrive after all.
  uint64_t Holding(const std::string& name, uint64_t bytes);
  void Restore(const std::string& name, uint64_t bytes);
  // LevelDB closed a WritableFile and the backend made it durable.
  void Written(const std::string& name, const std::string& local_path);
  // Before and after the backend removes `name` (a table's fingerprint is learned before
  // the catalog forgets it, so pages of a table never opened in this session go too).
  void Removing(const std::string& name);
  void Removed(const std::string& name);
  void Renamed(const std::string& src, const std::string& dst);

  // The DB open on this Env (null: none); `bytewise`: it orders keys with LevelDB's default comparator.
  void AttachDatabase(leveldb::DB* db, bool bytewise);

  // NextInputs, for the compaction readers of this Env's tables.
  std::vector<std::string> Guess(const std::string& name, const std::vector<std::string>& reading,
                                 bool starting) override;
  std::shared_ptr<PageFile> Open(const std::string& name) override;

 private:
  uint64_t SetWholeLocked(const std::string& name, uint64_t bytes);  // returns the old value
  void DropPagedLocked(const std::string& name);
  // The page file of a paged table (null, with OK: read it whole).
  leveldb::Status AcquireTable(const std::string& name, std::shared_ptr<PageFile>* file);

  std::shared_ptr<PageCache> cache_;
  const BackendCallbacks callbacks_;
  std::shared_ptr<RangeSource> source_;
  std::mutex mu_;
  std::map<std::string, uint64_t> whole_;     // whole files' bytes (their blocks are counted in the bound)
  std::map<std::string, std::string> paged_;  // table name -> fingerprint of its page file
  // Read only on its compaction thread (NextInputs::Guess), which ends before the DB is deleted.
  std::atomic<leveldb::DB*> db_{nullptr};
  std::atomic<bool> bytewise_{false};
  // LevelDB's version as last listed, kept until the MANIFEST grows (a new version): listing it
  // holds LevelDB's mutex for time that grows with the number of tables. Compaction thread only.
  std::atomic<uint64_t> manifest_writes_{0};
  uint64_t listed_at_ = UINT64_MAX;
  std::shared_ptr<const ListedVersion> listed_;
};

}  // namespace levels3

#endif  // LEVELS3_PAGED_ENV_H_
