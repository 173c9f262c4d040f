from __future__ import annotations

from django.db import transaction

from refinery.basemodels.models import BaseModel
from refinery.pipelines.models import Pipeline
from refinery.pipelines.specs import SpecError, pipeline_spec_normalize
from refinery.teams.services import audit


@transaction.atomic
def pipeline_create(*, team, user, name: str, base_model_id, spec, description: str = "") -> Pipeline:
    """Create a pipeline from a spec; every stage is validated against its method's config."""
    errors: dict[str, str] = {}
    name = (name or "").strip()
    if not name:
        errors["name"] = "name: give the pipeline a name"
    elif len(name) > 100:
        errors["name"] = "name: at most 100 characters"
    elif Pipeline.objects.filter(team=team, name=name).exists():
        errors["name"] = f"name: this team already has a pipeline called {name!r}"
    base_model = None
    try:
        base_model = BaseModel.objects.get(team=team, pk=int(base_model_id))
    except (TypeError, ValueError, BaseModel.DoesNotExist):
        errors["base_model_id"] = "base model: choose one of this team's base models"
    try:
        normalized = pipeline_spec_normalize(team=team, spec=spec, base_model=base_model)
    except SpecError as exc:
        errors.update(exc.errors)
    if errors:
        raise SpecError(errors)
    pipeline = Pipeline.objects.create(
        team=team, name=name, description=description, base_model=base_model, spec=normalized, created_by=user
    )
    audit(team=team, user=user, action="pipeline.created", target=name)
    return pipeline
