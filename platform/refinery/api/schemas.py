from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Schema
from pydantic import AfterValidator, Field, model_validator

NUL_MESSAGE = "text must not contain NUL characters (\\u0000)"


def nul_path(value: Any, path: str = "") -> str | None:
    """Where a NUL character hides in JSON-like input (a string, a key, at any depth), or None. PostgreSQL
    stores no NUL in text or jsonb: without this check such input fails deep in a query, as a 500."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and "\x00" in key:
            return where
        found = nul_path(item, where)
        if found is not None:
            return found
    return None


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    return value


Text = Annotated[str, AfterValidator(_text)]  # a query string parameter (JSON bodies are checked by In)


class In(Schema):
    """Base of the request bodies: refuses NUL characters anywhere in the body, naming where (422)."""

    @model_validator(mode="after")
    def _no_nul(self):
        where = nul_path(self.model_dump())
        if where is not None:
            where = where.replace("\x00", "\\u0000")
            raise ValueError(f"{where}: {NUL_MESSAGE}")
        return self


class ErrorOut(Schema):
    detail: str
    errors: dict[str, str] = {}


class ValidationIssueOut(Schema):
    row: int | None
    field: str | None
    message: str


class UploadErrorOut(Schema):
    detail: str
    error_count: int
    issues: list[ValidationIssueOut]


class DatasetVersionOut(Schema):
    id: int
    dataset_id: int
    name: str
    kind: str
    version: int
    sha256: str
    format: str
    row_count: int
    size_bytes: int
    columns: list[str]
    created_at: datetime
    created: bool = True


class DatasetOut(Schema):
    id: int
    name: str
    kind: str
    description: str
    latest_version: int | None
    versions: list[dict[str, Any]]


class BaseModelIn(In):
    name: str
    source: str
    name_or_path: str
    revision: str = ""
    description: str = ""


class BaseModelOut(Schema):
    id: int
    name: str
    source: str
    name_or_path: str
    revision: str
    architecture: str
    parameter_count: int | None


class StageIn(In):
    name: str
    method: str
    dataset_id: int | None = None
    eval_dataset_id: int | None = None
    input: str = "base"
    inputs: list[str] | None = None  # a merge stage's models: other stages' names
    config: dict[str, Any] = {}
    adapter: dict[str, Any] | None = None


class SpecIn(In):
    seed: int = 42
    stages: list[StageIn]
    retention_dataset_id: int | None = None
    auto_evaluate: bool = True


class PipelineIn(In):
    name: str
    base_model_id: int
    description: str = ""
    spec: SpecIn


class PipelineOut(Schema):
    id: int
    name: str
    description: str
    base_model_id: int
    version: int
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class PipelineVersionOut(Schema):
    number: int
    base_model_id: int
    spec: dict[str, Any]
    description: str
    created_at: datetime


class RerunIn(In):
    latest_data: bool = False  # False: the same snapshot; True: the same pipeline version with the newest data


class RunStartIn(In):
    seed: int | None = Field(None, ge=0, lt=2**31)  # as a pipeline's seed; the column is a bigint
    name: str = ""
    version: int | None = None  # a pipeline version number; the current one when left out


class StageOut(Schema):
    index: int
    name: str
    method: str
    status: str
    attempt: int
    step: int
    total_steps: int
    progress: float
    trainable_params: int | None
    total_params: int | None
    mlflow_run_id: str
    error: str
    outputs: dict[str, Any]
    summary: dict[str, Any]
    metrics: dict[str, dict[str, float | int | None]]
    started_at: datetime | None
    finished_at: datetime | None


class RunOut(Schema):
    number: int
    name: str
    status: str
    pipeline_id: int | None
    pipeline_version: int | None
    rerun_of: int | None
    seed: int
    code_version: str
    mlflow_experiment_id: str
    mlflow_run_id: str
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    snapshot: dict[str, Any]
    stages: list[StageOut]
