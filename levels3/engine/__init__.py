"""The Python backend behind the native Env: file layout, catalog, cache, deferred deletion, backend."""
