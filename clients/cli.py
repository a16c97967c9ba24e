"""`bledger`: the command line. Errors print their `diagnostic` and exit non-zero."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from attest.dsse import IN_TOTO_PAYLOAD_TYPE, sign_envelope
from attest.jcs import canonical_loads, canonicalize
from attest.keys import generate_private_key, load_private_key, verifier_key, write_key_pair
from clients.sdk import LedgerClient, LogInfo, verifier_from_vkey

F = TypeVar("F", bound=Callable[..., Any])


def _diagnosed(fn: F) -> F:
    """Turn any project error (they all carry `diagnostic`) into a one-line message."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            diagnostic = getattr(e, "diagnostic", None)
            if diagnostic is None:
                raise
            raise click.ClickException(str(diagnostic)) from e

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="behaviour-ledger")
def main() -> None:
    """behaviour-ledger: a verifiable, append-only record of how AI models behave."""


# -- serve ------------------------------------------------------------------------------------


@main.command()
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Data directory.")
@click.option("--db", help="Database URL (default: SQLite in DATA). E.g. postgresql+psycopg://…")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--origin-prefix",
    help="First run only: origins become PREFIX/<log> (default HOST:PORT/logs).",
)
@click.option(
    "--allow-key",
    "allow_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A .pub PEM whose signatures the evidence log admits (repeatable).",
)
@_diagnosed
def serve(
    data: Path,
    db: str | None,
    host: str,
    port: int,
    origin_prefix: str | None,
    allow_keys: tuple[Path, ...],
) -> None:
    """Run a ledger server; creates DATA (config, log keys, SQLite database) on first run."""
    import uvicorn

    from ledger.api import create_app
    from ledger.config import init_data_dir
    from ledger.server import LedgerServer

    cfg = init_data_dir(data, origin_prefix=origin_prefix or f"{host}:{port}/logs", db=db)
    server = LedgerServer.from_config(cfg, extra_allow_keys=allow_keys)
    for h in server.logs.values():
        click.echo(f"log {h.name} ({h.partition}) origin {h.origin}\n  vkey {h.vkey}")
    click.echo(f"serving on http://{host}:{port}  (API docs at /docs)", err=True)
    uvicorn.run(create_app(server), host=host, port=port, log_level="warning", access_log=False)


# -- keys -------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Manage Ed25519 signing keys."""


@keys.command("new")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Private key file.")
@click.option("--name", help="Key name used in key ids (default: the file stem).")
@click.option(
    "--passphrase-env", help="Encrypt the key with the passphrase in this environment variable."
)
@_diagnosed
def keys_new(out: Path, name: str | None, passphrase_env: str | None) -> None:
    """Write a new key pair: OUT (PKCS#8 PEM) and OUT.pub."""
    passphrase = _passphrase(passphrase_env)
    key = generate_private_key()
    pub = write_key_pair(out, key, passphrase)
    click.echo(f"wrote {out} and {pub}")
    click.echo(f"vkey {verifier_key(name or out.stem, key.public_key())}")


def _passphrase(env: str | None) -> bytes | None:
    if env is None:
        return None
    value = os.environ.get(env)
    if not value:
        raise click.ClickException(f"environment variable {env} is empty or unset")
    return value.encode()


# -- submit -----------------------------------------------------------------------------------


def _trusted_log(client: LedgerClient, name: str, vkey: str | None) -> LogInfo:
    """The log's description, with its key pinned by --vkey when given."""
    info = client.log_info(name)
    if vkey is None:
        click.echo(f"note: trusting the key the server reports for {name}: {info.vkey}", err=True)
        return info
    if vkey != info.vkey:
        raise click.ClickException(f"server reports key {info.vkey} for {name}, not {vkey}")
    return info


@main.command()
@click.option("--ledger", required=True, help="Server URL, e.g. http://127.0.0.1:8080")
@click.option("--log", "log_name", default="evidence", show_default=True)
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--key-name", help="Key name used in the keyid (default: the file stem).")
@click.option("--passphrase-env", help="Environment variable holding the key's passphrase.")
@click.option("--vkey", help="Pin the log's verifier key (default: trust what the server says).")
@click.argument("statement", type=click.File("rb"))
@_diagnosed
def submit(
    ledger: str,
    log_name: str,
    key: Path,
    key_name: str | None,
    passphrase_env: str | None,
    vkey: str | None,
    statement: Any,
) -> None:
    """Sign STATEMENT.json in a DSSE envelope, post it, verify the proof, print the proof."""
    payload = canonicalize(canonical_loads(statement.read()))
    private = load_private_key(key, _passphrase(passphrase_env))
    env = sign_envelope(IN_TOTO_PAYLOAD_TYPE, payload, [(key_name or key.stem, private)])
    with LedgerClient(ledger) as client:
        info = _trusted_log(client, log_name, vkey)
        res = client.submit(log_name, env, verifier_from_vkey(info.vkey), info.origin)
    state = "already present at" if res.duplicate else "included at"
    click.echo(
        f"{state} index {res.index}; proof verified against tree size {res.checkpoint.size}",
        err=True,
    )
    sys.stdout.write(res.tlog_proof)


# -- log --------------------------------------------------------------------------------------


@main.group("log")
def log_group() -> None:
    """Inspect and check a log."""


@log_group.command("verify")
@click.option("--ledger", required=True, help="Server URL, e.g. http://127.0.0.1:8080")
@click.option("--log", "log_name", default="evidence", show_default=True)
@click.option("--vkey", help="Pin the log's verifier key (default: trust what the server says).")
@_diagnosed
def log_verify(ledger: str, log_name: str, vkey: str | None) -> None:
    """Fetch the checkpoint, every tile and entry, and recompute the root."""
    with LedgerClient(ledger) as client:
        info = _trusted_log(client, log_name, vkey)
        cp = client.audit(log_name, verifier_from_vkey(info.vkey), info.origin)
    click.echo(f"ok: {cp.origin} size {cp.size} root {cp.root_hash.hex()} recomputed from tiles")


if __name__ == "__main__":
    main()
