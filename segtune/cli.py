"""What every command line shares: one option spelling, one exit status per outcome, one-line user errors.

- Options are spelt as in transformers' scripts, `--output_dir`, `--crop_size`; the `--output-dir`
  spelling is accepted too.
- Exit status 0 on success, 1 for any user error (bad option, recipe, data, checkpoint), printed as one
  `error: ...` line; a bug keeps its traceback.
- Logging goes to stderr as `LEVEL name: message`; the noisy INFO of the libraries stays off.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .errors import is_user_error


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with `--snake_case` options that also answer to `--kebab-case`, and exit status 1 on misuse."""

    def __init__(self, module: str | None = None, description: str | None = None, **kwargs: Any) -> None:
        if module is not None:  # subcommand parsers are made by argparse itself, with their own prog
            kwargs["prog"] = f"python -m {module}"
        super().__init__(description=description, **kwargs)

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        aliases = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        return super().add_argument(*names, *aliases, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"error: {message}\n")


def main(args: argparse.Namespace, command: Callable[[argparse.Namespace], int | None]) -> int:
    """A command line's `main`: logging set up, then `command(args)` under `run`."""
    setup_logging()
    return run(lambda: command(args))


def setup_logging() -> None:
    """segtune's INFO lines on stderr; other libraries' at WARNING."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("segtune").setLevel(logging.INFO)


def run(command: Callable[[], int | None]) -> int:
    """Call `command`; return its exit status, or 1 after printing a user error as one line.

    Any other exception propagates with its traceback.
    """
    try:
        return command() or 0
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
