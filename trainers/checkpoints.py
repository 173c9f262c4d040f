"""Crash-safe checkpoints for Hugging Face Trainer-based methods.

A checkpoint is written into a temporary sibling directory (``.tmp-checkpoint-N``), renamed to
``checkpoint-N`` once every file (weights, optimizer, scheduler, RNG states, trainer state with
the data position) is on disk, and only then marked complete with a ``COMPLETE`` file. A process
killed at any point leaves either a temporary directory or an unmarked checkpoint; both are
ignored when choosing where to resume and cleaned up when the next attempt starts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

from .faults import failpoint

COMPLETE = "COMPLETE"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_TEMPORARY = re.compile(r"^\.tmp-checkpoint-\d+$")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_marker(checkpoint: str, step: int) -> None:
    tmp = os.path.join(checkpoint, f".{COMPLETE}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"step": step, "time": time.time()}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, os.path.join(checkpoint, COMPLETE))
    _fsync_dir(checkpoint)


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, COMPLETE)) and os.path.isfile(os.path.join(path, "trainer_state.json"))


def checkpoints(checkpoint_dir: str) -> list[tuple[int, str, bool]]:
    """(step, path, complete) for every ``checkpoint-N`` directory, oldest first."""
    if not os.path.isdir(checkpoint_dir):
        return []
    found = []
    for name in os.listdir(checkpoint_dir):
        match = _CHECKPOINT.match(name)
        path = os.path.join(checkpoint_dir, name)
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path, is_complete(path)))
    return sorted(found)


def newest_complete_checkpoint(checkpoint_dir: str) -> str | None:
    """The highest-numbered checkpoint with its completion marker (partial ones are skipped)."""
    complete = [path for _, path, ok in checkpoints(checkpoint_dir) if ok]
    return complete[-1] if complete else None


def discard_partial(checkpoint_dir: str) -> list[str]:
    """Delete temporary and unmarked checkpoint directories (what a killed save left). Returns their names."""
    if not os.path.isdir(checkpoint_dir):
        return []
    removed = []
    for name in sorted(os.listdir(checkpoint_dir)):
        path = os.path.join(checkpoint_dir, name)
        if _TEMPORARY.match(name) or (_CHECKPOINT.match(name) and os.path.isdir(path) and not is_complete(path)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def _rotate(checkpoint_dir: str, keep: int | None) -> None:
    """Keep the newest ``keep`` complete checkpoints (None or 0: keep all)."""
    if not keep or keep <= 0:
        return
    complete = [path for _, path, ok in checkpoints(checkpoint_dir) if ok]
    for path in complete[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def make_checkpoints_atomic(trainer) -> None:
    """Make ``trainer`` write each checkpoint to a temporary directory, rename it, then mark it complete.

    The Trainer writes checkpoint-N under ``args.output_dir``; for the duration of one save that
    directory is pointed at the temporary one (nothing else reads it during a save), and the
    Trainer's own rotation is replaced by one that counts complete checkpoints only.
    """
    original = trainer._save_checkpoint
    keep = trainer.args.save_total_limit

    def save_checkpoint(model, trial):
        final_root = trainer.args.output_dir
        step = trainer.state.global_step
        name = f"checkpoint-{step}"
        staging_root = os.path.join(final_root, f".tmp-{name}")
        shutil.rmtree(staging_root, ignore_errors=True)
        os.makedirs(staging_root)
        trainer.args.output_dir = staging_root
        trainer.args.save_total_limit = None
        try:
            original(model, trial)
        finally:
            trainer.args.output_dir = final_root
            trainer.args.save_total_limit = keep
        failpoint("checkpoint.staged", step=step, state_dir=final_root)
        final = os.path.join(final_root, name)
        if os.path.exists(final):  # left by an earlier attempt that died before marking it
            shutil.rmtree(final)
        os.replace(os.path.join(staging_root, name), final)
        shutil.rmtree(staging_root)  # TRL also writes a model card (README.md) next to the checkpoint
        _fsync_dir(final_root)
        failpoint("checkpoint.renamed", step=step, state_dir=final_root)
        _write_marker(final, step)
        _rotate(final_root, keep)

    trainer._save_checkpoint = save_checkpoint
