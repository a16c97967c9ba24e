"""`bledger`: the command line. Errors print their `diagnostic` and exit non-zero."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import httpx

from attest.checkpoint import Checkpoint
from attest.jcs import canonical_loads
from attest.keychain import ROLES
from attest.keys import (
    dsse_keyid,
    generate_private_key,
    load_private_key,
    load_public_key,
    public_key_bytes,
    verifier_key,
    write_key_pair,
)
from attest.note import SIG_TYPE_COSIGNATURE_V1, format_vkey
from attest.predicates import KEY_EVENT
from attest.statement import predicate_model, sign_statement
from clients.errors import diagnosed as _diagnosed
from clients.options import LedgerArgs, Signing, key_stem, ledger_options, passphrase
from clients.sdk import LedgerClient, LogInfo, VerificationError, verifier_from_vkey
from clients.serve_options import limit_options

if TYPE_CHECKING:
    from ledger.serving import Limits

F = TypeVar("F", bound=Callable[..., Any])


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
    "--allow-lab",
    "allow_labs",
    multiple=True,
    help="Register a lab key (verifier key or .pub PEM), signed by the operator (repeatable).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Frontend processes that accept, admit and answer writes; this process sequences "
    "what they admit.",
)
@click.option(
    "--anonymous-interval-ms",
    type=int,
    help="Time between the anonymous log's batches (default from the config: 60 s).",
)
@click.option(
    "--allow-key",
    "allow_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A .pub PEM whose signatures the evidence log admits (repeatable).",
)
@click.option(
    "--tiles",
    default="db",
    show_default=True,
    metavar="STORE",
    help="Also publish tiles, entry bundles and checkpoints as static objects: dir:PATH, or "
    "s3://BUCKET[/PREFIX]?endpoint=URL (AWS credentials from the environment). 'db': the "
    "server alone serves them.",
)
@click.option(
    "--admission-workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Processes that parse and verify posted envelopes (signatures on every core); 0: "
    "the serving process does it.",
)
@limit_options
@_diagnosed
def serve(
    data: Path,
    db: str | None,
    host: str,
    port: int,
    origin_prefix: str | None,
    allow_labs: tuple[str, ...],
    workers: int,
    anonymous_interval_ms: int | None,
    allow_keys: tuple[Path, ...],
    tiles: str,
    admission_workers: int,
    limits: Limits,
) -> None:
    """Run a ledger server; creates DATA (config, log keys, SQLite database) on first run.

    With --tiles, every batch is also published as static objects (tiles, entry bundles, then
    the checkpoint) to a directory or an S3 bucket, which verifiers read instead of this server.

    The port is bound before anything else: a port held by another process is an error
    (exit status 1), never a "serving on" followed by a crash.
    """
    from clients.web import create_app  # the API of ledger.api plus the web page at /ui/
    from ledger.config import init_data_dir
    from ledger.server import LedgerServer
    from ledger.serving import bind
    from ledger.serving import serve as serve_app

    sock = bind(host, port)
    cfg = init_data_dir(data, origin_prefix=origin_prefix or f"{host}:{port}/logs", db=db)
    server = LedgerServer.from_config(
        cfg,
        extra_allow_keys=allow_keys,
        extra_allow_labs=allow_labs,
        anonymous_interval_ms=anonymous_interval_ms,
        tiles=tiles,
    )
    for problem in server.catch_up_tiles():
        click.echo(f"warning: tile store: {problem} (writes answer 503 until it does)", err=True)
    for h in server.logs.values():
        click.echo(f"log {h.name} ({h.partition}) origin {h.origin}\n  vkey {h.vkey}")
        click.echo(f"  operator {h.operator_vkey}")
        if h.publisher is not None:
            click.echo(f"  tiles {h.publisher.tiles.url}/{h.publisher.prefix}")
    click.echo(f"serving on http://{host}:{port}  (API docs at /docs)", err=True)
    # No access log (ledger.serving): the anonymous log must not record who wrote.
    if workers == 1:
        if admission_workers:
            from ledger.admitters import PoolOptions

            opts = PoolOptions(str(data), tuple(str(p) for p in allow_keys))
            server.start_admission_workers(opts, admission_workers)
        serve_app(create_app(server), sock, limits)
        return
    if admission_workers:
        raise click.UsageError("--admission-workers needs --workers 1 (each is a process)")
    from ledger.asgi import ENV
    from ledger.forwarding import SequencerService, private_socket_path

    # The workers are frontends: they admit, and this process sequences (ledger.forwarding).
    service = SequencerService(server, private_socket_path())
    service.start()
    os.environ[ENV] = json.dumps(
        {
            "data": str(data),
            "allow_keys": [str(p) for p in allow_keys],
            "anonymous_interval_ms": anonymous_interval_ms,
            "tiles": tiles,
            "sequencer": service.path,
        }
    )
    try:
        serve_app("clients.web:asgi_app", sock, limits, workers=workers, factory=True)
    finally:
        service.stop()


# -- keys -------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Manage Ed25519 signing keys and their key events in a ledger."""


@keys.command("new")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Private key file.")
@click.option("--name", help="Key name used in key ids (default: the file stem).")
@click.option(
    "--passphrase-env", help="Encrypt the key with the passphrase in this environment variable."
)
@_diagnosed
def keys_new(out: Path, name: str | None, passphrase_env: str | None) -> None:
    """Write a new key pair: OUT (PKCS#8 PEM) and OUT.pub."""
    key = generate_private_key()
    pub = write_key_pair(out, key, passphrase(passphrase_env))
    click.echo(f"wrote {out} and {pub}")
    click.echo(f"vkey {verifier_key(name or key_stem(out), key.public_key())}")


@keys.command("show")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Key name (default: the file stem).")
@click.option("--role", type=click.Choice(ROLES), default="lab", show_default=True)
@_diagnosed
def keys_show(path: Path, name: str | None, role: str) -> None:
    """Print a key's name, DSSE keyid and C2SP verifier key (from the .pem or .pub file)."""
    pub = (
        load_public_key(path) if path.name.endswith(".pub") else load_private_key(path).public_key()
    )
    key_name = name or key_stem(path)
    click.echo(f"name  {key_name}")
    click.echo(f"keyid {dsse_keyid(key_name, pub)}")
    click.echo(f"vkey  {_role_vkey(key_name, pub, role)}")


@keys.command("certify")
@ledger_options
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option(
    "--subject",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The private key being registered: it co-signs (proof of possession).",
)
@click.option("--subject-name", help="Its key name (default: the file stem).")
@_diagnosed
def keys_certify(ctx: LedgerArgs, role: str, subject: Path, subject_name: str | None) -> None:
    """Register SUBJECT as a ROLE key, certified by --key (a lab key, or the operator's)."""
    sub_key = load_private_key(subject)
    sub_name = subject_name or key_stem(subject)
    vkey = _role_vkey(sub_name, sub_key.public_key(), role)
    signers = [ctx.signer()]
    if role != "lab":
        signers.append((sub_name, sub_key))
    _post_key_event(ctx, {"action": "register", "role": role, "key": vkey}, signers)


@keys.command("rotate")
@ledger_options
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option(
    "--new-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--new-name", help="The new key's name (default: its file stem).")
@_diagnosed
def keys_rotate(ctx: LedgerArgs, role: str, new_key: Path, new_name: str | None) -> None:
    """Rotate --key to NEW_KEY; both sign (a rotation signed by one key is refused)."""
    old_name, old = ctx.signer()
    new = load_private_key(new_key)
    name = new_name or key_stem(new_key)
    event = {
        "action": "rotate",
        "role": role,
        "key": _role_vkey(name, new.public_key(), role),
        "previousKey": _role_vkey(old_name, old.public_key(), role),
    }
    _post_key_event(ctx, event, [(old_name, old), (name, new)])


@keys.command("revoke")
@ledger_options
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--revoke", "target", required=True, help="Verifier key of the key to revoke.")
@_diagnosed
def keys_revoke(ctx: LedgerArgs, role: str, target: str) -> None:
    """Revoke a key from the next log index on (signed by --key: the key, its lab, or a root)."""
    _post_key_event(ctx, {"action": "revoke", "role": role, "key": target}, [ctx.signer()])


def _role_vkey(name: str, pub: Any, role: str) -> str:
    """Witness keys are cosignature (0x04) verifier keys; all others Ed25519 (0x01)."""
    if role == "witness":
        return format_vkey(name, SIG_TYPE_COSIGNATURE_V1, public_key_bytes(pub))
    return verifier_key(name, pub)


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


def _post(
    ctx: LedgerArgs, predicate_type: str, predicate: dict[str, Any], signers: list[Signing]
) -> None:
    """Fill in the anti-backdating fields, show the statement, sign it, post it, verify it."""
    with LedgerClient(ctx.ledger) as client:
        info = _trusted_log(client, ctx.log_name, ctx.vkey)
        verifier = verifier_from_vkey(info.vkey)
        cp, _ = client.checkpoint(ctx.log_name, verifier, info.origin)
        predicate.setdefault(
            "seenCheckpoint", {"origin": cp.origin, "size": cp.size, "root": cp.root_hash.hex()}
        )
        predicate.setdefault("issuedAt", int(time.time()))
        model = predicate_model(predicate_type, predicate)
        env = sign_statement(model, signers)
        click.echo(f"signing as {', '.join(n for n, _ in signers)}:", err=True)
        click.echo(env.payload.decode(), err=True)
        res = client.submit(ctx.log_name, env, verifier, info.origin)
    state = "already present at" if res.duplicate else "included at"
    click.echo(
        f"{state} index {res.index}; proof verified against tree size {res.checkpoint.size}",
        err=True,
    )
    sys.stdout.write(res.tlog_proof)


def _post_key_event(ctx: LedgerArgs, event: dict[str, Any], signers: list[Signing]) -> None:
    _post(ctx, KEY_EVENT, event, signers)


@main.command()
@ledger_options
@click.argument("statement", type=click.File("rb"))
@_diagnosed
def submit(ctx: LedgerArgs, statement: Any) -> None:
    """Sign STATEMENT.json in a DSSE envelope, post it, verify the proof, print the proof.

    STATEMENT.json holds `predicateType` and `predicate` (an in-toto Statement, or just those
    two fields): the subject is derived from the predicate, and `seenCheckpoint` and `issuedAt`
    are filled in from the log's latest verified checkpoint and the clock when absent.
    """
    obj = canonical_loads(statement.read())
    predicate = obj.get("predicate") if isinstance(obj, dict) else None
    if not isinstance(obj, dict) or not isinstance(predicate, dict):
        raise click.ClickException("STATEMENT must be a JSON object with a 'predicate' object")
    _post(ctx, str(obj.get("predicateType")), dict(predicate), [ctx.signer()])


# -- log --------------------------------------------------------------------------------------


@main.group("log")
def log_group() -> None:
    """Inspect and check a log."""


@log_group.command("verify")
@click.option("--ledger", help="Server URL, e.g. http://127.0.0.1:8080")
@click.option("--log", "log_name", default="evidence", show_default=True)
@click.option("--vkey", help="Pin the log's verifier key (default: trust what the server says).")
@click.option(
    "--tiles",
    "tiles_url",
    help="Read the checkpoint, tiles and bundles from this static URL (where `serve --tiles` "
    "publishes, e.g. a bucket or CDN) instead of the server; with --vkey, no server is needed.",
)
@_diagnosed
def log_verify(ledger: str | None, log_name: str, vkey: str | None, tiles_url: str | None) -> None:
    """Fetch the checkpoint, every tile and entry, and recompute the root."""
    if ledger is None and not (tiles_url and vkey):
        raise click.UsageError("give --ledger, or --tiles with --vkey")
    with LedgerClient(ledger or "http://127.0.0.1:9", tiles_url=tiles_url) as client:
        if ledger is None:
            verifier = verifier_from_vkey(str(vkey))
            origin = verifier.name  # a log's key is named after its origin
        else:
            info = _trusted_log(client, log_name, vkey)
            verifier, origin = verifier_from_vkey(info.vkey), info.origin
        cp = _audit_with_progress(client, log_name, verifier, origin)
    where = f" at {tiles_url}" if tiles_url else ""
    click.echo(
        f"ok: {cp.origin} size {cp.size} root {cp.root_hash.hex()} recomputed from tiles{where}"
    )


def _audit_with_progress(client: LedgerClient, name: str, verifier: Any, origin: str) -> Checkpoint:
    """`LedgerClient.audit` with a bar on stderr that advances per tile and entry bundle."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    from attest.audit import AuditError, audit_tree
    from attest.tiles import TileId, tiles_for_size

    cp, _ = client.checkpoint(name, verifier, origin)
    tiles = list(tiles_for_size(cp.size))
    total = len(tiles) + sum(1 for t, _ in tiles if t.level == 0)  # hash tiles + bundles
    with tqdm(total=total, unit="tile", desc=f"{name}: {cp.size} entries", file=sys.stderr) as bar:

        def tile(t: TileId, width: int) -> bytes:
            data = client.tile(name, t, width)
            bar.update()
            return data

        def bundle(index: int, width: int) -> list[bytes]:
            entries = client.bundle(name, index, width)
            bar.update()
            return entries

        try:
            audit_tree(cp.size, cp.root_hash, tile, bundle)
        except AuditError as e:
            raise VerificationError(f"log {name} at size {cp.size}: {e.diagnostic}") from e
    return cp


class NotReadyError(click.ClickException):
    """`bledger wait`: the server did not answer in time (or is not a ledger)."""


@main.command("wait")
@click.argument("url")
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait before giving up.",
)
@_diagnosed
def wait(url: str, timeout: float) -> None:
    """Wait until the ledger at URL answers GET URL/logs (polling, bounded by --timeout)."""
    target = url.rstrip("/") + "/logs"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            resp = httpx.get(target, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            if resp.status_code == 200 and isinstance(resp.json(), list):
                click.echo(f"ready: {target}", err=True)
                return
            last = f"HTTP {resp.status_code}"
        except (httpx.HTTPError, ValueError) as e:
            last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if time.monotonic() >= deadline:
            raise NotReadyError(f"no ledger answered GET {target} within {timeout:g} s ({last})")
        time.sleep(0.2)


def _register_subcommands() -> None:
    """Commands that live in their own modules (imported here so `bledger --help` lists them)."""
    from clients.demo import demo
    from clients.emotions_cmd import emotions
    from clients.history_cmd import history
    from clients.inspect_cmd import import_group
    from clients.issuer_cmd import issuer
    from clients.judge_cmd import judge
    from clients.lab_cmd import lab
    from clients.model_cmd import model
    from clients.probe_cmd import probe
    from clients.report_cmd import report
    from clients.verify_cmd import verify, verify_evidence
    from clients.witness_cmd import witness

    commands = (
        *(witness, verify, verify_evidence, issuer, report, judge, emotions, probe),
        *(demo, history, lab, model, import_group),
    )
    for command in commands:
        main.add_command(command)


_register_subcommands()

if __name__ == "__main__":
    main()
