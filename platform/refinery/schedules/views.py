"""Schedule pages: list, new/edit form, a schedule with its next fires and tick history, and its buttons."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from refinery.core.auth import team_required
from refinery.data.models import Dataset
from refinery.pipelines.models import Pipeline
from refinery.pipelines.selectors import pipeline_get, pipeline_list
from refinery.pipelines.services import pipeline_current_version
from refinery.schedules.models import CatchUp, Overlap, Schedule, Trigger
from refinery.schedules.selectors import schedule_get, schedule_list_rows, schedule_next_fires, schedule_ticks
from refinery.schedules.services import (
    LATEST,
    ScheduleError,
    schedule_create,
    schedule_delete,
    schedule_pause,
    schedule_resume,
    schedule_run_now,
    schedule_update,
    version_dataset_ids,
)
from refinery.schedules.windows import zone
from refinery.teams.selectors import membership_get

FIELDS = (
    "name",
    "version",
    "trigger",
    "cron",
    "timezone",
    "interval_seconds",
    "debounce_seconds",
    "start_at",
    "end_at",
    "max_runs",
    "overlap",
    "catch_up",
    "catch_up_limit",
    "failure_limit",
)


def _schedule_or_404(request, pk) -> Schedule:
    try:
        return schedule_get(team=request.team, pk=int(pk))
    except (TypeError, ValueError, Schedule.DoesNotExist):
        raise Http404("no such schedule in this team") from None


def _pipeline_or_404(request, pk) -> Pipeline:
    try:
        return pipeline_get(team=request.team, pk=int(pk))
    except (TypeError, ValueError, Pipeline.DoesNotExist):
        raise Http404("no such pipeline in this team") from None


def _can_write(request) -> bool:
    membership = membership_get(team=request.team, user=request.user)
    return bool(membership and membership.can_write)


@require_GET
@team_required
def schedule_list_view(request):
    return render(
        request,
        "schedules/list.html",
        {"schedules": schedule_list_rows(team=request.team), "can_write": _can_write(request), "nav": "schedules"},
    )


@require_GET
@team_required
def schedule_detail_view(request, pk):
    schedule = _schedule_or_404(request, pk)
    return render(
        request,
        "schedules/detail.html",
        {
            "schedule": schedule,
            "ticks": schedule_ticks(schedule=schedule),
            "next_fires": [schedule.local_label(t) for t in schedule_next_fires(schedule=schedule)],
            "bindings": _binding_rows(request, schedule.pipeline_version, schedule.bindings, gate=schedule.gate),
            "can_write": _can_write(request),
            "nav": "schedules",
        },
    )


def _binding_rows(request, version, bindings: dict, gate: dict | None = None) -> list[dict]:
    """One row per dataset the version reads: its versions to pick from and the current choice."""
    rows = []
    datasets = Dataset.objects.filter(team=request.team, pk__in=version_dataset_ids(version, gate)).prefetch_related(
        "versions"
    )
    for dataset in datasets:
        choice = (bindings or {}).get(str(dataset.pk), LATEST)
        rows.append({"dataset": dataset, "versions": list(dataset.versions.all()), "choice": str(choice)})
    return rows


GATE_FORM_FIELDS = (
    "registered_model",
    "alias",
    "metric",
    "min_gain",
    "gain_mode",
    "max_forgetting",
    "target_threshold",
    "retention_threshold",
)


def _gate_values(post) -> dict | None:
    """The gate fieldset as the service's {"candidate", "dataset_id", "config"}; None when "Add a gate" is off."""
    if post.get("gate_enabled") != "on":
        return None
    config = {name: post.get(f"gate_{name}", "").strip() for name in GATE_FORM_FIELDS}
    config = {
        k: v
        for k, v in config.items()
        if v != "" or k in ("max_forgetting", "target_threshold", "retention_threshold", "metric")
    }
    config["require_approval"] = post.get("gate_require_approval") == "on"
    return {
        "candidate": post.get("gate_candidate", "").strip(),
        "dataset_id": post.get("gate_dataset_id") or None,
        "config": config,
    }


def _gate_choices(request, version) -> dict:
    """What the gate fieldset offers: the version's stages whose output is a model that generates text
    (candidates), the team's datasets a gate can read (held-out sets) and the metrics it can compare."""
    from trainers.catalog import METHODS
    from trainers.metrics import ALL_COMPARABLE_METRICS

    from refinery.pipelines.specs import method_output

    stages = [
        s.get("name")
        for s in (version.spec or {}).get("stages", [])
        if method_output(s.get("method", "sft")) == "model"
    ]
    datasets = (
        Dataset.objects.filter(team=request.team, kind__in=METHODS["gate"].dataset_kinds, versions__isnull=False)
        .distinct()
        .order_by("name")
    )
    return {"gate_candidates": stages, "gate_datasets": datasets, "gate_metrics": ["", *ALL_COMPARABLE_METRICS]}


def _form_values(post) -> dict:
    fields = {name: post.get(name, "").strip() for name in FIELDS}
    fields["gate"] = _gate_values(post)
    for name in ("start_at", "end_at"):
        raw = fields[name]
        fields[name] = (parse_datetime(raw) or raw) if raw else None
    fields["bindings"] = {
        key.removeprefix("binding_"): value for key, value in post.items() if key.startswith("binding_")
    }
    return fields


def _form(request, *, pipeline, schedule=None, values=None, errors=None, status=200):
    version = schedule.pipeline_version if schedule and not values else pipeline_current_version(pipeline)
    if values and values.get("version"):
        version = pipeline.versions.filter(number=values["version"]).first() or version
    if values is None:
        values = {
            "name": f"{pipeline.name}-nightly",
            "trigger": Trigger.INTERVAL,
            "timezone": "UTC",
            "interval_seconds": 86400,
            "debounce_seconds": 60,
            "overlap": Overlap.SKIP,
            "catch_up": CatchUp.LATEST,
            "catch_up_limit": 10,
            "failure_limit": 3,
            "version": version.number,
        }
        if schedule is not None:
            values = {name: getattr(schedule, name) for name in FIELDS if name != "version"}
            values["gate"] = schedule.gate
            values["version"] = schedule.pipeline_version.number
            for name in ("start_at", "end_at"):  # shown, and read back, in the schedule's time zone
                values[name] = (
                    values[name].astimezone(zone(schedule.timezone)).strftime("%Y-%m-%dT%H:%M") if values[name] else ""
                )
    for name in ("start_at", "end_at"):
        if values.get(name) and not isinstance(values[name], str):
            values[name] = values[name].strftime("%Y-%m-%dT%H:%M")
    bindings = values.get("bindings") or (schedule.bindings if schedule else {})
    return render(
        request,
        "schedules/form.html",
        {
            "pipeline": pipeline,
            "schedule": schedule,
            "values": values,
            "errors": errors or {},
            "versions": pipeline.versions.order_by("-number"),
            "bindings": _binding_rows(request, version, bindings, gate=values.get("gate") or None),
            "triggers": Trigger.choices,
            "overlaps": Overlap.choices,
            "catch_ups": CatchUp.choices,
            "nav": "schedules",
            "gate": values.get("gate") or {},
            **_gate_choices(request, version),
            "gate_error": any(key.startswith("gate") for key in (errors or {})),
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
@team_required(write=True)
def schedule_create_view(request):
    """New schedule of a pipeline (?pipeline=<pk>); without one, choose the pipeline first."""
    source = request.POST if request.method == "POST" else request.GET
    if not source.get("pipeline"):
        return render(
            request, "schedules/form.html", {"pipelines": pipeline_list(team=request.team), "nav": "schedules"}
        )
    pipeline = _pipeline_or_404(request, source["pipeline"])
    if request.method == "GET":
        return _form(request, pipeline=pipeline)
    values = _form_values(request.POST)
    try:
        schedule = schedule_create(
            team=request.team,
            user=request.user,
            pipeline_id=pipeline.pk,
            paused=request.POST.get("paused") == "on",
            **values,
        )
    except ScheduleError as exc:
        return _form(request, pipeline=pipeline, values=values, errors=exc.errors, status=400)
    messages.success(request, f"Schedule {schedule.name} saved.")
    return redirect("schedules:detail", schedule.pk)


@require_http_methods(["GET", "POST"])
@team_required(write=True)
def schedule_edit_view(request, pk):
    schedule = _schedule_or_404(request, pk)
    if request.method == "GET":
        return _form(request, pipeline=schedule.pipeline, schedule=schedule)
    values = _form_values(request.POST)
    try:
        schedule_update(schedule=schedule, user=request.user, pipeline_id=schedule.pipeline_id, **values)
    except ScheduleError as exc:
        return _form(
            request, pipeline=schedule.pipeline, schedule=schedule, values=values, errors=exc.errors, status=400
        )
    messages.success(request, f"Schedule {schedule.name} saved.")
    return redirect("schedules:detail", schedule.pk)


@require_POST
@team_required(write=True)
def schedule_pause_view(request, pk):
    schedule_pause(schedule=_schedule_or_404(request, pk), user=request.user)
    return redirect("schedules:detail", pk)


@require_POST
@team_required(write=True)
def schedule_resume_view(request, pk):
    schedule_resume(schedule=_schedule_or_404(request, pk), user=request.user)
    return redirect("schedules:detail", pk)


@require_POST
@team_required(write=True)
def schedule_run_now_view(request, pk):
    tick = schedule_run_now(schedule=_schedule_or_404(request, pk), user=request.user)
    if tick.run is not None:
        messages.success(request, f"Started run #{tick.run.number}.")
    else:
        messages.error(request, tick.reason)
    return redirect("schedules:detail", pk)


@require_POST
@team_required(write=True)
def schedule_delete_view(request, pk):
    """Delete the schedule and its tick history; the runs it started stay (and say which schedule it was)."""
    schedule = _schedule_or_404(request, pk)
    count = schedule_delete(schedule=schedule, user=request.user)
    kept = {0: "", 1: " The run it started stays."}.get(count, f" The {count} runs it started stay.")
    messages.success(request, f"Deleted schedule {schedule.name!r}.{kept}")
    return redirect("schedules:list")
