#include "table_tail.h"

namespace levels3 {

namespace {

constexpr uint64_t kTableMagic = 0xdb4775248b80fb57ull;  // the last 8 bytes of every table
constexpr size_t kFooterSize = 48;                       // two block handles, padding, magic
constexpr size_t kBlockTrailer = 5;                      // compression type + crc32c

bool DecodeVarint(const char** p, const char* limit, uint64_t* value) {
  uint64_t result = 0;
  for (unsigned shift = 0; shift <= 63 && *p < limit; shift += 7) {
    uint64_t byte = static_cast<unsigned char>(**p);
    ++*p;
    result |= (byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}

uint64_t DecodeFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

uint32_t DecodeFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace

uint64_t TableTailStart(uint64_t size, const TailReader& read) {
  std::string footer;
  if (size < kFooterSize || !read(size - kFooterSize, kFooterSize, &footer)) return size;
  if (DecodeFixed64(footer.data() + kFooterSize - 8) != kTableMagic) return size;
  const char* p = footer.data();
  const char* limit = p + kFooterSize - 8;
  uint64_t meta_offset, meta_size, index_offset, index_size;
  if (!DecodeVarint(&p, limit, &meta_offset) || !DecodeVarint(&p, limit, &meta_size) ||
      !DecodeVarint(&p, limit, &index_offset) || !DecodeVarint(&p, limit, &index_size)) {
    return size;
  }
  if (meta_offset >= size || index_offset >= size) return size;
  uint64_t start = std::min(meta_offset, index_offset);
  // The metaindex names the filter block, which LevelDB writes just before it.
  std::string meta;
  if (meta_size < 8 || meta_size > (1u << 20) || !read(meta_offset, meta_size + kBlockTrailer, &meta)) return start;
  if (meta[meta_size] != 0) return start;  // compressed: not worth decoding here
  uint32_t restarts = DecodeFixed32(meta.data() + meta_size - 4);
  if (restarts == 0 || 4ull * (restarts + 1) > meta_size) return start;
  const char* q = meta.data();
  const char* entries_end = meta.data() + meta_size - 4ull * (restarts + 1);
  uint64_t shared, unshared, value_length;
  if (!DecodeVarint(&q, entries_end, &shared) || !DecodeVarint(&q, entries_end, &unshared) ||
      !DecodeVarint(&q, entries_end, &value_length) || shared != 0 ||
      unshared + value_length > static_cast<uint64_t>(entries_end - q)) {
    return start;
  }
  std::string key(q, unshared);
  const char* v = q + unshared;
  uint64_t filter_offset, filter_size;
  if (key.compare(0, 7, "filter.") == 0 && DecodeVarint(&v, v + value_length, &filter_offset) &&
      DecodeVarint(&v, q + unshared + value_length, &filter_size) && filter_offset < start) {
    start = filter_offset;
  }
  return start;
}

}  // namespace levels3
