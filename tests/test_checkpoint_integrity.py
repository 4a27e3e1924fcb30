"""Checkpoints that fail as a trusted system fails: damaged files found by the manifest, a full disk, rotation."""

from __future__ import annotations

import errno
import logging
import re
import shutil
from pathlib import Path

import accelerate.utils.other
import pytest

import segtune.train.loop as loop
from segtune import run_dir
from segtune.commands import main
from segtune.errors import TrainingError
from segtune.train import disk_space, train
from segtune.train.checkpoints import (
    RunState,
    last_good_checkpoint,
    list_checkpoints,
    resolve_resume,
    rotate_checkpoints,
)
from segtune.train.disk_space import MB, NoSpaceError, folder_bytes, is_no_space
from segtune.train.integrity import damage, has_manifest, write_manifest
from tests.conftest import TINY_RUN
from tests.faults import disk_full_at, no_space_line
from tests.test_train import _interrupt_at_batch, assert_same_weights, tiny_recipe

# Dropout, so that an inexact resume would show in the weights.
DROPOUT = ("model.drop_path_rate=0.2",)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def fake_checkpoint(output_dir: Path, step: int, manifest: bool = True) -> Path:
    """A checkpoint folder with a 1024-byte model.safetensors, an optimizer.bin and run_state.json."""
    path = run_dir.checkpoint_root(output_dir) / run_dir.checkpoint_name(step)
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (path / "optimizer.bin").write_bytes(b"adam" * 25)
    RunState(step=step).save(path)
    if manifest:
        write_manifest(path)
    return path


# (how a checkpoint is damaged, what damage() says, whether sizes alone show it)
DAMAGES = [
    (lambda p: truncate(p / "model.safetensors"), "size of model.safetensors is 512 bytes, not 1024", True),
    (lambda p: (p / "optimizer.bin").unlink(), "missing file optimizer.bin", True),
    (lambda p: flip_a_byte(p / "model.safetensors"), "checksum mismatch of model.safetensors", False),
    (lambda p: (p / "manifest.json").write_text("{"), "unreadable manifest.json (JSONDecodeError: ", True),
]


@pytest.mark.parametrize(("harm", "expected", "by_size"), DAMAGES, ids=["truncated", "missing", "flipped", "manifest"])
def test_the_manifest_names_the_damaged_file(tmp_path, harm, expected, by_size):
    checkpoint = fake_checkpoint(tmp_path, 2)
    assert damage(checkpoint) is None and damage(checkpoint, checksums=False) is None
    harm(checkpoint)
    assert damage(checkpoint).startswith(expected)
    sizes_only = damage(checkpoint, checksums=False)
    assert sizes_only.startswith(expected) if by_size else sizes_only is None


def test_a_checkpoint_from_before_manifests_counts_as_good_with_a_note(tmp_path, caplog):
    legacy = fake_checkpoint(tmp_path, 2, manifest=False)
    assert not has_manifest(legacy) and damage(legacy) is None and last_good_checkpoint(tmp_path) == legacy
    with caplog.at_level(logging.WARNING, logger="segtune"):
        assert resolve_resume(tmp_path, "latest") == legacy
    assert caplog.messages == [
        f"{legacy} has no manifest.json (written before segtune checked checkpoints): resuming it unchecked"
    ]


def test_resume_latest_skips_damaged_checkpoints_saying_why(tmp_path, caplog):
    good, flipped, missing = (fake_checkpoint(tmp_path, step) for step in (2, 4, 6))
    flip_a_byte(flipped / "model.safetensors")
    (missing / "optimizer.bin").unlink()
    with caplog.at_level(logging.WARNING, logger="segtune"):
        assert resolve_resume(tmp_path, "latest") == good
    assert caplog.messages == [
        f"--resume latest: skipping {missing}: missing file optimizer.bin",
        f"--resume latest: skipping {flipped}: checksum mismatch of model.safetensors",
    ]
    assert resolve_resume(tmp_path, "latest", checksums=False) == flipped  # sizes alone cannot see a flipped byte
    with pytest.raises(TrainingError, match=rf"^--resume {re.escape(str(missing))}: damaged checkpoint, missing file"):
        resolve_resume(tmp_path, str(missing))
    truncate(good / "model.safetensors")
    with pytest.raises(TrainingError, match=r"--resume latest: every checkpoint under .* is damaged \(3, each named"):
        resolve_resume(tmp_path, "latest")


def test_rotation_gives_no_kept_place_to_a_damaged_checkpoint(tmp_path, caplog):
    legacy = fake_checkpoint(tmp_path, 2, manifest=False)
    good, truncated, newest, missing = (fake_checkpoint(tmp_path, step) for step in (4, 6, 8, 10))
    truncate(truncated / "model.safetensors")
    (missing / "optimizer.bin").unlink()
    assert list_checkpoints(tmp_path) == [legacy, good, truncated, newest, missing]  # every one, damaged or not
    assert last_good_checkpoint(tmp_path) == newest
    with caplog.at_level(logging.WARNING, logger="segtune"):
        deleted = rotate_checkpoints(tmp_path, keep_last=2, best_step=2)
    assert deleted == [truncated, missing] and list_checkpoints(tmp_path) == [legacy, good, newest]
    assert caplog.messages == [
        f"deleting damaged checkpoint {truncated}: size of model.safetensors is 512 bytes, not 1024",
        f"deleting damaged checkpoint {missing}: missing file optimizer.bin",
    ]


@pytest.mark.parametrize(
    ("error", "no_space"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (Exception("Error while serializing: I/O error: No space left on device (os error 28)"), True),  # safetensors
        (OSError("No space left on device"), False),  # an OSError says it by its errno
        (OSError(errno.EACCES, "Permission denied"), False),
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), False),
    ],
)
def test_a_full_disk_is_told_from_other_write_errors(error, no_space):
    assert is_no_space(error) == no_space
    try:
        try:
            raise error
        except Exception as inner:
            raise RuntimeError("while writing the checkpoint") from inner
    except RuntimeError as outer:
        assert is_no_space(outer) == no_space  # also when it is the cause of another


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """A finished 4-step run, with dropout, checkpointed at steps 2 and 4. Copy its checkpoints to change them."""
    out = tmp_path_factory.mktemp("integrity") / "straight"
    train(tiny_recipe(out, *DROPOUT))
    assert [p.name for p in list_checkpoints(out)] == ["step-00000002", "step-00000004"]
    return out


def copied_checkpoints(straight: Path, out: Path) -> list[Path]:
    shutil.copytree(run_dir.checkpoint_root(straight), run_dir.checkpoint_root(out))
    return list_checkpoints(out)


def test_resume_latest_skips_a_truncated_checkpoint_and_ends_as_a_straight_run(straight, tmp_path, caplog, capsys):
    out = tmp_path / "resumed"
    previous, truncated = copied_checkpoints(straight, out)
    full = (truncated / "model.safetensors").stat().st_size
    truncate(truncated / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="segtune"):
        train(tiny_recipe(out, *DROPOUT), resume="latest")
    skipped = f"--resume latest: skipping {truncated}: size of model.safetensors is {full // 2} bytes, not {full}"
    assert skipped in caplog.messages
    assert f"resumed from {previous} at step 2" in capsys.readouterr().out
    assert_same_weights(straight, out)
    assert damage(truncated) is None  # written again at step 4


def train_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--recipe", "demo.yaml", "--output_dir", str(out), "--set", *TINY_RUN, *DROPOUT, *extra]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("harm", "expected"),
    [
        (lambda p: truncate(p / "model.safetensors"), r"size of model\.safetensors is \d+ bytes, not \d+"),
        (lambda p: (p / "optimizer.bin").unlink(), r"missing file optimizer\.bin"),
    ],
    ids=["truncated", "missing"],
)
def test_resume_from_a_damaged_path_is_one_error_line_naming_the_file(straight, tmp_path, capsys, harm, expected):
    out = tmp_path / "resumed"
    _, damaged = copied_checkpoints(straight, out)
    harm(damaged)
    assert main(train_args(out, "--resume", str(damaged))) == 1
    [error] = error_lines(capsys.readouterr().err)
    assert re.fullmatch(rf"error: --resume {re.escape(str(damaged))}: damaged checkpoint, {expected}", error)


def test_a_full_disk_while_writing_ends_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(accelerate.utils.other, "safe_save_file", disk_full_at(2))
    out = tmp_path / "run"
    assert main(train_args(out)) == 1
    [last_good] = list_checkpoints(out)
    [error] = error_lines(capsys.readouterr().err)
    assert re.fullmatch(
        "error: " + no_space_line(4, f"{folder_bytes(last_good) / MB:.1f}", r"[\d.]+", last_good), error
    )
    assert [p.name for p in run_dir.checkpoint_root(out).iterdir()] == ["step-00000002"]  # no .tmp-step-00000004
    assert damage(last_good) is None and has_manifest(last_good)
    assert not (out / run_dir.METRICS).exists()


@pytest.mark.parametrize(
    ("interrupt_at_batch", "step", "prefix"),
    [(None, 4, ""), (4, 3, r"training interrupted \(Ctrl-C\) at step 3; ")],
    ids=["save-step", "ctrl-c"],
)
def test_too_little_free_space_refuses_before_writing_anything(tmp_path, monkeypatch, interrupt_at_batch, step, prefix):
    out = tmp_path / "run"
    first = run_dir.checkpoint_root(out) / run_dir.checkpoint_name(2)
    real_usage, real_save, saved = shutil.disk_usage, loop.Accelerator.save_state, []

    def five_mb_free_after_the_first(path):
        usage = real_usage(path)
        return usage._replace(free=5 * MB) if first.exists() else usage

    def counted_save(self, output_dir=None, **kwargs):
        saved.append(Path(output_dir).name)
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(disk_space.shutil, "disk_usage", five_mb_free_after_the_first)
    monkeypatch.setattr(loop.Accelerator, "save_state", counted_save)
    if interrupt_at_batch:
        _interrupt_at_batch(monkeypatch, interrupt_at_batch, "ctrl-c")
    with pytest.raises(TrainingError) as raised:
        train(tiny_recipe(out))
    assert re.fullmatch(
        prefix + no_space_line(step, f"{folder_bytes(first) / MB:.1f}", "5.0", first), str(raised.value)
    )
    assert isinstance(raised.value, NoSpaceError) == (interrupt_at_batch is None)
    assert saved == [".tmp-step-00000002"]  # the second was never begun
    assert [p.name for p in run_dir.checkpoint_root(out).iterdir()] == ["step-00000002"]
