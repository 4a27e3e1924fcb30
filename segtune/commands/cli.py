"""What every command shares: one option spelling, one exit status per outcome, one-line user errors, quiet libraries.

- Options are spelt as in transformers' scripts, `--output_dir`, `--crop_size`; the `--output-dir`
  spelling is accepted too.
- Exit status 0 on success, 1 for any user error (bad option, recipe, data, checkpoint), printed as one
  `error: ...` line; a bug keeps its traceback.
- Logging goes to stderr as `LEVEL name: message`, each record once (a library that prints through a handler of
  its own, as huggingface_hub and datasets do, keeps its format); the noisy INFO of the libraries stays off.
- transformers' progress bars for loading and saving weights stay off; segtune's training bar stays on.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..errors import is_user_error


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with `--snake_case` options that also answer to `--kebab-case`, and exit status 1 on misuse.

    Descriptions and epilogs are printed as written (examples keep their lines). Subcommand parsers
    (`add_subparsers().add_parser`) are of this class too.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        aliases = [name.replace("_", "-") for name in names if name.startswith("--") and "_" in name]
        return super().add_argument(*names, *aliases, **kwargs)

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Refuse unknown arguments here, so a subcommand names itself in the usage line (argparse would
        hand them up to the top parser, which would print `usage: segtune COMMAND ...`)."""
        namespace, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        return namespace, unknown

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"error: {message}\n")


def add_recipe_overrides(parser: argparse.ArgumentParser, listed_by: str = "segtune recipe show RECIPE") -> None:
    """The `--set KEY=VALUE ...` option every command that reads a recipe takes; its help names the
    command `listed_by` that lists the keys."""
    where = f"; every key, with its value and default: `{listed_by}`" if listed_by else ""
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"dotted recipe overrides, e.g. train.max_steps=100 optim.lr=1e-4{where} (default: none)",
    )


def main(args: argparse.Namespace, command: Callable[[argparse.Namespace], int | None]) -> int:
    """A command's `main`: logging set up, then `command(args)` under `run`."""
    setup_logging()
    return run(lambda: command(args))


def setup_logging() -> None:
    """segtune's INFO lines on stderr; other libraries' at WARNING; each record printed once."""
    handler = logging.StreamHandler()
    handler.addFilter(_not_printed_by_its_library)
    # A no-op where the root logger already has a handler (a notebook, pytest): theirs are left alone.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING, handlers=[handler])
    logging.getLogger("segtune").setLevel(logging.INFO)


def _not_printed_by_its_library(record: logging.LogRecord) -> bool:
    """False for a record that a handler below the root has already printed.

    huggingface_hub and datasets give their top logger a stderr handler of their own when imported, and
    still let records propagate to the root (transformers too, when `CI` is set): without this, each of
    their warnings (e.g. every Hub retry while offline) would print twice, once by each handler.
    """
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None and logger is not logging.root:
        if logger.handlers:
            return False
        logger = logger.parent
    return True


def quiet_transformers() -> None:
    """Turn off transformers' progress bars ("Loading weights", "Writing model shards"), on every load and save.

    transformers' switch also turns off huggingface_hub's download and upload bars, which tell a user
    waiting for `nvidia/mit-b5` something: those are turned back on, unless they were off already
    (HF_HUB_DISABLE_PROGRESS_BARS=1). segtune's training bar is a plain tqdm bar, which neither switch touches.
    """
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    hub_bars_off = are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()
    if not hub_bars_off:
        enable_progress_bars()


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
