"""How commands report errors: every project error carries a printable `diagnostic`."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def diagnosed(fn: F) -> F:
    """Turn any project error (they all carry `diagnostic`) into a one-line click error."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as e:
            diagnostic = getattr(e, "diagnostic", None)
            if diagnostic is None:
                raise
            raise click.ClickException(str(diagnostic)) from e

    return wrapper  # type: ignore[return-value]
