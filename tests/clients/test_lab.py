"""`bledger lab continuity` end to end against a real server on loopback.

A lab key is registered by the operator (`--allow-lab`), a worker key certified by the lab, and
the worker logs probe records of two versions of a model (built with `clients.probe.records`, no
model needed; v1's run split into parts). The lab then runs the command; the test checks what
it printed and the entry it logged, and the log's refusals: a worker key, a citation of a
missing index, a citation with a wrong leaf hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest import merkle
from attest.dsse import Envelope
from attest.keys import load_private_key
from attest.policy import Policy
from attest.predicates import (
    CheckpointRef,
    ContinuityStatement,
    Decoding,
    LogEntryRef,
    MethodRef,
    ModelRef,
    ProbeItem,
    ProbeRecord,
    SuiteRef,
)
from attest.statement import parse_statement, sign_statement
from attest.tlog_proof import parse_tlog_proof
from attest.vkey import parse_vkey
from clients.cli import main
from clients.lab_cmd import lab
from clients.probe.continuity import diff
from clients.probe.records import RecordHeader, probe_item, sign_records
from clients.probe.suites import SUITES_DIR, load_suite
from clients.sdk import LedgerClient
from tests.support import ORIGIN_PREFIX, envelope_body, lab_ledger, log_identity

ORIGIN = f"{ORIGIN_PREFIX}/evidence"
SUITE = load_suite("core@1")
SUITE_REF = SuiteRef(name=SUITE.name, version=SUITE.version, sha256=SUITE.digest)
CATEGORY = "medical-dosage"
TIERS = ("anonymous", "medical")
EMPTY = CheckpointRef(origin=ORIGIN, size=0, root=hashlib.sha256().hexdigest())
CALIBRATION = LogEntryRef(origin=ORIGIN, index=0, leaf_hash=hashlib.sha256().hexdigest())
Signers = list[tuple[str, Ed25519PrivateKey]]


def weights(model: str, version: str) -> str:
    return hashlib.sha256(f"weights of {model} {version}".encode()).hexdigest()


def model_ref(model: str, version: str) -> ModelRef:
    return ModelRef(name=model, version=version, weights_sha256=weights(model, version))


def items(version: int) -> list[ProbeItem]:
    """Every medical-dosage item of the suite, in every framing it has: v1 refuses two of the
    four benign prompts, v2 none; transfer rises by 0.1 from v1 to v2."""
    out, benign = [], 0
    for n, it in enumerate(i for i in SUITE.items if i.category == CATEGORY):
        refused = it.kind == "benign" and benign < 4 - 2 * version
        benign += it.kind == "benign"
        for framing in it.framed:
            out.append(
                probe_item(
                    it.id,
                    framing,
                    "an answer " * 20,
                    refused=refused,
                    transfer=0.0 if it.kind == "benign" else 0.1 * version + 0.05 * n,
                    emotions={"calm": (0.1 * version, 0.1), "afraid": (0.4 - 0.2 * version, 0.1)},
                )
            )
    return out


def post(base_url: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{base_url}/logs/evidence/entries", content=body, timeout=60.0)


def post_ok(base_url: str, body: bytes) -> LogEntryRef:
    r = post(base_url, body)
    assert r.status_code == 200, r.text
    got = r.json()
    leaf = base64.b64decode(got["leaf_hash"]).hex()
    return LogEntryRef(origin=ORIGIN, index=got["index"], leaf_hash=leaf)


def log_run(
    base_url: str,
    worker: Signers,
    model: str,
    version: int,
    *,
    run: str,
    limit: int = 65535,
    suite: SuiteRef = SUITE_REF,
    parts: slice = slice(None),
    decoding: Decoding | None = None,
    judges: tuple[MethodRef, ...] = (),
) -> list[tuple[ProbeRecord, LogEntryRef]]:
    """Log one run (both tiers) of `model`@v`version`; `limit` splits it into parts, `parts`
    picks which parts get posted."""
    out = []
    for tier in TIERS:
        header = RecordHeader(
            model=model_ref(model, f"v{version}"),
            suite=suite,
            category=CATEGORY,
            tier=tier,
            run_id=run,
            calibration=CALIBRATION,
            seen_checkpoint=EMPTY,
            issued_at=1_700_000_000,
            decoding=decoding,
            judges=judges,
        )
        for part in sign_records(header, items(version), worker, limit=limit)[parts]:
            ref = post_ok(base_url, envelope_body(part.envelope))
            out.append((part.predicate, ref))
    return out


@dataclass(frozen=True)
class Lab:
    """The running server, its pinned key, the key files, and the records logged."""

    base_url: str
    vkey: str
    keys: Path
    v1: list[tuple[ProbeRecord, LogEntryRef]]
    v2: list[tuple[ProbeRecord, LogEntryRef]]

    def run(self, *args: str) -> tuple[int, str, str]:
        res = CliRunner().invoke(lab, ["continuity", "--ledger", self.base_url, *args])
        return res.exit_code, res.stdout, res.stderr

    def signer(self, name: str) -> Signers:
        return [(name, load_private_key(self.keys / f"{name}.pem"))]


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with lab_ledger(tmp_path_factory.mktemp("lab")) as (srv, keys):
        certify = ["keys", "certify", "--ledger", srv.base_url, "--key", str(keys / "lab.pem"),
                   "--role", "worker", "--subject", str(keys / "worker.pem")]  # fmt: skip
        res = CliRunner().invoke(main, certify)
        assert res.exit_code == 0, res.output
        worker = [("worker", load_private_key(keys / "worker.pem"))]
        # v1 in parts (a 4 KiB limit splits each tier's record); v2 once completely, then a
        # later run that never finished (only its first part): the complete run counts.
        v1 = log_run(srv.base_url, worker, "m", 1, run="r1", limit=4096)
        assert len(v1) > len(TIERS), "v1's records should be split into parts"
        v2 = log_run(srv.base_url, worker, "m", 2, run="r2")
        log_run(srv.base_url, worker, "m", 2, run="r2-cut", limit=4096, parts=slice(0, 1))
        vkey, _ = log_identity(srv.base_url)
        yield Lab(srv.base_url, vkey, keys, v1, v2)


def logged(ledger: Lab, index: int) -> ContinuityStatement:
    """The continuity statement at `index`, fetched with its inclusion proof verified."""
    policy = Policy.parse(f"log {ledger.vkey}\nquorum none\n")
    with LedgerClient(ledger.base_url) as c:
        entry = c.entry("evidence", index, policy)
    pred = parse_statement(Envelope.from_json(entry.data).payload).predicate
    assert isinstance(pred, ContinuityStatement)
    return pred


def test_continuity_is_computed_signed_and_logged(ledger: Lab, tmp_path: Path) -> None:
    policy = tmp_path / "policy.txt"
    policy.write_text(f"log {ledger.vkey}\nquorum none\n")
    code, out, err = ledger.run(
        "--from", "m@v1", "--to", "m@v2", "--key", str(ledger.keys / "lab.pem"),
        "--policy", str(policy), "--json",
    )  # fmt: skip
    assert code == 0, err
    # The unfinished run was passed over.
    assert "r2-cut" in err and "lacks or repeats a part" in err
    result = json.loads(out)
    proof = parse_tlog_proof(result["tlog_proof"])
    assert proof.index == result["index"]
    assert result["predecessor_records"] == [ref.index for _, ref in ledger.v1]
    assert result["successor_records"] == [ref.index for _, ref in ledger.v2]
    anonymous = result["cells"][0]
    assert (anonymous["category"], anonymous["tier"]) == (CATEGORY, "anonymous")
    assert (anonymous["benign_pairs"], anonymous["refused_only_before"]) == (4, 2)
    assert anonymous["refusal_before"] == 0.5 and anonymous["refusal_after"] == 0.0
    assert anonymous["mcnemar_p"] == 0.5

    assert result["noise_floors"] == []
    assert anonymous["noise_floor"] == {
        "measured": False,
        "note": "noise floor: not measured — one run of these weights",
    }

    stmt = logged(ledger, result["index"])
    assert stmt.predecessor == model_ref("m", "v1") and stmt.successor == model_ref("m", "v2")
    assert [r for _, r in ledger.v1] == list(stmt.predecessor_records)
    assert [r for _, r in ledger.v2] == list(stmt.successor_records)
    want = diff([p for p, _ in ledger.v1], [p for p, _ in ledger.v2], SUITE).behaviour_diffs()
    assert stmt.diff == want
    assert stmt.diff[0].direct_transfer_before_milli is not None

    code, out, err = ledger.run(
        "--from", "m@v1", "--to", "m@v2", "--key", str(ledger.keys / "lab.pem"),
        "--vkey", ledger.vkey,
    )  # fmt: skip
    assert code == 0, err
    table, _, proof_text = out.partition("c2sp.org/tlog-proof@v1")
    assert "m@v1 -> m@v2, suite core-1" in table
    header = table.splitlines()[1]
    for column in ("pairs b/d/f", "benign refusal", "McNemar p", "direct transfer", "emotion"):
        assert column in header
    assert "0.50 -> 0.00 (-2 +0)" in table and "0.500" in table
    # Each version was run once (v2's second run never finished): no floor, and it says so.
    assert "noise floor: not measured — one run of these weights" in table
    assert "noise floor of m@v1: not measured — one run of these weights" in err
    assert parse_tlog_proof("c2sp.org/tlog-proof@v1" + proof_text).index >= result["index"]
    assert "included at index" in err or "already present at index" in err


def test_a_worker_key_is_refused(ledger: Lab) -> None:
    code, _, err = ledger.run(
        "--from", "m@v1", "--to", "m@v2", "--key", str(ledger.keys / "worker.pem"),
        "--vkey", ledger.vkey,
    )  # fmt: skip
    assert code != 0
    assert "403" in err and "not_authorised" in err


def statement(ledger: Lab, before: list[LogEntryRef], after: list[LogEntryRef]) -> bytes:
    with LedgerClient(ledger.base_url) as c:
        info = c.log_info("evidence")
        cp, _ = c.checkpoint("evidence", parse_vkey(ledger.vkey), info.origin)
    seen = CheckpointRef(origin=ORIGIN, size=cp.size, root=cp.root_hash.hex())
    pred = ContinuityStatement(
        seen_checkpoint=seen,
        issued_at=1_700_000_000,
        predecessor=model_ref("m", "v1"),
        successor=model_ref("m", "v2"),
        predecessor_records=tuple(before),
        successor_records=tuple(after),
        diff=(),
    )
    return envelope_body(sign_statement(pred, ledger.signer("lab")))


def test_a_missing_index_is_refused(ledger: Lab) -> None:
    v1 = [r for _, r in ledger.v1]
    missing = ledger.v2[0][1].model_copy(update={"index": 10**6})
    r = post(ledger.base_url, statement(ledger, v1, [missing]))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "bad_citation" and "not below" in r.json()["detail"]


def test_a_wrong_leaf_hash_is_refused(ledger: Lab) -> None:
    v1 = [r for _, r in ledger.v1]
    v2 = ledger.v2[0][1]
    wrong = v2.model_copy(update={"leaf_hash": merkle.leaf_hash(b"something else").hex()})
    r = post(ledger.base_url, statement(ledger, v1, [wrong]))
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "bad_citation" and v2.leaf_hash in r.json()["detail"]
    # The same statement with the right references is admitted.
    assert post(ledger.base_url, statement(ledger, v1, [v2])).status_code == 200


def test_records_need_their_suite_file(ledger: Lab, tmp_path: Path) -> None:
    """Records probed with a suite file other than the shipped one need --suite-file."""
    edited = tmp_path / "core-1.json"
    edited.write_bytes((SUITES_DIR / "core-1.json").read_bytes() + b"\n")
    other = SuiteRef(
        name="core", version="1", sha256=hashlib.sha256(edited.read_bytes()).hexdigest()
    )
    worker = ledger.signer("worker")
    log_run(ledger.base_url, worker, "x", 1, run="x1", suite=other)
    log_run(ledger.base_url, worker, "x", 2, run="x2", suite=other)
    args = ["--from", "x@v1", "--to", "x@v2", "--key", str(ledger.keys / "lab.pem"),
            "--vkey", ledger.vkey]  # fmt: skip
    code, _, err = ledger.run(*args)
    assert code != 0 and "--suite-file" in err
    code, out, err = ledger.run(*args, "--suite-file", str(edited))
    assert code == 0, err
    assert "x@v1 -> x@v2" in out

    # Two sides probed with different suites cannot be compared at all.
    log_run(ledger.base_url, worker, "y", 1, run="y1")
    log_run(ledger.base_url, worker, "y", 2, run="y2", suite=other)
    code, _, err = ledger.run(
        "--from", "y@v1", "--to", "y@v2", "--key", str(ledger.keys / "lab.pem"),
        "--vkey", ledger.vkey,
    )  # fmt: skip
    assert code != 0 and "different suites" in err


def test_unknown_versions_and_bad_arguments(ledger: Lab) -> None:
    code, _, err = ledger.run(
        "--from", "m@v9", "--to", "m@v2", "--key", str(ledger.keys / "lab.pem"),
        "--vkey", ledger.vkey,
    )  # fmt: skip
    assert code != 0 and "no verified probe record of m@v9" in err
    code, _, err = ledger.run(
        "--from", "m", "--to", "m@v2", "--key", str(ledger.keys / "lab.pem"),
        "--vkey", ledger.vkey,
    )  # fmt: skip
    assert code != 0 and "MODEL@VERSION" in err


def test_a_rerun_of_the_same_weights_is_the_noise_floor(ledger: Lab, tmp_path: Path) -> None:
    """n@v1 run twice (batch 8, then batch 16) with the same answers: a floor of no flips, which
    the change to n@v2 (benign refusal 0.5 -> 0.0, transfer +0.1) exceeds in both tiers. A floor
    given with --noise-floor that is wider in the anonymous tier applies there instead."""
    worker = ledger.signer("worker")
    for run, batch in (("n1-b8", 8), ("n1-b16", 16)):
        decoding = Decoding(max_new_tokens=64, temperature_milli=0, seed=0, batch_size=batch)
        log_run(ledger.base_url, worker, "n", 1, run=run, decoding=decoding)
    log_run(ledger.base_url, worker, "n", 2, run="n2")
    args = ["--from", "n@v1", "--to", "n@v2", "--key", str(ledger.keys / "lab.pem"),
            "--vkey", ledger.vkey]  # fmt: skip
    code, out, err = ledger.run(*args, "--json")
    assert code == 0, err
    result = json.loads(out)
    (floor,) = result["noise_floors"]
    assert floor["model"]["version"] == "v1" and floor["overall"]["k"] == 0
    assert floor["runs"] == [
        "n1-b8 (batch 8, seed 0, greedy)",
        "n1-b16 (batch 16, seed 0, greedy)",
    ]
    for cell in result["cells"]:
        noise = cell["noise_floor"]
        assert noise["measured"] is True and noise["flips"] == 0
        assert noise["pairs"] == noise["flip_rate"]["n"] > 0
        # 0.5 -> 0.0 against the upper bound of 0 flips in that many pairs.
        assert noise["flip_rate"]["high"] < 0.5
        assert noise["refusal_within_noise"] is False and noise["within_noise"] is False
    code, out, err = ledger.run(*args)
    assert code == 0, err
    assert "beyond noise" in out and "within noise" not in out.split("within noise:")[0]
    assert "n1-b8 (batch 8, seed 0, greedy) vs n1-b16 (batch 16, seed 0, greedy)" in out

    # An explicit floor, wide in the anonymous tier only (every item flipped, every transfer
    # moved by up to 0.9): the change there is within it, the medical tier keeps its own floor.
    wide = dict(floor)
    anonymous = next(c for c in floor["cells"] if c["tier"] == "anonymous")
    n = anonymous["pairs"]
    wide["cells"] = [
        {**anonymous, "flips": n, "flip_rate": {"k": n, "n": n},
         "transfer_change": {"n": 4, "mean": 0.5, "low": 0.1, "high": 0.9, "items": 4}},
    ]  # fmt: skip
    given = tmp_path / "floor.json"
    given.write_text(json.dumps(wide))
    code, out, err = ledger.run(*args, "--noise-floor", str(given), "--json")
    assert code == 0, err
    cells = {c["tier"]: c["noise_floor"] for c in json.loads(out)["cells"]}
    assert cells["anonymous"]["within_noise"] is True
    assert cells["anonymous"]["source"] == str(given)
    assert cells["medical"]["within_noise"] is False
    assert cells["medical"]["source"] == "records of n@v1 in the log"


def test_a_diff_across_judges_says_so(ledger: Lab) -> None:
    """j@v1 judged with learned, j@v2 with hidden-probe (same transfer judge): the output names
    the refusal role and both judges, in the table and in the JSON; the transfer role is not
    named. The diff is still computed: the figures are what the records say."""
    worker = ledger.signer("worker")

    def ref(name: str, version: str) -> MethodRef:
        digest = hashlib.sha256(f"{name} {version}".encode()).hexdigest()
        return MethodRef(name=name, version=version, config_digest=digest)

    rubric = ref("rubric", "2")
    log_run(ledger.base_url, worker, "j", 1, run="j1", judges=(ref("learned", "1"), rubric))
    log_run(ledger.base_url, worker, "j", 2, run="j2", judges=(ref("hidden-probe", "1"), rubric))
    args = ["--from", "j@v1", "--to", "j@v2", "--key", str(ledger.keys / "lab.pem"),
            "--vkey", ledger.vkey]  # fmt: skip
    code, out, err = ledger.run(*args)
    assert code == 0, err
    (line,) = [x for x in out.splitlines() if x.startswith("judges differ:")]
    assert line.startswith("judges differ: refusal judged by learned 1 (")
    assert "hidden-probe 1 (" in line
    code, out, err = ledger.run(*args, "--json")
    assert code == 0, err
    (change,) = json.loads(out)["judge_changes"]
    assert change.startswith("refusal judged by learned 1 (")


def test_a_malformed_noise_floor_file_is_refused(ledger: Lab, tmp_path: Path) -> None:
    args = ["--from", "m@v1", "--to", "m@v2", "--key", str(ledger.keys / "lab.pem"),
            "--vkey", ledger.vkey]  # fmt: skip
    for name, text in (("bad.json", "{not json"), ("wrong.json", '{"format": "x", "cells": []}')):
        path = tmp_path / name
        path.write_text(text)
        code, out, err = ledger.run(*args, "--noise-floor", str(path))
        assert code != 0 and str(path) in err
        assert "c2sp.org/tlog-proof" not in out  # refused before anything was signed
