#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine for levels3 development: the LevelDB
# headers and library, then levels3 itself (editable) with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/include/leveldb/env.h ] && [ -z "${LEVELDB_ROOT:-}" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq libleveldb-dev >/dev/null
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install -q --upgrade pip "setuptools>=77" "Cython>=3.0" wheel
"$PYTHON" -m pip install -q --no-build-isolation -e ".[test]"
# The build links without complaint even when a symbol is missing; only import tells.
"$PYTHON" -c "import levels3; print('levels3', levels3.__version__, 'on LevelDB', levels3.__leveldb_version__)"
