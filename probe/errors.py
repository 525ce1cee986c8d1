"""One error type for bad user input, and the CLI wrapper that turns it into one line and exit 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., int | None])


class BadInput(ValueError):
    """Bad user input (a path, a name, a value). The message names the value and what is allowed."""


def cli(main: F) -> F:
    """Run ``main``; a :class:`BadInput` becomes ``error: <message>`` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            code = main(*args, **kwargs)
        except BadInput as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        raise SystemExit(code or 0)

    return wrapper  # type: ignore[return-value]
