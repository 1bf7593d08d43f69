#include "group_commit.h"

#include <algorithm>
#include <vector>

namespace levels3 {

leveldb::Status GroupCommit::Write(leveldb::WriteBatch* batch) {
  Pending me{batch};
  std::unique_lock<std::mutex> lock(mu_);
  queue_.push_back(&me);
  if (returning_ > 0) {
    --returning_;
    cv_.notify_all();  // a leader may be waiting for exactly this writer
  }
  while (true) {
    cv_.wait(lock, [&] { return me.done || !leading_; });
    if (me.done) return me.status;
    Lead(lock);  // may leave `me` for the next group when the group is full
  }
}

void GroupCommit::Lead(std::unique_lock<std::mutex>& lock) {
  leading_ = true;
  const auto window = std::min<std::chrono::nanoseconds>(kMaxGatherWindow, last_latency_ / 4);
  cv_.wait_for(lock, window, [&] { return returning_ == 0; });
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
  for (Pending* p : group) {
    p->status = status;
    p->done = true;
  }
  returning_ = group.size();
  last_latency_ = latency;
  leading_ = false;
  cv_.notify_all();
}

}  // namespace levels3
