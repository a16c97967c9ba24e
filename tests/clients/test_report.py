"""`bledger report` end to end: a real ledger and a real issuer on loopback."""

from __future__ import annotations

import base64
import re
import shlex
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from attest import merkle
from attest import privacypass as pp
from attest.anonymous import verify_one_time
from attest.dsse import Envelope
from attest.keys import verifier_key
from attest.predicates import FieldReport
from attest.receipt import open_receipt
from attest.statement import parse_statement
from attest.tlog_proof import parse_tlog_proof, verify_tlog_proof
from attest.vkey import parse_vkey
from clients.report_cmd import report
from tests.ledger.test_issuer import (
    HOUR,
    anonymous_envelope,
    anonymous_info,
    challenges,
    get_token,
    post_anonymous,
    running_issuer,
    running_lab,
)
from tests.support import check_log


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(report, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def entry(ledger_url: str, log: str, index: int) -> bytes:
    """The canonical bytes of entry `index` of `log`."""
    raw = httpx.get(f"{ledger_url}/logs/{log}/entries/{index}").json()["entry"]
    return base64.b64decode(raw)


def test_anonymous_report_end_to_end_with_wait(tmp_path: Path) -> None:
    with running_lab(tmp_path) as lab, running_issuer(lab) as iss:
        vkey, origin = anonymous_info(lab.url)
        code, out, err = run(
            "--ledger",
            lab.url,
            "--model",
            "chat-model",
            "--model-version",
            "2026-05",
            "--category",
            "self-harm",
            "--anonymous",
            "--issuer",
            iss.base_url,
            "--vkey",
            vkey,
            "--wait",
            "It told a nurse the overdose threshold was none of her business.",
        )
        assert code == 0, err
        assert "included at index 0; proof verified" in err

        # stdout: the receipt, then the tlog-proof; both verify with the log's key.
        receipt_text, proof_text = out.split("\n\nc2sp.org/tlog-proof@v1\n", 1)
        verifier = parse_vkey(vkey)
        receipt = open_receipt(receipt_text + "\n", verifier)
        proof = parse_tlog_proof("c2sp.org/tlog-proof@v1\n" + proof_text)
        data = entry(lab.url, "anonymous", proof.index)
        assert merkle.leaf_hash(data) == receipt.leaf_hash
        verify_tlog_proof(proof, data, verifier, origin)

        # What is in the log: a one-time-signed anonymous report at a whole hour, nothing else.
        env = Envelope.from_json(data)
        verify_one_time(env)
        stmt = parse_statement(env.payload)
        assert isinstance(stmt.predicate, FieldReport)
        p = stmt.predicate
        assert (p.tier, p.credential_tier, p.category) == ("anonymous", None, "self-harm")
        assert (p.model.name, p.model.version) == ("chat-model", "2026-05")
        assert p.issued_at % HOUR == 0
        assert p.seen_checkpoint.origin == origin
        check_log(lab.url, vkey, origin, "anonymous")


def test_two_reports_use_two_one_time_keys(tmp_path: Path) -> None:
    with running_lab(tmp_path) as lab, running_issuer(lab) as iss:
        keyids = []
        for text in ("first", "second"):
            code, _, err = run(
                "--ledger", lab.url, "--model", "m", "--category", "grief", "--anonymous",
                "--issuer", iss.base_url, "--wait", text,
            )  # fmt: skip
            assert code == 0, err
        vkey, origin = anonymous_info(lab.url)
        cp = check_log(lab.url, vkey, origin, "anonymous")
        assert cp.size == 2
        for i in range(2):
            keyids.append(Envelope.from_json(entry(lab.url, "anonymous", i)).signatures[0].keyid)
        assert len(set(keyids)) == 2, "a fresh one-time key per report"


def test_double_spend_under_concurrency(tmp_path: Path) -> None:
    """Many threads redeem one token at once, each with its own report: exactly one wins."""
    threads_n = 16
    with running_lab(tmp_path) as lab, running_issuer(lab) as iss:
        token = get_token(iss.base_url, challenges(lab.url)[0])
        auth = pp.authorization(token)
        envelopes = [anonymous_envelope(lab.url, f"report {i}") for i in range(threads_n)]
        barrier = threading.Barrier(threads_n)
        results: list[tuple[int, str]] = []
        lock = threading.Lock()

        def redeem(env: Envelope) -> None:
            with httpx.Client(timeout=60.0) as c:
                barrier.wait()
                r = post_anonymous(lab.url, env, auth, client=c)
            with lock:
                results.append((r.status_code, r.json().get("error", "")))

        workers = [threading.Thread(target=redeem, args=(e,)) for e in envelopes]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        counts = Counter(results)
        assert counts == {(202, ""): 1, (403, "token_spent"): threads_n - 1}, counts
        # And later, sequentially, too.
        r = post_anonymous(lab.url, anonymous_envelope(lab.url, "again"), auth)
        assert (r.status_code, r.json()["error"]) == (403, "token_spent")


def test_attested_report_needs_k_issuers(tmp_path: Path) -> None:
    """Tier 'medical' needs 2 distinct issuers (the ledger's default quorum)."""
    with running_lab(tmp_path) as lab:
        issuers = [lab.certify_issuer(f"issuer{i}") for i in (1, 2)]
        holder_path, holder = lab.new_key("nurse")
        holder_vkey = verifier_key("nurse", holder.public_key())

        def file(text: str) -> tuple[int, str, str]:
            return run(
                "--ledger", lab.url, "--model", "m", "--category", "overdose",
                "--credential-tier", "medical", "--key", str(holder_path), text,
            )  # fmt: skip

        code, _, err = file("before any credential")
        assert code != 0 and "untrusted_signature" in err, "no credential names the key yet"
        lab.issue_credential(("issuer1", issuers[0][1]), holder_vkey, "medical", "cred-1")
        code, _, err = file("with one issuer (k-1)")
        assert code != 0 and "credential_quorum" in err, err
        lab.issue_credential(("issuer2", issuers[1][1]), holder_vkey, "medical", "cred-2")
        code, out, err = file("with two issuers (k)")
        assert code == 0, err
        proof = parse_tlog_proof(out)
        with httpx.Client() as c:
            info = next(x for x in c.get(f"{lab.url}/logs").json() if x["name"] == "attested")
        data = entry(lab.url, "attested", proof.index)
        verify_tlog_proof(proof, data, parse_vkey(info["vkey"]), info["origin"])
        stmt = parse_statement(Envelope.from_json(data).payload)
        assert isinstance(stmt.predicate, FieldReport)
        assert (stmt.predicate.tier, stmt.predicate.credential_tier) == ("attested", "medical")


def test_documented_commands_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `bledger report` / `bledger issuer serve` line of docs/anonymous.md parses."""
    from clients.issuer_cmd import issuer

    doc = (Path(__file__).resolve().parents[2] / "docs" / "anonymous.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", doc, flags=re.DOTALL)
    lines = [shlex.split(line) for block in blocks for line in block.splitlines() if line]
    monkeypatch.chdir(tmp_path)
    for name in ("lab.pem", "issuer1.pem", "nurse.pem"):
        (tmp_path / name).write_text("placeholder")
    commands = {("report",): report, ("issuer", "serve"): issuer.commands["serve"]}
    checked = 0
    for argv in lines:
        assert argv[0] == "bledger"
        for prefix, command in commands.items():
            if tuple(argv[1 : 1 + len(prefix)]) == prefix:
                command.make_context("bledger " + " ".join(prefix), argv[1 + len(prefix) :])
                checked += 1
    assert checked == 2


def test_usage_errors() -> None:
    base = ["--ledger", "http://127.0.0.1:9", "--model", "m", "--category", "c"]
    for extra in (["--anonymous"], [], ["--anonymous", "--issuer", "x", "--credential-tier", "t"]):
        res = CliRunner().invoke(report, [*base, *extra, "text"])
        assert res.exit_code == 2, res.output
