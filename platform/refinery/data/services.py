"""Dataset services: stream-validate an upload, store it by content hash, version it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from refinery.data.limits import child_limits, decode_limits
from refinery.data.models import Dataset, DatasetKind, DatasetVersion
from refinery.data.validate_child import ValidationAborted, validate_file_in_child
from refinery.data.validation import ValidationIssue, detect_format
from refinery.teams.quotas import team_storage_guard
from refinery.teams.services import audit

NAME_MAX = 100


@dataclass
class DatasetUploadError(Exception):
    """The upload was refused; nothing was stored. `issues` holds the first problems found."""

    message: str
    issues: list[ValidationIssue] = field(default_factory=list)
    error_count: int = 0

    def __str__(self) -> str:
        return self.message


@dataclass
class UploadResult:
    version: DatasetVersion
    created: bool  # False when the content was identical to the latest version


def _spool(chunks: Iterable[bytes], *, suffix: str) -> Path:
    """Write an upload to a temporary file under var/, refusing files over the size limit."""
    tmp_dir = settings.VAR_DIR / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=suffix)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > settings.REFINERY_MAX_UPLOAD_BYTES:
                    raise DatasetUploadError(
                        f"file is larger than the {settings.REFINERY_MAX_UPLOAD_BYTES:,} byte limit"
                    )
                out.write(chunk)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def _store(path: Path, *, sha256: str, fmt: str) -> tuple[str, bool]:
    """Move a validated file to its content-addressed place. Returns (relative path, newly stored)."""
    relative = f"{sha256[:2]}/{sha256}.{fmt}"
    target = settings.REFINERY_DATASET_DIR / relative
    if target.exists():
        path.unlink(missing_ok=True)
        return relative, False
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)  # atomic on one filesystem: the file is whole or absent
    return relative, True


def dataset_version_create(
    *, team, user, name: str, kind: str, filename: str, chunks: Iterable[bytes], description: str = ""
) -> UploadResult:
    """Validate and store an uploaded file as the next version of dataset `name`.

    A file with any problem stores nothing and raises DatasetUploadError with the
    first problems (line/row and field) and the total count. The file is untrusted:
    a child process validates it under memory, time and decoded-size limits
    (refinery.data.limits), so a decompression bomb fails this upload and nothing else.
    """
    chunks = team_storage_guard(team=team, chunks=chunks, refuse=DatasetUploadError)  # its storage limit
    name = (name or "").strip()
    if not name:
        raise DatasetUploadError("name: give the dataset a name")
    if len(name) > NAME_MAX:
        raise DatasetUploadError(f"name: at most {NAME_MAX} characters")
    if kind not in DatasetKind.values:
        raise DatasetUploadError(f"kind: unknown dataset kind {kind!r} (choose one of {', '.join(DatasetKind.values)})")
    try:
        fmt = detect_format(filename)
    except ValueError as exc:
        raise DatasetUploadError(f"file: {exc}") from None
    existing = Dataset.objects.filter(team=team, name=name).first()
    if existing and existing.kind != kind:
        raise DatasetUploadError(
            f"kind: dataset {name!r} holds {existing.get_kind_display().lower()} data; "
            f"a new version must be the same kind"
        )

    spooled = _spool(chunks, suffix=f".{fmt}")
    try:
        try:
            report = validate_file_in_child(
                spooled, format=fmt, kind=kind, limits=decode_limits(), child=child_limits()
            )
        except ValidationAborted as exc:
            raise DatasetUploadError(f"file: {exc}; nothing was stored") from None
        if not report.ok:
            raise DatasetUploadError(
                f"{report.error_count} problem{'s' if report.error_count != 1 else ''} found; nothing was stored",
                issues=list(report.issues),
                error_count=report.error_count,
            )
    except BaseException:
        spooled.unlink(missing_ok=True)
        raise

    relative, newly_stored = _store(spooled, sha256=report.sha256, fmt=fmt)
    try:
        return _version_record(
            team=team,
            user=user,
            name=name,
            kind=kind,
            description=description,
            fmt=fmt,
            filename=filename,
            relative=relative,
            report=report,
        )
    except BaseException:
        if newly_stored and not DatasetVersion.objects.filter(storage_path=relative).exists():
            (settings.REFINERY_DATASET_DIR / relative).unlink(missing_ok=True)
        raise


@transaction.atomic
def _version_record(*, team, user, name, kind, description, fmt, filename, relative, report) -> UploadResult:
    try:
        with transaction.atomic():
            dataset, _ = Dataset.objects.get_or_create(
                team=team, name=name, defaults={"kind": kind, "description": description, "created_by": user}
            )
    except IntegrityError:
        dataset = Dataset.objects.get(team=team, name=name)
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
    latest = dataset.versions.order_by("-version").first()
    if latest is not None and latest.sha256 == report.sha256:
        return UploadResult(version=latest, created=False)
    number = (dataset.versions.aggregate(n=Max("version"))["n"] or 0) + 1
    version = DatasetVersion.objects.create(
        dataset=dataset,
        version=number,
        sha256=report.sha256,
        format=fmt,
        original_filename=os.path.basename(filename)[:255],
        storage_path=relative,
        size_bytes=report.size_bytes,
        row_count=report.row_count,
        columns=list(report.columns),
        stats=report.stats,
        preview=report.preview,
        created_by=user,
    )
    if description and not dataset.description:
        dataset.description = description
        dataset.save(update_fields=["description"])
    audit(
        team=team,
        user=user,
        action="dataset.version_created",
        target=f"{name} v{number}",
        sha256=report.sha256,
        rows=report.row_count,
    )
    return UploadResult(version=version, created=True)


class DatasetInUse(Exception):
    """The dataset cannot be deleted now; the message says what still needs it."""


def _pipelines_reading(dataset: Dataset) -> list[str]:
    """Names of the team's pipelines whose current version reads `dataset` (train, eval or retention data)."""
    from refinery.pipelines.models import Pipeline

    names = []
    for pipeline in Pipeline.objects.filter(team=dataset.team_id).only("name", "spec"):
        spec = pipeline.spec or {}
        ids = {spec.get("retention_dataset_id")}
        for stage in spec.get("stages", []):
            ids.update({stage.get("dataset_id"), stage.get("eval_dataset_id")})
        if dataset.pk in ids:
            names.append(pipeline.name)
    return sorted(names)


def _active_runs_reading(dataset: Dataset, version_ids: set[int]) -> list[int]:
    """Numbers of the team's unfinished runs whose snapshot reads one of `version_ids`."""
    from refinery.runs.models import ACTIVE_STATES, Run

    numbers = []
    for run in Run.objects.filter(team=dataset.team_id, status__in=ACTIVE_STATES).only("number", "snapshot"):
        for stage in (run.snapshot or {}).get("stages", []):
            used = {(stage.get(key) or {}).get("version_id") for key in ("train_data", "eval_data", "retention_data")}
            if used & version_ids:
                numbers.append(run.number)
                break
    return sorted(numbers)


@transaction.atomic
def dataset_delete(*, dataset: Dataset, user) -> int:
    """Delete a dataset and all its versions; returns how many versions went.

    Refused while a pipeline's current version reads it (edit the pipeline first) or an unfinished run
    does (it would fail while loading it). Finished runs keep their snapshot (names and sha256), and
    re-running them exactly is then refused with a clear message. A stored file is removed once no
    dataset version (of any team: files are content-addressed) points at it, after the commit.
    """
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
    versions = list(dataset.versions.all())
    version_ids = {v.pk for v in versions}
    pipelines = _pipelines_reading(dataset)
    if pipelines:
        raise DatasetInUse(
            f"dataset {dataset.name!r} is read by pipeline{'s' if len(pipelines) > 1 else ''} "
            f"{', '.join(repr(p) for p in pipelines)}: change {'them' if len(pipelines) > 1 else 'it'} "
            "to read another dataset first"
        )
    runs = _active_runs_reading(dataset, version_ids)
    if runs:
        raise DatasetInUse(
            f"dataset {dataset.name!r} is being read by unfinished run"
            f"{'s' if len(runs) > 1 else ''} {', '.join(f'#{n}' for n in runs)}: "
            "wait for them to end or cancel them first"
        )
    paths = {v.storage_path for v in versions}
    name, count = dataset.name, len(versions)
    dataset.delete()
    audit(team=dataset.team, user=user, action="dataset.deleted", target=name, versions=count)

    def remove_unreferenced_files() -> None:
        for relative in paths:
            if not DatasetVersion.objects.filter(storage_path=relative).exists():
                (settings.REFINERY_DATASET_DIR / relative).unlink(missing_ok=True)

    transaction.on_commit(remove_unreferenced_files)
    return count
