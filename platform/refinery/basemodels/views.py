from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from refinery.basemodels.forms import BaseModelForm
from refinery.basemodels.models import BaseModel
from refinery.basemodels.selectors import base_model_get, base_model_list, base_model_runs
from refinery.basemodels.services import BaseModelError, base_model_create
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
    return render(request, "basemodels/form.html", {"form": form, "nav": "models"},
                  status=400 if form.errors else 200)
