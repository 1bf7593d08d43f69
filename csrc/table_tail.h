// Where a LevelDB table's tail starts: the blocks Table::Open reads (filter, metaindex,
// index, footer; LevelDB writes them in that order at the end of the file). The page
// cache learns from it how much to fetch when it opens a table (see page_cache.h).
#ifndef LEVELS3_TABLE_TAIL_H_
#define LEVELS3_TABLE_TAIL_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace levels3 {

// `read(offset, n, out)` fills *out with n bytes of the table, or returns false when
// they are not at hand. Returns the offset of the first tail block, or `size` when the
// footer cannot be read or is not a table's. The filter is found through the metaindex
// (uncompressed, as LevelDB writes it unless compression shrinks it); without it, the
// start of the metaindex or index block.
using TailReader = std::function<bool(uint64_t offset, size_t n, std::string* out)>;
uint64_t TableTailStart(uint64_t size, const TailReader& read);

}  // namespace levels3

#endif  // LEVELS3_TABLE_TAIL_H_
