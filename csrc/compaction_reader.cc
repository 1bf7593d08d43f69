#include "compaction_reader.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <map>
#include <system_error>
#include <thread>
#include <vector>

namespace levels3 {

using leveldb::Status;

struct CompactionReader::Chunk {
  uint64_t offset = 0;
  uint64_t length = 0;
  std::unique_ptr<char[]> data;
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  Status status;

  bool Covers(uint64_t pos) const { return pos >= offset && pos < offset + length; }
  uint64_t end() const { return offset + length; }
};

namespace {

// Every reader's chunks, for the shared budget. Lock order: a reader's mutex, then this one;
// readers are told to drop their chunks with neither held.
struct Registry {
  struct Entry {
    std::weak_ptr<CompactionReader> reader;
    uint64_t held = 0;      // bytes of its chunks
    uint64_t last_use = 0;  // `served` when it last served a read
  };
  std::mutex mu;
  std::map<const CompactionReader*, Entry> entries;
  uint64_t served = 0;  // bytes all readers have served from chunks

  static Registry& Get() {
    static Registry* registry = new Registry;  // never destroyed: readers may outlive static destructors
    return *registry;
  }

  uint64_t ChunkBytes(const CompactionReader* self) {
    std::lock_guard<std::mutex> l(mu);
    uint64_t holders = 1;
    for (const auto& entry : entries) holders += entry.first != self && entry.second.held > 0;
    const uint64_t share = CompactionReader::kBudgetBytes / (2 * holders) / kUnit * kUnit;
    return std::max(CompactionReader::kMinChunkBytes, std::min(CompactionReader::kMaxChunkBytes, share));
  }

  // Records what `self` holds and has served; returns the readers idle long enough to give theirs back.
  std::vector<std::shared_ptr<CompactionReader>> Note(const std::shared_ptr<CompactionReader>& self,
                                                      uint64_t held, uint64_t bytes) {
    std::vector<std::shared_ptr<CompactionReader>> idle;
    std::lock_guard<std::mutex> l(mu);
    served += bytes;
    Entry& mine = entries[self.get()];
    mine.reader = self;
    mine.held = held;
    mine.last_use = served;
    for (auto& entry : entries) {
      if (entry.first == self.get() || entry.second.held == 0 ||
          served - entry.second.last_use < CompactionReader::kIdleBytes) {
        continue;
      }
      if (auto reader = entry.second.reader.lock()) idle.push_back(std::move(reader));
      entry.second.held = 0;
    }
    return idle;
  }

  void Forget(const CompactionReader* self) {
    std::lock_guard<std::mutex> l(mu);
    entries.erase(self);
  }

  static constexpr uint64_t kUnit = 64 << 10;
};

}  // namespace

CompactionReader::CompactionReader(std::shared_ptr<PageCache> cache, std::shared_ptr<PageFile> file,
                                   std::shared_ptr<RangeSource> source, std::string name)
    : cache_(std::move(cache)), file_(std::move(file)), source_(std::move(source)), name_(std::move(name)) {}

CompactionReader::~CompactionReader() { Registry::Get().Forget(this); }

bool CompactionReader::Serves(uint64_t offset) const {
  std::lock_guard<std::mutex> l(mu_);
  return offset == 0 || offset == next_ || (current_ != nullptr && current_->Covers(offset));
}

void CompactionReader::DropChunks() {
  std::lock_guard<std::mutex> l(mu_);
  current_.reset();
  ahead_.reset();  // a fetch still running keeps its chunk until it ends
}

std::shared_ptr<CompactionReader::Chunk> CompactionReader::Start(uint64_t offset, uint64_t length,
                                                                 bool background) {
  auto chunk = std::make_shared<Chunk>();
  chunk->offset = offset;
  chunk->length = length;
  chunk->data.reset(new char[length]);
  if (!background) {
    chunk->status = source_->Fetch(name_, offset, length, chunk->data.get());
    chunk->done = true;
    if (chunk->status.ok()) cache_->CountCompactionFetch(length);
    return chunk;
  }
  if (!source_->Enter()) return nullptr;  // the Env is closing: no more background work
  auto fetch = [chunk, source = source_, cache = cache_, name = name_]() mutable {
    Status s = source->Fetch(name, chunk->offset, chunk->length, chunk->data.get());
    if (s.ok()) cache->CountCompactionFetch(chunk->length);
    cache.reset();  // while entered, the Env that owns the cache holds it too
    {
      std::lock_guard<std::mutex> l(chunk->mu);
      chunk->status = s;
      chunk->done = true;
    }
    chunk->done_cv.notify_all();
    source->Leave();
  };
  try {
    std::thread(std::move(fetch)).detach();
  } catch (const std::system_error&) {
    source_->Leave();  // no thread to spare: the read that needs these bytes fetches them itself
    return nullptr;
  }
  return chunk;
}

Status CompactionReader::Wait(Chunk* chunk, bool* waited) {
  std::unique_lock<std::mutex> l(chunk->mu);
  *waited |= !chunk->done;
  chunk->done_cv.wait(l, [chunk] { return chunk->done; });
  return chunk->status;
}

uint64_t CompactionReader::ChunkLength(uint64_t from, uint64_t at_least) const {
  const uint64_t left = file_->size() - from;
  const uint64_t length = std::max(Registry::Get().ChunkBytes(this), at_least);
  // No short last chunk: a request for a few KiB costs a store nearly what one for MiBs does.
  return left - std::min(left, length) < length / 2 ? left : length;
}

void CompactionReader::Prefetch(uint64_t consumed_to) {
  if (ahead_ != nullptr || current_ == nullptr) return;
  if (consumed_to < current_->offset + current_->length / 2 || current_->end() >= file_->size()) return;
  const uint64_t from = current_->end();
  ahead_ = Start(from, ChunkLength(from, 0), /*background=*/true);
}

Status CompactionReader::Read(uint64_t offset, size_t n, char* scratch, size_t* got) {
  *got = 0;
  const uint64_t size = file_->size();
  if (offset >= size || n == 0) return Status::OK();
  n = static_cast<size_t>(std::min<uint64_t>(n, size - offset));
  Status s;
  bool missed = false;
  uint64_t held = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    size_t copied = 0;
    // From the chunks: the current one, then the one fetched ahead (a read may span both).
    while (copied < n) {
      const uint64_t pos = offset + copied;
      if (current_ == nullptr || !current_->Covers(pos)) {
        if (ahead_ == nullptr || !ahead_->Covers(pos)) break;
        current_ = std::move(ahead_);
      }
      if (!Wait(current_.get(), &missed).ok()) {
        current_.reset();  // a failed fetch ahead: fetched again below, and reported if it fails again
        break;
      }
      const size_t take = static_cast<size_t>(std::min<uint64_t>(n - copied, current_->end() - pos));
      std::memcpy(scratch + copied, current_->data.get() + (pos - current_->offset), take);
      copied += take;
    }
    if (copied < n) {
      // Pages of a table still present read from disk, or else a chunk from here, now.
      size_t present = 0;
      const uint64_t pos = offset + copied;
      if (!cache_->ReadIfPresent(file_.get(), pos, n - copied, scratch + copied, &present)) {
        missed = true;
        const uint64_t length = ChunkLength(pos, n - copied);
        ahead_.reset();
        current_ = Start(pos, length, /*background=*/false);
        s = current_->status;
        if (s.ok()) {
          std::memcpy(scratch + copied, current_->data.get(), n - copied);
        } else {
          current_.reset();
        }
      }
    }
    if (s.ok()) {
      *got = n;
      next_ = offset + n;
      Prefetch(next_);
    }
    held = (current_ ? current_->length : 0) + (ahead_ ? ahead_->length : 0);
  }
  cache_->CountCompactionRead(missed);
  for (auto& reader : Registry::Get().Note(shared_from_this(), held, s.ok() ? n : 0)) reader->DropChunks();
  return s;
}

}  // namespace levels3
