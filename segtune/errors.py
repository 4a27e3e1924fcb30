"""One exception type per kind of user mistake, and the test that tells a user's mistake from a bug.

Each message names the file or key, what was expected and what was found. This module imports nothing
heavy: the recipe layer and every command line read it before torch is loaded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


class SegtuneError(Exception):
    """Base of segtune's own user-facing errors."""


class RecipeError(SegtuneError, ValueError):
    """A recipe file, key or value that cannot run."""


class DatasetError(SegtuneError, ValueError):
    """A dataset, file, column or sample that does not meet the label contract."""


class TrainingError(SegtuneError, RuntimeError):
    """A run that cannot start or continue: output directory, resume, non-finite loss, interruption."""


class HubError(SegtuneError, RuntimeError):
    """A push or pull that failed: login, repo, missing file."""


class ExportError(SegtuneError, RuntimeError):
    """An ONNX export that cannot be made or fails its own check, or the ONNX packages missing (`segtune[onnx]`)."""


# How many problems or values a message lists before "... and N more".
MAX_LISTED = 10


def listing(items: Sequence[Any], inline: bool = False) -> str:
    """Up to MAX_LISTED `items`, then how many more there are: one per line, each on a new line indented by
    two spaces (for a message's tail), or `inline` as a list ("[3, 7] (and 2 more)")."""
    shown, rest = list(items[:MAX_LISTED]), len(items) - MAX_LISTED
    if inline:
        return f"{shown}" + (f" (and {rest} more)" if rest > 0 else "")
    return "".join(f"\n  {item}" for item in shown) + (f"\n  ... and {rest} more" if rest > 0 else "")


def joined(items: Sequence[Any], total: int | None = None, most: int = MAX_LISTED) -> str:
    """Up to `most` items joined by commas, then how many more of `total` (default: all the items) there are,
    for a sentence: "a.png, b.png and 4 more"."""
    shown = [str(item) for item in items[:most]]
    rest = (len(items) if total is None else total) - len(shown)
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")


# The model package defines its own two errors, because it must import without segtune (Hub remote code).
_MODEL_PACKAGE = "segtune.models.mix_transformer"
_MODEL_ERRORS = ("CheckpointError", "MixTransformerConfigError")


def is_user_error(error: BaseException) -> bool:
    """True for a mistake the user can fix from its one-line message (a command prints "error: ..." and
    exits 1); False for a bug, which must keep its traceback.

    The model errors are looked up only if the model package was imported: if it was not, nothing can
    have raised them, and this module stays free of torch.
    """
    if isinstance(error, SegtuneError):
        return True
    models = sys.modules.get(_MODEL_PACKAGE)
    return models is not None and isinstance(error, tuple(getattr(models, name) for name in _MODEL_ERRORS))


__all__ = [
    "MAX_LISTED",
    "DatasetError",
    "ExportError",
    "HubError",
    "RecipeError",
    "SegtuneError",
    "TrainingError",
    "is_user_error",
    "listing",
]
