"""Lazy package exports (PEP 562): a package names its public objects, each imported on first use.

`segtune train --recipe x.yaml` validates the recipe before torch is loaded, and
`import segtune.recipe` must stay light, but every import of a submodule runs its package's
`__init__` first. So the package `__init__`s list their exports here instead of importing them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, where `exports` maps each public name to the module
    (relative to the package, e.g. ".build") that defines it.

    Returns:
        The two module-level functions; the package assigns them to `__getattr__` and `__dir__`.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
