from django.conf import settings
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from refinery.basemodels.forms import BaseModelForm, BaseModelUploadForm
from refinery.basemodels.models import BaseModel
from refinery.basemodels.selectors import base_model_get, base_model_list, base_model_runs
from refinery.basemodels.services import BaseModelError, base_model_create, base_model_upload
from refinery.core.auth import team_required


@require_GET
@team_required
def base_model_list_view(request):
    return render(request, "basemodels/list.html", {"models": base_model_list(team=request.team), "nav": "models"})


def _evaluation_headline(run) -> dict | None:
    """The target result of the run's last finished evaluation (metric, value, gain), if it has one."""
    for stage in reversed(list(run.stages.all())):
        target = (stage.summary or {}).get("target") if stage.method == "evaluate" else None
        if stage.status == "succeeded" and isinstance(target, dict) and target.get("metric"):
            return target
    return None


@require_GET
@team_required
def base_model_detail_view(request, pk: int):
    try:
        model = base_model_get(team=request.team, pk=pk)
    except BaseModel.DoesNotExist:
        raise Http404("no such base model in this team") from None
    runs = base_model_runs(team=request.team, model=model)
    for run in runs:
        run.evaluation = _evaluation_headline(run)
    return render(request, "basemodels/detail.html", {"model": model, "runs": runs, "nav": "models"})


@require_http_methods(["GET", "POST"])
@team_required(write=True)
def base_model_create_view(request):
    form = BaseModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            model = base_model_create(team=request.team, user=request.user, **form.cleaned_data)
        except BaseModelError as exc:
            for field, message in exc.errors.items():
                form.add_error(field if field in form.fields else None, message.split(": ", 1)[-1])
        else:
            messages.success(request, f"Registered base model {model.name}.")
            return redirect("basemodels:list")
    return render(request, "basemodels/form.html", {"form": form, "nav": "models"}, status=400 if form.errors else 200)


@require_http_methods(["GET", "POST"])
@team_required(write=True)
def base_model_upload_view(request):
    """Upload a model folder as an archive into the team's own model root and register it."""
    form = BaseModelUploadForm(request.POST or None, request.FILES or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                model = base_model_upload(
                    team=request.team,
                    user=request.user,
                    name=form.cleaned_data["name"],
                    filename=upload.name,
                    fileobj=upload,
                    description=form.cleaned_data["description"],
                )
            except BaseModelError as exc:
                for field, message in exc.errors.items():
                    form.add_error(field if field in form.fields else None, message.split(": ", 1)[-1])
                status = 413 if exc.too_large else 400
            else:
                messages.success(request, f"Uploaded and registered base model {model.name}.")
                return redirect("basemodels:detail", pk=model.pk)
        else:
            status = 400
    return render(
        request,
        "basemodels/upload.html",
        {"form": form, "nav": "models", "max_bytes": settings.REFINERY_MAX_MODEL_UPLOAD_BYTES},
        status=status,
    )
