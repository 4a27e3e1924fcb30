"""A split's pixels per class, for `loss.class_weights: auto`, and each sample's class set, for the split that
`data.val_ratio` holds out (`held_out.py`): counted once per data fingerprint, sample by sample as the data check
counts them (`preflight.scan`, `LabelSpec.class_counts`), and cached.

    counts = class_pixels(data.train.rows, data.labels, "train", skip_invalid=False)
    counts.pixels          # (num_labels,) pixels of each class
    counts.image_pixels    # (num_labels,) labelled pixels of the images each class appears in
    counts.present         # (samples, num_labels) bool: the classes each sample holds (its class set)

The cache is one small JSON file per fingerprint in the `datasets` cache (`HF_DATASETS_CACHE/segtune_class_pixels/`),
beside the Arrow files the sources write there. The fingerprint hashes what the counts depend on: each mask as
stored (its bytes, or, for a file, its path, size and modification time) and the label contract's mapping of raw
values (the LabelSpec lookup table and class count). Another split or subset (`data.max_train_samples`), another
mapping or an edited mask has another fingerprint; runs that differ only in training settings or output
directory share one count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from ..errors import DatasetError, listing
from .labels import LabelSpec
from .preflight import scan
from .sources.base import LABEL, undecoded  # not the registry: load_source reaches this module (held_out.py)

logger = logging.getLogger(__name__)

CACHE_FOLDER = "segtune_class_pixels"
# Part of the fingerprint: bump it when what is counted changes, so that no older count is served.
_VERSION = 2


@dataclass(frozen=True)
class ClassPixels:
    """Pixel counts of one split.

    Attributes:
        pixels: (num_labels,) pixels of each class (ignored pixels are not counted).
        image_pixels: (num_labels,) for each class, the labelled pixels of the images it appears in.
        present: (rows, num_labels) bool, one row per sample in order: the classes it holds (none for a sample
            left out as invalid).
        samples: the samples counted.
        cache: the cache file the counts were read from or written to.
        from_cache: True when read from the cache, False when counted by this call.
    """

    pixels: np.ndarray
    image_pixels: np.ndarray
    present: np.ndarray
    samples: int
    cache: Path
    from_cache: bool


def class_pixels(
    rows: datasets.Dataset, labels: LabelSpec, split: str, skip_invalid: bool, purpose: str = "loss.class_weights=auto"
) -> ClassPixels:
    """The pixel counts of `rows` (a split's samples as stored), from the cache when it holds this fingerprint.

    `purpose` (the recipe key that asked) opens the error message.

    Raises:
        DatasetError: masks that cannot be read or hold values without a class, listed one per line (unless
            `skip_invalid`: such samples are left out, as training skips them).
    """
    path = Path(datasets.config.HF_DATASETS_CACHE) / CACHE_FOLDER / f"{fingerprint(rows, labels)}.json"
    cached = _read(path, labels.num_labels, len(rows))
    if cached is not None:
        return cached
    pixels = np.zeros(labels.num_labels, dtype=np.int64)
    image_pixels = np.zeros(labels.num_labels, dtype=np.int64)
    present = np.zeros((len(rows), labels.num_labels), dtype=bool)
    problems, samples = [], 0
    for index, (counts, problem) in enumerate(scan(rows, split, labels, "full")):
        if problem is not None:
            problems.append(problem)
            continue
        counts = counts[: labels.num_labels]  # ignored pixels (last) are no class's
        pixels += counts
        image_pixels += np.where(counts > 0, counts.sum(), 0)
        present[index] = counts > 0
        samples += 1
    if problems and not skip_invalid:
        raise DatasetError(
            f"{purpose}: counting the {split!r} split's class pixels found {len(problems)} "
            f"problem(s):{listing(problems)}\n(fix them, or set data.skip_invalid=true to leave such samples out)"
        )
    _write(path, pixels, image_pixels, present, samples)
    return ClassPixels(pixels, image_pixels, present, samples, path, from_cache=False)


def fingerprint(rows: datasets.Dataset, labels: LabelSpec) -> str:
    """A hash of every stored mask of `rows` and of how `labels` maps raw values: equal fingerprints, equal counts."""
    digest = hashlib.sha256(f"{_VERSION} {labels.num_labels} {labels.ignore_index}".encode())
    digest.update(labels.lut.tobytes())
    if labels.colors is not None:  # colour masks: the colours decide the ids too (no colours: the hash as before)
        digest.update(repr(sorted(labels.colors.colors.items())).encode())
    for batch in undecoded(rows).select_columns([LABEL]).iter(batch_size=256):
        for stored in batch[LABEL]:
            digest.update(_identity(stored))
    return digest.hexdigest()[:32]


def _identity(stored: dict) -> bytes:
    """What a stored mask's pixels depend on: its bytes, or a file's path, size and modification time."""
    if stored.get("bytes") is not None:
        return hashlib.sha256(stored["bytes"]).digest()
    try:
        stat = os.stat(stored["path"])
    except OSError:  # counting will name the file
        return f"{stored['path']}|missing".encode()
    return f"{stored['path']}|{stat.st_size}|{stat.st_mtime_ns}".encode()


def _read(path: Path, num_labels: int, rows: int) -> ClassPixels | None:
    """The cached counts, or None when there are none (or they cannot be read: they are counted again)."""
    try:
        saved = json.loads(path.read_text())
        pixels, image_pixels = np.array(saved["pixels"], np.int64), np.array(saved["image_pixels"], np.int64)
        samples = int(saved["samples"])
        present = np.zeros((rows, num_labels), dtype=bool)
        for index, classes in enumerate(saved["present"][:rows]):
            present[index, classes] = True
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    if pixels.shape != (num_labels,) or image_pixels.shape != (num_labels,) or len(saved["present"]) != rows:
        return None
    return ClassPixels(pixels, image_pixels, present, samples, path, from_cache=True)


def _write(path: Path, pixels: np.ndarray, image_pixels: np.ndarray, present: np.ndarray, samples: int) -> None:
    """Write the counts atomically (rename), so that a reader never sees half a file; a read-only cache only warns."""
    content = {
        "samples": samples,
        "pixels": pixels.tolist(),
        "image_pixels": image_pixels.tolist(),
        "present": [np.flatnonzero(row).tolist() for row in present],  # class ids per sample: sparse, small
    }
    staging = path.with_suffix(f".tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(json.dumps(content))
        os.replace(staging, path)
    except OSError as error:
        staging.unlink(missing_ok=True)
        logger.warning("could not cache the class pixel counts in %s (%s): the next run counts them again", path, error)
