"""A custom comparator that raises or returns a non-int (issue 14, item 8).

LevelDB cannot be told that a comparison failed, and going on with a wrong order would
corrupt the database, so such a failure aborts the process, as in plyvel. Two things make
that bearable: the common mistakes are caught at open, as a TypeError, by calling the
comparator on a few sample keys; and when a comparison fails later, the Python exception and
which comparator raised it are on stderr before the abort. Each case runs in a child process.
"""

from __future__ import annotations

import signal

import pytest

from .processes import assert_clean_exit, how_it_ended, run_python

OPEN_SCRIPT = r"""
import sys
import levels3

path, body = sys.argv[1], sys.argv[2]
compare = eval(body)
try:
    db = levels3.DB(path, create_if_missing=True, comparator=compare, comparator_name=b"sample-cmp")
except Exception as exc:
    chain, e = [], exc
    while e is not None:
        chain.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    print("refused at open |", " <- ".join(chain), flush=True)
    sys.exit(0)
print("opened", flush=True)
for key in (b"a", b"b", b"c", b"ab"):  # the memtable compares from the second put on
    db.put(key, b"v")
db.close()
print("written", flush=True)
"""


@pytest.mark.parametrize("body", [
    "lambda a, b: None",
    "lambda a, b: 'less'",
    "lambda a, b: 0.5 if a < b else -0.5",
    "lambda a, b: (a > b) - (a < b) if a and b else None",
    "lambda a, b: a > b",  # a bool cannot say "less": keys would compare equal
])
def test_comparator_returning_a_non_int_is_a_type_error_at_open(tmp_path, body):
    result = run_python(OPEN_SCRIPT, str(tmp_path / "db"), body, timeout=60)
    assert_clean_exit(result)
    assert "refused at open | TypeError" in result.stdout, result.stdout
    assert "comparator" in result.stdout


def test_comparator_raising_at_open_is_refused_at_open(tmp_path):
    result = run_python(OPEN_SCRIPT, str(tmp_path / "db"), "lambda a, b: 1 // 0", timeout=60)
    assert_clean_exit(result)
    assert "refused at open" in result.stdout and "ZeroDivisionError" in result.stdout, result.stdout


LATER_SCRIPT = r"""
import sys
import levels3

path, failure = sys.argv[1], sys.argv[2]


def marker_compare(a, b):
    if a.startswith(b"bad") or b.startswith(b"bad"):  # no sample key at open starts so
        if failure == "raises":
            raise ValueError("boom-marker")
        return None
    return (a > b) - (a < b)


db = levels3.DB(path, create_if_missing=True, comparator=marker_compare, comparator_name=b"marker-cmp")
db.put(b"good", b"v", sync=True)
print("before the bad key", flush=True)
db.put(b"bad", b"v")
print("after the bad key", flush=True)
"""


@pytest.mark.parametrize("failure, shown", [("raises", "ValueError: boom-marker"), ("returns_none", "TypeError")])
def test_comparator_failing_later_aborts_and_says_why(tmp_path, failure, shown):
    result = run_python(LATER_SCRIPT, str(tmp_path / "db"), failure, timeout=60)
    assert result.returncode == -signal.SIGABRT, how_it_ended(result)
    assert "before the bad key" in result.stdout and "after the bad key" not in result.stdout
    assert shown in result.stderr, result.stderr
    assert "marker-cmp" in result.stderr and "marker_compare" in result.stderr, result.stderr


@pytest.mark.parametrize("body", [
    # made for decimal keys: raises ValueError on most sample keys, answers on the digits
    "lambda a, b: int(a) - int(b)",
    # an int-like result (as numpy's ints are): its __index__ is used
    "lambda a, b: type('Order', (), {'__index__': lambda self: (a > b) - (a < b)})()",
])
def test_comparator_that_answers_some_samples_with_ints_opens(tmp_path, body):
    script = OPEN_SCRIPT.replace('(b"a", b"b", b"c", b"ab")', '(b"10", b"9", b"100", b"0")')
    result = run_python(script, str(tmp_path / "db"), body, timeout=60)
    assert_clean_exit(result)
    assert "opened" in result.stdout and "written" in result.stdout, result.stdout


def test_keys_in_the_comparators_order(tmp_path):
    """The comparator really decides the order (here: numeric, for decimal keys)."""
    import levels3

    with levels3.DB(str(tmp_path / "db"), create_if_missing=True, comparator=lambda a, b: int(a) - int(b),
                    comparator_name=b"numeric") as db:
        for key in (b"10", b"9", b"100", b"0"):
            db.put(key, b"v")
        assert [k for k, _ in db] == [b"0", b"9", b"10", b"100"]
