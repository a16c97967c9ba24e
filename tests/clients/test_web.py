"""The web page at /ui/, driven in headless Debian Chromium through Playwright.

A real `bledger serve` on loopback holds probe records of two versions of one model (a worker key
certified by a lab key) and the lab's continuity statement between them. The browser must check
every record's inclusion proof and the checkpoint's signature itself: a flipped byte in an entry,
a proof or the checkpoint signature, served through `page.route`, must show as NOT verified.

Chromium comes from Debian (`/usr/bin/chromium`); `playwright install` is never run. Without it
these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest

from attest.keys import generate_private_key, verifier_key
from tests.support import (
    ORIGIN_PREFIX,
    PROBE_CATEGORY,
    PROBE_TIERS,
    PROBE_VERSIONS,
    LedgerProcess,
    lab_ledger,
    log_identity,
    png_pixels,
    populate_model,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MODEL = "tiny-chat"
ORIGIN = f"{ORIGIN_PREFIX}/evidence"
CATEGORY = PROBE_CATEGORY
TIERS = PROBE_TIERS
VERSIONS = PROBE_VERSIONS
VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "merkle"
TIMEOUT_MS = 60_000  # a deadline for a hung page, never a performance assertion


# -- the browser ------------------------------------------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (browser tests must run under CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium (skips locally, fails under CI, when it is missing)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, ledger: Ledger) -> Iterator[Page]:
    """A fresh page on the test server; a request anywhere else fails the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    foreign: list[str] = []
    context.on(
        "request",
        lambda r: (
            None if r.url.startswith((ledger.base_url + "/", "data:")) else foreign.append(r.url)
        ),
    )
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []  # uncaught exceptions and console errors (CSP violations among them)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield pg
    finally:
        context.close()
    assert not foreign, f"the page loaded something from elsewhere: {foreign}"
    assert not errors, f"the page logged errors: {errors}"


# -- the ledger and its records ---------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """The populated server: its URL, its log key, and what each index holds."""

    base_url: str
    vkey: str
    probe_records: dict[tuple[str, str], int]  # (version, tier) -> index
    continuity: int

    @property
    def page_url(self) -> str:
        """The model's page."""
        return f"{self.base_url}/ui/#/model/{MODEL}"


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """A `bledger serve` that allows the lab key, populated by `populate_model`."""
    with lab_ledger(tmp_path_factory.mktemp("web")) as (srv, keys):
        populated = populate_model(srv.base_url, keys, MODEL)
        vkey, _ = log_identity(srv.base_url)
        yield Ledger(srv.base_url, vkey, populated.probe_records, populated.continuity)


def _checked(page: Page, url: str) -> None:
    """Open `url` and wait until the page has checked every record."""
    page.goto(url)
    page.wait_for_selector("body[data-checked=true]")


def _status(page: Page, index: int) -> tuple[str, str]:
    cell = page.locator(f"#records tr[data-index='{index}'] .status")
    return cell.get_attribute("data-status") or "", cell.inner_text()


def _all_indices(ledger: Ledger) -> list[int]:
    return sorted([*ledger.probe_records.values(), ledger.continuity])


# -- tampering helpers ------------------------------------------------------------------------


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def _rewrite_json(edit: Callable[[dict[str, Any]], None]) -> Callable[[Route], None]:
    """A route handler that fetches the real answer and serves `edit`ed JSON instead."""

    def handle(route: Route) -> None:
        resp = route.fetch()
        body = resp.json()
        edit(body)
        route.fulfill(response=resp, body=json.dumps(body))

    return handle


# -- the router, without a browser ------------------------------------------------------------


def test_router_json_and_headers(ledger: Ledger) -> None:
    with httpx.Client(base_url=ledger.base_url, timeout=30.0) as c:
        resp = c.get("/ui", follow_redirects=False)
        assert resp.status_code == 308 and resp.headers["location"] == "/ui/"
        resp = c.get("/ui/")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in resp.headers["content-security-policy"]
        for asset, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            resp = c.get(f"/ui/{asset}")
            assert resp.status_code == 200 and resp.headers["content-type"].startswith(kind)
        assert c.get("/ui/../pyproject.toml").status_code == 404
        assert c.get("/ui/web.py").status_code == 404

        models = c.get("/ui/api/models").json()
        assert models["models"] == [{"model": MODEL, "versions": ["v1", "v2"]}]
        assert models["log"] == {
            "name": "evidence",
            "origin": ORIGIN,
            "size": ledger.continuity + 1,
        }

        history = c.get(f"/ui/api/history/{MODEL}").json()
        assert history["log"]["name"] == "evidence"
        assert [v["version"] for v in history["versions"]] == ["v1", "v2"]
        assert len(history["rows"]) == 4 and not any(r["verified"] for r in history["rows"])
        assert [c["index"] for c in history["continuity"]] == [ledger.continuity]

        resp = c.get("/ui/api/history/no-such-model")
        assert resp.status_code == 404 and resp.json()["error"] == "unknown_model"


def test_workers_serve_the_page(tmp_path: Path) -> None:
    """`bledger serve --workers 2` (the uvicorn factory path) serves the page too."""
    srv = LedgerProcess(tmp_path / "data", extra_args=("--workers", "2"))
    try:
        srv.start()
        assert httpx.get(f"{srv.base_url}/ui/", timeout=30.0).status_code == 200
        models = httpx.get(f"{srv.base_url}/ui/api/models", timeout=30.0).json()
        assert models["models"] == []
    finally:
        try:
            srv.stop()
        finally:
            srv.kill9()


# -- in the browser ---------------------------------------------------------------------------


def test_models_list(ledger: Ledger, page: Page) -> None:
    page.goto(f"{ledger.base_url}/ui/")
    item = page.locator(f"#models li[data-model='{MODEL}']")
    item.wait_for()
    assert "v1, v2" in item.inner_text()
    assert page.locator("#models li").count() == 1, "key events are not models"
    item.locator("a").click()
    page.wait_for_selector("body[data-checked=true]")
    assert page.locator("#model h2").inner_text() == MODEL


def test_every_record_verified_in_the_browser(ledger: Ledger, page: Page) -> None:
    _checked(page, ledger.page_url)
    checkpoint = page.locator("#checkpoint")
    assert checkpoint.get_attribute("data-status") == "verified", checkpoint.inner_text()
    assert "comes from this server itself" in page.locator("#trust").inner_text()
    for i in _all_indices(ledger):
        assert _status(page, i) == ("verified", "verified"), i
    assert page.locator("#records tr[data-index]").count() == len(_all_indices(ledger))
    rows = page.locator("#rows tr[data-version] .status")
    assert rows.count() == len(VERSIONS) * len(TIERS)
    assert all(s == "verified" for s in rows.evaluate_all("els => els.map(e => e.dataset.status)"))
    # The proof the browser checked is shown with the root it computed.
    details = page.locator(f"#records tr[data-index='{ledger.continuity}'] details")
    details.locator("summary").click()
    text = details.inner_text()
    assert "root (computed)" in text and "proof[0]" in text and "predecessorRecords" in text


def test_pinned_key(ledger: Ledger, page: Page) -> None:
    _checked(page, f"{ledger.base_url}/ui/?vkey={ledger.vkey}#/model/{MODEL}")
    assert page.locator("#checkpoint").get_attribute("data-status") == "verified"
    assert "pinned in the URL" in page.locator("#trust").inner_text()

    other = generate_private_key()
    wrong = verifier_key(ORIGIN, other.public_key())  # right name, another key
    _checked(page, f"{ledger.base_url}/ui/?vkey={wrong}#/model/{MODEL}")
    assert page.locator("#checkpoint").get_attribute("data-status") == "failed"
    assert "different key" in page.locator("#trust").inner_text()
    for i in _all_indices(ledger):
        status, text = _status(page, i)
        assert status == "failed" and text.startswith("NOT verified"), (i, text)


def test_a_wrong_pinned_key_is_shown_as_pinned(ledger: Ledger, page: Page) -> None:
    """A pinned key that fails (here: its key id does not match its key) is shown as the user
    pinned it, and the failure is about that key, not "(none)"."""
    name, _, key = ledger.vkey.split("+", 2)
    wrong = f"{name}+00000000+{key}"
    _checked(page, f"{ledger.base_url}/ui/?vkey={wrong}#/model/{MODEL}")
    checkpoint = page.locator("#checkpoint")
    assert checkpoint.get_attribute("data-status") == "failed"
    assert "the key pinned in the URL does not match the log's signature" in (
        checkpoint.inner_text()
    )
    trust = page.locator("#trust").inner_text()
    assert f"Verifier key pinned in the URL: {wrong}" in trust and "(none)" not in trust


def test_without_ed25519_nothing_is_called_verified(ledger: Ledger, page: Page) -> None:
    """A browser whose WebCrypto lacks Ed25519: proofs are checked, the signature is not, and
    the page says so instead of "verified"."""
    page.add_init_script(
        """
        const importKey = crypto.subtle.importKey.bind(crypto.subtle);
        crypto.subtle.importKey = (format, key, alg, ...rest) =>
          (alg?.name ?? alg) === "Ed25519"
            ? Promise.reject(new DOMException("Ed25519 unsupported", "NotSupportedError"))
            : importKey(format, key, alg, ...rest);
        """
    )
    _checked(page, ledger.page_url)
    checkpoint = page.locator("#checkpoint")
    assert checkpoint.get_attribute("data-status") == "included"
    assert "signature NOT checked" in checkpoint.inner_text()
    for i in _all_indices(ledger):
        status, text = _status(page, i)
        assert status == "included" and "signature not checked" in text, (i, text)


def test_tampered_entry_is_not_verified(ledger: Ledger, page: Page, tmp_path: Path) -> None:
    target = ledger.probe_records[("v1", "medical")]

    def flip_entry(body: dict[str, Any]) -> None:
        entry = base64.b64decode(body["entry"])
        body["entry"] = base64.b64encode(_flip(entry, len(entry) // 2)).decode()

    page.route(f"**/logs/evidence/entries/{target}", _rewrite_json(flip_entry))
    _checked(page, ledger.page_url)
    page.locator(f"#records tr[data-index='{target}'] summary").click()
    page.screenshot(path=str(tmp_path / "tampered.png"), full_page=True)  # for a human to look at
    status, text = _status(page, target)
    assert status == "failed"
    assert text.startswith("NOT verified") and "root" in text, text
    for i in _all_indices(ledger):
        if i != target:
            assert _status(page, i)[0] == "verified", i
    row = page.locator("#rows tr[data-version='v1'][data-tier='medical'] .status")
    assert row.get_attribute("data-status") == "failed"
    assert "NOT verified" in page.locator("#records-summary").inner_text()


def test_tampered_proof_is_not_verified(ledger: Ledger, page: Page) -> None:
    target = ledger.probe_records[("v2", "anonymous")]

    def flip_proof(body: dict[str, Any]) -> None:
        first = base64.b64decode(body["inclusion_proof"][0])
        body["inclusion_proof"][0] = base64.b64encode(_flip(first, 0)).decode()

    page.route(re.compile(rf".*/proof/inclusion\?index={target}&.*"), _rewrite_json(flip_proof))
    _checked(page, ledger.page_url)
    status, text = _status(page, target)
    assert status == "failed" and "does not lead to the checkpoint's root" in text, text
    others = [i for i in _all_indices(ledger) if i != target]
    assert all(_status(page, i)[0] == "verified" for i in others)


def test_tampered_checkpoint_signature_fails_everything(ledger: Ledger, page: Page) -> None:
    def flip_signature(route: Route) -> None:
        resp = route.fetch()
        note = resp.text()
        head, _, sig_line = note.rstrip("\n").rpartition("\n")
        name, b64 = sig_line.rsplit(" ", 1)
        sig = base64.b64decode(b64)
        forged = f"{head}\n{name} {base64.b64encode(_flip(sig, 10)).decode()}\n"
        route.fulfill(response=resp, body=forged)

    page.route("**/logs/evidence/checkpoint", flip_signature)
    _checked(page, ledger.page_url)
    assert page.locator("#checkpoint").get_attribute("data-status") == "failed"
    assert "does not verify" in page.locator("#checkpoint").inner_text()
    assert all(_status(page, i)[0] == "failed" for i in _all_indices(ledger))


def test_entry_that_is_not_the_claimed_record(ledger: Ledger, page: Page) -> None:
    """A server whose history names the wrong entries is caught: the entry (correctly proved)
    is not the record of that version the page was told it is."""
    v1 = ledger.probe_records[("v1", "anonymous")]
    v2 = ledger.probe_records[("v2", "anonymous")]

    def swap(body: dict[str, Any]) -> None:
        for v in body["versions"]:
            v["records"] = [v2 if i == v1 else i for i in v["records"]]
        for r in body["rows"]:
            r["records"] = [v2 if i == v1 else i for i in r["records"]]

    page.route(f"**/ui/api/history/{MODEL}", _rewrite_json(swap))
    _checked(page, ledger.page_url)
    status, text = _status(page, v2)
    assert status == "failed" and f"not a record of {MODEL} v1" in text, text


def test_continuity_chain(ledger: Ledger, page: Page) -> None:
    _checked(page, ledger.page_url)
    chain = page.locator("#continuity .chain")
    assert chain.inner_text().split() == ["v1", "→", f"#{ledger.continuity}", "→", "v2"]
    card = page.locator(f"#continuity .succession[data-index='{ledger.continuity}']")
    assert card.locator("h3").inner_text() == "v1 → v2"
    assert "signed by lab" in card.inner_text()
    assert card.locator("h3 + p .status").get_attribute("data-status") == "verified"
    refs = card.locator(".refs")
    assert refs.get_attribute("data-ok") == "true"
    assert "all 4 referenced records match" in refs.inner_text()
    table = card.locator("table.diff").inner_text()
    assert "refusal rate: before → after" in table, table
    assert f"{CATEGORY}\tanonymous" in table and f"{CATEGORY}\tmedical" in table, table


def test_one_run_of_each_version_has_no_noise_floor(ledger: Ledger, page: Page) -> None:
    """One run of each version's weights: the page says the floor was not measured, in the
    words `bledger history` and `bledger lab continuity` use, and guesses none."""
    from clients.probe.continuity import NOT_MEASURED

    _checked(page, ledger.page_url)
    card = page.locator(f"#continuity .succession[data-index='{ledger.continuity}']")
    assert card.locator(".noise-line").all_inner_texts() == [
        f"noise floor of {v}: {NOT_MEASURED}" for v in VERSIONS
    ]
    heads = card.locator("table.diff th").all_inner_texts()
    assert heads[2] == "noise floor", heads  # after category and tier
    for tier in TIERS:
        row = card.locator(f"table.diff tr[data-category='{CATEGORY}'][data-tier='{tier}']")
        assert row.locator("td.noise-cell").inner_text() == NOT_MEASURED
    assert "within noise" not in card.inner_text() and "beyond noise" not in card.inner_text()
    source = card.locator(".noise-source")
    assert "the floors from no second run" in source.inner_text()
    assert source.locator(".status").get_attribute("data-status") == "verified"


# -- the charts -------------------------------------------------------------------------------


def test_charts_render(ledger: Ledger, page: Page, tmp_path: Path) -> None:
    _checked(page, ledger.page_url)
    charts = page.locator("svg.chart")
    kinds = charts.evaluate_all("els => els.map(e => e.dataset.chart)")
    assert kinds == ["refusal", "transfer", "emotions"]
    for k in range(charts.count()):
        box = charts.nth(k).bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50, (kinds[k], box)
    # One interval per (version, tier) for refusal; per (version, tier, framing) for transfer.
    assert page.locator("svg[data-chart=refusal] g.point").count() == 4
    assert page.locator("svg[data-chart=transfer] g.point").count() == 4 * 5
    tip = page.locator("svg[data-chart=refusal] g.point title").first.text_content() or ""
    assert re.fullmatch(r"v1 · anonymous, benign refusal: [0-9.]+ \[[0-9.]+, [0-9.]+\], n=4", tip)

    shot = tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    width, height, pixels = png_pixels(shot.read_bytes())
    assert width >= 1000 and height > 900
    colours = set(pixels)
    assert len(colours) > 50, "the page is not one colour"

    charts_png = tmp_path / "charts.png"
    page.locator("#charts").screenshot(path=str(charts_png))
    colours = set(png_pixels(charts_png.read_bytes())[2])
    for hex_colour in ("1f5fa8", "c0572b", "2e8b57"):  # the first three series colours
        assert tuple(bytes.fromhex(hex_colour)) in colours, hex_colour


# -- the page's verifier on published vectors -------------------------------------------------


def test_inclusion_verifier_on_published_vectors(ledger: Ledger, page: Page) -> None:
    files = sorted((VECTORS / "inclusion").rglob("*.json"))
    assert files, f"no vectors under {VECTORS}"
    page.goto(f"{ledger.base_url}/ui/")
    page.wait_for_function("window.bledger !== undefined")
    texts = {str(f.relative_to(VECTORS)): f.read_text() for f in files}
    got = page.evaluate(
        """async (texts) => {
          const { b64decode, verifyInclusion } = window.bledger;
          const out = {};
          for (const [name, text] of Object.entries(texts)) {
            const v = JSON.parse(text);
            try {
              const proof = (v.proof ?? []).map(b64decode);
              await verifyInclusion(v.leafIdx, v.treeSize, b64decode(v.leafHash), proof,
                                    b64decode(v.root));
              out[name] = "ok";
            } catch (e) {
              out[name] = "error: " + e.message;
            }
          }
          return out;
        }""",
        texts,
    )
    for name, text in texts.items():
        want_err = json.loads(text)["wantErr"]
        assert got[name].startswith("error") == want_err, (name, got[name])


def test_the_numbers_table_is_the_cli_table(ledger: Ledger, page: Page) -> None:
    """Every figure on the page is the string `bledger history` prints for the same cell."""
    from click.testing import CliRunner

    from clients.cli import main

    res = CliRunner().invoke(main, ["history", MODEL, "--ledger", ledger.base_url,
                                    "--vkey", ledger.vkey])  # fmt: skip
    assert res.exit_code == 0, res.output
    cli_rows = res.stdout.splitlines()[2:6]
    _checked(page, ledger.page_url)
    heads = page.locator("#rows th").all_inner_texts()
    # The seed's headline pair leads the table, as in the CLI's.
    assert heads[3:5] == ["optimised transfer [95% CI] (budget)", "paired benign refusal [95% CI]"]
    assert heads[6:10] == [
        "benign refusal [95% CI]",
        "direct transfer [95% CI]",
        "framed transfer [95% CI]",
        "differential (framed - direct) [95% CI]",
    ]
    rows = page.locator("#rows tr[data-version]")
    assert rows.count() == 4
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td").all_inner_texts()
        (line,) = [x for x in cli_rows if x.split()[:3] == cells[:3]]
        for figure in cells[6:10]:
            assert re.search(r"n=\d+\)?$", figure), figure
            assert figure in line, (figure, line)
        for figure in cells[3:5]:
            assert "n=" in figure and figure in line, (figure, line)
