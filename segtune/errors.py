"""One exception type per kind of user mistake. Each message names the file or key, what was
expected and what was found."""

from .models.mix_transformer import CheckpointError, MixTransformerConfigError


class SegtuneError(Exception):
    """Base of segtune's own user-facing errors."""


class RecipeError(SegtuneError, ValueError):
    """A recipe file, key or value that cannot run."""


class DatasetError(SegtuneError, ValueError):
    """A dataset, file, column or sample that does not meet the label contract."""


class TrainingError(SegtuneError, RuntimeError):
    """A run that cannot start or continue: output directory, resume, non-finite loss."""


class HubError(SegtuneError, RuntimeError):
    """A push or pull that failed: login, repo, missing file."""


# Everything a command line reports as "error: ..." and exit status 1, rather than a traceback. The two
# model errors live with the model code, which must import without segtune (Hub remote code).
USER_ERRORS = (SegtuneError, CheckpointError, MixTransformerConfigError)

__all__ = [
    "USER_ERRORS",
    "CheckpointError",
    "DatasetError",
    "HubError",
    "MixTransformerConfigError",
    "RecipeError",
    "SegtuneError",
    "TrainingError",
]
