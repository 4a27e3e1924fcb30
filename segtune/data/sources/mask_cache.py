"""Rasterised masks kept in the datasets cache, keyed by the annotation files' bytes and the settings.

    folder = cached_masks("coco", {"instances.json": path}, {"ignore_index": 255}, rasterize)

The folder is `<HF_DATASETS_CACHE>/segtune_masks/<kind>-<hash>`, the hash of every annotation file (name and
bytes), the settings that change the pixels and RASTER_VERSION. A second run with the same files finds it
complete and rasterises nothing; an edited file (or another ignore index, another class order) gives another
hash, hence fresh masks. `rasterize` writes into a staging folder renamed into place once complete, so an
interrupted run never leaves a half-written folder that a later run would trust; processes of one launch that
race to build it each build their own and all but the first rename discard theirs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import datasets

# Bump when the rasteriser's output changes, so that masks cached by an older segtune are not reused.
RASTER_VERSION = "1"
_COMPLETE = ".complete"


def cache_key(kind: str, files: Mapping[str, Path], settings: Mapping[str, Any]) -> str:
    """The hex digest naming a cache folder: `kind`, RASTER_VERSION, `settings` and each file's name and bytes."""
    digest = hashlib.sha256(json.dumps([kind, RASTER_VERSION, settings], sort_keys=True, default=str).encode())
    for name in sorted(files):
        content = files[name].read_bytes()
        digest.update(f"\0{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:20]


def cached_masks(
    kind: str, files: Mapping[str, Path], settings: Mapping[str, Any], rasterize: Callable[[Path], None]
) -> Path:
    """The folder of masks for these annotation `files`, rasterised by `rasterize(folder)` only when not cached.

    Raises:
        whatever `rasterize` raises (a DatasetError naming the annotation file); nothing is cached then.
    """
    folder = Path(datasets.config.HF_DATASETS_CACHE) / "segtune_masks" / f"{kind}-{cache_key(kind, files, settings)}"
    if (folder / _COMPLETE).is_file():
        return folder
    staging = folder.with_name(f"{folder.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        rasterize(staging)
        (staging / _COMPLETE).write_text(json.dumps({"files": sorted(files), "settings": settings}, default=str))
        if (folder / _COMPLETE).is_file():  # another process of this launch finished first
            shutil.rmtree(staging)
        else:
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete leftover
            _publish(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _publish(staging: Path, folder: Path) -> None:
    """Rename `staging` to `folder`; when another process published it meanwhile, keep theirs."""
    try:
        staging.rename(folder)
    except OSError:
        if not (folder / _COMPLETE).is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)
