"""Checkpoint integrity: a manifest of every file's size and SHA-256, made durable before a checkpoint is
published, and checked before one is trusted.

`write_manifest` runs in the staging folder, before the rename that publishes a checkpoint: it reads each file
once to hash it, fsyncs it, writes `manifest.json`, and fsyncs the folder, so a power cut after the rename
cannot leave a published checkpoint whose files never reached the disk. `damage` says what is wrong with a
checkpoint: a missing file, a file of the wrong size (a stat, no read), or one whose contents changed (a full
read, only when `checksums`).

Why SHA-256: OpenSSL, behind hashlib, runs it on the CPU's SHA instructions (SHA-NI on x86, the ARMv8 crypto
extensions): measured here, 1.5 GB/s, 0.03 s for a 45 MB B0 checkpoint, and faster than BLAKE2b, which hashlib
computes in software. `sha256sum` checks a file by hand on any machine, and it is the Hub's LFS object id.

A checkpoint written before manifests existed has none: `damage` finds nothing wrong with it and
`has_manifest` tells it apart, so old runs still resume, with a note that the checkpoint went unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import BinaryIO

from .. import run_dir

ALGORITHM = "sha256"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20  # read in 1 MiB pieces: a checkpoint never has to fit in memory twice


def _digest(file: BinaryIO) -> str:
    digest, buffer = hashlib.new(ALGORITHM), bytearray(_CHUNK)
    view = memoryview(buffer)
    while size := file.readinto(buffer):
        digest.update(view[:size])
    return digest.hexdigest()


def fsync_folder(folder: Path) -> None:
    """Make `folder`'s entries (files created, renamed or removed in it) durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p != directory / run_dir.MANIFEST)


def write_manifest(directory: Path) -> dict[str, dict]:
    """Hash and fsync every file under `directory`, write `manifest.json` beside them, fsync it and every folder.

    Returns:
        The manifest's entries: relative path -> {"size": bytes, "sha256": hex digest}.

    Raises:
        OSError: a file could not be read, or the manifest not written (a full disk, say).
    """
    entries, files = {}, _files(directory)
    for path in files:
        with path.open("rb") as file:
            entries[path.relative_to(directory).as_posix()] = {
                "size": os.fstat(file.fileno()).st_size,
                ALGORITHM: _digest(file),
            }
            os.fsync(file.fileno())  # also for the files other processes wrote: fsync flushes the file, not the fd
    manifest = {"format": MANIFEST_FORMAT, "algorithm": ALGORITHM, "files": entries}
    with (directory / run_dir.MANIFEST).open("w") as file:
        json.dump(manifest, file, indent=1)
        file.flush()
        os.fsync(file.fileno())
    for folder in sorted({directory, *(p.parent for p in files)}):
        fsync_folder(folder)
    return entries


def has_manifest(directory: Path) -> bool:
    """False for a checkpoint written before segtune wrote manifests."""
    return (Path(directory) / run_dir.MANIFEST).is_file()


def _entries(directory: Path) -> dict[str, dict]:
    """The manifest's entries (relative path -> size and checksum).

    Raises:
        ValueError: the manifest is not one this version wrote (unreadable JSON, another format or algorithm).
        OSError: it cannot be read.
    """
    manifest = json.loads((directory / run_dir.MANIFEST).read_text())
    found = (manifest.get("format"), manifest.get("algorithm")) if isinstance(manifest, dict) else (None, None)
    if found != (MANIFEST_FORMAT, ALGORITHM):
        raise ValueError(f"expected format {MANIFEST_FORMAT} with {ALGORITHM}, found format {found[0]} with {found[1]}")
    entries = manifest.get("files")
    if not isinstance(entries, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get(ALGORITHM), str)
        for e in entries.values()
    ):
        raise ValueError("expected files: {path: {size, sha256}}")
    return entries


def damage(directory: Path, checksums: bool = True) -> str | None:
    """What is wrong with the checkpoint in `directory`, by its manifest, as one phrase naming the file:
    "missing file X", "size of X is A bytes, not B", "checksum mismatch of X", or an unreadable manifest.

    Sizes are checked first, for every file (a stat each), then, with `checksums`, the contents (one read of
    every file).

    Returns:
        The first problem found, or None: every file is as listed, or there is no manifest (see `has_manifest`).
    """
    directory = Path(directory)
    if not has_manifest(directory):
        return None
    try:
        entries = _entries(directory)
    except (OSError, ValueError) as error:
        return f"unreadable {run_dir.MANIFEST} ({type(error).__name__}: {error})"
    for name, entry in entries.items():
        path = directory / name
        if not path.is_file():
            return f"missing file {name}"
        size = path.stat().st_size
        if size != entry["size"]:
            return f"size of {name} is {size} bytes, not {entry['size']}"
    if checksums:
        for name, entry in entries.items():
            with (directory / name).open("rb") as file:
                if _digest(file) != entry[ALGORITHM]:
                    return f"checksum mismatch of {name}"
    return None


__all__ = ["ALGORITHM", "damage", "fsync_folder", "has_manifest", "write_manifest"]
