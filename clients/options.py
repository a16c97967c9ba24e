"""Options shared by the commands that post to a ledger (`submit`, `keys certify`, `probe`, `lab`).

Its own module so that command modules import it without importing `clients.cli`, which
imports them to register their commands.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from attest.keys import load_private_key

__all__ = ["LedgerArgs", "Signing", "key_stem", "ledger_options", "passphrase"]


Signing = tuple[str, Ed25519PrivateKey]


@dataclass(frozen=True)
class LedgerArgs:
    """The options every command that posts to a ledger takes."""

    ledger: str
    log_name: str
    key: Path
    key_name: str | None
    passphrase_env: str | None
    vkey: str | None

    def signer(self) -> Signing:
        """The (key name, private key) given by --key / --key-name."""
        return (
            self.key_name or key_stem(self.key),
            load_private_key(self.key, passphrase(self.passphrase_env)),
        )


def ledger_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --ledger/--log/--key/--key-name/--passphrase-env/--vkey, passed as one LedgerArgs."""

    @click.option("--ledger", required=True, help="Server URL, e.g. http://127.0.0.1:8080")
    @click.option("--log", "log_name", default="evidence", show_default=True)
    @click.option(
        "--key",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        required=True,
        help="The signing key (PKCS#8 PEM).",
    )
    @click.option("--key-name", help="Key name used in the keyid (default: the file stem).")
    @click.option("--passphrase-env", help="Environment variable holding the key's passphrase.")
    @click.option(
        "--vkey", help="Pin the log's verifier key (default: trust what the server says)."
    )
    @wraps(fn)
    def wrapper(
        ledger: str,
        log_name: str,
        key: Path,
        key_name: str | None,
        passphrase_env: str | None,
        vkey: str | None,
        **kwargs: Any,
    ) -> Any:
        ctx = LedgerArgs(ledger, log_name, key, key_name, passphrase_env, vkey)
        return fn(ctx, **kwargs)

    return wrapper


def key_stem(path: Path) -> str:
    """A key's default name: its file name without `.pub` / `.pem`."""
    return path.name.removesuffix(".pub").removesuffix(".pem")


def passphrase(env: str | None) -> bytes | None:
    """The key passphrase held in environment variable `env` (None: the key is not encrypted)."""
    if env is None:
        return None
    value = os.environ.get(env)
    if not value:
        raise click.ClickException(f"environment variable {env} is empty or unset")
    return value.encode()
