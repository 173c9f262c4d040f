"""The notes and tags panel of a run (templates/runs/_annotations.html): htmx loads it and swaps it after each
change. Team-scoped like every run view; writing needs a non-viewer role."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from refinery.core.auth import team_required
from refinery.runs.models import Run, RunNote
from refinery.runs.selectors.annotations import annotated_run_get, run_annotations, run_note_get
from refinery.runs.services.annotations import (
    AnnotationError,
    run_note_add,
    run_note_delete,
    run_tag_add,
    run_tag_remove,
)

PANEL = "runs/_annotations.html#annotations-body"


def _run_or_404(request, number: int) -> Run:
    try:
        return annotated_run_get(team=request.team, number=number)
    except Run.DoesNotExist:
        raise Http404("no such run in this team") from None


def _panel(request, run: Run, *, error: str = "", field: str = "", value: str = ""):
    """The panel's contents; with an error, status 400 (htmx swaps it in) and the text the user typed."""
    if not request.htmx:  # a plain form post (no JavaScript): back to the run page
        return redirect("runs:detail", number=run.number)
    context = {
        "run": run,
        "ann": run_annotations(run=run, user=request.user),
        "error": error,
        "error_field": field,
        "value": value,
    }
    return render(request, PANEL, context, status=400 if error else 200)


@require_GET
@team_required
def run_annotations_view(request, number: int):
    run = _run_or_404(request, number)
    return render(request, PANEL, {"run": run, "ann": run_annotations(run=run, user=request.user)})


@require_POST
@team_required(write=True)
def run_note_add_view(request, number: int):
    run = _run_or_404(request, number)
    body = request.POST.get("body", "")
    try:
        run_note_add(run=run, user=request.user, body=body)
    except AnnotationError as exc:
        return _panel(request, run, error=str(exc), field="note", value=body)
    return _panel(request, run)


@require_POST
@team_required(write=True)
def run_note_delete_view(request, number: int, pk: int):
    run = _run_or_404(request, number)
    try:
        note = run_note_get(run=run, pk=pk)
    except RunNote.DoesNotExist:
        raise Http404("no such note on this run") from None
    try:
        run_note_delete(note=note, user=request.user)
    except AnnotationError as exc:
        return _panel(request, run, error=str(exc), field="note")
    return _panel(request, run)


@require_POST
@team_required(write=True)
def run_tag_add_view(request, number: int):
    run = _run_or_404(request, number)
    name = request.POST.get("name", "")
    try:
        run_tag_add(run=run, user=request.user, name=name)
    except AnnotationError as exc:
        return _panel(request, run, error=str(exc), field="tag", value=name)
    return _panel(request, run)


@require_POST
@team_required(write=True)
def run_tag_remove_view(request, number: int):
    run = _run_or_404(request, number)
    try:
        run_tag_remove(run=run, user=request.user, name=request.POST.get("name", ""))
    except AnnotationError as exc:
        return _panel(request, run, error=str(exc), field="tag")
    return _panel(request, run)
