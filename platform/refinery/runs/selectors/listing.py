"""The runs list: combinable filters, full-text search, sorting by any summary metric (RunMetric, written by
refinery.runs.services.listing) and pagination, all in SQL.

A page costs the same few queries whatever its size or its page number: a count, the page of runs (pipeline,
user, base model, live train/loss and the chosen metric in the same query), its stages' progress fields and
its tags; a full page adds the filter choices. On PostgreSQL the search and the snapshot filters use the GIN
indexes of migration 0005; SQLite (the embedded default) falls back to LIKE and key lookups.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Count, F, FilteredRelation, OuterRef, Prefetch, Q, QuerySet, Subquery, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce
from django.http import QueryDict
from django.utils import timezone
from trainers.catalog import METHODS

from refinery.basemodels.models import BaseModel
from refinery.data.models import Dataset
from refinery.pipelines.models import Pipeline
from refinery.runs.models import ACTIVE_STATES, Run, RunMetric, RunNote, RunTag, StageMetric, StageRun, Status
from refinery.runs.selectors.summaries import default_goal
from refinery.teams.models import Team

LIVE_METRIC = "train/loss"  # the column every row shows while it trains: the last logged point
PAGE_SIZES = (25, 50, 100)
DEFAULT_SORT = "-created"
# sort name -> the fields it orders by, ascending; "-name" reverses. "metric" sorts by RunFilters.metric.
SORTS = {
    "created": ("created_at", "number"),
    "number": ("number",),
    "name": ("name", "number"),
    "status": ("status", "number"),
    "metric": (),
}
SORT_CHOICES = [
    ("-created", "Newest first"),
    ("created", "Oldest first"),
    ("-number", "Run number, highest first"),
    ("number", "Run number, lowest first"),
    ("name", "Name A–Z"),
    ("-name", "Name Z–A"),
    ("status", "Status A–Z"),
    ("-status", "Status Z–A"),
    ("metric", "Metric, lowest first"),
    ("-metric", "Metric, highest first"),
]
SEARCH_WORDS = re.compile(r"[^\W_]+")
MAX_SEARCH_WORDS = 8


def _positive_int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and 0 < int(value) < 2**63 else None


def _date(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class RunFilters:
    """What the runs list shows, parsed from (and written back to) its GET parameters. Anything invalid is
    dropped, so that every URL renders a page."""

    q: str = ""
    status: str = ""
    pipeline: int | None = None
    method: str = ""
    dataset: int | None = None
    model: int | None = None  # base model
    user: int | None = None
    tag: tuple[str, ...] = ()  # every one of these tags
    date_from: dt.date | None = None  # created on or after (dates in the server's time zone)
    date_to: dt.date | None = None  # created on or before
    metric: str = ""  # a summary metric to show as a column (and to sort by with sort="metric")
    sort: str = DEFAULT_SORT
    page: int = 1
    per_page: int = 50

    PARAMS = {"date_from": "from", "date_to": "to"}  # field -> GET parameter where they differ

    @classmethod
    def from_query(cls, query: QueryDict) -> RunFilters:
        status = query.get("status", "")
        metric = query.get("metric", "").strip()[:200]
        sort = query.get("sort", "")
        if sort.lstrip("-") not in SORTS or (sort.lstrip("-") == "metric" and not metric):
            sort = DEFAULT_SORT
        per_page = _positive_int(query.get("per_page"))
        return cls(
            q=" ".join(query.get("q", "").split())[:200],
            status=status if status in Status.values else "",
            pipeline=_positive_int(query.get("pipeline")),
            method=query.get("method", "").strip()[:32],
            dataset=_positive_int(query.get("dataset")),
            model=_positive_int(query.get("model")),
            user=_positive_int(query.get("user")),
            tag=tuple(dict.fromkeys(t.strip().lower() for t in query.getlist("tag") if t.strip()))[:5],
            date_from=_date(query.get("from")),
            date_to=_date(query.get("to")),
            metric=metric,
            sort=sort,
            page=_positive_int(query.get("page")) or 1,
            per_page=per_page if per_page in PAGE_SIZES else 50,
        )

    @property
    def filtered(self) -> bool:
        """Whether anything narrows the list (sorting, paging and the metric column do not)."""
        return any(
            (
                self.q,
                self.status,
                self.pipeline,
                self.method,
                self.dataset,
                self.model,
                self.user,
                self.tag,
                self.date_from,
                self.date_to,
            )
        )

    @property
    def sort_key(self) -> str:
        return self.sort.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def params(self, **changes) -> list[tuple[str, str]]:
        """The GET parameters of these filters with `changes`, defaults left out."""
        target = replace(self, **changes)
        out = []
        for f in fields(self):
            value = getattr(target, f.name)
            if value in (None, "", (), f.default):
                continue
            name = self.PARAMS.get(f.name, f.name)
            for item in value if isinstance(value, tuple) else (value,):
                out.append((name, item.isoformat() if isinstance(item, dt.date) else str(item)))
        return out

    def url(self, **changes) -> str:
        """ "?status=running&sort=name" (or "?" for the defaults): this list with `changes`."""
        return "?" + urlencode(self.params(**changes))

    def sort_url(self, key: str) -> str:
        """A column header's link: sort by `key`, or flip the direction when it is sorted by it already. A
        metric starts with its better end (lowest loss first, highest gain first), the rest newest/A first."""
        if self.sort_key == key:
            sort = key if self.descending else f"-{key}"
        elif key == "metric":
            sort = "metric" if default_goal(self.metric) == "min" else "-metric"
        else:
            sort = f"-{key}" if key == "created" else key
        return self.url(sort=sort, page=1)


# --- the query ---------------------------------------------------------------------------------


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _search_words(text: str) -> list[str]:
    return SEARCH_WORDS.findall(text.lower())[:MAX_SEARCH_WORDS]


def _search(team: Team, text: str) -> Q:
    """Runs whose name, or one of whose notes, holds every word (as a word prefix on PostgreSQL: full-text
    search on the indexed name expression and the notes' stored vectors of migration 0005, English stemming
    for notes); "#12" or "12" also finds run number 12."""
    words = _search_words(text)
    if not words:
        return Q()
    if _postgres():
        prefix = " & ".join(f"{word}:*" for word in words)
        names = (
            Run.objects.filter(team=team)
            .alias(document=SearchVector("name", config="simple"))
            .filter(document=SearchQuery(prefix, search_type="raw", config="simple"))
        )
        notes = RunNote.objects.filter(run__team=team, search=SearchQuery(prefix, search_type="raw", config="english"))
        match = Q(pk__in=names.values("pk")) | Q(pk__in=notes.values("run_id"))
    else:
        in_name, in_note = Q(), Q()
        for word in words:
            in_name &= Q(name__icontains=word)
            in_note &= Q(body__icontains=word)
        match = in_name | Q(pk__in=RunNote.objects.filter(in_note, run__team=team).values("run_id"))
    number = text.strip().lstrip("#")
    if number.isdigit() and int(number) < 2**31:
        match |= Q(number=int(number))
    return match


def _uses(*, stage_key: str, value) -> Q:
    """Runs one of whose stages has `stage_key` = value (dataset_id, eval_dataset_id, method): JSON containment
    on the snapshot, which the snapshot's GIN index answers, on PostgreSQL; the stage rows elsewhere."""
    if _postgres():
        return Q(snapshot__contains={"stages": [{stage_key: value}]})
    return Q(
        pk__in=StageRun.objects.filter(
            **{f"spec__{stage_key}": value} if stage_key != "method" else {"method": value}
        ).values("run_id")
    )


def run_filtered(*, team: Team, filters: RunFilters) -> QuerySet[Run]:
    """The team's runs that pass every filter (in no particular order)."""
    qs = Run.objects.filter(team=team)
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.pipeline:
        qs = qs.filter(pipeline_id=filters.pipeline)
    if filters.user:
        qs = qs.filter(created_by_id=filters.user)
    if filters.method:
        qs = qs.filter(_uses(stage_key="method", value=filters.method))
    if filters.dataset:
        qs = qs.filter(
            _uses(stage_key="dataset_id", value=filters.dataset)
            | _uses(stage_key="eval_dataset_id", value=filters.dataset)
        )
    if filters.model:
        qs = qs.filter(
            Q(snapshot__contains={"base_model": {"id": filters.model}})
            if _postgres()
            else Q(snapshot__base_model__id=filters.model)
        )
    for tag in filters.tag:
        qs = qs.filter(pk__in=RunTag.objects.filter(team=team, name=tag).values("run_id"))
    zone = timezone.get_current_timezone()
    if filters.date_from:
        qs = qs.filter(created_at__gte=dt.datetime.combine(filters.date_from, dt.time.min, tzinfo=zone))
    if filters.date_to:
        qs = qs.filter(
            created_at__lt=dt.datetime.combine(filters.date_to + dt.timedelta(days=1), dt.time.min, tzinfo=zone)
        )
    if filters.q:
        qs = qs.filter(_search(team, filters.q))
    return qs


def _ordered(qs: QuerySet[Run], filters: RunFilters) -> QuerySet[Run]:
    if filters.sort_key == "metric":
        value = F("sort_metric__value")
        order = [value.desc(nulls_last=True) if filters.descending else value.asc(nulls_last=True)]
        return qs.order_by(*order, "-number")
    names = SORTS[filters.sort_key]
    return qs.order_by(*(f"-{n}" if filters.descending else n for n in names))


def _page_columns(qs: QuerySet[Run], filters: RunFilters) -> QuerySet[Run]:
    """What a row shows, in the page's one query (subqueries run for the page's rows only), plus the two
    prefetches (stages' progress fields, tags). Wide columns (snapshot, stage specs, logs) stay in the database."""
    live = (
        StageMetric.objects.filter(stage_run__run=OuterRef("pk"), key=LIVE_METRIC)
        .order_by("-stage_run__index", "-step")
        .values("value")[:1]
    )
    notes = RunNote.objects.filter(run=OuterRef("pk")).order_by().values("run").annotate(n=Count("pk")).values("n")
    stages = StageRun.objects.only("id", "run_id", "index", "status", "step", "total_steps").order_by("index")
    tags = RunTag.objects.only("id", "run_id", "name")
    qs = (
        qs.select_related("pipeline", "created_by", "schedule_tick__schedule")
        .only(
            "id",
            "number",
            "name",
            "status",
            "created_at",
            "started_at",
            "finished_at",
            "team",
            "pipeline__id",
            "pipeline__name",
            "created_by__id",
            "created_by__username",
            "schedule_label",
            "schedule_tick__window",
            "schedule_tick__schedule__name",
            "schedule_tick__schedule__timezone",
        )
        .annotate(
            base_model_name=KT("snapshot__base_model__name"),
            live_metric=Subquery(live),
            note_count=Coalesce(Subquery(notes), Value(0)),
        )
        .prefetch_related(
            Prefetch("stages", queryset=stages, to_attr="stage_list"),
            Prefetch("tags", queryset=tags, to_attr="tag_list"),
        )
    )
    if filters.metric:
        qs = qs.annotate(metric_value=F("sort_metric__value"))
    return qs


@dataclass
class RunPage:
    filters: RunFilters
    page: Page
    runs: list[Run] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """Whether a run on this page can still change (the rows poll while it is true)."""
        return any(run.status in ACTIVE_STATES for run in self.runs)

    @property
    def count(self) -> int:
        return self.page.paginator.count

    def links(self) -> list[dict]:
        """Numbered page links around the current one: first, last, two either side, None for a gap."""
        current, last = self.page.number, self.page.paginator.num_pages
        shown = sorted({1, last, *range(max(1, current - 2), min(last, current + 2) + 1)})
        out, previous = [], 0
        for number in shown:
            if number - previous > 1:
                out.append(None)
            out.append({"number": number, "url": self.filters.url(page=number), "current": number == current})
            previous = number
        return out

    @cached_property
    def sort_urls(self) -> dict[str, str]:
        """Each sortable column header's link (see RunFilters.sort_url)."""
        return {key: self.filters.sort_url(key) for key in SORTS}

    @property
    def size_links(self) -> list[tuple[int, str, bool]]:
        return [(size, self.filters.url(per_page=size, page=1), size == self.filters.per_page) for size in PAGE_SIZES]

    @property
    def previous_url(self) -> str | None:
        return self.filters.url(page=self.page.number - 1) if self.page.has_previous() else None

    @property
    def next_url(self) -> str | None:
        return self.filters.url(page=self.page.number + 1) if self.page.has_next() else None


def _sorted_by(qs: QuerySet[Run], filters: RunFilters) -> QuerySet[Run]:
    """`qs` in the order `filters` ask for (joining the sort metric's RunMetric row when sorting by one)."""
    if filters.metric:
        qs = qs.alias(sort_metric=FilteredRelation("summary_metrics", condition=Q(summary_metrics__key=filters.metric)))
    return _ordered(qs, filters)


def run_page(*, team: Team, filters: RunFilters) -> RunPage:
    """One page of the team's runs as `filters` ask: a count, then the page's rows, then two prefetches.
    A page past the end shows the last one.

    The rows query picks the page's ids in a narrow subquery (filters, order, LIMIT/OFFSET on run columns
    only) and computes the wide columns for those rows alone: PostgreSQL evaluates select-list subqueries and
    JSON extraction for every row an OFFSET skips, so a deep page would otherwise pay for all the pages
    before it. Each run gets `progress` (its stages' mean), `tag_links` ([(name, url of this list filtered
    by that tag instead)]), `live_metric`, `metric_value` and `note_count`."""
    narrow = _sorted_by(run_filtered(team=team, filters=filters), filters)
    paginator = Paginator(narrow.values("pk"), filters.per_page)
    page = paginator.get_page(filters.page)
    filters = replace(filters, page=page.number)
    ids = narrow.values("pk")[page.start_index() - 1 : page.end_index()] if paginator.count else []
    runs = list(_page_columns(_sorted_by(Run.objects.filter(team=team, pk__in=ids), filters), filters))
    for run in runs:
        run.progress = sum(s.progress for s in run.stage_list) / len(run.stage_list) if run.stage_list else 0
        run.tag_links = [(tag.name, filters.url(tag=(tag.name,), page=1)) for tag in run.tag_list]
    return RunPage(filters=filters, page=page, runs=runs)


# --- the filter form's choices -----------------------------------------------------------------


def run_metric_keys(*, team: Team) -> list[str]:
    """Every summary metric some run of the team has. On PostgreSQL a skip scan of the (team, key, value)
    index: one index probe per distinct key instead of reading every run's numbers."""
    if not _postgres():
        return list(RunMetric.objects.filter(team=team).order_by("key").values_list("key", flat=True).distinct())
    table = RunMetric._meta.db_table
    sql = f"""
        WITH RECURSIVE keys(key) AS (
            (SELECT key FROM {table} WHERE team_id = %s ORDER BY key LIMIT 1)
            UNION ALL
            SELECT (SELECT m.key FROM {table} m WHERE m.team_id = %s AND m.key > keys.key ORDER BY m.key LIMIT 1)
            FROM keys WHERE keys.key IS NOT NULL
        )
        SELECT key FROM keys WHERE key IS NOT NULL"""  # noqa: S608 - the table name is ours, values are bound
    with connection.cursor() as cursor:
        cursor.execute(sql, [team.pk, team.pk])
        return [row[0] for row in cursor.fetchall()]


def run_filter_choices(*, team: Team) -> dict:
    """The options of every filter: the team's pipelines, datasets, base models, members, tag names and
    summary metrics (one query each), the methods and the statuses."""

    def pairs(qs, label: str) -> list[tuple[int, str]]:
        return list(qs.filter(team=team).order_by(label).values_list("pk", label))

    return {
        "statuses": [choice for choice in Status.choices if choice[0] != Status.PENDING],
        "pipelines": pairs(Pipeline.objects, "name"),
        "methods": sorted(METHODS),
        "datasets": pairs(Dataset.objects, "name"),
        "models": pairs(BaseModel.objects, "name"),
        "users": list(
            get_user_model().objects.filter(memberships__team=team).order_by("username").values_list("pk", "username")
        ),
        "tags": list(RunTag.objects.filter(team=team).order_by("name").values_list("name", flat=True).distinct()),
        "metrics": [(key, default_goal(key)) for key in run_metric_keys(team=team)],
        "sorts": SORT_CHOICES,
    }
