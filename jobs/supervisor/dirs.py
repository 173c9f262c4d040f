"""A stage's folders: its work dir (spec, log, inputs, outputs, metric spool) and its checkpoint area,
which outlives an attempt (the next one resumes from it) but not the stage: both go when the stage
ends, whatever the outcome. A queued retry keeps both."""

from __future__ import annotations

import logging
import re
import shutil
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from jobs.stage_inputs import stage_checkpoint_dir
from refinery.runs.models import TERMINAL_STATES, StageRun

log = logging.getLogger(__name__)

SWEEP_AFTER_SECONDS = 900.0  # a stage ended this long ago without removing its work dir: its supervisor is gone


def stage_dirs_make(work_dir: Path, checkpoint_dir: Path) -> None:
    """The work dir, and in it `checkpoints`: a link to the stage's checkpoint area, which every attempt
    of the stage finds again (a work dir from before the area existed keeps its own folder)."""
    for _ in range(3):  # another stage of the run may remove the (empty) run folder in between
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            break
        except FileNotFoundError:
            continue
    checkpoint_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    link = work_dir / "checkpoints"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(checkpoint_dir, target_is_directory=True)


def stage_dirs_remove(work_dir: Path, checkpoint_dir: Path, *, stage_run_id: int) -> None:
    """The stage has ended: its work dir and checkpoint area go (MLflow has the outputs, spec and log;
    the row has the log tail)."""
    for folder in (work_dir, checkpoint_dir):
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            log.warning("stage %s: could not remove %s", stage_run_id, folder)
    try:
        work_dir.parent.rmdir()  # the run's folder, once its last stage's is gone
    except OSError:
        pass


def sweep_ended_stage_dirs() -> int:
    """Remove the work dirs (and checkpoint areas) of stages that ended without their supervisor: a queued
    retry that was canceled, or a stage the reaper failed after its last attempt. Returns how many went."""
    found: dict[tuple[int, int], Path] = {}
    root = Path(settings.REFINERY_WORK_DIR)
    for run_dir in root.glob("run-*") if root.is_dir() else ():
        for stage_dir in run_dir.glob("stage-*"):
            match = re.fullmatch(r"run-(\d+)/stage-(\d+)", f"{run_dir.name}/{stage_dir.name}")
            if match:
                found[(int(match[1]), int(match[2]))] = stage_dir
    if not found:
        return 0
    # A supervisor that just ended its stage is still publishing the log: leave recent ones to it.
    settled = timezone.now() - timedelta(seconds=SWEEP_AFTER_SECONDS)
    removed = 0
    for stage in StageRun.objects.select_related("run").filter(
        Q(finished_at__lt=settled) | Q(finished_at__isnull=True),
        run_id__in={run for run, _ in found},
        status__in=TERMINAL_STATES,
    ):
        work = found.get((stage.run_id, stage.index))
        if work is None:
            continue
        for folder in (work, stage_checkpoint_dir(stage)):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            work.parent.rmdir()
        except OSError:
            pass
        removed += 1
    if removed:
        log.info("removed the work dirs of %d ended stages", removed)
    return removed
