"""Databases over a faulty network: every fault mode of the HTTP proxy, between boto3 and the moto server.

These replace nothing of the in-process fault tests (tests/test_errors.py); they show what only
a real connection shows: botocore's own behaviour, responses lost after the request landed,
bodies cut in the middle, responses that come too late.
"""

from __future__ import annotations

import os
import random

import pytest

import levels3
from levels3.testing import FaultProxy, Rule

#: request_timeout of the clients below: a held response outlasts it.
TIMEOUT = 1.0


def every_fault(rate: float, *, hold: bool = True) -> list[Rule]:
    """Rules injecting each fault mode at about ``rate`` in all (a fifth each, or a quarter without holds)."""
    modes = ["drop", "reset", "error"] + (["hold"] if hold else [])
    share = rate / (len(modes) + 1)
    return [Rule(tuple(modes), rate=share * len(modes), status=503, seconds=TIMEOUT * 1.5),
            Rule("error", rate=share, status=500)]


def fault_workload(url: str, options: dict, seed: int = 5, rounds: int = 4, ops: int = 4000) -> dict[bytes, bytes]:
    """Puts, deletes (3% synced), a synced batch per round and a reopen after each: the final contents."""
    rng = random.Random(seed)
    options = dict(options, write_buffer_size=64 * 1024, max_file_size=64 * 1024)
    db = levels3.DB(url, create_if_missing=True, **options)
    try:
        for round_ in range(rounds):
            for _ in range(ops):
                key = b"%05d" % rng.randrange(10_000)
                if rng.random() < 0.1:
                    db.delete(key, sync=rng.random() < 0.03)
                else:
                    db.put(key, os.urandom(8) + key * 4, sync=rng.random() < 0.03)
            with db.write_batch(sync=True) as batch:
                for i in range(1_000):
                    batch.put(b"batch%d-%04d" % (round_, i), b"%d" % i)
            db.close()
            db = levels3.DB(url, **options)
        return {k: v[8:] for k, v in db}
    finally:
        db.close()


@pytest.mark.parametrize("server", ["moto_server", "seaweedfs"])
def test_workload_over_http_survives_five_percent_faults_of_every_mode(server, location_factory, tmp_path):
    """5% of requests fail in one of five ways (503, 500, response dropped after the request landed,
    body reset midway, response held past request_timeout): the database reads back exactly what a
    fault-free run does, and no call raises (retries suffice). On moto and on SeaweedFS (real
    signatures: the proxy forwards requests unchanged)."""
    clean = fault_workload(str(tmp_path / "clean"), {})
    location = location_factory(server)
    rules = every_fault(0.05)
    with FaultProxy(location.options["endpoint_url"], seed=5, rules=rules) as proxy:
        faulted = fault_workload(location.url, dict(location.options, endpoint_url=proxy.url,
                                 request_timeout=TIMEOUT, retry_max_attempts=8, retry_base_delay=0.01))
    assert faulted == clean
    outcomes = [action for a in proxy.arrivals for action in a.actions]
    assert all(outcomes.count(mode) > 0 for mode in ("drop", "reset", "error", "hold")), outcomes
    assert sum(rule.fired for rule in rules) > 20
    assert len(clean) > 5_000

