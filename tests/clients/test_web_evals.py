"""Imported eval samples on the web page, beside the probe records of the same model.

A real Inspect run (SmolLM2 through Inspect's ``hf`` provider, the fixture of
`test_inspect_import`) is imported with ``bledger import inspect`` twice into a real
`bledger serve` that also holds probe records of ``tiny-chat`` (`tests.support.populate_model`):
once named ``tiny-chat`` v1 (the samples sit beside that model's probe records) and once under
the log's own model name ``hf/local`` (a model with eval samples only). The JSON API the page
reads and the page itself, in headless Debian Chromium, must show per (task, scorer, config) the
n, the summary (three samples: "insufficient data (n=3)"), the config digest and each sample's
entry, and the browser must check every sample's entry against the checkpoint.

`summarise_scores` is also checked on its own, for the figures three samples cannot reach.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from click.testing import CliRunner

from clients.cli import main as cli
from clients.eval_summary import summarise_scores
from clients.inspect_import import read_inspect_log
from tests.clients.test_inspect_import import eval_log  # noqa: F401 (the real Inspect run)
from tests.clients.test_web import (  # the Chromium fixtures, on this module's ledger
    _checked,
    _rewrite_json,
    _status,
    browser,  # noqa: F401
    page,  # noqa: F401
)
from tests.support import lab_ledger, log_identity, populate_model

if TYPE_CHECKING:
    from playwright.sync_api import Page

MODEL = "tiny-chat"
ONLY_EVALS = "hf/local"


@dataclass(frozen=True)
class Ledger:
    """The server, its key, and the indices of the imported samples (sample id -> index)."""

    base_url: str
    vkey: str
    probe_records: dict[tuple[str, str], int]
    beside: dict[str, int]  # imported as tiny-chat v1
    alone: dict[str, int]  # imported under the log's model name

    def page_for(self, model: str) -> str:
        return f"{self.base_url}/ui/#/model/{model.replace('/', '%2F')}"


def _import(base_url: str, vkey: str, keys: Path, log: Path, data: Path, *extra: str) -> Any:
    args = ["import", "inspect", str(log), "--ledger", base_url, "--vkey", vkey]
    args += ["--key", str(keys / "worker.pem"), "--data-dir", str(data), *extra]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def ledger(
    tmp_path_factory: pytest.TempPathFactory,
    eval_log: Path,  # noqa: F811
) -> Iterator[Ledger]:
    base = tmp_path_factory.mktemp("web-evals")
    with lab_ledger(base) as (srv, keys):
        populated = populate_model(srv.base_url, keys, MODEL)  # certifies the worker key too
        vkey, _ = log_identity(srv.base_url)
        beside = _import(srv.base_url, vkey, keys, eval_log, base / "a", "--model", MODEL)
        alone = _import(srv.base_url, vkey, keys, eval_log, base / "b")
        yield Ledger(
            srv.base_url,
            vkey,
            populated.probe_records,
            {s["id"]: s["index"] for s in beside["samples"]},
            {s["id"]: s["index"] for s in alone["samples"]},
        )


def _expected(eval_log: Path) -> tuple[str, dict[str, str]]:  # noqa: F811
    """The config digest and each sample's ``includes`` value, from the log itself."""
    log = read_inspect_log(eval_log)
    config = json.dumps(
        log.eval.model_generate_config.model_dump(mode="json", exclude_none=True),
        sort_keys=True,
        separators=(",", ":"),
    )
    values = {str(s.id): json.dumps(s.scores["includes"].value) for s in log.samples}
    return hashlib.sha256(config.encode()).hexdigest(), values


# -- the JSON API the page reads ----------------------------------------------------------------


def test_the_api_lists_eval_models_and_summarises_each_scorer(
    ledger: Ledger,
    eval_log: Path,  # noqa: F811
) -> None:
    config, values = _expected(eval_log)
    with httpx.Client(base_url=ledger.base_url, timeout=30.0) as c:
        models = {m["model"]: m["versions"] for m in c.get("/ui/api/models").json()["models"]}
        assert models == {MODEL: ["v1", "v2"], ONLY_EVALS: ["v1"]}

        history = c.get(f"/ui/api/history/{MODEL}").json()
        assert len(history["rows"]) == 4, "the probe figures are still there"
        (group,) = history["evalGroups"]
        assert (group["task"], group["taskVersion"]) == ("capitals", "2")
        assert group["scorer"] == "includes"
        assert (group["model"], group["modelVersion"], group["n"]) == (MODEL, "v1", 3)
        assert group["configSha256"] == config
        assert json.loads(group["generateConfig"]) == {"max_tokens": 16, "seed": 0}
        assert group["records"] == sorted(ledger.beside.values())
        assert {x["sample"]: x["value"] for x in group["samples"]} == values
        assert {x["sample"]: x["index"] for x in group["samples"]} == ledger.beside
        s = group["summary"]
        k = sum(v == '"C"' for v in values.values())
        assert (s["kind"], s["n"], s["k"], s["method"]) == ("binary", 3, k, "wilson-score-95")
        assert 0.0 <= s["low"] <= s["rate"] <= s["high"] <= 1.0 and s["rate"] == k / 3
        assert s["reportable"] is False and s["display"] == "insufficient data (n=3)"
        # Every sample the group names is the entry the log holds at that index.
        for x in group["samples"]:
            entry = c.get(f"/logs/evidence/entries/{x['index']}").json()
            envelope = json.loads(base64.b64decode(entry["entry"]))
            payload = json.loads(base64.b64decode(envelope["payload"]))
            assert payload["predicate"]["sampleId"] == x["sample"]
            assert payload["predicate"]["configSha256"] == config

        only = c.get(f"/ui/api/history/{ONLY_EVALS}").json()
        assert only["versions"] == [] and only["rows"] == []
        (alone,) = only["evalGroups"]
        assert alone["records"] == sorted(ledger.alone.values()) and alone["model"] == ONLY_EVALS

        resp = c.get("/ui/api/history/no-such-model")
        assert resp.status_code == 404 and resp.json()["error"] == "unknown_model"


# -- in the browser -------------------------------------------------------------------------------


def test_the_page_shows_eval_samples_beside_the_probe_records(
    ledger: Ledger,
    page: Page,  # noqa: F811
    eval_log: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    config, _ = _expected(eval_log)
    _checked(page, ledger.page_for(MODEL))
    assert page.locator("#rows tr[data-version]").count() == 4
    row = page.locator("#evals tr[data-task='capitals'][data-scorer='includes']")
    cells = row.locator("td").all_inner_texts()
    assert cells[:5] == ["capitals@2", "v1", "includes", "3", "insufficient data (n=3)"], cells
    assert cells[5] == "binary, wilson-score-95" and cells[6] == config
    links = row.locator("td.links a")
    hrefs = links.evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert hrefs == [f"../logs/evidence/entries/{i}" for i in sorted(ledger.beside.values())]
    st = row.locator(".status")
    assert st.get_attribute("data-status") == "verified" and st.inner_text() == "3 samples verified"
    for sample, i in ledger.beside.items():
        assert _status(page, i) == ("verified", "verified"), i
        what = page.locator(f"#records tr[data-index='{i}'] td").nth(1).inner_text()
        assert what == f"eval capitals@2 · sample {sample} · epoch 1", what
    page.screenshot(path=str(tmp_path / "evals.png"), full_page=True)  # for a human to look at


def test_a_model_with_eval_samples_only_has_a_page(ledger: Ledger, page: Page) -> None:  # noqa: F811
    page.goto(f"{ledger.base_url}/ui/")
    link = page.locator(f"#models li[data-model='{ONLY_EVALS}'] a")
    link.click()
    page.wait_for_selector("body[data-checked=true]")
    assert page.locator("#model h2").inner_text() == ONLY_EVALS
    row = page.locator("#evals tr[data-task='capitals']")
    assert row.locator(".status").get_attribute("data-status") == "verified"
    assert all(_status(page, i)[0] == "verified" for i in ledger.alone.values())


def test_a_server_claiming_another_score_is_caught(ledger: Ledger, page: Page) -> None:  # noqa: F811
    """The server says one sample scored otherwise than its entry: that entry fails the check
    and the group is NOT verified, the other samples still verify."""
    target = ledger.beside["math"]

    def flip(body: dict[str, Any]) -> None:
        for x in body["evalGroups"][0]["samples"]:
            if x["index"] == target:
                x["value"] = '"I"' if x["value"] == '"C"' else '"C"'

    page.route(re.compile(rf".*/ui/api/history/{MODEL}$"), _rewrite_json(flip))
    _checked(page, ledger.page_for(MODEL))
    status, text = _status(page, target)
    assert status == "failed" and "includes score of" in text, text
    row = page.locator("#evals tr[data-task='capitals'] .status")
    assert row.get_attribute("data-status") == "failed"
    assert row.inner_text() == "NOT verified: 1 of 3 samples"
    assert all(_status(page, i)[0] == "verified" for i in ledger.beside.values() if i != target)


# -- the summary on its own -----------------------------------------------------------------------


def test_binary_scores_give_a_wilson_interval_and_a_number_once_narrow_enough() -> None:
    s = summarise_scores(["C"] * 70 + ["I"] * 30)
    assert s["kind"] == "binary" and (s["k"], s["n"]) == (70, 100)
    assert 0.0 <= s["low"] < 0.70 < s["high"] <= 1.0
    assert s["reportable"] is True and s["display"] == "0.70 [0.60, 0.78] n=100"
    small = summarise_scores([1] * 14 + [0] * 6)  # the same rate, ±0.19: no number
    assert small["reportable"] is False and small["display"] == "insufficient data (n=20)"
    assert summarise_scores(["C", "C", "C"])["display"] == "insufficient data (n=3)"
    every = summarise_scores([True] * 400)
    assert every["high"] == 1.0 and every["low"] < 1.0, "never a point, never past 1"


def test_numeric_scores_stay_within_their_bounds() -> None:
    unit = summarise_scores([0.5, "P", 1.0, 0.25, "I"] * 100)
    assert unit["kind"] == "numeric" and unit["bounds"] == [0.0, 1.0]
    assert 0.0 <= unit["low"] <= unit["mean"] <= unit["high"] <= 1.0
    assert unit["method"].startswith("cluster-bootstrap-percentile/")
    wide = summarise_scores([2.0, 7.0, 10.0, 3.5] * 200)
    assert wide["bounds"] == [2.0, 10.0] and 2.0 <= wide["low"] <= wide["high"] <= 10.0
    assert wide["reportable"] is True and wide["display"].endswith("n=800")
    few = summarise_scores([2.0, 7.0, 10.0])
    assert few["display"] == "insufficient data (n=3)" and few["reportable"] is False
    same = summarise_scores([5, 5, 5, 5])
    assert same["display"] == "insufficient data (n=4)"


def test_other_scores_are_counted() -> None:
    s = summarise_scores(["A", "B", "A", {"x": 1}])
    assert s["kind"] == "categorical" and s["counts"] == {'"A"': 2, '"B"': 1, '{"x":1}': 1}
    assert s["display"] == '"A" 2 · "B" 1 · {"x":1} 1 (n=4)'


def test_a_pinned_key_ending_in_plus_is_kept(ledger: Ledger, page: Page) -> None:  # noqa: F811
    """A query string turns "+" into a space; the page puts it back before trimming, so a key
    whose base64 ends in "+" is pinned whole (it used to lose its last character)."""
    from attest.keys import generate_private_key, verifier_key

    origin = log_identity(ledger.base_url)[1]
    key = verifier_key(origin, generate_private_key().public_key())
    while not key.endswith("+"):  # one key in 64 on average
        key = verifier_key(origin, generate_private_key().public_key())
    _checked(page, f"{ledger.base_url}/ui/?vkey={key}#/model/{MODEL}")
    assert f"Verifier key pinned in the URL: {key}" in page.locator("#trust").inner_text()
    checkpoint = page.locator("#checkpoint")
    assert checkpoint.get_attribute("data-status") == "failed"
    assert "not standard base64" not in checkpoint.inner_text(), "the key parsed"
