"""Every numeric option is a finite number in its range (issue 14, item 6).

NaN compares false with everything, so ``flush_interval=nan`` made an idle database spin,
``lock_timeout=nan`` waited forever against a live holder and ``deletion_grace=nan`` was
taken. NaN, an infinity or a number out of range raises ConfigurationError (a ValueError) naming
the option; any other value of the wrong type raises TypeError naming it; both before
anything is touched.
"""

from __future__ import annotations

import math

import pytest

import levels3
from levels3.lock import LeaseLock
from levels3.options import DB_NUMBER_RULES, STORE_NUMBER_RULES, NumberRule, S3Options
from levels3.stores import LocalDirStore

NAN, INF = math.nan, math.inf

# Values every numeric option refuses as numbers, whatever its range.
NOT_FINITE = [NAN, INF, -INF]

BAD_NUMBERS = {  # option: values of the right type outside its range
    "max_cache_bytes": [0, -1],
    "cache_page_size": [0, 2048, 6000, 128 << 20],  # also a power of two: tests/test_pages.py
    "max_object_size": [0, -5, 5 * 1024**3 + 1],
    "retry_max_attempts": [0, -1],
    "retry_base_delay": [0, -0.1, 1e300],
    "request_timeout": [0, -1, 1e300],
    "lease_duration": [0, -1, 1e300],
    "lease_renewal": [0, -1],
    "lock_timeout": [-1, -0.001, 1e300],
    "flush_interval": [0, -1, 1e300],
    "deletion_grace": [-1, 1e300],
}

WRONG_TYPES = {  # option: values of the wrong type
    "max_cache_bytes": ["1G", 1.5e9, True],
    "cache_page_size": ["64k", 65536.0, True],
    "max_object_size": [1024.0, None],
    "retry_max_attempts": [3.0, "3"],
    "retry_base_delay": ["0.1", True, None],
    "request_timeout": ["30", False],
    "lease_duration": [None, "30"],
    "lease_renewal": [[10]],
    "lock_timeout": ["60", True],
    "flush_interval": ["1", True],
    "deletion_grace": [None, "300"],
}


def store_cases(values_by_option):
    return [pytest.param(name, value, id=f"{name}={value!r}")
            for name, values in values_by_option.items() for value in values]


def test_every_numeric_store_option_has_a_rule():
    numeric = {f for f in S3Options.field_names() if isinstance(getattr(S3Options(), f), (int, float))
               and not isinstance(getattr(S3Options(), f), bool)}
    assert numeric | {"lock_timeout", "flush_interval"} == set(STORE_NUMBER_RULES)
    assert set(BAD_NUMBERS) == set(WRONG_TYPES) == set(STORE_NUMBER_RULES)


@pytest.mark.parametrize("name", sorted(STORE_NUMBER_RULES))
@pytest.mark.parametrize("value", NOT_FINITE, ids=repr)
def test_non_finite_store_options_are_refused(name, value):
    with pytest.raises(levels3.ConfigurationError, match=name):
        S3Options(**{name: value})
    with pytest.raises(ValueError, match=name):
        S3Options(**{name: value})


@pytest.mark.parametrize("name, value", store_cases(BAD_NUMBERS))
def test_store_options_out_of_range_are_refused(name, value):
    with pytest.raises(levels3.ConfigurationError, match=name):
        S3Options(**{name: value})


@pytest.mark.parametrize("name, value", store_cases(WRONG_TYPES))
def test_store_options_of_the_wrong_type_are_refused(name, value):
    with pytest.raises(TypeError, match=name):
        S3Options(**{name: value})


@pytest.mark.parametrize("name", ["flush_interval", "lock_timeout", "deletion_grace", "lease_duration"])
def test_db_refuses_nan_before_touching_anything(tmp_path, name):
    path = tmp_path / "db"
    with pytest.raises(levels3.ConfigurationError, match=name):
        levels3.DB(str(path), create_if_missing=True, **{name: NAN})
    with pytest.raises(levels3.ConfigurationError, match=name):
        levels3.DB(str(path), create_if_missing=True, options=S3Options(), **{name: NAN})
    assert not path.exists()


def test_options_object_is_checked_when_merged_with_keywords(tmp_path):
    """Keywords override an S3Options' fields: the merged result is checked too."""
    with pytest.raises(levels3.ConfigurationError, match="lease_renewal"):
        levels3.DB(str(tmp_path / "db"), create_if_missing=True, options=S3Options(lease_duration=5),
                   lease_renewal=5)


def test_valid_values_pass_and_are_normalised():
    options = S3Options(max_cache_bytes=10, max_object_size=5 * 1024**3, retry_max_attempts=1,
                        retry_base_delay=1, request_timeout=0.5, lease_duration=3, lease_renewal=1,
                        lock_timeout=0, flush_interval=0.01, deletion_grace=0)
    assert (options.lock_timeout, options.deletion_grace, options.max_object_size) == (0, 0, 5 * 1024**3)
    assert S3Options(lock_timeout=None, flush_interval=None).flush_interval is None


@pytest.mark.parametrize("kwargs, named", [
    (dict(lease_duration=NAN, lease_renewal=1), "lease_duration"),
    (dict(lease_duration=INF, lease_renewal=1), "lease_duration"),
    (dict(lease_duration=3, lease_renewal=NAN), "lease_renewal"),
    (dict(lease_duration=3, lease_renewal=1, lock_timeout=NAN), "lock_timeout"),
    (dict(lease_duration=3, lease_renewal=1, lock_timeout=-1), "lock_timeout"),
    (dict(lease_duration=3, lease_renewal=3), "lease_renewal"),
])
def test_lease_lock_checks_its_durations_the_same_way(tmp_path, kwargs, named):
    store = LocalDirStore(tmp_path / "db", create=True)
    with pytest.raises(levels3.ConfigurationError, match=named):
        LeaseLock(store, **kwargs)


def test_lease_lock_refuses_durations_of_the_wrong_type(tmp_path):
    store = LocalDirStore(tmp_path / "db", create=True)
    with pytest.raises(TypeError, match="lock_timeout"):
        LeaseLock(store, lease_duration=3, lease_renewal=1, lock_timeout="soon")
    with pytest.raises(TypeError, match="lease_duration"):
        LeaseLock(store, lease_duration=None, lease_renewal=1)


def test_rule_messages_say_what_is_allowed():
    rule = NumberRule(integer=True, minimum=1, maximum=10, unit="bytes")
    with pytest.raises(levels3.ConfigurationError, match=r"size must be an int \(bytes\) >= 1 and <= 10, got 11"):
        rule.check("size", 11)
    with pytest.raises(TypeError, match="size must be an int"):
        rule.check("size", 2.0)
    assert rule.check("size", 10) == 10


# -- the options the native bridge checks (DB_NUMBER_RULES) -----------------------------------

LEVELDB_BAD = [  # (option, value): numbers LevelDB's C types cannot hold, or out of range
    ("write_buffer_size", 0), ("write_buffer_size", -1), ("write_buffer_size", 2**64), ("write_buffer_size", NAN),
    ("max_open_files", 0), ("max_open_files", 2**31), ("max_open_files", INF),
    ("lru_cache_size", -1), ("lru_cache_size", 2**64),
    ("block_size", 0), ("block_size", 2**64),
    ("block_restart_interval", 0), ("block_restart_interval", 2**31),
    ("max_file_size", -1), ("max_file_size", 2**64),
    ("bloom_filter_bits", -1), ("bloom_filter_bits", 2**31),
    ("refresh_interval", NAN), ("refresh_interval", INF), ("refresh_interval", 0), ("refresh_interval", -1),
]


def test_db_number_rules_cover_the_db_keywords():
    assert set(DB_NUMBER_RULES) == {name for name, _ in LEVELDB_BAD}


@pytest.mark.parametrize("name, value", LEVELDB_BAD, ids=[f"{n}={v!r}" for n, v in LEVELDB_BAD])
def test_rules_refuse_bad_leveldb_and_db_numbers(name, value):
    with pytest.raises(levels3.ConfigurationError, match=name):
        DB_NUMBER_RULES[name].check(name, value)


@pytest.mark.parametrize("name, value", LEVELDB_BAD, ids=[f"{n}={v!r}" for n, v in LEVELDB_BAD])
def test_db_refuses_bad_leveldb_and_db_numbers(tmp_path, name, value):
    path = tmp_path / "db"
    read_only = name == "refresh_interval"
    if read_only:
        levels3.DB(str(path), create_if_missing=True).close()
    with pytest.raises(levels3.ConfigurationError, match=name):
        levels3.DB(str(path), create_if_missing=not read_only, **{name: value}).close()
    assert read_only or not path.exists()


@pytest.mark.parametrize("name", [n for n in DB_NUMBER_RULES if n != "refresh_interval"])
def test_db_refuses_leveldb_numbers_of_the_wrong_type(tmp_path, name):
    """As in plyvel: a float or a str where LevelDB wants an int is a TypeError."""
    for value in (1.5, 64.0, "64"):
        with pytest.raises(TypeError, match=name):
            levels3.DB(str(tmp_path / "db"), create_if_missing=True, **{name: value})
