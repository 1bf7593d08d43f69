#include "compaction_reader.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <map>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

namespace levels3 {

using leveldb::Status;

struct CompactionChunk {
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

// Every reader's chunks, for the shared budget, and the chunks parked for guessed inputs.
// Lock order: a reader's mutex, then this one; readers are told to drop their chunks, and parked
// page files are released, with neither held.
struct Registry {
  struct Entry {
    std::weak_ptr<CompactionReader> reader;
    const RangeSource* source = nullptr;  // its Env: names are per database
    std::string name;
    const PageFile* file = nullptr;
    uint64_t held = 0;      // bytes of its chunks
    uint64_t last_use = 0;  // `served` when it last served a read
  };
  // A guessed input's first chunk, waiting for its reader. Holds a user of its page file.
  struct Parked {
    std::string name;
    std::shared_ptr<PageFile> file;
    std::shared_ptr<PageCache> cache;
    const RangeSource* source;
    std::shared_ptr<CompactionChunk> chunk;
    uint64_t since;  // `served` when it was parked
  };
  std::mutex mu;
  std::map<const CompactionReader*, Entry> entries;
  std::vector<Parked> parked;
  uint64_t served = 0;  // bytes all readers have served from chunks

  static Registry& Get() {
    static Registry* registry = new Registry;  // never destroyed: readers may outlive static destructors
    return *registry;
  }

  uint64_t ChunkBytes(const CompactionReader* self) {
    std::lock_guard<std::mutex> l(mu);
    uint64_t holders = 1 + parked.size();
    for (const auto& entry : entries) holders += entry.first != self && entry.second.held > 0;
    const uint64_t share = CompactionReader::kBudgetBytes / (2 * holders) / kUnit * kUnit;
    return std::max(CompactionReader::kMinChunkBytes, std::min(CompactionReader::kMaxChunkBytes, share));
  }

  // Records what `self` holds and has served; returns the readers idle long enough to give theirs
  // back, and moves the parked chunks no reader took meanwhile to *expired.
  std::vector<std::shared_ptr<CompactionReader>> Note(const std::shared_ptr<CompactionReader>& self,
                                                      uint64_t held, uint64_t bytes, std::vector<Parked>* expired) {
    std::vector<std::shared_ptr<CompactionReader>> idle;
    std::lock_guard<std::mutex> l(mu);
    served += bytes;
    Entry& mine = entries[self.get()];
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
    for (size_t i = 0; i < parked.size();) {
      if (served - parked[i].since < CompactionReader::kParkedBytes) {
        ++i;
        continue;
      }
      expired->push_back(std::move(parked[i]));
      parked.erase(parked.begin() + static_cast<std::ptrdiff_t>(i));
    }
    return idle;
  }

  // The tables the compactions of `source`'s database are reading.
  std::vector<std::string> Names(const RangeSource* source) {
    std::lock_guard<std::mutex> l(mu);
    std::vector<std::string> names;
    for (const auto& entry : entries) {
      if (entry.second.source == source) names.push_back(entry.second.name);
    }
    return names;
  }

  // Whether table `name` of `source`'s database has neither a reader nor a parked chunk.
  bool Unclaimed(const std::string& name, const RangeSource* source) {
    std::lock_guard<std::mutex> l(mu);
    for (const auto& entry : entries) {
      if (entry.second.source == source && entry.second.name == name) return false;
    }
    for (const auto& p : parked) {
      if (p.source == source && p.name == name) return false;
    }
    return true;
  }

  // False when `file` has a reader already or a chunk parked for it.
  bool Park(Parked p) {
    std::lock_guard<std::mutex> l(mu);
    for (const auto& entry : entries) {
      if (entry.second.file == p.file.get()) return false;
    }
    for (const auto& other : parked) {
      if (other.file == p.file) return false;
    }
    p.since = served;
    parked.push_back(std::move(p));
    return true;
  }

  // A reader's first read: registers it (no guess parks a chunk for its file from now on) and
  // returns the chunk parked for `file`, if any (its page file's user goes to *taken, for release).
  std::shared_ptr<CompactionChunk> Start(const std::shared_ptr<CompactionReader>& self, const RangeSource* source,
                                         const std::string& name, const PageFile* file, std::vector<Parked>* taken) {
    std::lock_guard<std::mutex> l(mu);
    Entry& mine = entries[self.get()];
    mine.reader = self;
    mine.source = source;
    mine.name = name;
    mine.file = file;
    mine.last_use = served;
    for (size_t i = 0; i < parked.size(); ++i) {
      if (parked[i].file.get() != file) continue;
      std::shared_ptr<CompactionChunk> chunk = parked[i].chunk;
      taken->push_back(std::move(parked[i]));
      parked.erase(parked.begin() + static_cast<std::ptrdiff_t>(i));
      return chunk;
    }
    return nullptr;
  }

  std::vector<Parked> TakeAll(const RangeSource* source) {
    std::lock_guard<std::mutex> l(mu);
    std::vector<Parked> out;
    for (size_t i = 0; i < parked.size();) {
      if (parked[i].source != source) {
        ++i;
        continue;
      }
      out.push_back(std::move(parked[i]));
      parked.erase(parked.begin() + static_cast<std::ptrdiff_t>(i));
    }
    return out;
  }

  void Forget(const CompactionReader* self) {
    std::lock_guard<std::mutex> l(mu);
    entries.erase(self);
  }

  static constexpr uint64_t kUnit = 64 << 10;
};

// Gives parked chunks' page files back. `taken`: by their reader, which has read from them (an
// input fetched ahead, if the fetch succeeded); else dropped unused (wasted read-ahead, unless
// the fetch failed; one still running is counted as it will end).
void Release(std::vector<Registry::Parked>* parked, bool taken) {
  for (Registry::Parked& p : *parked) {
    bool ok;
    {
      std::lock_guard<std::mutex> l(p.chunk->mu);
      ok = !p.chunk->done || p.chunk->status.ok();
    }
    if (ok && taken) p.cache->CountCompactionGuess();
    if (ok && !taken) p.cache->CountCompactionWaste(p.chunk->length);
    p.cache->Release(p.file);
  }
  parked->clear();
}

// The length of the chunk of a `size`-byte input that starts at `from`, for a read of `at_least`.
uint64_t ChunkLengthFor(uint64_t size, uint64_t from, uint64_t at_least, const CompactionReader* self) {
  const uint64_t left = size - from;
  const uint64_t length = std::max(Registry::Get().ChunkBytes(self), at_least);
  // No short last chunk: a request for a few KiB costs a store nearly what one for MiBs does.
  return left - std::min(left, length) < length / 2 ? left : length;
}

}  // namespace

CompactionReader::CompactionReader(std::shared_ptr<PageCache> cache, std::shared_ptr<PageFile> file,
                                   std::shared_ptr<RangeSource> source, std::string name, NextInputs* next)
    : cache_(std::move(cache)),
      file_(std::move(file)),
      source_(std::move(source)),
      name_(std::move(name)),
      next_inputs_(next) {}

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
  return ChunkLengthFor(file_->size(), from, at_least, this);
}

bool CompactionReader::Prefetch(uint64_t consumed_to) {
  if (ahead_ != nullptr || current_ == nullptr) return false;
  if (consumed_to < current_->offset + current_->length / 2) return false;
  if (current_->end() >= file_->size()) {
    const bool guess = next_inputs_ != nullptr && !guessed_;
    guessed_ = true;
    return guess;
  }
  const uint64_t from = current_->end();
  ahead_ = Start(from, ChunkLength(from, 0), /*background=*/true);
  return false;
}

void CompactionReader::ForgetParked(const RangeSource* source) {
  std::vector<Registry::Parked> parked = Registry::Get().TakeAll(source);
  Release(&parked, /*taken=*/false);
}

void CompactionReader::FetchGuessed(bool starting) {
  Registry& registry = Registry::Get();
  for (const std::string& next : next_inputs_->Guess(name_, registry.Names(source_.get()), starting)) {
    if (next == name_ || !registry.Unclaimed(next, source_.get()) || !source_->Enter()) continue;
    // Opening the table enters Python (the catalog): in the background, with the fetch.
    auto fetch = [next, inputs = next_inputs_, source = source_, cache = cache_]() mutable {
      if (std::shared_ptr<PageFile> file = inputs->Open(next)) {
        auto chunk = std::make_shared<CompactionChunk>();
        chunk->length = ChunkLengthFor(file->size(), 0, 0, nullptr);
        if (cache->Present(file.get(), 0, chunk->length) || !Registry::Get().Park({next, file, cache, source.get(), chunk, 0})) {
          cache->Release(file);  // on disk already, or its reader (or another guess) came first
        } else {
          Status s;
          try {
            chunk->data.reset(new char[chunk->length]);  // read only once done is set, below
          } catch (const std::bad_alloc&) {
            s = Status::IOError(next, "no memory for a compaction chunk");
          }
          if (s.ok()) s = source->Fetch(next, 0, chunk->length, chunk->data.get());
          if (s.ok()) cache->CountCompactionFetch(chunk->length);
          {
            std::lock_guard<std::mutex> l(chunk->mu);
            chunk->status = s;
            chunk->done = true;
          }
          chunk->done_cv.notify_all();
        }
      }
      cache.reset();  // while entered, the Env that owns the cache holds it too
      source->Leave();
    };
    try {
      std::thread(std::move(fetch)).detach();
    } catch (const std::system_error&) {
      source_->Leave();  // no thread to spare: that input's first read fetches it, as without a guess
      return;
    }
  }
}

Status CompactionReader::Read(uint64_t offset, size_t n, char* scratch, size_t* got) {
  *got = 0;
  const uint64_t size = file_->size();
  if (offset >= size || n == 0) return Status::OK();
  n = static_cast<size_t>(std::min<uint64_t>(n, size - offset));
  Status s;
  bool missed = false, guess = false, starting = false;
  uint64_t held = 0;
  std::vector<Registry::Parked> taken;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!started_) {
      started_ = true;
      starting = next_inputs_ != nullptr;
      // Its first chunk, if this table was guessed as an input and fetched ahead.
      current_ = Registry::Get().Start(shared_from_this(), source_.get(), name_, file_.get(), &taken);
    }
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
      guess = Prefetch(next_);
    }
    held = (current_ ? current_->length : 0) + (ahead_ ? ahead_->length : 0);
  }
  Release(&taken, /*taken=*/true);
  cache_->CountCompactionRead(missed);
  std::vector<Registry::Parked> expired;
  for (auto& reader : Registry::Get().Note(shared_from_this(), held, s.ok() ? n : 0, &expired)) {
    reader->DropChunks();
  }
  Release(&expired, /*taken=*/false);
  if (starting) FetchGuessed(/*starting=*/true);
  if (guess) FetchGuessed(/*starting=*/false);
  return s;
}

}  // namespace levels3
