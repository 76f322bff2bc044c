"""How the command-line tools end: bad input as one `error: ...` line and exit 2, Ctrl-C
outside training's own handler as exit 130, anything else a bug with its traceback."""
from __future__ import annotations

import sys
from typing import Callable, NoReturn, Tuple, Type

# What bad input raises in every tool; a tool may add its own (csv.Error, ...).
BAD_INPUT: Tuple[Type[BaseException], ...] = (ValueError, OSError)


def error_exit(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def describe(error: BaseException) -> str:
    """An OSError as `path: reason`, anything else as its message."""
    if isinstance(error, OSError) and getattr(error, "filename", None):
        return f"{error.filename}: {error.strerror}"
    return str(error)


def run_cli(command: Callable[[], None], bad_input=BAD_INPUT) -> None:
    """Run one command: bad input -> error_exit, Ctrl-C -> exit 130 (nothing to save here)."""
    try:
        command()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except bad_input as e:
        error_exit(describe(e))

