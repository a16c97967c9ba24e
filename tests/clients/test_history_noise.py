"""The noise floor beside each succession of a model's history: measured from a second complete
run of the same weights among a version's records, or said to be missing."""

from __future__ import annotations

import json

from clients.history import build_history
from clients.history_cmd import format_table
from tests.clients.test_history import MODEL, logged, record, succession


def test_a_rerun_of_a_version_is_its_noise_floor_and_one_run_is_said_to_be_none() -> None:
    statements = [
        logged(0, record("v1", "anonymous")),
        logged(1, record("v2", "anonymous")),
        logged(2, record("v1", "anonymous", run="again")),  # the same weights, run again
        logged(3, succession("v1", "v2")),
    ]
    (c,) = build_history(MODEL, statements).continuity
    first, second = c.noise
    # The same items answered the same way twice: no refusal flips, no transfer change.
    assert first.startswith("noise floor of v1 (core-1): run (decoding not recorded) vs again")
    assert "refusal flips 0 of " in first and "|transfer change| 0.000" in first
    assert second == "noise floor of v2: not measured — one run of these weights"
    out = build_history(MODEL, statements).to_json()["continuity"][0]
    assert out["noise_floor"] == [first, second]
    assert json.loads(json.dumps(out)) == out
    # The text view prints both lines under the succession.
    table = format_table(build_history(MODEL, statements)).splitlines()
    assert f"    {first}" in table and f"    {second}" in table


def test_a_version_without_records_here_has_no_floor() -> None:
    statements = [logged(0, record("v2", "anonymous")), logged(1, succession("v1", "v2"))]
    (c,) = build_history(MODEL, statements).continuity
    assert c.noise == (
        "noise floor of v1: not measured — no probe records of it here",
        "noise floor of v2: not measured — one run of these weights",
    )
