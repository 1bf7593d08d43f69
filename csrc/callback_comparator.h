// A leveldb::Comparator whose ordering is a Python callable (plyvel's
// `comparator=` option). The call goes through a function pointer supplied by
// the Cython layer (levels3/_callbacks.pyx), which takes the GIL and aborts the
// process when the callable fails: LevelDB cannot be told that a comparison
// failed. The comparison counts as a call on this thread (thread_calls.h), so a
// close() from inside the callable does not wait for it.
#ifndef LEVELS3_CALLBACK_COMPARATOR_H_
#define LEVELS3_CALLBACK_COMPARATOR_H_

#include <string>

#include "leveldb/comparator.h"
#include "leveldb/slice.h"
#include "thread_calls.h"

namespace levels3 {

class CallbackComparator final : public leveldb::Comparator {
 public:
  using CompareFn = int (*)(void* callable, const char* a, size_t a_len, const char* b,
                            size_t b_len);

  // `callable` is borrowed: the bridge keeps it alive for as long as the comparator.
  CallbackComparator(std::string name, void* callable, CompareFn compare)
      : name_(std::move(name)), callable_(callable), compare_(compare) {}

  int Compare(const leveldb::Slice& a, const leveldb::Slice& b) const override {
    ++CallsOnThisThread();
    const int order = compare_(callable_, a.data(), a.size(), b.data(), b.size());
    --CallsOnThisThread();
    return order;
  }
  const char* Name() const override { return name_.c_str(); }

  // Shortening index keys needs to know the order's structure; leaving them
  // unchanged is always correct, only slightly larger.
  void FindShortestSeparator(std::string*, const leveldb::Slice&) const override {}
  void FindShortSuccessor(std::string*) const override {}

 private:
  std::string name_;
  void* callable_;
  CompareFn compare_;
};

}  // namespace levels3

#endif  // LEVELS3_CALLBACK_COMPARATOR_H_
