from __future__ import annotations

from django.db import transaction

from refinery.basemodels.models import BaseModel
from refinery.pipelines.models import Pipeline, PipelineVersion
from refinery.pipelines.specs import SpecError, pipeline_spec_normalize
from refinery.teams.services import audit


def _checked(*, team, name: str, base_model_id, spec, pipeline: Pipeline | None = None) -> tuple[str, BaseModel, dict]:
    """Name, base model and normalized spec, or SpecError with every problem (nothing is saved)."""
    errors: dict[str, str] = {}
    name = (name or "").strip()
    if not name:
        errors["name"] = "name: give the pipeline a name"
    elif len(name) > 100:
        errors["name"] = "name: at most 100 characters"
    elif Pipeline.objects.filter(team=team, name=name).exclude(pk=getattr(pipeline, "pk", None)).exists():
        errors["name"] = f"name: this team already has a pipeline called {name!r}"
    base_model = None
    try:
        base_model = BaseModel.objects.get(team=team, pk=int(base_model_id))
    except (TypeError, ValueError, BaseModel.DoesNotExist):
        errors["base_model_id"] = "base model: choose one of this team's base models"
    normalized = {}
    try:
        normalized = pipeline_spec_normalize(team=team, spec=spec, base_model=base_model)
    except SpecError as exc:
        errors.update(exc.errors)
    if errors:
        raise SpecError(errors)
    return name, base_model, normalized


@transaction.atomic
def pipeline_create(*, team, user, name: str, base_model_id, spec, description: str = "") -> Pipeline:
    """Create a pipeline (version 1) from a spec; the graph and every stage's config are validated first."""
    name, base_model, normalized = _checked(team=team, name=name, base_model_id=base_model_id, spec=spec)
    pipeline = Pipeline.objects.create(
        team=team, name=name, description=description, base_model=base_model, spec=normalized, created_by=user
    )
    PipelineVersion.objects.create(
        pipeline=pipeline, number=1, base_model=base_model, spec=normalized, description=description, created_by=user
    )
    audit(team=team, user=user, action="pipeline.created", target=name)
    return pipeline


@transaction.atomic
def pipeline_update(*, pipeline: Pipeline, user, name: str, base_model_id, spec, description: str = "") -> bool:
    """Save an edit. A changed spec or base model makes a new version (runs keep pointing at theirs);
    returns whether it did. A rename or a new description alone changes the pipeline only."""
    pipeline = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
    name, base_model, normalized = _checked(
        team=pipeline.team, name=name, base_model_id=base_model_id, spec=spec, pipeline=pipeline
    )
    current = pipeline_current_version(pipeline)
    changed = normalized != current.spec or base_model.pk != current.base_model_id
    pipeline.name, pipeline.description = name, description
    if changed:
        pipeline.version = current.number + 1
        pipeline.spec, pipeline.base_model = normalized, base_model
        PipelineVersion.objects.create(
            pipeline=pipeline,
            number=pipeline.version,
            base_model=base_model,
            spec=normalized,
            description=description,
            created_by=user,
        )
    pipeline.save()
    audit(
        team=pipeline.team,
        user=user,
        action="pipeline.updated",
        target=f"{name} v{pipeline.version}" if changed else name,
    )
    return changed


def pipeline_current_version(pipeline: Pipeline) -> PipelineVersion:
    """The version the pipeline's spec is (written now for a pipeline saved before versions existed)."""
    version, _ = PipelineVersion.objects.get_or_create(
        pipeline=pipeline,
        number=pipeline.version,
        defaults={
            "base_model": pipeline.base_model,
            "spec": pipeline.spec,
            "description": pipeline.description,
            "created_by": pipeline.created_by,
        },
    )
    return version
