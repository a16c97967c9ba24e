"""`bledger issuer`: run a Privacy Pass token issuer for the anonymous tier.

Also runnable on its own: `python -m clients.issuer_cmd serve --data DIR ...`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from clients.serve_options import limit_options

if TYPE_CHECKING:
    from ledger.serving import Limits


@click.group()
def issuer() -> None:
    """Issue anonymous Privacy Pass tokens (RFC 9578, blind RSA) that the anonymous log accepts."""


@issuer.command()
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Data directory.")
@click.option("--ledger", help="The ledger's URL (first run; later runs read it from DATA).")
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The issuer's Ed25519 key, certified in the ledger with --role issuer (first run).",
)
@click.option("--key-name", help="The issuer key's name (default: the key file's stem).")
@click.option("--passphrase-env", help="Environment variable holding the key's passphrase.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--rate", help="Tokens per client address and hour, e.g. 10/hour (default 10).")
@click.option("--key-lifetime", type=int, help="Seconds a token key is valid (default 30 days).")
@click.option(
    "--key-overlap",
    type=int,
    help="Seconds before a key expires that its successor is published (default 7 days).",
)
@click.option(
    "--check-interval", type=float, help="Seconds between key lifecycle runs (default 60)."
)
@limit_options
def serve(
    data: Path,
    ledger: str | None,
    key: Path | None,
    key_name: str | None,
    passphrase_env: str | None,
    host: str,
    port: int,
    rate: str | None,
    key_lifetime: int | None,
    key_overlap: int | None,
    check_interval: float | None,
    limits: Limits,
) -> None:
    """Serve the issuer directory and POST /token-request; publish token keys to the ledger.

    Before serving, a current token key is ensured and published to the ledger's evidence log
    (signed by --key); the command fails if the ledger refuses it. Client addresses are used for
    rate limiting in memory only: no access log is written. The client address is the
    socket's, unless the peer is a --trusted-proxy: then its X-Forwarded-For is believed.
    """
    # Imported here: the issuer is a FastAPI service, and every other `bledger` command would
    # otherwise pay for importing it.
    from ledger.issuer import (
        IssuerError,
        create_issuer_app,
        init_issuer_dir,
        open_issuer,
        parse_rate,
    )
    from ledger.serving import ServeError, bind
    from ledger.serving import serve as serve_app

    try:
        sock = bind(host, port)  # before anything is published: a taken port fails first
    except ServeError as e:
        raise click.ClickException(e.diagnostic) from e
    _log_key_events()
    passphrase = None
    if passphrase_env is not None:
        value = os.environ.get(passphrase_env)
        if not value:
            raise click.ClickException(f"environment variable {passphrase_env} is empty or unset")
        passphrase = value.encode()
    try:
        cfg = init_issuer_dir(
            data,
            ledger=ledger,
            key=key,
            key_name=key_name,
            rate_per_hour=parse_rate(rate) if rate is not None else None,
            lifetime_s=key_lifetime,
            overlap_s=key_overlap,
            check_interval_s=check_interval,
        )
        iss = open_issuer(cfg, passphrase=passphrase)
        iss.rotate()  # publish a current key before accepting requests
    except IssuerError as e:
        raise click.ClickException(e.diagnostic) from e
    click.echo(f"issuer {cfg.key_name} for ledger {cfg.ledger}")
    for record, _ in iss.served():
        click.echo(f"  token key {record.token_key_id} valid until {record.not_after}")
    click.echo(f"serving on http://{host}:{port}", err=True)
    # No access log (ledger.serving): the issuer must not record who asked for tokens.
    serve_app(create_issuer_app(iss, rotate_on_start=False), sock, limits)


def _log_key_events() -> None:
    """Print the issuer's own key events (publish, retire) on stderr; nothing else is logged.

    Only the `bledger.issuer` logger gets a handler: the HTTP client's request log and the
    server's access log stay off.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("issuer: %(message)s"))
    log = logging.getLogger("bledger.issuer")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


if __name__ == "__main__":
    issuer()
