"""Packaging checks: the type stubs and mypy, and what the built extension links to.

They check the levels3 that is imported, so run against an installed wheel they
check the wheel (cibuildwheel copies tests/ and pyproject.toml next to each other).
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import levels3
from levels3 import _native

PACKAGE = Path(levels3.__file__).resolve().parent
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
STUB = PACKAGE / "_native.pyi"


def test_typing_files_ship_with_the_package() -> None:
    assert (PACKAGE / "py.typed").is_file()
    assert STUB.is_file()


def _stub_names() -> dict[str, set[str]]:
    """Public classes of the stub and the public methods/attributes each declares."""
    import ast

    tree = ast.parse(STUB.read_text())
    declared: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            declared[node.name] = {
                item.name for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_")
            }
            bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]

    def with_bases(name: str) -> set[str]:
        names = set(declared[name])
        for base in bases[name]:
            if base in declared:
                names |= with_bases(base)
        return names

    return {name: with_bases(name) for name in declared if not name.startswith("_")}


def test_stub_matches_the_extension() -> None:
    """Every public class and method of the extension is in the stub, and the other way round."""
    stub = _stub_names()
    for name in ("NativeDB", "PrefixedDB", "WriteBatch", "Snapshot", "Iterator", "RawIterator"):
        assert name in stub, f"{name} missing from _native.pyi"
    for name, methods in stub.items():
        cls = getattr(_native, name)
        actual = {m for m in dir(cls) if not m.startswith("_")}
        assert actual == methods, f"{name}: extension has {sorted(actual - methods)} not in the stub, " \
                                  f"stub has {sorted(methods - actual)} not in the extension"
    assert isinstance(_native.__leveldb_version__, str)


def test_stub_keyword_arguments_match() -> None:
    """Keyword names of the extension's methods (from embedsignature docstrings) are in the stub."""
    import ast
    import re

    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name in ("NativeDB", "PrefixedDB", "Snapshot")):
            continue
        for item in node.body:
            if not isinstance(item, ast.FunctionDef) or item.name.startswith("_"):
                continue
            doc = inspect.getdoc(getattr(getattr(_native, node.name), item.name)) or ""
            match = re.search(rf"\b{item.name}\(self,?\s*(.*?)\)", doc)
            if not match:
                continue  # no embedded signature to compare with
            # "key", "*ranges", "sync=False", "bytes prefix" (a typed Cython argument)
            actual = {(p.split("=")[0].replace("not None", "").split() or [""])[-1].lstrip("*")
                      for p in match.group(1).split(",")}
            actual -= {""}
            declared = {a.arg for a in item.args.args + item.args.kwonlyargs} - {"self"}
            if item.args.vararg:
                declared.add(item.args.vararg.arg)
            assert actual == declared, f"{node.name}.{item.name}: extension {sorted(actual)}, stub {sorted(declared)}"


def test_mypy_passes_on_the_package_and_its_stubs(tmp_path: Path) -> None:
    """mypy on the imported levels3 (its .py files and .pyi stubs, not the compiled extension)."""
    pytest.importorskip("mypy")
    # A copy without the compiled module, so the stub is what mypy reads (and an
    # installed package is checked as source, not skipped as a site-package).
    shutil.copytree(
        PACKAGE, tmp_path / "levels3",
        ignore=lambda d, names: [n for n in names
                                 if n == "__pycache__" or n.endswith((".so", ".pyd", ".pyx", ".pxd", ".cpp", ".c"))],
    )
    cmd = [sys.executable, "-m", "mypy", "--no-incremental", "-p", "levels3"]
    if PYPROJECT.is_file():
        cmd[3:3] = ["--config-file", str(PYPROJECT)]
    else:
        cmd[3:3] = ["--ignore-missing-imports"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, f"mypy failed:\n{result.stdout}{result.stderr}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ldd is Linux-only")
def test_extension_links_leveldb_as_expected() -> None:
    """The extension loads; a wheel's (built with LEVELDB_ROOT) has LevelDB linked in statically."""
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("no ldd")
    so = Path(_native.__file__)
    out = subprocess.run([ldd, str(so)], capture_output=True, text=True).stdout
    assert "not found" not in out, out
    if "site-packages" in so.parts or "dist-packages" in so.parts:
        assert "libleveldb" not in out, f"installed extension depends on a shared LevelDB:\n{out}"
        assert "libsnappy" not in out, out
