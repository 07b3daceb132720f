"""Which accounts this process runs (stub until the partitions work lands: `AllPartitions` only).

The contract (BRIEF, "Shared for issue 22"): `PARTITIONS` fixed partitions, `partition_of(account_id)`, and an
ownership object with `owns(account_id)`, `held` and a change callback; `AllPartitions` owns everything (`run`
mode and SQLite). The PostgreSQL leases replace this module at merge.
"""

from __future__ import annotations

PARTITIONS = 64


def partition_of(account_id: int) -> int:
    return account_id % PARTITIONS


class AllPartitions:
    """Owns every partition: one process runs every account."""

    held = frozenset(range(PARTITIONS))

    def owns(self, account_id: int) -> bool:
        return True
