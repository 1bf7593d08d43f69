"""A follower run as a real process by tests/test_followers.py.

    python -m tests.follower_process URL PUBLISHED_FILE ROUNDS [STORE_OPTIONS_JSON]

Each round: read the counter the writer says it has synced (PUBLISHED_FILE),
refresh(), then check that the view holds at least that counter and that the
counter and the sum written with it in one batch agree. Prints a JSON summary.
"""

from __future__ import annotations

import json
import sys

import levels3


def read_published(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def main() -> int:
    url, published, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    db = levels3.DB(url, read_only=True, **options)
    seen, inconsistent, late, previous = [], 0, 0, -1
    for _ in range(rounds):
        synced = read_published(published)
        db.refresh()
        with db.snapshot() as snap:
            counter = int(snap.get(b"counter", b"0"))
            total = int(snap.get(b"sum", b"0"))
        inconsistent += total != counter * (counter + 1) // 2
        late += counter < synced  # a synced write not visible after one refresh
        late += counter < previous  # going back in time
        previous = counter
        seen.append(counter)
    db.close()
    print(json.dumps({"rounds": rounds, "inconsistent": inconsistent, "late": late,
                      "first": seen[0], "last": seen[-1], "distinct": len(set(seen))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
