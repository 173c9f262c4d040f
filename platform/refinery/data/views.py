from __future__ import annotations

from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from refinery.basemodels.selectors import base_model_list
from refinery.core.auth import team_required
from refinery.data.chat_template import DEFAULT_CHAT_TEMPLATE, ChatTemplateError, render_chat_template, row_to_messages
from refinery.data.forms import DatasetUploadForm
from refinery.data.limits import decode_limits
from refinery.data.models import Dataset, DatasetVersion
from refinery.data.selectors import (
    dataset_get,
    dataset_list,
    dataset_version_diff,
    dataset_version_runs,
    dataset_versions,
)
from refinery.data.services import DatasetInUse, DatasetUploadError, dataset_delete, dataset_version_create
from refinery.data.validation import DatasetError, iter_rows


@require_GET
@team_required
def dataset_list_view(request):
    return render(request, "data/list.html", {"datasets": dataset_list(team=request.team), "nav": "datasets"})


@require_http_methods(["GET", "POST"])
@team_required(write=True)
def dataset_upload_view(request):
    initial = {"name": request.GET.get("name", ""), "kind": request.GET.get("kind", "")}
    form = DatasetUploadForm(request.POST or None, request.FILES or None, initial=initial)
    context = {"form": form, "nav": "datasets", "issues": [], "error_count": 0, "error": ""}
    if request.method == "POST":
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                result = dataset_version_create(
                    team=request.team,
                    user=request.user,
                    name=form.cleaned_data["name"],
                    kind=form.cleaned_data["kind"],
                    filename=upload.name,
                    chunks=upload.chunks(),
                    description=form.cleaned_data["description"],
                )
            except DatasetUploadError as exc:
                context.update(error=exc.message, issues=exc.issues, error_count=exc.error_count)
            else:
                version = result.version
                if result.created:
                    messages.success(
                        request, f"Stored {version} · {version.row_count:,} rows · sha256 {version.sha256[:12]}"
                    )
                else:
                    messages.info(request, f"Identical to {version}; no new version made.")
                url = reverse("data:detail", args=[version.dataset_id])
                if request.headers.get("x-requested-with") == "XMLHttpRequest" or request.htmx:
                    return JsonResponse({"redirect": url})
                return redirect(url)
        status = 400
        if request.headers.get("x-requested-with") == "XMLHttpRequest" or request.htmx:
            return render(request, "data/upload.html#upload-result", context, status=status)
        return render(request, "data/upload.html", context, status=status)
    return render(request, "data/upload.html", context)


def _chat_preview(request, version: DatasetVersion) -> dict:
    models = list(base_model_list(team=request.team))
    chosen = None
    model_id = request.GET.get("model")
    if model_id:
        chosen = next((m for m in models if str(m.pk) == model_id), None)
    if chosen is None:
        chosen = next((m for m in models if m.chat_template), None)
    template = chosen.chat_template if chosen and chosen.chat_template else DEFAULT_CHAT_TEMPLATE
    rendered, error = "", ""
    if version.row_count:
        try:
            first_row = next(iter_rows(version.path, version.format, version.dataset.kind, limits=decode_limits()))
            messages_ = row_to_messages(first_row, version.dataset.kind)
            rendered = render_chat_template(template, messages_)
        except (ChatTemplateError, DatasetError, OSError, StopIteration, KeyError, TypeError, ValueError) as exc:
            error = str(exc)
    return {
        "models": models,
        "chosen_model": chosen,
        "rendered": rendered,
        "template_error": error,
        "template_source": "default ChatML" if not (chosen and chosen.chat_template) else chosen.name,
    }


def _dataset_or_404(request, pk: int) -> Dataset:
    try:
        return dataset_get(team=request.team, pk=pk)
    except Dataset.DoesNotExist:
        raise Http404("no such dataset in this team") from None


def _history(request, dataset: Dataset, versions: list[DatasetVersion]) -> list[dict]:
    """One row per version, newest first: the version, what changed since the one before (known without
    reading a file, else loaded lazily by the row) and the runs that read it."""
    runs = dataset_version_runs(team=request.team, dataset=dataset)
    rows = []
    for i, version in enumerate(versions):
        previous = versions[i + 1] if i + 1 < len(versions) else None
        rows.append(
            {
                "v": version,
                "previous": previous,
                "runs": runs.get(version.pk, []),
                "diff": dataset_version_diff(old=previous, new=version, compute=False) if previous else None,
            }
        )
    return rows


@require_GET
@team_required
def dataset_detail_view(request, pk: int):
    dataset = _dataset_or_404(request, pk)
    versions = dataset_versions(dataset=dataset)
    selected = versions[0] if versions else None
    if request.GET.get("version"):
        selected = next((v for v in versions if str(v.version) == request.GET["version"]), selected)
    columns = selected.columns if selected else []
    context = {"dataset": dataset, "versions": versions, "version": selected, "columns": columns, "nav": "datasets"}
    if selected:
        context.update(_chat_preview(request, selected))
    if request.htmx and request.htmx.target == "chat-preview":
        return render(request, "data/detail.html#chat-preview", context)
    context["history"] = _history(request, dataset, versions)
    return render(request, "data/detail.html", context)


@require_GET
@team_required
def dataset_version_diff_view(request, pk: int, version: int):
    """What changed from the version before to `version` (the history row's diff cell, for htmx)."""
    dataset = _dataset_or_404(request, pk)
    pair = list(dataset.versions.filter(version__lte=version).order_by("-version")[:2])
    if len(pair) < 2 or pair[0].version != version:
        raise Http404("no such version, or it has no version before it")
    new, old = pair
    context = {"row": {"v": new, "previous": old, "diff": dataset_version_diff(old=old, new=new)}, "dataset": dataset}
    return render(request, "data/detail_version_diff.html", context)


@require_POST
@team_required(write=True)
def dataset_delete_view(request, pk: int):
    dataset = _dataset_or_404(request, pk)
    try:
        count = dataset_delete(dataset=dataset, user=request.user)
    except DatasetInUse as exc:
        messages.error(request, f"Not deleted: {exc}.")
        return redirect("data:detail", pk=dataset.pk)
    messages.success(request, f"Deleted dataset {dataset.name!r} ({count} version{'s' if count != 1 else ''}).")
    return redirect("data:list")
