"""The options and client of commands that read a log verified under a trust policy."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from attest.policy import Policy
from clients.history import policy_for
from clients.sdk import ClientError, LedgerClient, VerificationError, verifier_from_vkey

F = TypeVar("F", bound=Callable[..., Any])


def trust_options(fn: F) -> F:
    """--ledger, --log, --policy, --vkey, --witness-url (passed as ledger, log_name,
    policy_file, vkey, witness_urls)."""
    options = (
        click.option("--ledger", required=True, help="Server URL, e.g. http://127.0.0.1:8080"),
        click.option("--log", "log_name", default="evidence", show_default=True),
        click.option(
            "--policy",
            "policy_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="C2SP tlog-policy file: the log key, witnesses and quorum to require.",
        ),
        click.option("--vkey", help="Pin the log's verifier key (no witnesses required)."),
        click.option(
            "--witness-url",
            "witness_urls",
            multiple=True,
            help="Where to collect cosignatures (an audit node's URL); default: the policy's.",
        ),
    )
    for option in reversed(options):
        fn = option(fn)
    return fn


@contextmanager
def trusted_client(
    ledger: str,
    log_name: str,
    policy_file: Path | None,
    vkey: str | None,
    witness_urls: Sequence[str],
) -> Iterator[tuple[LedgerClient, Policy]]:
    """A client of `ledger` that gathers cosignatures from `witness_urls` (default: the URLs of
    the policy's witnesses), and the policy (`clients.history.policy_for`) its reads must meet."""
    if policy_file is not None and vkey is not None:
        raise click.UsageError("give --policy or --vkey, not both")
    with LedgerClient(ledger) as bare:
        if vkey is not None:
            check_pinned_key(bare, ledger, log_name, vkey)
        policy = policy_for(bare, log_name, policy_file, vkey)
    urls = tuple(witness_urls) or tuple(w.url for w in policy.witnesses.values() if w.url)
    with LedgerClient(ledger, witness_urls=urls) as client:
        yield client, policy


def check_pinned_key(client: LedgerClient, ledger: str, log_name: str, vkey: str) -> None:
    """Raise `ClientError` unless `vkey` verifies the signature on the log's latest checkpoint,
    with a message about the key the user pinned (not about a policy they never wrote)."""
    verifier = verifier_from_vkey(vkey)
    info = client.log_info(log_name)
    try:
        client.checkpoint(log_name, verifier, info.origin)
    except VerificationError as e:
        raise ClientError(
            f"the key given with --vkey ({verifier.name}+{verifier.key_id.hex()}) does not "
            f"match the signature of log {log_name} at {ledger} "
            f"(origin {info.origin}, signed by {_key_label(info.vkey)}): {e.diagnostic}"
        ) from e


def _key_label(vkey: str) -> str:
    """NAME+KEYID of a verifier key (its public key left out), for messages."""
    return "+".join(vkey.split("+")[:2])
