"""`bledger import inspect LOG`: an Inspect AI eval log's samples as signed, logged records.

See `clients.inspect_import` for what is recorded and the all-or-nothing, resumable import.
Prints one JSON object: the log file's SHA-256, task, model and each sample's log index.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

from attest.dsse import Envelope
from attest.predicates import CheckpointRef
from clients.errors import diagnosed
from clients.options import LedgerArgs, ledger_options
from clients.sdk import ClientError, LedgerClient, verifier_from_vkey

__all__ = ["import_group"]


def _default_data_dir() -> Path:
    """The probe data directory (`clients.probe.worker.data_dir`), found without importing
    the worker, which imports torch."""
    if env := os.environ.get("BLEDGER_PROBE_DATA"):
        return Path(env)
    cache = os.environ.get("BEHAVIOUR_LEDGER_CACHE")
    return (Path(cache) if cache else Path.home() / ".cache" / "behaviour-ledger") / "probe"


@click.group("import")
def import_group() -> None:
    """Import the evaluation logs of other tools as signed records."""


@import_group.command("inspect")
@click.argument("log_file", metavar="LOG", type=click.Path(dir_okay=False, path_type=Path))
@ledger_options
@click.option("--model", help="Model name for the records (default: the one the log names).")
@click.option("--version", default="v1", show_default=True, help="Version label of the model.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the signed envelopes wait until logged (default: the probe data directory).",
)
@diagnosed
def inspect_cmd(
    args: LedgerArgs,
    log_file: Path,
    model: str | None,
    version: str,
    data_dir: Path | None,
) -> None:
    """Turn each sample of the Inspect .eval LOG into a signed record in the evidence log."""
    from clients.inspect_import import import_log

    data_dir = data_dir or _default_data_dir()
    signer = args.signer()
    with LedgerClient(args.ledger) as client:
        info = client.log_info(args.log_name)
        if args.vkey is not None and args.vkey != info.vkey:
            raise ClientError(f"server reports key {info.vkey} for {args.log_name}, not pinned")
        verifier = verifier_from_vkey(info.vkey)

        def seen() -> CheckpointRef:
            cp, _ = client.checkpoint(args.log_name, verifier, info.origin)
            return CheckpointRef(origin=cp.origin, size=cp.size, root=cp.root_hash.hex())

        def submit(env: Envelope) -> int:
            return client.submit(args.log_name, env, verifier, info.origin).index

        res = import_log(
            log_file,
            [signer],
            state_dir=data_dir / "imports",
            seen=seen,
            submit=submit,
            clock=time.time,
            model=model,
            version=version,
        )
    click.echo(
        f"{log_file}: {len(res.samples)} samples of {res.task} ({res.model})"
        f"{' (resumed)' if res.resumed else ''}",
        err=True,
    )
    click.echo(
        json.dumps(
            {
                "logSha256": res.log_sha256,
                "task": res.task,
                "model": res.model,
                "samples": [{"id": sid, "epoch": ep, "index": ix} for sid, ep, ix in res.samples],
            },
            indent=1,
        )
    )
