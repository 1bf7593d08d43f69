// One open leveldb::DB as the bridge shares it between Python threads: the DB,
// its group commit, the iterators and snapshots made from it, and a count of
// the calls in flight, so that closing frees nothing under a call.
//
// Every use of the DB (or of an iterator or snapshot made from it) is a call:
// Enter() before, Leave() after. Close is two steps. StopCalls() refuses every
// later Enter() and waits, without the GIL, until the calls in flight have
// left; Free() then deletes the iterators and snapshots still registered, the
// group commit and the DB, in that order. The registry, not Python's garbage
// collector, decides what is alive: an iterator whose Python object is still
// waiting for collection when the DB closes is deleted here, before the DB
// (deleting LevelDB with an iterator alive trips VersionSet's assertion).
//
// After fork(), the child's copy is RefuseInherited(): refused without waiting
// (the calls in flight belong to threads the child does not have), and never
// freed nor even destroyed: freeing calls into LevelDB, whose mutexes and
// compaction thread are the parent's, and destroying the condition variable
// would wait for a waiter of the parent's that never wakes. The bridge leaks it.
//
// Cost on the hot path: one atomic add and one subtract on a word of its own,
// plus the thread's call count (thread_calls.h).
#ifndef LEVELS3_LIVE_DATABASE_H_
#define LEVELS3_LIVE_DATABASE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_set>

#include "group_commit.h"
#include "leveldb/db.h"
#include "thread_calls.h"

namespace levels3 {

class LiveDatabase {
 public:
  LiveDatabase() = default;  // refuses calls until Adopt()
  LiveDatabase(const LiveDatabase&) = delete;
  LiveDatabase& operator=(const LiveDatabase&) = delete;
  ~LiveDatabase() { Free(); }

  // Takes ownership of an opened DB and starts accepting calls.
  void Adopt(leveldb::DB* db) {
    db_.reset(db);
    synced_.reset(new GroupCommit(db));
    state_.fetch_and(~kRefused, std::memory_order_acq_rel);
  }

  // Begins a call; false when calls are refused (closing, closed, never opened,
  // or inherited through fork). Every true is matched by exactly one Leave().
  bool Enter() noexcept {
    if (state_.fetch_add(kOneCall, std::memory_order_acq_rel) & kRefused) {
      Release();
      return false;
    }
    ++CallsOnThisThread();
    return true;
  }

  void Leave() noexcept {
    --CallsOnThisThread();
    Release();
  }

  bool refused() const noexcept { return state_.load(std::memory_order_relaxed) & kRefused; }
  bool inherited() const noexcept { return state_.load(std::memory_order_relaxed) & kInherited; }

  // Refuses every later call without waiting for those in flight.
  void Refuse() noexcept { state_.fetch_or(kRefused, std::memory_order_acq_rel); }

  // Refuses every later call and returns once the calls in flight have left.
  // Blocks: call it without the GIL and from no call of this database.
  void StopCalls() {
    Refuse();
    std::unique_lock<std::mutex> lock(drain_mu_);
    drained_.wait(lock, [this] { return CallsInFlight() == 0; });
  }

  // A forked child's copy: refused for good, and never waited for.
  void RefuseInherited() noexcept {
    state_.fetch_or(kRefused | kInherited, std::memory_order_acq_rel);
  }

  // --- inside a call (between Enter and Leave) ---------------------------------

  leveldb::DB* db() const noexcept { return db_.get(); }
  GroupCommit* synced() const noexcept { return synced_.get(); }

  leveldb::Iterator* NewIterator(const leveldb::ReadOptions& options) {
    leveldb::Iterator* it = db_->NewIterator(options);
    std::lock_guard<std::mutex> lock(children_mu_);
    iterators_.insert(it);
    return it;
  }

  void DeleteIterator(leveldb::Iterator* it) {
    {
      std::lock_guard<std::mutex> lock(children_mu_);
      iterators_.erase(it);
    }
    delete it;  // takes the DB mutex: no lock of ours held
  }

  const leveldb::Snapshot* GetSnapshot() {
    const leveldb::Snapshot* snapshot = db_->GetSnapshot();
    std::lock_guard<std::mutex> lock(children_mu_);
    snapshots_.insert(snapshot);
    return snapshot;
  }

  void ReleaseSnapshot(const leveldb::Snapshot* snapshot) {
    {
      std::lock_guard<std::mutex> lock(children_mu_);
      snapshots_.erase(snapshot);
    }
    db_->ReleaseSnapshot(snapshot);
  }

  // --- closing -----------------------------------------------------------------

  // Deletes the iterators and snapshots still registered, the group commit, then
  // the DB (whose deletion uploads its WAL and MANIFEST tails through the Env and
  // waits for the compaction thread). REQUIRES: StopCalls() returned, or the DB
  // was never shared. Blocks: call it without the GIL.
  void Free() {
    std::unordered_set<leveldb::Iterator*> iterators;
    std::unordered_set<const leveldb::Snapshot*> snapshots;
    {
      std::lock_guard<std::mutex> lock(children_mu_);
      iterators.swap(iterators_);
      snapshots.swap(snapshots_);
    }
    for (leveldb::Iterator* it : iterators) delete it;
    if (db_ != nullptr) {
      for (const leveldb::Snapshot* snapshot : snapshots) db_->ReleaseSnapshot(snapshot);
    }
    synced_.reset();
    db_.reset();
  }

 private:
  static constexpr uint64_t kRefused = 1;    // Enter() fails
  static constexpr uint64_t kInherited = 2;  // ... because this is a forked child's copy
  static constexpr uint64_t kOneCall = 4;    // the rest of the word counts the calls in flight

  uint64_t CallsInFlight() const noexcept {
    return state_.load(std::memory_order_acquire) / kOneCall;
  }

  void Release() noexcept {
    // The last call out while StopCalls() waits wakes it. Taking the mutex first
    // makes the wake-up impossible to miss: StopCalls checks the count under it.
    // (An inherited copy never matches, kInherited being set: its mutex, maybe
    // held by a thread of the parent at fork, is never taken.)
    if (state_.fetch_sub(kOneCall, std::memory_order_acq_rel) == (kOneCall | kRefused)) {
      std::lock_guard<std::mutex> lock(drain_mu_);
      drained_.notify_all();
    }
  }

  std::atomic<uint64_t> state_{kRefused};
  std::mutex drain_mu_;
  std::condition_variable drained_;  // waited on with drain_mu_, by StopCalls

  std::unique_ptr<GroupCommit> synced_;  // every synced write goes through it
  std::unique_ptr<leveldb::DB> db_;
  std::mutex children_mu_;
  std::unordered_set<leveldb::Iterator*> iterators_;         // GUARDED_BY(children_mu_)
  std::unordered_set<const leveldb::Snapshot*> snapshots_;   // GUARDED_BY(children_mu_)
};

}  // namespace levels3

#endif  // LEVELS3_LIVE_DATABASE_H_
