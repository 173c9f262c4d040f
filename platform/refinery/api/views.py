"""/api/v1: token-authenticated, team-scoped, OpenAPI at /api/v1/openapi.json."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import File, Form, NinjaAPI, Router
from ninja.errors import HttpError
from ninja.files import UploadedFile
from ninja.parser import Parser

from refinery.api import secret_routes
from refinery.api.auth import READ_ONLY_TOKEN, TokenAuth
from refinery.api.docs import VendoredSwagger
from refinery.api.schemas import (
    NUL_MESSAGE,
    BaseModelIn,
    BaseModelOut,
    DatasetOut,
    DatasetVersionOut,
    ErrorOut,
    PipelineIn,
    PipelineOut,
    PipelineVersionOut,
    RerunIn,
    RunOut,
    RunStartIn,
    Text,
    UploadErrorOut,
    nul_path,
)
from refinery.basemodels.selectors import base_model_list
from refinery.basemodels.services import BaseModelError, base_model_create, base_model_upload
from refinery.data.models import Dataset
from refinery.data.selectors import dataset_get, dataset_list
from refinery.data.services import DatasetInUse, DatasetUploadError, dataset_delete, dataset_version_create
from refinery.pipelines.models import Pipeline
from refinery.pipelines.selectors import pipeline_get, pipeline_list
from refinery.pipelines.services import pipeline_create, pipeline_current_version, pipeline_update
from refinery.pipelines.specs import SpecError
from refinery.runs.models import IllegalTransition, Run
from refinery.runs.selectors import run_get, run_list, stage_metric_summary
from refinery.runs.services import RunError, run_cancel, run_create, run_rerun
from refinery.teams.models import ApiToken
from refinery.teams.selectors import membership_get


class UnsupportedMediaType(Exception):
    pass


class JsonBodyParser(Parser):
    """A route that takes a JSON body reads only JSON: another content type is 415, not a guess."""

    def parse_body(self, request: HttpRequest):
        content_type = request.content_type or ""
        if content_type != "application/json" and not (
            content_type.startswith("application/") and content_type.endswith("+json")
        ):
            raise UnsupportedMediaType(
                f"this route takes a JSON body: send it with Content-Type: application/json "
                f"(got {content_type or 'no content type'})"
            )
        return super().parse_body(request)


api = NinjaAPI(
    title="Refinery API",
    version="1",
    description="Datasets, pipelines and runs of one team. Authenticate with "
    "`Authorization: Bearer <token>`; create a token with `python manage.py api_token <username>`.",
    auth=TokenAuth(),
    urls_namespace="api",
    openapi_url="/openapi.json",
    docs_url="/docs",
    parser=JsonBodyParser(),
    docs=VendoredSwagger(),
)


@api.exception_handler(HttpError)
def _http_error(request, exc):
    # ninja answers any parser failure with 400 "Cannot parse request body" (raised from it).
    if isinstance(exc.__cause__, UnsupportedMediaType):
        return api.create_response(request, {"detail": str(exc.__cause__)}, status=415)
    return api.create_response(request, {"detail": str(exc)}, status=exc.status_code)


class WriteForbidden(Exception):
    pass


@api.exception_handler(WriteForbidden)
def _forbidden(request, exc):
    return api.create_response(request, {"detail": "viewers cannot change anything in this team"}, status=403)


def _require_write(request: HttpRequest) -> None:
    if getattr(request.auth, "scope", ApiToken.Scope.WRITE) != ApiToken.Scope.WRITE:  # TokenAuth refuses first
        raise HttpError(403, READ_ONLY_TOKEN)
    membership = membership_get(team=request.team, user=request.user)
    if membership is None or not membership.can_write:
        raise WriteForbidden()


def _version_out(version, created: bool = True) -> dict:
    return {
        "id": version.pk,
        "dataset_id": version.dataset_id,
        "name": version.dataset.name,
        "kind": version.dataset.kind,
        "version": version.version,
        "sha256": version.sha256,
        "format": version.format,
        "row_count": version.row_count,
        "size_bytes": version.size_bytes,
        "columns": version.columns,
        "created_at": version.created_at,
        "created": created,
    }


def _dataset_out(dataset: Dataset) -> dict:
    versions = list(dataset.versions.order_by("-version"))
    return {
        "id": dataset.pk,
        "name": dataset.name,
        "kind": dataset.kind,
        "description": dataset.description,
        "latest_version": versions[0].version if versions else None,
        "versions": [
            {
                "version": v.version,
                "sha256": v.sha256,
                "rows": v.row_count,
                "format": v.format,
                "created_at": v.created_at.isoformat(),
            }
            for v in versions
        ],
    }


def _run_out(run: Run) -> dict:
    stages = []
    for stage in run.stages.order_by("index"):
        stages.append(
            {
                "index": stage.index,
                "name": stage.name,
                "method": stage.method,
                "status": stage.status,
                "attempt": stage.attempt,
                "step": stage.step,
                "total_steps": stage.total_steps,
                "progress": stage.progress,
                "trainable_params": stage.trainable_params,
                "total_params": stage.total_params,
                "mlflow_run_id": stage.mlflow_run_id,
                "error": stage.error,
                "outputs": stage.outputs,
                "summary": stage.summary,
                "metrics": stage_metric_summary(stage_run=stage),
                "started_at": stage.started_at,
                "finished_at": stage.finished_at,
            }
        )
    return {
        "number": run.number,
        "name": run.name,
        "status": run.status,
        "pipeline_id": run.pipeline_id,
        "pipeline_version": run.pipeline_version.number if run.pipeline_version_id else None,
        "rerun_of": run.rerun_of.number if run.rerun_of_id else None,
        "seed": run.seed,
        "code_version": run.code_version,
        "mlflow_experiment_id": run.mlflow_experiment_id,
        "mlflow_run_id": run.mlflow_run_id,
        "error": run.error,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "snapshot": run.snapshot,
        "stages": stages,
    }


datasets = Router(tags=["datasets"])


@datasets.get("", response=list[DatasetOut])
def list_datasets(request):
    return [_dataset_out(d) for d in dataset_list(team=request.team)]


@datasets.get("/{int:dataset_id}", response={200: DatasetOut, 404: ErrorOut})
def get_dataset(request, dataset_id: int):
    try:
        return _dataset_out(dataset_get(team=request.team, pk=dataset_id))
    except Dataset.DoesNotExist:
        return 404, {"detail": f"dataset #{dataset_id} not found in this team"}


@datasets.delete("/{int:dataset_id}", response={204: None, 404: ErrorOut, 409: ErrorOut})
def delete_dataset(request, dataset_id: int):
    """Delete a dataset and its versions; 409 while a pipeline or an unfinished run reads it."""
    _require_write(request)
    try:
        dataset = dataset_get(team=request.team, pk=dataset_id)
    except Dataset.DoesNotExist:
        return 404, {"detail": f"dataset #{dataset_id} not found in this team"}
    try:
        dataset_delete(dataset=dataset, user=request.user)
    except DatasetInUse as exc:
        return 409, {"detail": str(exc)}
    return 204, None


@datasets.post("", response={201: DatasetVersionOut, 200: DatasetVersionOut, 400: UploadErrorOut})
def upload_dataset(request, name: Form[str], kind: Form[str], file: File[UploadedFile], description: Form[str] = ""):
    """Upload JSONL, CSV or Parquet. The file is validated streaming; any problem stores nothing."""
    _require_write(request)
    where = nul_path({"name": name, "kind": kind, "description": description})  # Django cleans file names
    if where is not None:
        return 400, {
            "detail": f"{where}: {NUL_MESSAGE}",
            "error_count": 1,
            "issues": [{"row": None, "field": where, "message": NUL_MESSAGE}],
        }
    try:
        result = dataset_version_create(
            team=request.team,
            user=request.user,
            name=name,
            kind=kind,
            filename=file.name,
            chunks=file.chunks(),
            description=description,
        )
    except DatasetUploadError as exc:
        return 400, {
            "detail": exc.message,
            "error_count": exc.error_count,
            "issues": [{"row": i.row, "field": i.field, "message": i.message} for i in exc.issues],
        }
    return (201 if result.created else 200), _version_out(result.version, result.created)


models = Router(tags=["base models"])


@models.get("", response=list[BaseModelOut])
def list_base_models(request):
    return list(base_model_list(team=request.team))


@models.post("", response={201: BaseModelOut, 400: ErrorOut})
def create_base_model(request, payload: BaseModelIn):
    _require_write(request)
    try:
        return 201, base_model_create(team=request.team, user=request.user, **payload.dict())
    except BaseModelError as exc:
        return 400, {"detail": str(exc), "errors": exc.errors}


@models.post("/upload", response={201: BaseModelOut, 400: ErrorOut, 413: ErrorOut})
def upload_base_model(request, name: Form[str], file: File[UploadedFile], description: Form[str] = ""):
    """Upload a model folder as a .zip, .tar or .tar.gz (config.json, *.safetensors weights, tokenizer files;
    no pickle files) into the team's own model root, and register it as a local base model."""
    _require_write(request)
    try:
        return 201, base_model_upload(
            team=request.team, user=request.user, name=name, filename=file.name, fileobj=file, description=description
        )
    except BaseModelError as exc:
        return (413 if exc.too_large else 400), {"detail": str(exc), "errors": exc.errors}


pipelines = Router(tags=["pipelines"])


@pipelines.get("", response=list[PipelineOut])
def list_pipelines(request):
    return list(pipeline_list(team=request.team))


@pipelines.post("", response={201: PipelineOut, 400: ErrorOut})
def create_pipeline(request, payload: PipelineIn):
    """Create a pipeline. Each stage's config is validated by its method's typed config."""
    _require_write(request)
    try:
        pipeline = pipeline_create(
            team=request.team,
            user=request.user,
            name=payload.name,
            base_model_id=payload.base_model_id,
            description=payload.description,
            spec=payload.spec.dict(),
        )
    except SpecError as exc:
        return 400, {"detail": str(exc), "errors": exc.errors}
    return 201, pipeline


@pipelines.get("/{int:pipeline_id}", response={200: PipelineOut, 404: ErrorOut})
def get_pipeline(request, pipeline_id: int):
    try:
        return pipeline_get(team=request.team, pk=pipeline_id)
    except Pipeline.DoesNotExist:
        return 404, {"detail": f"pipeline #{pipeline_id} not found in this team"}


@pipelines.put("/{int:pipeline_id}", response={200: PipelineOut, 400: ErrorOut, 404: ErrorOut})
def update_pipeline(request, pipeline_id: int, payload: PipelineIn):
    """Replace a pipeline's definition. A changed spec or base model makes a new version; runs keep theirs."""
    _require_write(request)
    try:
        pipeline = pipeline_get(team=request.team, pk=pipeline_id)
    except Pipeline.DoesNotExist:
        return 404, {"detail": f"pipeline #{pipeline_id} not found in this team"}
    try:
        pipeline_update(
            pipeline=pipeline,
            user=request.user,
            name=payload.name,
            base_model_id=payload.base_model_id,
            spec=payload.spec.dict(),
            description=payload.description,
        )
    except SpecError as exc:
        return 400, {"detail": str(exc), "errors": exc.errors}
    return 200, pipeline_get(team=request.team, pk=pipeline_id)


@pipelines.get("/{int:pipeline_id}/versions", response={200: list[PipelineVersionOut], 404: ErrorOut})
def list_pipeline_versions(request, pipeline_id: int):
    try:
        pipeline = pipeline_get(team=request.team, pk=pipeline_id)
    except Pipeline.DoesNotExist:
        return 404, {"detail": f"pipeline #{pipeline_id} not found in this team"}
    pipeline_current_version(pipeline)
    return 200, list(pipeline.versions.order_by("-number"))


@pipelines.post("/{int:pipeline_id}/runs", response={201: RunOut, 400: ErrorOut, 404: ErrorOut})
def start_run(request, pipeline_id: int, payload: RunStartIn | None = None):
    """Start a run: snapshot the pipeline version, dataset versions, base model, code version and seed."""
    _require_write(request)
    try:
        pipeline = pipeline_get(team=request.team, pk=pipeline_id)
    except Pipeline.DoesNotExist:
        return 404, {"detail": f"pipeline #{pipeline_id} not found in this team"}
    payload = payload or RunStartIn()
    version = None
    if payload.version is not None:
        version = pipeline.versions.filter(number=payload.version).first()
        if version is None:
            return 404, {"detail": f"pipeline #{pipeline_id} has no version {payload.version}"}
    try:
        run = run_create(pipeline=pipeline, user=request.user, seed=payload.seed, name=payload.name, version=version)
    except RunError as exc:
        return 400, {"detail": str(exc)}
    return 201, _run_out(run)


runs = Router(tags=["runs"])


@runs.get("", response=list[RunOut])
def list_runs(request, status: Text | None = None, limit: int = 50):
    return [_run_out(r) for r in run_list(team=request.team, status=status)[: max(1, min(limit, 200))]]


@runs.get("/{int:number}", response={200: RunOut, 404: ErrorOut})
def get_run(request, number: int):
    try:
        return _run_out(run_get(team=request.team, number=number))
    except Run.DoesNotExist:
        return 404, {"detail": f"run #{number} not found in this team"}


@runs.post("/{int:number}/cancel", response={200: RunOut, 404: ErrorOut, 409: ErrorOut})
def cancel_run(request, number: int):
    _require_write(request)
    try:
        run = run_get(team=request.team, number=number)
    except Run.DoesNotExist:
        return 404, {"detail": f"run #{number} not found in this team"}
    try:
        run_cancel(run=run, user=request.user)
    except IllegalTransition as exc:
        return 409, {"detail": str(exc)}
    return 200, _run_out(run_get(team=request.team, number=number))


@runs.post("/{int:number}/rerun", response={201: RunOut, 400: ErrorOut, 404: ErrorOut})
def rerun_run(request, number: int, payload: RerunIn | None = None):
    """Run again: the same snapshot, or (latest_data) the same pipeline version with the newest datasets."""
    _require_write(request)
    try:
        run = run_get(team=request.team, number=number)
    except Run.DoesNotExist:
        return 404, {"detail": f"run #{number} not found in this team"}
    try:
        new = run_rerun(run=run, user=request.user, latest_data=(payload or RerunIn()).latest_data)
    except RunError as exc:
        return 400, {"detail": str(exc)}
    return 201, _run_out(new)


@api.get("/methods", tags=["methods"])
def list_methods(request):
    """Every post-training method with its config schema (fields, defaults, bounds, help)."""
    from trainers.catalog import describe_methods

    return describe_methods()


api.add_router("/datasets", datasets)
api.add_router("/base-models", models)
api.add_router("/pipelines", pipelines)
api.add_router("/runs", runs)
api.add_router("/team", "refinery.api.team_views.router")
api.add_router("/gates", "refinery.api.gate_views.router")
api.add_router("/webhooks", "refinery.api.webhook_views.router")
api.add_router("/schedules", "refinery.api.schedule_views.router")
api.add_router("/registered-models", "refinery.api.registry_views.router")

api.add_router("/team/secrets", secret_routes.router)
