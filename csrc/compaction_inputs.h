// Which tables a compaction will open next, guessed from LevelDB's version as it picks a
// compaction's inputs (db/version_set.cc PickCompaction, SetupOtherInputs), for CompactionReader.
//
// LevelDB does not say which inputs a compaction has, but its "leveldb.sstables" property lists
// each level's tables (level 0 newest first, the others in key order) with their key ranges, and
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

#include <string>
#include <vector>

namespace levels3 {

// `listing`: the "leveldb.sstables" property; `name` and `reading`: table names ("000123.ldb").
std::vector<std::string> GuessInputs(const std::string& listing, const std::string& name,
                                     const std::vector<std::string>& reading, bool starting);

}  // namespace levels3

#endif  // LEVELS3_COMPACTION_INPUTS_H_
