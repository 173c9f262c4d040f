"""A stage's MLflow artifacts for the run page: checked paths, folder listings, file downloads.

Permission is the run's: views find the run with `run_get(team=request.team, ...)` (another team's run
is a 404), then the stage by name inside that run, and only then ask MLflow, with the MLflow run id
from our own row (never from the request). The path a user sends is checked here first: relative,
"/"-separated, no "..", no absolute or drive paths, no backslashes or control characters.
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import unquote

from django.core.cache import cache

from refinery.runs.models import StageRun
from refinery.tracking.artifacts import (
    ArtifactEntry,
    ArtifactNotFound,
    ArtifactStream,
    ArtifactUnavailable,
    artifact_entries,
    artifact_file,
    artifact_open,
)

LISTING_CACHE_SECONDS = 600  # a finished stage's artifacts no longer change
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArtifactPathError(ValueError):
    """A path that could leave the run's artifact folder (or is not a plain relative path)."""


def artifact_path_clean(path: str | None) -> str:
    """The artifact path as MLflow wants it ("" for the root), or ArtifactPathError."""
    raw = (path or "").strip()
    if not raw:
        return ""
    for candidate in (raw, unquote(raw)):  # "%2e%2e" is ".." to whatever decodes it once more
        if any(ord(c) < 32 or ord(c) == 127 for c in candidate) or "\\" in candidate:
            raise ArtifactPathError("control characters and backslashes are not allowed in a path")
        if candidate.startswith(("/", "~")) or _DRIVE.match(candidate) or "://" in candidate:
            raise ArtifactPathError("artifact paths are relative to the stage's artifact folder")
        if ".." in candidate.split("/"):
            raise ArtifactPathError("'..' is not allowed in an artifact path")
    return "/".join(part for part in raw.split("/") if part not in ("", "."))


@dataclass(frozen=True)
class Listing:
    stage: StageRun
    path: str
    entries: list[ArtifactEntry]
    crumbs: list[tuple[str, str]]  # (label, path) from the root to `path`
    parent: str | None
    error: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(e.size or 0 for e in self.entries)


def _crumbs(path: str) -> list[tuple[str, str]]:
    parts = path.split("/") if path else []
    return [(part, "/".join(parts[: i + 1])) for i, part in enumerate(parts)]


def stage_artifact_listing(*, stage: StageRun, path: str = "") -> Listing:
    """What is directly under `path` in the stage's artifacts (cached once the stage is finished).
    A stage with no MLflow run yet has none; an unreachable store gives an empty listing with `error`."""
    path = artifact_path_clean(path)
    parent = posixpath.dirname(path) if path else None
    if not stage.mlflow_run_id:
        return Listing(stage, path, [], _crumbs(path), parent)
    key = f"refinery:artifacts:{stage.mlflow_run_id}:{path}"
    entries = cache.get(key) if stage.is_finished else None
    if entries is None:
        try:
            entries = artifact_entries(mlflow_run_id=stage.mlflow_run_id, path=path)
        except ArtifactUnavailable as exc:
            return Listing(stage, path, [], _crumbs(path), parent, error=str(exc))
        if stage.is_finished:
            cache.set(key, entries, LISTING_CACHE_SECONDS)
    return Listing(stage, path, entries, _crumbs(path), parent)


@dataclass(frozen=True)
class Download:
    entry: ArtifactEntry
    stream: ArtifactStream
    content_type: str


def stage_artifact_open(*, stage: StageRun, path: str) -> Download:
    """One file of the stage's artifacts, opened for streaming. ArtifactPathError for a bad path,
    ArtifactNotFound for a folder or a missing file, ArtifactUnavailable when the store is away."""
    path = artifact_path_clean(path)
    if not path or not stage.mlflow_run_id:
        raise ArtifactNotFound("no such artifact")
    entry = artifact_file(mlflow_run_id=stage.mlflow_run_id, path=path)
    stream = artifact_open(mlflow_run_id=stage.mlflow_run_id, path=path)
    content_type = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
    return Download(entry=entry, stream=stream, content_type=content_type)


__all__ = [
    "ArtifactNotFound",
    "ArtifactPathError",
    "ArtifactUnavailable",
    "Download",
    "Listing",
    "artifact_path_clean",
    "stage_artifact_listing",
    "stage_artifact_open",
]
