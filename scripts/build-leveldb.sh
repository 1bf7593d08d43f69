#!/usr/bin/env bash
# Build snappy and LevelDB 1.23 from their release sources as static, position-
# independent libraries into a prefix, for linking into the levels3 extension
# (cibuildwheel's before-all; then build levels3 with LEVELDB_ROOT=<prefix>).
#
#   scripts/build-leveldb.sh [PREFIX]
#
# PREFIX defaults to $LEVELDB_ROOT, else /tmp/leveldb-prefix. The release
# tarballs are downloaded from GitHub unless given as local files:
#   LEVELDB_TARBALL=/path/leveldb-1.23.tar.gz  (or Debian's leveldb_1.23.orig.tar.gz)
#   SNAPPY_TARBALL=/path/snappy-1.1.10.tar.gz  (or Debian's snappy_1.1.9.orig.tar.gz)
# Other knobs: LEVELDB_VERSION (1.23) and SNAPPY_VERSION (1.1.10) to download,
# LEVELDB_SHA256 and SNAPPY_SHA256 (required for versions not known below),
# BUILD_DIR (scratch, default a temporary directory), JOBS, CMAKE_OSX_ARCHITECTURES.
set -euo pipefail

PREFIX="${1:-${LEVELDB_ROOT:-/tmp/leveldb-prefix}}"
LEVELDB_VERSION="${LEVELDB_VERSION:-1.23}"
SNAPPY_VERSION="${SNAPPY_VERSION:-1.1.10}"
# sha256 of GitHub's archive/refs/tags/<version>.tar.gz; Debian's *.orig.tar.gz
# are the same files. A download must match; a local tarball is checked when
# its sha256 is known (or given through LEVELDB_SHA256 / SNAPPY_SHA256).
known_sha256() {
    case "$1" in
        leveldb-1.23) echo 9a37f8a6174f09bd622bc723b55881dc541cd50747cbd08831c2a82d620f6d76 ;;
        snappy-1.1.9) echo 75c1fbb3d618dd3a0483bff0e26d0a92b495bbe5059c8b4f1c962b478b6e06e7 ;;
        snappy-1.1.10) echo 49d831bffcc5f3d01482340fe5af59852ca2fe76c3e05df0e67203ebbe0f1d90 ;;
    esac
}
JOBS="${JOBS:-$( (command -v nproc >/dev/null && nproc) || sysctl -n hw.ncpu 2>/dev/null || echo 2)}"

log() { echo "build-leveldb: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v cmake >/dev/null || die "cmake not found (pip install cmake, or apt-get/yum/brew install cmake)"

mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"
if [ -z "${BUILD_DIR:-}" ]; then
    BUILD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/build-leveldb.XXXXXX")"
    trap 'rm -rf "$BUILD_DIR"' EXIT
fi
mkdir -p "$BUILD_DIR"

sha256_of() {
    if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

fetch() {  # fetch NAME VERSION LOCAL_TARBALL SHA256 -> prints the unpacked source directory
    local name="$1" version="$2" local_tarball="$3" sha="$4" tarball
    local url="https://github.com/google/$name/archive/refs/tags/$version.tar.gz"
    if [ -n "$local_tarball" ]; then
        [ -f "$local_tarball" ] || die "$name tarball $local_tarball does not exist"
        tarball="$local_tarball"
        # The version is the tarball's, from its top directory (name-version/).
        version="$( (tar -tzf "$tarball" || true) | sed -n "1{s#/.*##;s#^$name-##;p;q;}")"
        log "$name $version from local tarball $tarball"
    else
        [ -n "$sha" ] || sha="$(known_sha256 "$name-$version")"
        [ -n "$sha" ] || die "no known sha256 for $name $version: set $(echo "$name" | tr a-z A-Z)_SHA256"
        tarball="$BUILD_DIR/$name-$version.tar.gz"
        log "downloading $url"
        if command -v curl >/dev/null; then
            curl -fsSL --retry 3 -o "$tarball" "$url"
        else
            wget -q -O "$tarball" "$url"
        fi || die "downloading $url failed (no network? set $(echo "$name" | tr a-z A-Z)_TARBALL to a local copy)"
    fi
    local got
    got="$(sha256_of "$tarball")"
    if [ -n "$sha" ]; then
        [ "$got" = "$sha" ] || die "$name tarball sha256 is $got, expected $sha"
    elif [ "$got" = "$(known_sha256 "$name-$version")" ]; then
        log "$name tarball is the $version release (sha256 verified)"
    else
        log "warning: $name tarball $tarball is not a known $name $version release (sha256 $got)"
    fi
    local src="$BUILD_DIR/$name-src"
    rm -rf "$src" && mkdir -p "$src"
    tar -xzf "$tarball" -C "$src" --strip-components=1
    echo "$src"
}

CMAKE_COMMON=(
    -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_INSTALL_PREFIX="$PREFIX"
    -DCMAKE_INSTALL_LIBDIR=lib
    -DCMAKE_PREFIX_PATH="$PREFIX"
    -DBUILD_SHARED_LIBS=OFF
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON
    # LevelDB 1.23 and snappy 1.1.x declare cmake_minimum_required(3.1/3.9); CMake 4 refuses
    # that without this (older CMake ignores it).
    -DCMAKE_POLICY_VERSION_MINIMUM=3.5
)
if [ "$(uname)" = Darwin ]; then
    CMAKE_COMMON+=(-DCMAKE_OSX_DEPLOYMENT_TARGET="${MACOSX_DEPLOYMENT_TARGET:-11.0}")
    # cibuildwheel sets ARCHFLAGS ("-arch arm64") when cross-building on macOS.
    ARCHS="${CMAKE_OSX_ARCHITECTURES:-$(echo "${ARCHFLAGS:-}" | sed -n 's/.*-arch \([a-z0-9_]*\).*/\1/p')}"
    [ -n "$ARCHS" ] && CMAKE_COMMON+=(-DCMAKE_OSX_ARCHITECTURES="$ARCHS")
fi

# --- snappy ---------------------------------------------------------------
SNAPPY_SRC="$(fetch snappy "$SNAPPY_VERSION" "${SNAPPY_TARBALL:-}" "${SNAPPY_SHA256:-}")"
if grep -q '^size_t AdvanceToNextTag' "$SNAPPY_SRC/snappy.cc"; then
    # snappy 1.1.9 (fixed in 1.1.10): an always_inline function without `inline`
    # does not compile with -fPIC on newer GCC ("function body can be overwritten").
    sed -i.orig 's/^size_t AdvanceToNextTag/inline size_t AdvanceToNextTag/' "$SNAPPY_SRC/snappy.cc"
fi
# snappy >= 1.1.9 builds with -fno-rtti but leaves out the (gtest/benchmark)
# submodules from its archive; turn their builds off.
cmake -S "$SNAPPY_SRC" -B "$BUILD_DIR/snappy-build" "${CMAKE_COMMON[@]}" \
    -DSNAPPY_BUILD_TESTS=OFF -DSNAPPY_BUILD_BENCHMARKS=OFF -DSNAPPY_INSTALL=ON
cmake --build "$BUILD_DIR/snappy-build" -j "$JOBS"
cmake --install "$BUILD_DIR/snappy-build"

# --- LevelDB --------------------------------------------------------------
LEVELDB_SRC="$(fetch leveldb "$LEVELDB_VERSION" "${LEVELDB_TARBALL:-}" "${LEVELDB_SHA256:-}")"
# LevelDB's CMake probes optional libraries with a C link test (check_library_exists),
# which fails for a static C++ libsnappy and would pick up whatever crc32c or
# tcmalloc the build machine has. Set the answers instead: snappy from PREFIX
# (headers through -isystem, after LevelDB's own; -L for the leveldbutil tool),
# no crc32c, no tcmalloc.
cmake -S "$LEVELDB_SRC" -B "$BUILD_DIR/leveldb-build" "${CMAKE_COMMON[@]}" \
    -DLEVELDB_BUILD_TESTS=OFF -DLEVELDB_BUILD_BENCHMARKS=OFF -DLEVELDB_INSTALL=ON \
    -DHAVE_SNAPPY=ON -DHAVE_CRC32C=OFF -DHAVE_TCMALLOC=OFF \
    -DCMAKE_CXX_FLAGS="${CXXFLAGS:-} -isystem $PREFIX/include" \
    -DCMAKE_EXE_LINKER_FLAGS="${LDFLAGS:-} -L$PREFIX/lib"
cmake --build "$BUILD_DIR/leveldb-build" -j "$JOBS"
cmake --install "$BUILD_DIR/leveldb-build"

# LevelDB only uses snappy when its CMake found it: check, or the wheel would
# silently write uncompressed tables for compression='snappy'.
grep -q '^#define HAVE_SNAPPY 1' "$BUILD_DIR/leveldb-build/include/port/port_config.h" \
    || die "LevelDB was configured without snappy (not found under $PREFIX)"
for lib in libleveldb.a libsnappy.a; do
    [ -f "$PREFIX/lib/$lib" ] || die "$PREFIX/lib/$lib was not installed"
done
# Shared copies (from an earlier build) would be preferred by the linker.
rm -f "$PREFIX"/lib/libleveldb.so* "$PREFIX"/lib/libsnappy.so* "$PREFIX"/lib/libleveldb*.dylib "$PREFIX"/lib/libsnappy*.dylib
log "installed static LevelDB + snappy into $PREFIX:"
ls -l "$PREFIX/lib"/*.a >&2
