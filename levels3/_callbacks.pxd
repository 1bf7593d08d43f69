# The Env's callbacks (levels3/_callbacks.pyx), as the bridge cimports them.

cimport levels3._leveldb as ldb


cdef ldb.BackendCallbacks make_callbacks(object control) noexcept
cdef int compare_keys(void* state, const char* a, size_t a_len, const char* b, size_t b_len) noexcept with gil
