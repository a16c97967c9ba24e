"""Options every serving command shares (`bledger serve`, `issuer serve`, `witness serve`):
connection limits and trusted proxies, turned into `ledger.serving.Limits`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def limit_options(fn: F) -> F:
    """Add --trusted-proxy, --header-timeout, --body-timeout, --keep-alive, --max-connections and
    --per-client-connections; the command receives them as one `limits` argument."""
    options = [
        click.option(
            "--trusted-proxy",
            "trusted_proxies",
            multiple=True,
            metavar="CIDR",
            help="A proxy whose X-Forwarded-For is believed (repeatable). Without one, the "
            "client address is the socket's and proxy headers are ignored.",
        ),
        click.option(
            "--header-timeout",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help="Seconds a connection may take to send a request's headers.",
        ),
        click.option(
            "--body-timeout",
            type=click.FloatRange(min=0.1),
            default=60.0,
            show_default=True,
            help="Seconds a request's body may take to arrive after its headers.",
        ),
        click.option(
            "--keep-alive",
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="Seconds an idle kept-alive connection stays open.",
        ),
        click.option(
            "--max-connections",
            type=click.IntRange(min=1),
            default=2048,
            show_default=True,
            help="Open connections in all (per process) before requests get 503.",
        ),
        click.option(
            "--per-client-connections",
            type=click.IntRange(min=1),
            default=64,
            show_default=True,
            help="Open connections per client address (trusted proxies exempt).",
        ),
    ]

    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        trusted_proxies: tuple[str, ...],
        header_timeout: float,
        body_timeout: float,
        keep_alive: int,
        max_connections: int,
        per_client_connections: int,
        **kwargs: Any,
    ) -> Any:
        from ledger.serving import Limits, ServeError

        try:
            limits = Limits(
                header_timeout=header_timeout,
                body_timeout=body_timeout,
                keep_alive=keep_alive,
                max_connections=max_connections,
                per_client=per_client_connections,
                trusted_proxies=trusted_proxies,
            )
        except ServeError as e:
            raise click.BadParameter(e.diagnostic) from e
        return fn(*args, limits=limits, **kwargs)

    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]
