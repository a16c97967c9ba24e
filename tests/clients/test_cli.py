"""The `bledger` commands end to end against a real server on loopback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from clients.cli import main
from ledger.tiles import decode_bundle, encode_bundle
from ledger.tlog_proof import parse_tlog_proof
from tests.support import log_identity, running_server


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
    statement.write_text(json.dumps({"_type": "https://in-toto.io/Statement/v1", "n": 1}))
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
    floaty.write_text('{"score": 0.1}')
    plain = tmp_path / "plain.json"
    plain.write_text('{"score": 1}')
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
            statement.write_text(json.dumps({"n": i}))
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
        code, out, err = run("log", "verify", "--ledger", srv.base_url, "--vkey", vkey)
        assert code != 0
        assert "entry 1 does not hash to its leaf hash" in err
