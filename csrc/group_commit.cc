#include "group_commit.h"

#include <algorithm>
#include <vector>

namespace levels3 {

leveldb::Status GroupCommit::Write(leveldb::WriteBatch* batch) {
  Pending me(batch);
  std::unique_lock<std::mutex> lock(mu_);
  queue_.push_back(&me);
  if (returning_ > 0 && --returning_ == 0 && gathering_) {
    gathered_.notify_one();  // the leader was waiting for exactly this writer
  }
  if (!leading_) {
    leading_ = true;
    me.state = Pending::kLead;
  }
  me.cv.wait(lock, [&] { return me.state != Pending::kWaiting; });
  if (me.state == Pending::kLead) Lead(&me, lock);
  return me.status;
}

void GroupCommit::Lead(Pending* me, std::unique_lock<std::mutex>& lock) {
  // The leader is the queue's front, so its batch goes in the first group; the
  // loop only guards that invariant (an unwritten `me` must never return).
  while (me->state != Pending::kDone) {
    const auto window = std::min<std::chrono::nanoseconds>(kMaxGatherWindow, last_latency_ / 4);
    gathering_ = true;
    gathered_.wait_for(lock, window, [&] { return returning_ == 0; });
    gathering_ = false;
    returning_ = 0;  // whoever did not come back in time is not waited for again

    std::vector<Pending*> group;
    size_t bytes = 0;
    while (!queue_.empty()) {
      size_t size = queue_.front()->batch->ApproximateSize();
      if (!group.empty() && bytes + size > kMaxGroupBytes) break;
      bytes += size;
      group.push_back(queue_.front());
      queue_.pop_front();
    }
    lock.unlock();

    leveldb::WriteBatch combined;
    leveldb::WriteBatch* updates = group[0]->batch;
    if (group.size() > 1) {
      for (Pending* p : group) combined.Append(*p->batch);
      updates = &combined;
    }
    leveldb::WriteOptions options;
    options.sync = true;
    const auto start = std::chrono::steady_clock::now();
    leveldb::Status status = db_->Write(options, updates);
    const auto latency = std::chrono::steady_clock::now() - start;

    lock.lock();
    last_latency_ = latency;
    returning_ = group.size();
    for (Pending* p : group) {
      p->status = status;
      p->state = Pending::kDone;
      // Under mu_: the writer cannot see kDone, return and destroy its cv
      // before this notify is over.
      if (p != me) p->cv.notify_one();
    }
  }
  if (queue_.empty()) {
    leading_ = false;  // the first writer to come back leads
  } else {
    queue_.front()->state = Pending::kLead;  // arrived during the write: leads the next group
    queue_.front()->cv.notify_one();
  }
}

}  // namespace levels3
