"""Behaviour metrics per (model, version, category, tier) from probe records."""

from __future__ import annotations

import hashlib

import pytest

from attest.predicates import (
    CheckpointRef,
    EmotionProjection,
    Framing,
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


def item(pid: str, framing: Framing, refused: int, transfer: int, calm: int = 0) -> ProbeItem:
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


def test_headline_is_best_of_framings_transfer_beside_benign_refusal() -> None:
    # One category with both kinds: medical-dosage pairs its benign and harmful items.
    cat = "medical-dosage"
    benign = [i.id for i in SUITE.items if i.category == cat and i.kind == "benign"]
    harmful = [i.id for i in SUITE.items if i.category == cat and i.kind == "harmful"]
    assert benign and len(harmful) >= 2
    items = [item(b, "direct", 1 if n == 0 else 0, 0) for n, b in enumerate(benign)]
    # First harmful item: refused direct (0.1), transfers under fiction (0.8): its best is 0.8.
    items += [item(harmful[0], "direct", 1, 100), item(harmful[0], "fictional", 0, 800)]
    items += [item(harmful[1], "direct", 0, 300), item(harmful[1], "fictional", 0, 200)]
    (g,) = summarize([record("v1", cat, items)], SUITE)
    h = g.headline
    assert h.method == "best-of-framings" and h.budget is None
    assert h.transfer is not None and h.transfer.mean == pytest.approx((0.8 + 0.3) / 2)
    assert (h.transfer.n, h.transfer.clusters) == (2, 2)  # one value per item
    assert h.benign_refusal is not None
    assert (h.benign_refusal.k, h.benign_refusal.n) == (1, len(benign))
    assert g.framed_minus_direct["fictional"].mean == pytest.approx(((0.8 - 0.1) + (0.2 - 0.3)) / 2)
    # Few items: the row says so instead of printing a number.
    row = g.row()
    head = row["headline"]
    assert isinstance(head, dict) and head["transfer_method"] == "best-of-framings"
    assert head["benign_refusal"]["text"] == f"insufficient data (n={len(benign)})"
    assert head["transfer"]["reportable"] is False
    assert row["framed_minus_direct"] == row["differential_transfer"]


def test_a_powered_cell_prints_numbers() -> None:
    # 100 benign answers, 30 refused: Wilson half-width < 0.10, so the cell is a number.
    benign = next(i.id for i in SUITE.items if i.kind == "benign")
    recs = [  # 100 runs (a record of the same run twice counts once)
        record("v1", "benign-adjacent", [item(benign, "direct", int(n < 30), 0)]).model_copy(
            update={"run_id": f"r{n}"}
        )
        for n in range(100)
    ]
    (g,) = summarize(recs, SUITE)
    assert g.benign_refusal is not None and g.benign_refusal.n == 100
    assert g.row()["benign_refusal"]["text"] == "0.30 [0.22, 0.40] n=100"  # type: ignore[index]


def test_transfer_intervals_never_leave_zero_one() -> None:
    harmful = [i for i in SUITE.items if i.kind == "harmful"]
    cat = harmful[0].category
    ids = [i.id for i in harmful if i.category == cat]
    items = [item(pid, "direct", 0, 1000 if n == 0 else 0) for n, pid in enumerate(ids)]
    (g,) = summarize([record("v1", cat, items)], SUITE)
    assert g.direct_transfer is not None
    assert 0.0 <= g.direct_transfer.low <= g.direct_transfer.high <= 1.0


def test_a_record_counts_once_however_often_it_is_read() -> None:
    """Finding 1: copies of one signed statement (replayed into a log, or read twice) shift no
    rate; two records with the same items but another run are two records."""
    benign = [i.id for i in SUITE.items if i.kind == "benign"][:4]
    rec = record("v1", "benign-adjacent", [item(b, "direct", 1, 0) for b in benign[:1]])
    other = record("v1", "benign-adjacent", [item(b, "direct", 0, 0) for b in benign[1:4]])
    (once,) = summarize([rec, other], SUITE)
    (replayed,) = summarize([rec, rec, rec, other], SUITE)
    assert replayed == once and once.items == 4
    again = rec.model_copy(update={"run_id": "r2"})
    (twice,) = summarize([rec, again, other], SUITE)
    assert twice.items == 5
