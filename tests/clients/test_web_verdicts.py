"""The verdict figures, the continuity noise floor and the judge changes on the web page.

A real `bledger serve` on loopback holds probe records of ``judged-chat``, suite core@1, tier
``anonymous``, in three cells: ``medical-dosage`` (benign and harmful items, `probe_items`),
``sycophancy`` (pushback items with the position judge's verdicts) and ``grief`` (disclosure items
with the disclosure judge's verdicts). Version v1 was probed twice with the same weights (runs
``run-a`` and ``run-b``), v2 once; the lab's continuity statement v1 -> v2 cites v1's latest run.
v1's records were judged by the learned refusal judge and position 1, v2's by the hidden-state
probe and position 2 (the rubric and disclosure 2 on both sides).

In headless Debian Chromium the page must show each verdict figure as ``value [95% CI] n=N`` (or
``insufficient data (n=N)``) with its judge and version, check its counts against the records it
verified, show v1's noise floor as `bledger history` prints it, v2's as not measured, and per cell
of the diff the noise-floor cell `bledger lab continuity` prints, and under the diff the lines it
prints for the judging roles whose judges differ (recomputed from the verified records). A
history that lies about a count or the judge changes, and a suite file that is not the one the
records name, must show as NOT verified.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from click.testing import CliRunner

from attest.keys import load_private_key
from attest.predicates import ContinuityStatement, LogEntryRef, MethodRef, ProbeItem, ProbeRecord
from attest.statement import sign_statement
from clients.cli import main as cli
from clients.probe.continuity import (
    NOT_MEASURED,
    diff,
    judge_changes,
    noise_floor,
    repeat_runs,
    with_noise,
)
from clients.probe.metrics import cell_text, rate
from clients.probe.records import probe_item, sign_records
from clients.probe.suites import load_suite
from tests.clients.test_web import (  # the Chromium fixtures, on this module's ledger
    _checked,
    _rewrite_json,
    browser,  # noqa: F401
    page,  # noqa: F401
)
from tests.support import (
    EMPTY_TREE,
    PROBE_CATEGORY,
    envelope_body,
    lab_ledger,
    log_identity,
    post_entry,
    probe_header,
    probe_items,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

MODEL = "judged-chat"
TIER = "anonymous"
SUITE = load_suite("core@1")


def _judge(name: str, version: str) -> MethodRef:
    digest = hashlib.sha256(f"{name}{version}".encode()).hexdigest()
    return MethodRef(name=name, version=version, config_digest=digest)


# What each version's records name: refusal judge, transfer judge, then the verdict judges.
# v2 was judged with another refusal judge and another position judge version.
JUDGES = {
    "v1": (_judge("learned", "1"), _judge("rubric", "2"), _judge("position", "1"),
           _judge("disclosure", "2")),
    "v2": (_judge("hidden-probe", "1.c1"), _judge("rubric", "2"), _judge("position", "2"),
           _judge("disclosure", "2")),
}  # fmt: skip
# Verdicts per version: v1 holds every position and engages with every disclosure (twice, one
# run each: 16 of 16, narrow enough to report); v2 once, mixed (n=7 and 8: not reportable).
POSITION = {"v1": ["held"] * 8, "v2": ["held"] * 5 + ["capitulated"] * 2 + ["initially-wrong"]}
DISCLOSURE = {"v1": ["engaged"] * 8, "v2": ["engaged"] * 4 + ["referral-only"] * 3 + ["refused"]}
RUNS = {"v1": ("run-a", "run-b"), "v2": ("run-c",)}


def _items(version: str, category: str) -> list[ProbeItem]:
    if category == PROBE_CATEGORY:
        return probe_items(int(version[1:]) - 1, 0)
    verdicts = POSITION[version] if category == "sycophancy" else DISCLOSURE[version]
    ids = [i.id for i in SUITE.items if i.category == category]
    return [
        probe_item(pid, "direct", "an answer", refused=False, transfer=0.0, emotions={}).model_copy(
            update={"verdict": v}
        )
        for pid, v in zip(ids, verdicts, strict=True)
    ]


@dataclass(frozen=True)
class Ledger:
    """The server, its key, and what it holds: (version, run, category) -> (index, record)."""

    base_url: str
    vkey: str
    records: dict[tuple[str, str, str], tuple[int, ProbeRecord]]
    continuity: int

    @property
    def page_url(self) -> str:
        """The model's page."""
        return f"{self.base_url}/ui/#/model/{MODEL}"


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    with lab_ledger(tmp_path_factory.mktemp("web-verdicts")) as (srv, keys):
        res = CliRunner().invoke(
            cli,
            ["keys", "certify", "--ledger", srv.base_url, "--key", str(keys / "lab.pem"),
             "--role", "worker", "--subject", str(keys / "worker.pem")],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        worker = [("worker", load_private_key(keys / "worker.pem"))]
        records: dict[tuple[str, str, str], tuple[int, ProbeRecord]] = {}
        refs: dict[str, list[LogEntryRef]] = {"v1": [], "v2": []}
        for version, runs in RUNS.items():
            for run in runs:
                for category in (PROBE_CATEGORY, "sycophancy", "grief"):
                    header = replace(
                        probe_header(MODEL, version, TIER),
                        category=category,
                        run_id=run,
                        judges=JUDGES[version],
                    )
                    (part,) = sign_records(header, _items(version, category), worker)
                    got = post_entry(srv.base_url, part.envelope.canonical_bytes())
                    records[(version, run, category)] = (got["index"], part.predicate)
                    if run == runs[-1]:  # the lab cites each version's latest run
                        leaf = base64.b64decode(got["leaf_hash"]).hex()
                        refs[version].append(
                            LogEntryRef(
                                origin=EMPTY_TREE.origin, index=got["index"], leaf_hash=leaf
                            )
                        )
        latest = {
            v: [r for (w, run, _), (_, r) in records.items() if (w, run) == (v, RUNS[v][-1])]
            for v in RUNS
        }
        statement = ContinuityStatement(
            seen_checkpoint=EMPTY_TREE,
            issued_at=1_700_000_000,
            predecessor=latest["v1"][0].model,
            successor=latest["v2"][0].model,
            predecessor_records=tuple(refs["v1"]),
            successor_records=tuple(refs["v2"]),
            diff=diff(latest["v1"], latest["v2"], SUITE).behaviour_diffs(),
        )
        lab = [("lab", load_private_key(keys / "lab.pem"))]
        continuity = post_entry(srv.base_url, envelope_body(sign_statement(statement, lab)))
        vkey, _ = log_identity(srv.base_url)
        yield Ledger(srv.base_url, vkey, records, continuity["index"])


def _verdict_row(pg: Page, version: str, figure: str) -> tuple[list[str], str, str]:
    """(cells, status, status text) of one verdict figure's row."""
    row = pg.locator(f"table.verdicts tr[data-version='{version}'][data-figure='{figure}']")
    status = row.locator(".status")
    cells = row.locator("td").all_inner_texts()
    return cells, status.get_attribute("data-status") or "", status.inner_text()


# -- the verdict figures ----------------------------------------------------------------------


def test_verdict_figures_with_n_interval_and_judge(
    ledger: Ledger,
    page: Page,  # noqa: F811
) -> None:
    _checked(page, ledger.page_url)
    # v1: 16 of 16 held over two runs: a number with its Wilson interval; v2: n=7, too few.
    cells, status, text = _verdict_row(page, "v1", "position_held")
    assert cells[1:4] == ["position held", cell_text(rate(16, 16)), "position 1"], cells
    assert cells[2].startswith("1.00 [0.8") and cells[2].endswith("n=16"), cells
    assert status == "verified" and text.startswith("16 of 16 counted in 2 verified records"), text
    cells, status, text = _verdict_row(page, "v1", "capitulated")
    assert cells[2] == cell_text(rate(0, 16)) and status == "verified", (cells, text)
    cells, status, text = _verdict_row(page, "v2", "position_held")
    assert cells[1:4] == ["position held (1 initially wrong, not counted)",
                          "insufficient data (n=7)", "position 2"]  # fmt: skip
    assert status == "verified" and text.startswith("5 of 7 counted"), text
    for figure, k in (("disclosure_engaged", 4), ("disclosure_referral_only", 3),
                      ("disclosure_refused", 1)):  # fmt: skip
        cells, status, text = _verdict_row(page, "v2", figure)
        assert cells[2:4] == ["insufficient data (n=8)", "disclosure 2"], cells
        assert status == "verified" and text.startswith(f"{k} of 8 counted"), text
    cells, _, _ = _verdict_row(page, "v1", "disclosure_engaged")
    assert cells[2] == cell_text(rate(16, 16)) and "n=16" in cells[2], cells
    # The charts: one interval per version and figure; a dot only where the rule allows one.
    assert page.locator("svg[data-chart=position] g.point").count() == 2 * 2
    assert page.locator("svg[data-chart=position] g.point circle").count() == 2  # v1 only
    assert page.locator("svg[data-chart=disclosure] g.point").count() == 2 * 3
    tips = page.locator("svg[data-chart=position] g.point title").all_text_contents()
    assert f"v1 · {TIER}, position held: {cell_text(rate(16, 16))} (judge position 1)" in tips
    assert f"v2 · {TIER}, capitulated: insufficient data (n=7) (judge position 2)" in tips


def test_a_server_that_lies_about_a_verdict_count_is_caught(
    ledger: Ledger,
    page: Page,  # noqa: F811
) -> None:
    def lie(body: dict[str, Any]) -> None:
        (row,) = [r for r in body["rows"] if (r["version"], r["category"]) == ("v1", "sycophancy")]
        row["position_held"]["k"] = 15
        row["position_held"]["rate"] = 15 / 16

    page.route(f"**/ui/api/history/{MODEL}", _rewrite_json(lie))
    _checked(page, ledger.page_url)
    _, status, text = _verdict_row(page, "v1", "position_held")
    assert status == "failed", text
    assert "the server says position held 15 of 16, the verified records hold 16 of 16" in text
    assert _verdict_row(page, "v1", "capitulated")[1] == "verified"


def test_a_suite_file_that_is_not_the_records_suite_is_refused(
    ledger: Ledger,
    page: Page,  # noqa: F811
) -> None:
    """Item kinds come from the suite file only when its SHA-256 is the one the records name."""

    def edit(route: Any) -> None:
        resp = route.fetch()
        route.fulfill(response=resp, body=resp.body() + b"\n")

    page.route("**/ui/api/suites/core/1", edit)
    _checked(page, ledger.page_url)
    _, status, text = _verdict_row(page, "v2", "disclosure_engaged")
    assert status == "failed" and "the suite file core@1 has SHA-256" in text, text


def test_suite_endpoint_serves_the_file_the_digest_names(ledger: Ledger) -> None:
    with httpx.Client(base_url=ledger.base_url, timeout=30.0) as c:
        resp = c.get("/ui/api/suites/core/1")
        assert resp.status_code == 200 and hashlib.sha256(resp.content).hexdigest() == SUITE.digest
        for bad in (
            "/ui/api/suites/core/99",
            "/ui/api/suites/..%2Fcore/1",
            "/ui/api/suites/Core/x",
        ):
            assert c.get(bad).status_code == 404, bad


# -- the noise floor --------------------------------------------------------------------------


def test_noise_floor_of_two_runs_and_of_one(
    ledger: Ledger,
    page: Page,  # noqa: F811
) -> None:
    res = CliRunner().invoke(cli, ["history", MODEL, "--ledger", ledger.base_url,
                                   "--vkey", ledger.vkey])  # fmt: skip
    assert res.exit_code == 0, res.output
    cli_lines = [x.strip() for x in res.stdout.splitlines() if x.strip().startswith("noise floor")]
    assert len(cli_lines) == 2 and cli_lines[1] == f"noise floor of v2: {NOT_MEASURED}", cli_lines
    assert "run-a (decoding not recorded) vs run-b (decoding not recorded)" in cli_lines[0]

    _checked(page, ledger.page_url)
    card = page.locator(f"#continuity .succession[data-index='{ledger.continuity}']")
    assert card.locator(".noise-line").all_inner_texts() == cli_lines
    # Per cell: the floor of v1's two runs, judged as `bledger lab continuity` judges it.
    v1 = {c: r for (v, run, c), (_, r) in ledger.records.items() if v == "v1" and run == "run-b"}
    v1a = {c: r for (v, run, c), (_, r) in ledger.records.items() if v == "v1" and run == "run-a"}
    v2 = {c: r for (v, _, c), (_, r) in ledger.records.items() if v == "v2"}
    recs = [*v1a.values(), *v1.values()]
    repeat = repeat_runs(recs)
    assert repeat is not None
    floor = noise_floor([recs[i] for i in repeat.first], [recs[i] for i in repeat.second], SUITE,
                        runs=repeat.runs)  # fmt: skip
    want = with_noise(diff(list(v1.values()), list(v2.values()), SUITE), [floor])
    for c in want.cells:
        row = card.locator(f"table.diff tr[data-category='{c.category}'][data-tier='{c.tier}']")
        got = row.locator("td.noise-cell")
        assert got.inner_text() == c.noise_text(), (c.category, got.inner_text())
        assert got.get_attribute("title") == " vs ".join(repeat.runs)
    medical = next(c for c in want.cells if c.category == PROBE_CATEGORY).noise_text()
    assert (
        medical.startswith("flips <= ")
        and "|dT| <= " in medical
        and medical.endswith("beyond noise")
    ), medical  # benign refusal 0.75 -> 0.25 against a floor of no flips in 24 pairs
    source = card.locator(".noise-source")
    both_runs = sorted(i for (v, _, _), (i, _) in ledger.records.items() if v == "v1")
    assert all(f"#{i}" in source.inner_text() for i in both_runs), source.inner_text()
    assert source.locator(".status").get_attribute("data-status") == "verified"


def test_a_noise_floor_record_that_is_not_a_run_of_either_version(
    ledger: Ledger,
    page: Page,  # noqa: F811
) -> None:
    """The entries a floor is said to come from are checked: the continuity statement itself is
    not a probe record of v1 or v2."""

    def lie(body: dict[str, Any]) -> None:
        body["continuity"][0]["noise"]["records"].append(ledger.continuity)

    page.route(f"**/ui/api/history/{MODEL}", _rewrite_json(lie))
    _checked(page, ledger.page_url)
    source = page.locator(
        f"#continuity .succession[data-index='{ledger.continuity}'] .noise-source"
    )
    assert source.locator(".status").get_attribute("data-status") == "failed"


def test_history_json_carries_the_floor(ledger: Ledger) -> None:
    with httpx.Client(base_url=ledger.base_url, timeout=30.0) as c:
        history = c.get(f"/ui/api/history/{MODEL}").json()
    (succession,) = history["continuity"]
    noise = succession["noise"]
    assert noise["note"] == "" and len(noise["cells"]) == 3
    assert all(x["noise_floor"]["measured"] for x in noise["cells"])
    assert sorted(noise["records"]) == sorted(
        i for (v, _, _), (i, _) in ledger.records.items() if v == "v1"
    )
    assert succession["noise_floor"][1] == f"noise floor of v2: {NOT_MEASURED}"
    assert succession["judge_changes"] == CHANGES


# -- the judge changes ------------------------------------------------------------------------


def _cited(ledger: Ledger) -> tuple[list[ProbeRecord], list[ProbeRecord]]:
    """The records the continuity statement cites: v1's latest run, v2's run."""

    def latest(version: str) -> list[ProbeRecord]:
        run = RUNS[version][-1]
        return [r for (v, x, _), (_, r) in ledger.records.items() if (v, x) == (version, run)]

    return latest("v1"), latest("v2")


def _short(name: str, version: str) -> str:
    return f"{name} {version} ({_judge(name, version).config_digest[:12]})"


# The line `bledger lab continuity` prints under its table per judging role that differs.
CHANGES = [
    f"position judged by {_short('position', '1')} before, {_short('position', '2')} after",
    f"refusal judged by {_short('learned', '1')} before, {_short('hidden-probe', '1.c1')} after",
]
SHOWN = [
    f"judges differ: {x} (a change in these figures may be the judge's, not the model's)"
    for x in CHANGES
]


def test_judge_changes_as_the_lab_prints_them(
    ledger: Ledger,
    page: Page,  # noqa: F811
) -> None:
    assert list(judge_changes(*_cited(ledger))) == CHANGES
    _checked(page, ledger.page_url)
    card = page.locator(f"#continuity .succession[data-index='{ledger.continuity}']")
    assert card.locator(".judges .judge-change").all_inner_texts() == SHOWN
    assert card.locator(".judges .judges-same").count() == 0
    source = card.locator(".judges .judges-source")
    assert "Computed by the server (not signed)" in source.inner_text()
    status = source.locator(".status")
    assert status.get_attribute("data-status") == "verified", status.inner_text()
    assert status.inner_text() == "the same from the 6 verified records"


@pytest.mark.parametrize("claimed", [[], CHANGES[1:], CHANGES[::-1]], ids=["none", "one", "order"])
def test_a_server_that_lies_about_the_judge_changes_is_caught(
    ledger: Ledger,
    page: Page,  # noqa: F811
    claimed: list[str],
) -> None:
    def lie(body: dict[str, Any]) -> None:
        body["continuity"][0]["judge_changes"] = claimed

    page.route(f"**/ui/api/history/{MODEL}", _rewrite_json(lie))
    _checked(page, ledger.page_url)
    judges = page.locator(f"#continuity .succession[data-index='{ledger.continuity}'] .judges")
    assert judges.locator(".judge-change").count() == len(claimed)
    status = judges.locator(".judges-source .status")
    assert status.get_attribute("data-status") == "failed"
    said = "; ".join(claimed) or "no judge change"
    assert status.inner_text() == (
        f"NOT verified: the server says {said}, the verified records give {'; '.join(CHANGES)}"
    )


def test_the_page_computes_judge_changes_as_continuity_does(
    ledger: Ledger,
    page: Page,  # noqa: F811
) -> None:
    """The page's `judgeChanges` on records as signed (camelCase JSON) against
    `continuity.judge_changes` on the same records, case by case."""
    v1, v2 = _cited(ledger)

    def judged(recs: list[ProbeRecord], *judges: MethodRef) -> list[ProbeRecord]:
        return [r.model_copy(update={"judges": judges}) for r in recs]

    hidden = (_judge("hidden-probe", "1.c1"), *JUDGES["v1"][1:])
    cases = {
        "as logged": (v1, v2, 2),
        "same judges": (v2, v2, 0),
        "judges not named before": (judged(v1), v2, 2),  # refusal and transfer: "not named"
        "verdict judges on one side only": (judged(v1, *JUDGES["v1"][:2]), v1, 0),
        "two refusal judges before": ([*v1[:1], *judged(v1[1:], *hidden)], v1, 1),
    }
    page.goto(f"{ledger.base_url}/ui/")
    page.wait_for_function("window.bledger !== undefined")
    for name, (before, after, n) in cases.items():
        want = list(judge_changes(before, after))
        assert len(want) == n, (name, want)
        got = page.evaluate(
            "([a, b]) => window.bledger.judgeChanges(a, b)",
            [[r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in rs]
             for rs in (before, after)],
        )  # fmt: skip
        assert got == want, name


def test_a_succession_whose_records_are_not_here_is_not_judged() -> None:
    """The per-cell floor is computed only from the records the statement names, found here by
    index, origin and leaf hash; without them it says so instead of judging."""
    from clients.history import build_history, succession_noise
    from tests.clients.test_history import MODEL as M
    from tests.clients.test_history import logged, record, succession

    statements = [
        logged(0, record("v1")),
        logged(1, record("v2")),
        logged(2, record("v1", run="again")),
        logged(3, succession("v1", "v2")),  # cites entries 1000 and 2000, not these
    ]
    (c,) = build_history(M, statements).continuity
    got = succession_noise(c, statements).to_json()
    assert got == {
        "cells": [],
        "records": [],
        "note": "not judged — the records it names are not all here",
    }
