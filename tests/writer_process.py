"""A writer run as a real process by the fencing and crash tests.

    python -m tests.writer_process URL LEASE_DURATION LEASE_RENEWAL SEED [STORE_OPTIONS_JSON]

Opens URL for writing (taking over a dead writer's lease), then writes forever:
every write is a put of ``k<seed>-<n>``, every third one synced. After each
write returns it prints ``ack <key> <synced 0/1>``; on LeaseLostError it prints
``lost <error>`` and exits 3. The parent kills, stops or resumes it.
"""

from __future__ import annotations

import json
import sys

import levels3


def main() -> int:
    url, lease_duration, lease_renewal, seed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    options = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    db = levels3.DB(url, create_if_missing=True, lease_duration=lease_duration, lease_renewal=lease_renewal,
                    lock_timeout=60, write_buffer_size=64 * 1024, **options)
    print("open", flush=True)
    n = 0
    while True:
        key = f"k{seed}-{n:06d}".encode()
        synced = n % 3 == 0
        try:
            db.put(key, key[::-1] * 4, sync=synced)
        except levels3.LeaseLostError as exc:
            print(f"lost {exc}", flush=True)
            return 3
        print(f"ack {key.decode()} {int(synced)}", flush=True)
        n += 1


if __name__ == "__main__":
    sys.exit(main())
