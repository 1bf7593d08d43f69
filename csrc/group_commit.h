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

// Thread safety: Write may be called from any number of threads at once; the
// GroupCommit must outlive every call, and the DB must outlive the GroupCommit
// (the bridge deletes the GroupCommit first). Fields below are marked with the
// mutex that guards them, as LevelDB's GUARDED_BY annotations would (its
// port/thread_annotations.h is not among the installed headers).
class GroupCommit {
 public:
  explicit GroupCommit(leveldb::DB* db) : db_(db) {}
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Applies `batch` with sync=true, possibly together with other threads'
  // batches; returns the status of the write that carried it. Blocks. `batch`
  // is only read, and only until Write returns.
  leveldb::Status Write(leveldb::WriteBatch* batch);

 private:
  // One waiting writer, living on its thread's stack for the duration of Write.
  // It sleeps on its own condition variable, so finishing a group wakes exactly
  // its members (and the next leader), not every waiter to fight over one
  // mutex: on a small VM each needless wake-up costs tens of us.
  struct Pending {
    explicit Pending(leveldb::WriteBatch* b) : batch(b) {}
    leveldb::WriteBatch* const batch;
    leveldb::Status status;  // GUARDED_BY(mu_): set by the leader before state becomes kDone
    enum { kWaiting, kDone, kLead } state = kWaiting;  // GUARDED_BY(mu_)
    std::condition_variable cv;  // waited on with mu_; notified under mu_ (see Lead)
  };

  // Leads groups while `me` is not yet written: waits for returning writers,
  // writes (with mu_ released), wakes the group, hands leadership on.
  // REQUIRES(mu_): `lock` holds it on entry and on return.
  void Lead(Pending* me, std::unique_lock<std::mutex>& lock);

  static constexpr std::chrono::microseconds kMaxGatherWindow{2000};
  static constexpr size_t kMaxGroupBytes = 1 << 20;  // LevelDB's own group limit

  leveldb::DB* const db_;  // borrowed; thread-safe itself
  std::mutex mu_;
  std::condition_variable gathered_;  // waited on with mu_, by the gathering leader only
  std::deque<Pending*> queue_;        // GUARDED_BY(mu_): writers not yet in a group, oldest first
  bool leading_ = false;              // GUARDED_BY(mu_): some writer is leading
  bool gathering_ = false;            // GUARDED_BY(mu_): the leader waits on gathered_
  size_t returning_ = 0;              // GUARDED_BY(mu_): released by the last group, not back yet
  std::chrono::nanoseconds last_latency_{0};  // GUARDED_BY(mu_): of the last group's write
};

}  // namespace levels3

#endif  // LEVELS3_GROUP_COMMIT_H_
