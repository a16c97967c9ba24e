"""The `bledger` commands end to end against a real server on loopback."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from attest.predicates import FIELD_REPORT
from attest.tiles import decode_bundle, encode_bundle
from attest.tlog_proof import parse_tlog_proof
from clients.cli import main
from tests.support import ORIGIN_PREFIX, log_identity, running_server


def report(text: str, **extra: object) -> str:
    """A field-report statement file's content: the CLI fills in the anti-backdating fields."""
    predicate = {
        "model": {"name": "m", "version": "1"},
        "category": "grief",
        "tier": "anonymous",
        "text": text,
        **extra,
    }
    return json.dumps({"predicateType": FIELD_REPORT, "predicate": predicate})


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_keys_submit_and_verify(tmp_path: Path) -> None:
    code, out, _ = run("keys", "new", "--out", str(tmp_path / "alice.pem"))
    assert code == 0
    assert "vkey alice+" in out
    code, _, err = run("keys", "new", "--out", str(tmp_path / "alice.pem"))
    assert code != 0, "an existing key file is never overwritten"
    assert "already exists" in err

    statement = tmp_path / "statement.json"
    # Pinned anti-backdating fields make the statement, and so its envelope, reproducible.
    seen = {"origin": f"{ORIGIN_PREFIX}/evidence", "size": 0, "root": hashlib.sha256().hexdigest()}
    statement.write_text(report("one", seenCheckpoint=seen, issuedAt=1_700_000_000))
    with running_server(tmp_path / "data", allow_keys=(tmp_path / "alice.pem.pub",)) as srv:
        vkey, _ = log_identity(srv.base_url)
        code, out, err = run(
            "submit",
            "--ledger",
            srv.base_url,
            "--key",
            str(tmp_path / "alice.pem"),
            "--vkey",
            vkey,
            str(statement),
        )
        assert code == 0, err
        assert "included at index 0" in err
        assert parse_tlog_proof(out).index == 0

        code, out, err = run(
            "submit", "--ledger", srv.base_url, "--key", str(tmp_path / "alice.pem"), str(statement)
        )
        assert code == 0, err
        assert "already present at index 0" in err
        assert "trusting the key the server reports" in err

        code, out, err = run("log", "verify", "--ledger", srv.base_url, "--vkey", vkey)
        assert code == 0, err
        assert "size 1" in out

        code, out, err = run("log", "verify", "--ledger", srv.base_url, "--vkey", "x+00000000+AA")
        assert code != 0


def test_submit_refuses_floats_and_unknown_keys(tmp_path: Path) -> None:
    run("keys", "new", "--out", str(tmp_path / "alice.pem"))
    run("keys", "new", "--out", str(tmp_path / "mallory.pem"))
    floaty = tmp_path / "floaty.json"
    floaty.write_text(report("x", issuedAt=0.1))
    plain = tmp_path / "plain.json"
    plain.write_text(report("plain"))
    with running_server(tmp_path / "data", allow_keys=(tmp_path / "alice.pem.pub",)) as srv:
        code, _, err = run(
            "submit", "--ledger", srv.base_url, "--key", str(tmp_path / "alice.pem"), str(floaty)
        )
        assert code != 0
        assert "float" in err.lower()
        code, _, err = run(
            "submit", "--ledger", srv.base_url, "--key", str(tmp_path / "mallory.pem"), str(plain)
        )
        assert code != 0
        assert "403" in err


def test_log_verify_catches_a_rewritten_entry(tmp_path: Path) -> None:
    run("keys", "new", "--out", str(tmp_path / "alice.pem"))
    statement = tmp_path / "s.json"
    data = tmp_path / "data"
    with running_server(data, allow_keys=(tmp_path / "alice.pem.pub",)) as srv:
        for i in range(3):
            statement.write_text(report(f"n{i}"))
            code, _, err = run(
                "submit",
                "--ledger",
                srv.base_url,
                "--key",
                str(tmp_path / "alice.pem"),
                str(statement),
            )
            assert code == 0, err
        vkey, _ = log_identity(srv.base_url)

    # The operator rewrites entry 1 in the database behind the log's back.
    db = sqlite3.connect(data / "ledger.db")
    (blob,) = db.execute("SELECT data FROM bundles WHERE idx = 0").fetchone()
    entries = decode_bundle(blob)
    entries[1] = entries[1].replace(b'"payload"', b'"payload" ', 1)
    db.execute("UPDATE bundles SET data = ? WHERE idx = 0", (encode_bundle(entries),))
    db.commit()
    db.close()

    with running_server(data, allow_keys=(tmp_path / "alice.pem.pub",)) as srv:
        code, _, err = run("log", "verify", "--ledger", srv.base_url, "--vkey", vkey)
        assert code != 0
        assert "entry 1 does not hash to its leaf hash" in err


def test_key_chain_commands(tmp_path: Path) -> None:
    for name in ("lab", "worker", "worker2"):
        assert run("keys", "new", "--out", str(tmp_path / f"{name}.pem"))[0] == 0
    code, out, _ = run("keys", "show", str(tmp_path / "worker.pem.pub"))
    assert code == 0 and "keyid worker+" in out
    statement = tmp_path / "s.json"
    with running_server(tmp_path / "data") as srv:
        srv.stop()
        srv.extra_args = ("--allow-lab", str(tmp_path / "lab.pem.pub"))
        srv.start()
        url = srv.base_url

        def post(key: str, text: str) -> tuple[int, str, str]:
            statement.write_text(report(text))
            return run("submit", "--ledger", url, "--key", str(tmp_path / key), str(statement))

        assert post("worker.pem", "before")[0] != 0, "an unregistered worker is refused"
        code, _, err = run(
            "keys",
            "certify",
            "--ledger",
            url,
            "--key",
            str(tmp_path / "lab.pem"),
            "--role",
            "worker",
            "--subject",
            str(tmp_path / "worker.pem"),
        )
        assert code == 0, err
        assert '"action":"register"' in err, "the command shows what it signs"
        assert post("worker.pem", "registered")[0] == 0

        code, _, err = run(
            "keys",
            "rotate",
            "--ledger",
            url,
            "--key",
            str(tmp_path / "worker.pem"),
            "--role",
            "worker",
            "--new-key",
            str(tmp_path / "worker2.pem"),
        )
        assert code == 0, err
        assert post("worker.pem", "old key")[0] != 0
        assert post("worker2.pem", "new key")[0] == 0

        _, out, _ = run("keys", "show", str(tmp_path / "worker2.pem"), "--role", "worker")
        target = out.split("vkey  ")[1].strip()
        code, _, err = run(
            "keys",
            "revoke",
            "--ledger",
            url,
            "--key",
            str(tmp_path / "lab.pem"),
            "--role",
            "worker",
            "--revoke",
            target,
        )
        assert code == 0, err
        code, _, err = post("worker2.pem", "after revocation")
        assert code != 0 and "403" in err
