"""`bledger witness`: run a C2SP tlog-witness over a data directory.

Also runnable on its own: `python -m clients.witness_cmd serve --data DIR ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from clients.serve_options import limit_options
from verifier.errors import VerifierError

if TYPE_CHECKING:
    from ledger.serving import Limits


@click.group()
def witness() -> None:
    """Run a transparency-log witness that cosigns consistent checkpoints."""


@witness.command()
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Data directory.")
@click.option(
    "--log",
    "logs",
    multiple=True,
    help="Follow the log with this verifier key; its key name is the origin (repeatable).",
)
@click.option("--name", help="First run only: the witness's key name (default HOST:PORT/witness).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=int)
@limit_options
def serve(
    data: Path, logs: tuple[str, ...], name: str | None, host: str, port: int, limits: Limits
) -> None:
    """Serve POST /add-checkpoint; creates DATA (key, config, database, witness.vkey) first run."""
    from ledger.serving import ServeError, bind
    from ledger.serving import serve as serve_app
    from verifier.witness import create_witness_app, init_witness_dir, open_witness

    default_name = f"{host}:{port}/witness"
    try:
        sock = bind(host, port)
    except ServeError as e:
        raise click.ClickException(e.diagnostic) from e
    try:
        cfg = init_witness_dir(data, name=name, add_logs=logs, default_name=default_name)
        w = open_witness(cfg)
    except VerifierError as e:
        raise click.ClickException(e.diagnostic) from e
    click.echo(f"witness {w.name}\n  vkey {w.vkey}")
    for origin in w.logs:
        click.echo(f"  follows {origin}")
    if not w.logs:
        click.echo("  follows no log yet: add one with --log VKEY", err=True)
    click.echo(f"serving on http://{host}:{port}", err=True)
    serve_app(create_witness_app(w), sock, limits)


if __name__ == "__main__":
    witness()
