#include "compaction_inputs.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <set>

namespace levels3 {

namespace {

// A line of Version::DebugString ("leveldb.sstables"):
//   " 17:2048['<smallest>' @ 5 : 1 .. '<largest>' @ 9 : 1]"
// with each user key escaped (bytes outside ' '..'~' as \xHH). A key that itself holds the text
// around it can be misread: the guess it feeds is then wrong, which costs one request.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] == 'x' && std::isxdigit(static_cast<unsigned char>(s[i + 2])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 3]))) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 2, 2), nullptr, 16)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool ParseListedTable(const std::string& line, ListedTable* t) {
  size_t colon = line.find(':'), open = line.find("['");
  if (colon == std::string::npos || open == std::string::npos || line.size() < 2 || line.back() != ']') return false;
  char* end = nullptr;
  t->number = std::strtoull(line.c_str(), &end, 10);
  if (end == line.c_str()) return false;
  // The smallest key ends at the first "' @ <seq> : <type> .. '", the largest at the last "' @ ".
  const size_t keys = open + 2;
  size_t sep = line.find("' @ ", keys);
  size_t dots = std::string::npos;
  while (sep != std::string::npos) {
    dots = line.find(" .. '", sep);
    const size_t next = line.find("' @ ", sep + 1);
    if (dots != std::string::npos && (next == std::string::npos || dots < next)) break;
    sep = next;
  }
  const size_t last = line.rfind("' @ ");
  if (sep == std::string::npos || dots == std::string::npos || last == std::string::npos || last < dots + 5) {
    return false;
  }
  t->smallest = Unescape(line.substr(keys, sep - keys));
  t->largest = Unescape(line.substr(dots + 5, last - (dots + 5)));
  return true;
}

}  // namespace

std::shared_ptr<const ListedVersion> ParseVersion(const std::string& listing) {
  auto version = std::make_shared<ListedVersion>();
  ListedVersion& levels = *version;
  size_t pos = 0;
  while (pos < listing.size()) {
    size_t eol = listing.find('\n', pos);
    if (eol == std::string::npos) eol = listing.size();
    const std::string line = listing.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.compare(0, 4, "--- ") == 0) {
      levels.emplace_back();
    } else if (!levels.empty()) {
      ListedTable t;
      if (ParseListedTable(line, &t)) levels.back().push_back(std::move(t));
    }
  }
  return version;
}

namespace {

uint64_t TableNumber(const std::string& name) { return std::strtoull(name.c_str(), nullptr, 10); }

bool Overlap(const std::string& smallest, const std::string& largest, const ListedTable& t) {
  return !(t.largest < smallest || largest < t.smallest);
}

std::string TableName(uint64_t number) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%06llu.ldb", static_cast<unsigned long long>(number));
  return buf;
}

}  // namespace

std::vector<std::string> GuessInputs(const ListedVersion& levels, const std::string& name,
                                     const std::vector<std::string>& reading, bool starting) {
  std::vector<std::string> guesses;
  std::set<uint64_t> read;
  for (const std::string& other : reading) read.insert(TableNumber(other));
  // The key range of the tables of `level` being read; false if none is.
  auto range_read = [&](size_t level, std::string* smallest, std::string* largest) {
    bool any = false;
    for (const ListedTable& t : levels[level]) {
      if (!read.count(t.number)) continue;
      if (!any || t.smallest < *smallest) *smallest = t.smallest;
      if (!any || t.largest > *largest) *largest = t.largest;
      any = true;
    }
    return any;
  };
  const uint64_t number = TableNumber(name);
  for (size_t level = 0; level < levels.size(); ++level) {
    const std::vector<ListedTable>& tables = levels[level];
    for (size_t i = 0; i < tables.size(); ++i) {
      if (tables[i].number != number) continue;
      std::string smallest, largest;
      const bool upper = level > 0 && range_read(level - 1, &smallest, &largest);
      if (starting && !upper) {
        // The compaction's first level: level 0's tables overlapping this one, and those they
        // overlap in turn, as LevelDB picks them; then the first table below their range.
        std::string low = tables[i].smallest, high = tables[i].largest;
        if (level == 0) {
          std::set<size_t> picked{i};
          for (bool grew = true; grew;) {
            grew = false;
            for (size_t j = 0; j < tables.size(); ++j) {
              if (picked.count(j) || !Overlap(low, high, tables[j])) continue;
              picked.insert(j);
              low = std::min(low, tables[j].smallest);
              high = std::max(high, tables[j].largest);
              grew = true;
            }
          }
          for (size_t j : picked) {
            if (j != i) guesses.push_back(TableName(tables[j].number));
          }
        }
        if (level + 1 < levels.size()) {
          for (const ListedTable& below : levels[level + 1]) {
            if (!Overlap(low, high, below)) continue;
            guesses.push_back(TableName(below.number));
            break;
          }
        }
      }
      // The table after this one in its level (level 0's are all opened at the start).
      if (level == 0 || i + 1 >= tables.size()) return guesses;
      const ListedTable& next = tables[i + 1];
      if (upper) {
        // The compaction's second level: its inputs here are the tables overlapping those above.
        if (next.smallest <= largest) guesses.push_back(TableName(next.number));
      } else if (level + 1 < levels.size() && range_read(level + 1, &smallest, &largest)) {
        // The first level: LevelDB adds a table here only when that adds none below, so only one
        // inside the range of the tables below being read is sure to be an input.
        if (next.largest <= largest) guesses.push_back(TableName(next.number));
      }
      return guesses;
    }
  }
  return guesses;
}


}  // namespace levels3
