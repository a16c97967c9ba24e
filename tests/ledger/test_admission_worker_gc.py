"""The admission workers' collector: the startup heap frozen, collection still on."""

from __future__ import annotations

import gc
from pathlib import Path

from ledger.admitters import AdmissionPool, PoolOptions
from tests.ledger.no_rules import build_no_rules


def _collector() -> tuple[int, bool, int]:
    """In a worker: objects frozen, whether collection is on, and what it finds of a cycle
    made now (admission's garbage is still collected)."""

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    return gc.get_freeze_count(), gc.isenabled(), gc.collect()


def test_a_worker_freezes_its_startup_heap_and_still_collects(tmp_path: Path) -> None:
    pool = AdmissionPool(build_no_rules, PoolOptions(str(tmp_path)), 1)
    try:
        pool.warm()
        frozen, enabled, found = pool._pool.submit(_collector).result(timeout=60)
    finally:
        pool.close()
    # A fresh interpreter with the ledger imported holds tens of thousands of objects.
    assert frozen > 10_000
    assert enabled
    assert found > 0
