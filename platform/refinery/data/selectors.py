from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Max, Q, QuerySet

from refinery.data.limits import decode_limits
from refinery.data.models import Dataset, DatasetVersion
from refinery.data.validation import DatasetError, iter_rows


def dataset_list(*, team, kind: str | None = None) -> QuerySet[Dataset]:
    qs = Dataset.objects.filter(team=team).annotate(
        version_count=Count("versions"), last_version_at=Max("versions__created_at")
    )
    if kind:
        qs = qs.filter(kind=kind)
    return qs.order_by("name")


def dataset_get(*, team, pk: int) -> Dataset:
    return Dataset.objects.get(team=team, pk=pk)


def dataset_versions(*, dataset: Dataset) -> list[DatasetVersion]:
    """A dataset's versions, newest first, with who uploaded each."""
    return list(dataset.versions.select_related("created_by").order_by("-version"))


def dataset_versions_present(*, team, version_ids: list[int]) -> set[int]:
    """Which of these dataset versions still exist in the team (one query)."""
    if not version_ids:
        return set()
    return set(DatasetVersion.objects.filter(dataset__team=team, pk__in=version_ids).values_list("pk", flat=True))


# --- Runs that used a version ------------------------------------------------------------------

_SNAPSHOT_KEYS = ("train_data", "eval_data", "retention_data")


def _versions_in(snapshot: dict, dataset_id: int) -> set[int]:
    refs = [stage.get(key) for stage in snapshot.get("stages") or [] for key in _SNAPSHOT_KEYS]
    refs.append(snapshot.get("retention_data"))
    return {
        ref["version_id"]
        for ref in refs
        if isinstance(ref, dict) and ref.get("dataset_id") == dataset_id and ref.get("version_id")
    }


def _json_containment() -> bool:
    return connection.vendor == "postgresql"


def dataset_version_runs(*, team, dataset: Dataset, limit: int = 500) -> dict[int, list]:
    """Per version id, the team's runs whose frozen snapshot read that version (as training, held-out or
    retention data), newest first. One query: on PostgreSQL a JSONB containment test on the snapshot's
    stages (`snapshot -> 'stages' @> '[{"train_data": {"dataset_id": 7}}]'`, or eval/retention); SQLite
    has no containment operator, so there the team's newest runs are scanned in Python."""
    from refinery.runs.models import Run

    runs = Run.objects.filter(team=team).only("number", "name", "status", "snapshot", "created_at")
    containment = _json_containment()
    if containment:
        uses = Q(snapshot__retention_data__dataset_id=dataset.pk)
        for key in _SNAPSHOT_KEYS:
            uses |= Q(snapshot__stages__contains=[{key: {"dataset_id": dataset.pk}}])
        runs = runs.filter(uses)
    out: dict[int, list] = {}
    for run in runs.order_by("-number")[: limit if containment else limit * 20]:
        for version_id in _versions_in(run.snapshot or {}, dataset.pk):
            if len(out.setdefault(version_id, [])) < limit:
                out[version_id].append(run)
    return out


# --- Differences between two versions ------------------------------------------------------------

DIFF_CACHE_SECONDS = 30 * 24 * 3600  # keyed by the two files' sha256: the answer never changes


@dataclass(frozen=True)
class VersionDiff:
    """What changed from `old` to `new`. Rows are compared by a hash of their content over the columns
    both versions have (a multiset: a duplicated row counts twice); column changes are listed apart."""

    added: int
    removed: int
    unchanged: int
    columns_added: tuple[str, ...]
    columns_removed: tuple[str, ...]
    skipped: str = ""  # why no row counts were computed (too large, unreadable): then the counts are 0

    @property
    def computed(self) -> bool:
        return not self.skipped


def _diff_limit_rows() -> int:
    return int(getattr(settings, "REFINERY_DATASET_DIFF_MAX_ROWS", 500_000))


def _diff_limit_bytes() -> int:
    return int(getattr(settings, "REFINERY_DATASET_DIFF_MAX_BYTES", 512 * 1024 * 1024))


def _row_hashes(version: DatasetVersion, columns: list[str]) -> Counter:
    """How often each row content (over `columns`) occurs, streaming the file: 8-byte hashes, no rows kept."""
    counts: Counter = Counter()
    for row in iter_rows(version.path, version.format, version.dataset.kind, limits=decode_limits()):
        text = json.dumps(
            [row.get(c) for c in columns], ensure_ascii=False, separators=(",", ":"), sort_keys=True, default=str
        )
        counts[hashlib.blake2b(text.encode(), digest_size=8).digest()] += 1
    return counts


def _diff_key(old: DatasetVersion, new: DatasetVersion) -> str:
    return f"refinery:dataset-diff:v1:{old.sha256}:{new.sha256}:{old.dataset.kind}"


def dataset_version_diff(*, old: DatasetVersion, new: DatasetVersion, compute: bool = True) -> VersionDiff | None:
    """Rows added, removed and unchanged from `old` to `new`, and the columns added and removed.

    Computed from the stored files on demand and cached by the two sha256 (content-addressed files
    never change, so the cache is never stale and needs no column on the version row). The cost is
    bounded before any byte is read: a version over REFINERY_DATASET_DIFF_MAX_ROWS rows (default
    500,000) or REFINERY_DATASET_DIFF_MAX_BYTES (512 MB) is not diffed (`skipped` says so); otherwise
    both files are streamed once and only an 8-byte hash per distinct row is held in memory.
    With `compute=False` no file is read: None when the answer is not known without reading them.
    """
    columns_added = tuple(c for c in new.columns if c not in old.columns)
    columns_removed = tuple(c for c in old.columns if c not in new.columns)
    too_big = [v for v in (old, new) if v.row_count > _diff_limit_rows() or v.size_bytes > _diff_limit_bytes()]
    if too_big:
        return VersionDiff(
            0,
            0,
            0,
            columns_added,
            columns_removed,
            skipped=f"v{too_big[0].version} is too large to compare here ({too_big[0].row_count:,} rows)",
        )
    if old.sha256 == new.sha256:
        return VersionDiff(0, 0, new.row_count, columns_added, columns_removed)
    cached = cache.get(_diff_key(old, new))
    if cached is not None or not compute:
        return cached
    shared = sorted(c for c in new.columns if c in old.columns)
    try:
        before, after = _row_hashes(old, shared), _row_hashes(new, shared)
    except (DatasetError, OSError) as exc:
        return VersionDiff(0, 0, 0, columns_added, columns_removed, skipped=f"could not read the files: {exc}")
    unchanged = sum((before & after).values())
    diff = VersionDiff(
        added=sum(after.values()) - unchanged,
        removed=sum(before.values()) - unchanged,
        unchanged=unchanged,
        columns_added=columns_added,
        columns_removed=columns_removed,
    )
    cache.set(_diff_key(old, new), diff, DIFF_CACHE_SECONDS)
    return diff
