// Which tables a compaction will open next, guessed from LevelDB's version as it picks a
// compaction's inputs (db/version_set.cc PickCompaction, SetupOtherInputs), for CompactionReader.
//
// LevelDB does not say which inputs a compaction has, but its "leveldb.sstables" property lists
// each level's tables (by smallest key) with their key ranges, and
// the compaction reader knows which tables the compaction is reading. A compaction of level L
// takes the level-0 tables that overlap each other (L = 0) or one table, widened to the tables of
// L whose range adds no table below; then the tables of L+1 overlapping them. It opens the first
// input of each level together and then each level's inputs one after another, in key order. So:
//   - when a table's reading starts and no table of the level above is being read (this is the
//     compaction's level L): the level-0 tables that overlap it (in turn), and the first table of
//     the level below that overlaps them;
//   - and, from level 1 on, the table after it in its level: when tables of the level above are
//     being read (this is L+1), if it starts inside their range; when tables of the level below
//     are (this is L), if it lies inside theirs (LevelDB widens L only so far).
// Keys are compared bytewise (the caller guesses only for LevelDB's default comparator). A wrong
// guess costs one request, never a wrong read: the reader checks what it takes.
#ifndef LEVELS3_COMPACTION_INPUTS_H_
#define LEVELS3_COMPACTION_INPUTS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace levels3 {

// One table of the version: its number and key range (user keys).
struct ListedTable {
  uint64_t number = 0;
  std::string smallest, largest;
};
// Each level's tables, in the order the version keeps them (by smallest key).
using ListedVersion = std::vector<std::vector<ListedTable>>;

// The "leveldb.sstables" property, parsed. Never fails: a line it cannot read is left out.
std::shared_ptr<const ListedVersion> ParseVersion(const std::string& listing);

// `name` and `reading`: table names ("000123.ldb").
std::vector<std::string> GuessInputs(const ListedVersion& levels, const std::string& name,
                                     const std::vector<std::string>& reading, bool starting);

}  // namespace levels3

#endif  // LEVELS3_COMPACTION_INPUTS_H_
