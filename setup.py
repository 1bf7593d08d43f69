"""Build of the native extensions: Cython bridge + C++ Env, linked to LevelDB 1.23, and the
Env's callbacks into Python (levels3._callbacks, which the bridge cimports).

LevelDB comes from the system (Debian: libleveldb-dev) or from LEVELDB_ROOT, a
prefix with include/ and lib/ (the wheels point it at a static build).
"""

import os
import sys

from setuptools import Extension, find_packages, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - build requirement
    sys.exit("building levels3 needs Cython (pip install Cython)")


def leveldb_paths():
    root = os.environ.get("LEVELDB_ROOT")
    candidates = [root] if root else ["/usr", "/usr/local", "/opt/homebrew"]
    for prefix in candidates:
        if prefix and os.path.exists(os.path.join(prefix, "include", "leveldb", "env.h")):
            libdirs = [os.path.join(prefix, d) for d in ("lib", "lib64")]
            libdirs += [os.path.join(prefix, "lib", d) for d in os.listdir(os.path.join(prefix, "lib"))
                        if d.endswith("-linux-gnu")] if os.path.isdir(os.path.join(prefix, "lib")) else []
            return os.path.join(prefix, "include"), [d for d in libdirs if os.path.isdir(d)]
    where = f"LEVELDB_ROOT={root}" if root else "/usr, /usr/local or /opt/homebrew"
    sys.exit(
        f"levels3: LevelDB headers (leveldb/env.h) not found in {where}.\n"
        "Install LevelDB 1.23 (Debian/Ubuntu: apt-get install libleveldb-dev; macOS: brew install leveldb)\n"
        "or set LEVELDB_ROOT to a prefix containing include/leveldb and lib/libleveldb.*"
    )


def extensions():
    include_dir, lib_dirs = leveldb_paths()
    libraries = ["leveldb"]
    link_args = []
    if os.environ.get("LEVELDB_ROOT"):
        libraries.append("snappy")  # a static LevelDB needs its compressor linked in too (after it)
        if sys.platform.startswith("linux"):
            # Keep the statically linked LevelDB/snappy symbols private to the extension.
            link_args.append("-Wl,--exclude-libs,ALL")
    common = dict(
        include_dirs=["csrc", include_dir],
        language="c++",
        # Upstream LevelDB is built without RTTI; a subclass of EnvWrapper built with
        # it fails at import (missing typeinfo). -fno-rtti works with both builds.
        extra_compile_args=["-std=c++17", "-fno-rtti", "-O2"],
        define_macros=[("PY_SSIZE_T_CLEAN", None)],
    )
    return [
        Extension(
            "levels3._native",
            sources=["levels3/_native.pyx", "csrc/object_env.cc", "csrc/group_commit.cc", "csrc/page_cache.cc",
                     "csrc/paged_env.cc", "csrc/table_tail.cc", "csrc/compaction_reader.cc",
                     "csrc/compaction_inputs.cc"],
            library_dirs=lib_dirs,
            libraries=libraries,
            extra_link_args=link_args,
            **common,
        ),
        # Only C++ types and Python: it links nothing of LevelDB.
        Extension("levels3._callbacks", sources=["levels3/_callbacks.pyx"], **common),
    ]


# The benchmark suite's source is the top-level benchmarks/ (`python -m benchmarks` in a checkout); it ships
# inside the package as levels3.bench, so that `levels3 bench` works wherever levels3 is installed. Its
# modules import each other relatively, so either name works. (Package discovery lives here, not in
# pyproject.toml, because a find directive there cannot add a package from another directory.)
PACKAGES = find_packages(include=["levels3", "levels3.*"]) + ["levels3.bench"]

setup(
    packages=PACKAGES,
    package_dir={"levels3.bench": "benchmarks"},
    ext_modules=cythonize(extensions(), compiler_directives={"language_level": "3"}),
)
