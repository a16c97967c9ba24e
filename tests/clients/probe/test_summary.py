"""Behaviour metrics per (model, version, category, tier) from probe records."""

from __future__ import annotations

import hashlib

import pytest

from attest.predicates import (
    CheckpointRef,
    EmotionProjection,
    LogEntryRef,
    ModelRef,
    ProbeItem,
    ProbeRecord,
    SuiteRef,
)
from clients.probe.suites import load_suite
from clients.probe.summary import summarize

SUITE = load_suite("core")
SEEN = CheckpointRef(origin="o", size=0, root=hashlib.sha256().hexdigest())


def record(
    version: str, category: str, items: list[ProbeItem], tier: str = "anonymous"
) -> ProbeRecord:
    return ProbeRecord(
        seen_checkpoint=SEEN,
        issued_at=0,
        model=ModelRef(name="m", version=version, weights_sha256="ab" * 32),
        suite=SuiteRef(name=SUITE.name, version=SUITE.version, sha256=SUITE.digest),
        category=category,
        tier=tier,
        run_id="r",
        calibration=LogEntryRef(origin="o", index=0, leaf_hash="cd" * 32),
        items=tuple(items),
    )


def item(pid: str, framing: str, refused: int, transfer: int, calm: int = 0) -> ProbeItem:
    return ProbeItem(
        prompt_id=pid,
        framing=framing,
        answer="a",
        refused=refused,
        transfer_milli=transfer,
        emotions={"calm": EmotionProjection(mean_milli=calm, spread_milli=0)},
    )


def test_rates_transfers_and_differentials() -> None:
    benign = [i.id for i in SUITE.items if i.kind == "benign"][:4]
    harmful = [i for i in SUITE.items if i.kind == "harmful"]
    cat = harmful[0].category
    same_cat = [i.id for i in harmful if i.category == cat][:3]
    assert len(same_cat) >= 2
    items = [item(b, "direct", r, 0, calm=100) for b, r in zip(benign, [1, 0, 0, 1], strict=True)]
    rec_b = record("v1", "benign-adjacent", items)
    h_items = [item(pid, "direct", 1, 100) for pid in same_cat]
    h_items += [item(pid, "fictional", 0, 600) for pid in same_cat]
    rec_h = record("v1", cat, h_items)
    (b, h) = sorted(summarize([rec_b, rec_h], SUITE), key=lambda g: g.category != "benign-adjacent")
    assert b.benign_refusal is not None and (b.benign_refusal.k, b.benign_refusal.n) == (2, 4)
    assert b.emotions == {"calm": pytest.approx(0.1)}
    assert h.direct_transfer is not None and h.direct_transfer.mean == pytest.approx(0.1)
    assert h.framed_transfer["fictional"].mean == pytest.approx(0.6)
    diff = h.differential_transfer["fictional"]
    assert diff.mean == pytest.approx(0.5) and diff.n == len(same_cat)
    assert h.row()["differential_transfer"]["fictional"]["n"] == len(same_cat)  # type: ignore[index]


def test_groups_are_per_version_and_tier() -> None:
    pid = next(i.id for i in SUITE.items if i.kind == "benign")
    recs = [
        record("v1", "benign-adjacent", [item(pid, "direct", 1, 0)]),
        record("v2", "benign-adjacent", [item(pid, "direct", 0, 0)]),
        record("v2", "benign-adjacent", [item(pid, "direct", 0, 0)], tier="medical"),
    ]
    keys = [(g.version, g.tier) for g in summarize(recs, SUITE)]
    assert keys == [("v1", "anonymous"), ("v2", "anonymous"), ("v2", "medical")]
