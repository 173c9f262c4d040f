"""The lifecycle of a run: start one from a pipeline version (its snapshot frozen), re-run it, cancel it, and the
run-wide state that follows from its stages (queue the stages whose inputs are ready, derive the run's status).
Every write is atomic."""

from __future__ import annotations

import copy
import secrets
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from trainers.catalog import METHODS

from refinery.data.models import Dataset, DatasetVersion
from refinery.notifications.run_events import run_finished_notify
from refinery.pipelines.models import Pipeline
from refinery.pipelines.services import pipeline_current_version
from refinery.pipelines.specs import (
    SpecError,
    apply_overrides,
    auto_evaluate_stages,
    pipeline_spec_normalize,
    spec_with_gate,
    stage_dependencies,
)
from refinery.runs.models import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    IllegalTransition,
    Run,
    StageRun,
    Status,
)
from refinery.runs.services.dispatch import enqueue_stage_on_commit
from refinery.teams.quotas import QuotaExceeded, team_runs_check
from refinery.teams.services import audit

RETENTION_METHODS = tuple(name for name, m in METHODS.items() if m.retention)  # stages that get the retention set


class RunError(Exception):
    """A run cannot be started as asked; the message says why."""


def _dataset_snapshot(*, team, dataset_id: int | None, pins: dict[int, int] | None = None) -> dict | None:
    if dataset_id is None:
        return None
    dataset = Dataset.objects.filter(team=team, pk=dataset_id).first()
    if dataset is None:
        raise RunError(f"dataset #{dataset_id} does not exist in this team")
    if pins and int(dataset_id) in pins:
        version = dataset.versions.filter(pk=pins[int(dataset_id)]).first()
        if version is None:
            raise RunError(f"the pinned version #{pins[int(dataset_id)]} of dataset {dataset.name!r} no longer exists")
    else:
        version = dataset.latest_version
    if version is None:
        raise RunError(f"dataset {dataset.name!r} has no version yet")
    return {
        "dataset_id": dataset.pk,
        "name": dataset.name,
        "kind": dataset.kind,
        "version": version.version,
        "version_id": version.pk,
        "sha256": version.sha256,
        "format": version.format,
        "storage_path": version.storage_path,
        "rows": version.row_count,
    }


def run_snapshot(
    *,
    pipeline: Pipeline,
    seed: int,
    stages: list[dict] | None = None,
    version=None,
    retention_dataset_id: int | None = None,
    dataset_versions: dict[int, int] | None = None,
) -> dict:
    """Everything a run depends on, frozen: spec, dataset versions by hash, base model, code, seed.

    `stages` are the version's stages with every config resolved (defaults filled in) plus the automatic
    evaluate stages, so that a later change of a default does not change what a re-run of this run trains.
    Every evaluate stage gets the pipeline's retention set (`retention_data`). `dataset_versions`
    ({dataset id: version id}) pins datasets to a version instead of their latest.
    """
    base = version.base_model if version is not None else pipeline.base_model
    resolved_stages = stages if stages is not None else pipeline.stages
    retention = _dataset_snapshot(team=pipeline.team, dataset_id=retention_dataset_id, pins=dataset_versions)
    stages = []
    for stage in resolved_stages:
        item = {
            **stage,
            "train_data": _dataset_snapshot(
                team=pipeline.team, dataset_id=stage.get("dataset_id"), pins=dataset_versions
            ),
            "eval_data": _dataset_snapshot(
                team=pipeline.team, dataset_id=stage.get("eval_dataset_id"), pins=dataset_versions
            ),
        }
        if stage["method"] in RETENTION_METHODS:
            item["retention_data"] = retention
        stages.append(item)
    if not stages:
        raise RunError(f"pipeline {pipeline.name!r} has no stages")
    return {
        "pipeline": {
            "id": pipeline.pk,
            "name": pipeline.name,
            "version": version.number if version else None,
            "updated_at": pipeline.updated_at.isoformat(),
        },
        "base_model": {
            "id": base.pk,
            "name": base.name,
            "source": base.source,
            "name_or_path": base.name_or_path,
            "revision": base.revision or None,
        },
        "stages": stages,
        "retention_data": retention,
        "seed": seed,
        "code_version": settings.REFINERY_CODE_VERSION,
    }


def _stage_ready(stage: StageRun, by_name: dict[str, StageRun]) -> bool:
    """Every stage it needs (its input, and the stages its config names for extra models) has succeeded."""
    return all(by_name[name].status == Status.SUCCEEDED for name in stage_dependencies(stage.spec))


@transaction.atomic
def run_create(
    *,
    pipeline: Pipeline,
    user,
    seed: int | None = None,
    name: str = "",
    version=None,
    rerun_of: Run | None = None,
    overrides: dict[str, Any] | None = None,
    dataset_versions: dict[int, int] | None = None,
    gate: dict | None = None,
) -> Run:
    """Start a run of a pipeline version (the current one by default), resolving each dataset to its
    latest version now. `overrides` ({"<stage>.config.<field>" or "<stage>.adapter.<field>": value}, as a
    sweep sets them) change the version's settings for this run only; they are validated like an edit and
    recorded in the snapshot. `dataset_versions` ({dataset id: version id}, as a schedule binds them) pins
    those datasets to a version instead. `gate` (a schedule's promotion gate: pipelines.specs.spec_with_gate)
    adds a gate stage to this run."""
    version = version or pipeline_current_version(pipeline)
    spec = version.spec
    try:
        if overrides:
            spec = apply_overrides(spec, overrides)
        spec, _ = spec_with_gate(spec, gate)
        normalized = pipeline_spec_normalize(team=pipeline.team, spec=spec, base_model=version.base_model)
    except SpecError as exc:
        raise RunError("; ".join(exc.errors.values())) from None
    seed = seed if seed is not None else int(spec.get("seed", secrets.randbelow(2**31)))
    snapshot = run_snapshot(
        pipeline=pipeline,
        seed=seed,
        version=version,
        stages=normalized["stages"] + auto_evaluate_stages(normalized),
        retention_dataset_id=normalized.get("retention_dataset_id"),
        dataset_versions=dataset_versions,
    )
    if overrides:
        snapshot["overrides"] = dict(overrides)
    return _run_from_snapshot(
        pipeline=pipeline,
        version=version,
        user=user,
        snapshot=snapshot,
        seed=seed,
        name=name or pipeline.name,
        rerun_of=rerun_of,
    )


def _run_from_snapshot(*, pipeline, version, user, snapshot: dict, seed: int, name: str, rerun_of=None) -> Run:
    try:
        team_runs_check(team=pipeline.team)  # locks the team's row first: team -> runs -> stages
    except QuotaExceeded as exc:
        raise RunError(str(exc)) from None
    # Lock the team's runs to hand out the next number without a race.
    last = Run.objects.select_for_update().filter(team=pipeline.team).aggregate(n=Max("number"))["n"] or 0
    run = Run.objects.create(
        team=pipeline.team,
        pipeline=pipeline,
        pipeline_version=version,
        number=last + 1,
        name=name,
        status=Status.QUEUED,
        snapshot=snapshot,
        seed=seed,
        code_version=snapshot["code_version"],
        created_by=user,
        rerun_of=rerun_of,
    )
    stage_runs = [
        StageRun(
            run=run, index=i, name=s["name"], method=s["method"], spec=s, max_attempts=int(s.get("max_attempts", 3))
        )
        for i, s in enumerate(snapshot["stages"])
    ]
    StageRun.objects.bulk_create(stage_runs)
    stages_queue_ready(run)
    audit(
        team=run.team,
        user=user,
        action="run.rerun" if rerun_of else "run.started",
        target=f"run #{run.number}",
        pipeline=pipeline.name,
        rerun_of=f"#{rerun_of.number}" if rerun_of else "",
    )
    return run


@transaction.atomic
def run_rerun(*, run: Run, user, latest_data: bool = False) -> Run:
    """Run again. By default an exact repeat: the same snapshot (dataset versions, configs, base model, seed).
    With `latest_data`, the same pipeline version and seed with every dataset re-resolved to its newest version."""
    if run.pipeline is None:
        raise RunError(f"run #{run.number}'s pipeline was deleted")
    if latest_data:
        return run_create(
            pipeline=run.pipeline, user=user, seed=run.seed, name=run.name, version=run.pipeline_version, rerun_of=run
        )
    missing = [
        s["name"]
        for s in run.snapshot.get("stages", [])
        for key in ("train_data", "eval_data", "retention_data")
        if s.get(key) and not DatasetVersion.objects.filter(pk=s[key]["version_id"], dataset__team=run.team).exists()
    ]
    if missing:
        raise RunError(
            f"a dataset version this run used was deleted (stages: {', '.join(sorted(set(missing)))}); "
            "use 'Run with latest data'"
        )
    return _run_from_snapshot(
        pipeline=run.pipeline,
        version=run.pipeline_version,
        user=user,
        snapshot=copy.deepcopy(run.snapshot),
        seed=run.seed,
        name=run.name,
        rerun_of=run,
    )


def stages_queue_ready(run: Run) -> list[StageRun]:
    stages = list(run.stages.select_for_update().order_by("index"))
    by_name = {s.name: s for s in stages}
    queued = []
    for stage in stages:
        if stage.status == Status.PENDING and _stage_ready(stage, by_name):
            stage.mark_queued()
            stage.save(update_fields=["status", "queued_at", "dispatched_at"])
            enqueue_stage_on_commit(stage.pk)
            queued.append(stage)
    return queued


def run_status_refresh(run: Run) -> None:
    """Derive the run's status from its stages."""
    statuses = list(run.stages.values_list("status", flat=True))
    now = timezone.now()
    if any(s == Status.FAILED for s in statuses):
        new = Status.FAILED
    elif any(s in (Status.CANCELED, Status.CANCELING) for s in statuses):
        new = Status.CANCELING if any(s in ACTIVE_STATES for s in statuses) else Status.CANCELED
    elif all(s == Status.SUCCEEDED for s in statuses):
        new = Status.SUCCEEDED
    elif any(s in (Status.RUNNING,) for s in statuses) or any(s == Status.SUCCEEDED for s in statuses):
        new = Status.RUNNING
    else:
        new = Status.QUEUED
    if new == Status.FAILED and any(s in ACTIVE_STATES - {Status.PENDING} for s in statuses):
        new = Status.RUNNING  # a parallel branch is still working; the run ends when it does
    fields = ["status"]
    run.status = new
    if new == Status.RUNNING and run.started_at is None:
        run.started_at = now
        fields.append("started_at")
    if new == Status.FAILED and not run.error:
        # The first stage that failed names the run's failure (not the stage that happened to end last).
        first = run.stages.filter(status=Status.FAILED).order_by("finished_at", "index").first()
        run.error = f"stage {first.name!r} failed: {first.error}".strip()
        fields.append("error")
    if new in TERMINAL_STATES and run.finished_at is None:
        run.finished_at = now
        fields.append("finished_at")
        if run.started_at is None:
            run.started_at = now
            fields.append("started_at")
    run.save(update_fields=fields)
    if "finished_at" in fields and new in (Status.FAILED, Status.SUCCEEDED):
        run_finished_notify(run=run)  # the outbox row commits (or rolls back) with this transition


@transaction.atomic
def run_cancel(*, run: Run, user=None) -> Run:
    """Cancel a run: waiting stages end now, a running stage is stopped by its supervisor."""
    run = Run.objects.select_for_update().get(pk=run.pk)
    if run.is_finished:
        raise IllegalTransition(f"run #{run.number} is already {run.status}")
    now = timezone.now()
    for stage in run.stages.select_for_update().order_by("index"):
        if stage.status in (Status.PENDING, Status.QUEUED):
            stage.mark_finished(Status.CANCELED, error="canceled before it started")
            stage.cancel_requested_at = now
            stage.save()
        elif stage.status == Status.RUNNING:
            stage.mark_canceling()
            stage.cancel_requested_at = now
            stage.save()
    run_status_refresh(run)
    audit(team=run.team, user=user, action="run.canceled", target=f"run #{run.number}")
    return run
