// Synced writes from many threads, committed together: one LevelDB write, one
// WAL upload, for as many writers as are waiting.
//
// LevelDB already groups writers that queue behind a sync in progress, but with
// closed-loop writers (each issues its next write as soon as the last returns)
// the groups alternate: the writers released by one upload come back while the
// next group, formed from whoever was left waiting, is already uploading. Half
// the writers ride each upload. Here the next group's leader waits briefly
// (at most a quarter of the last commit's latency, and never more than
// kMaxGatherWindow) for the writers the last group just released, so a closed
// loop of N writers forms groups of N.
//
// A write becomes visible only with its group, after the upload: as with
// LevelDB's own synced writes, a reader never sees a synced write that could
// still be lost.

#ifndef LEVELS3_GROUP_COMMIT_H_
#define LEVELS3_GROUP_COMMIT_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>

#include "leveldb/db.h"
#include "leveldb/write_batch.h"

namespace levels3 {

class GroupCommit {
 public:
  explicit GroupCommit(leveldb::DB* db) : db_(db) {}
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Applies `batch` with sync=true, possibly together with other threads'
  // batches; returns the status of the write that carried it. Blocks.
  leveldb::Status Write(leveldb::WriteBatch* batch);

 private:
  // One waiting writer. It sleeps on its own condition variable, so finishing a
  // group wakes exactly its members (and the next leader), not every waiter to
  // fight over one mutex: on a small VM each needless wake-up costs tens of us.
  struct Pending {
    explicit Pending(leveldb::WriteBatch* b) : batch(b) {}
    leveldb::WriteBatch* batch;
    leveldb::Status status;
    enum { kWaiting, kDone, kLead } state = kWaiting;  // guarded by mu_
    std::condition_variable cv;
  };

  // Leads groups while `me` is not yet written: waits for returning writers,
  // writes, wakes the group, hands leadership on. Called with mu_ held.
  void Lead(Pending* me, std::unique_lock<std::mutex>& lock);

  static constexpr std::chrono::microseconds kMaxGatherWindow{2000};
  static constexpr size_t kMaxGroupBytes = 1 << 20;  // LevelDB's own group limit

  leveldb::DB* const db_;
  std::mutex mu_;
  std::condition_variable gathered_;  // only the gathering leader waits on it
  std::deque<Pending*> queue_;
  bool leading_ = false;
  bool gathering_ = false;
  size_t returning_ = 0;  // writers released by the last group, not back yet
  std::chrono::nanoseconds last_latency_{0};
};

}  // namespace levels3

#endif  // LEVELS3_GROUP_COMMIT_H_
