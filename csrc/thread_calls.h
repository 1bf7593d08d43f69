// How many levels3 calls into LevelDB, and comparator callbacks, the current
// thread is inside, on any database.
//
// close() waits for the calls in flight. From inside one of them (a comparator
// that closes its database, a signal handler or a logging handler that runs in
// an Env callback) it would wait for itself, and from LevelDB's compaction
// thread (a comparator) deleting the DB would wait for that very thread: so
// close() asks this count first and, when it is not zero, leaves the waiting to
// another thread. Hidden: the bridge's copy is the one that counts. Initial-exec:
// one instruction per access instead of a call to __tls_get_addr on every hot
// call (a dlopen()ed module may use it for a few bytes; glibc reserves room).
#ifndef LEVELS3_THREAD_CALLS_H_
#define LEVELS3_THREAD_CALLS_H_

namespace levels3 {

__attribute__((visibility("hidden"))) inline int& CallsOnThisThread() noexcept {
  static thread_local int calls __attribute__((tls_model("initial-exec"))) = 0;
  return calls;
}

}  // namespace levels3

#endif  // LEVELS3_THREAD_CALLS_H_
