"""Metric series thinned in SQL for charts: the one downsampler of the runs app, at most MAX_POINTS points per
series, one query for all stages, finished stages cached (`_through_cache`). Every point drawn is a logged one.
Two kinds of bucket summary:

- "last point per bucket" (the run page, `stage_series_sampled`, below): index probes only, so a live run page
  costs what it draws; a spike between two kept points is not drawn.
- "envelope" (the compare page, `compare_metric_points`, at the end): the first, last, lowest and highest point
  of each bucket, so a spike still shows when runs are set side by side; the database reads every point.

Where the points come from (the issue says "drawn from MLflow"; this reads the DB mirror, on purpose):

- Every point a trainer emits is written twice by the supervisor (jobs/supervisor/sinks.py): to MLflow
  through the buffered MetricBuffer, and to `StageMetric` once a second. A resumed attempt backfills
  into the DB what an earlier one only spooled for MLflow. The mirror holds the same points.
- The DB copy is the live one. MLflow gets points in batches and, while it is down, not at all
  (the buffer spools them on the worker's disk for as long as the outage lasts): a page drawn from
  MLflow would freeze or fail exactly when someone is watching a run.
- MLflow's public API has no server-side downsampling: `get_metric_history` returns every point of
  one key of one run, so a run page would cost one HTTP round trip per (stage, key), each carrying the
  full history (8 stages x 15 keys = 120 requests per 2 s poll), then thin them in Python. Caching
  helps only finished stages; the running stage, the one being watched, would still pay in full.
  That cannot stay under the run page's p95 budget (150 ms with 1M points across 10k runs).
- SQL can thin the series where the data is, in one query for all stages. On PostgreSQL it only
  probes the (stage_run, key, step) unique index: a loose index scan for the keys, then one "last point
  of this bucket" probe per bucket, so the cost follows the points drawn (<= MAX_POINTS per series), not
  the points logged (a 200k-point stage: ~50 ms, against ~600 ms to read it whole). Other databases (the
  embedded SQLite) use window functions over the stage's points.

How it is thinned: each stage's step range is cut into buckets of equal width (more buckets for a
longer stage, about MAX_POINTS across the run, since stages sit side by side on one step axis), and
each bucket keeps its *last real point*; the first point of each series is kept too. So every
point drawn is a logged (step, value) pair (hover shows the truth), the last point (the legend's
"latest value") is exact, and series logged at the same steps (all train/* keys) land on the same
x values, which keeps the shared-x chart payload small. The bucket grid comes from the stage's
`total_steps`, so it does not move while the stage runs (no jitter between polls). A spike between
two kept points is not drawn: this is decimation, not an envelope.

Finished stages never change, so their thinned series are cached (Django's cache, keyed by stage,
finish time and bucket width); a poll of a running run re-reads only its unfinished stages.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from django.core.cache import cache
from django.db import connection

from refinery.runs.models import Run, StageMetric, StageRun
from refinery.teams.models import Team

MAX_POINTS = 1000  # per series (hard cap), and about the number of x values of a run's chart
MIN_STAGE_BUCKETS = 100  # a short stage next to a long one still shows its shape
CACHE_SECONDS = 3600

Series = list[tuple[int, float]]
P = TypeVar("P")


def _span(stage: StageRun) -> int:
    return max(int(stage.total_steps or 0), int(stage.step or 0), 1)


def stage_bucket_widths(stages: list[StageRun], *, max_points: int = MAX_POINTS) -> dict[int, int]:
    """Per stage id, the width in steps of one bucket: about `max_points` buckets across the run,
    shared in proportion to each stage's length (at least MIN_STAGE_BUCKETS, at most max_points - 1)."""
    spans = {s.pk: _span(s) for s in stages}
    total = sum(spans.values()) or 1
    budget = max_points - 2  # buckets [lo // w, hi // w] can be one more than span / w; plus the first point
    widths = {}
    for pk, span in spans.items():
        buckets = min(budget, max(min(MIN_STAGE_BUCKETS, budget), round(budget * span / total)))
        widths[pk] = max(1, math.ceil(span / buckets))
    return widths


# PostgreSQL: index probes only, so the cost follows the number of points drawn, not the number logged.
# The keys of each stage come from a loose index scan (a recursive CTE stepping from one key to the next),
# then per (stage, key) the first and last step, then one "last point before the bucket's end" probe per
# bucket, all on the (stage_run_id, key, step) unique index. A per-series width guard keeps a series that
# logged far past its stage's total_steps within the cap too.
_PG_SQL = """
WITH RECURSIVE sk(s, k) AS (
    SELECT st.s, (SELECT key FROM {table} WHERE stage_run_id = st.s ORDER BY key LIMIT 1)
    FROM unnest(%(ids)s::bigint[]) AS st(s)
  UNION ALL
    SELECT sk.s, (SELECT key FROM {table} WHERE stage_run_id = sk.s AND key > sk.k ORDER BY key LIMIT 1)
    FROM sk WHERE sk.k IS NOT NULL
), b AS (
    SELECT sk.s, sk.k, first.step AS lo, first.value AS lo_value, last.step AS hi,
           GREATEST(w.w, (last.step - first.step) / %(buckets)s + 1) AS w
    FROM sk
    JOIN unnest(%(ids)s::bigint[], %(widths)s::bigint[]) AS w(s, w) ON w.s = sk.s
    CROSS JOIN LATERAL (SELECT step, value FROM {table} m WHERE m.stage_run_id = sk.s AND m.key = sk.k
                        ORDER BY m.step LIMIT 1) AS first
    CROSS JOIN LATERAL (SELECT step FROM {table} m WHERE m.stage_run_id = sk.s AND m.key = sk.k
                        ORDER BY m.step DESC LIMIT 1) AS last
    WHERE sk.k IS NOT NULL
)
SELECT b.s, b.k, b.lo, b.lo_value FROM b
UNION
SELECT b.s, b.k, p.step, p.value FROM b
CROSS JOIN LATERAL generate_series(b.lo::bigint / b.w, b.hi::bigint / b.w) AS g(n)
CROSS JOIN LATERAL (SELECT step, value FROM {table} m
                    WHERE m.stage_run_id = b.s AND m.key = b.k AND m.step >= g.n * b.w AND m.step < (g.n + 1) * b.w
                    ORDER BY m.step DESC LIMIT 1) AS p
ORDER BY 1, 2, 3
"""

# Other databases (SQLite, the embedded setup): the same points with window functions (one pass and a sort
# over the stages' points; fine for a laptop's runs).
_WINDOW_SQL = """
WITH p AS (
    SELECT stage_run_id AS s, key AS k, step, value AS v, CASE stage_run_id {case} END AS w
    FROM {table} WHERE stage_run_id IN ({ids})
), r AS (
    SELECT s, k, step, v,
           ROW_NUMBER() OVER (PARTITION BY s, k ORDER BY step) AS first_rank,
           ROW_NUMBER() OVER (PARTITION BY s, k, CAST(step AS BIGINT) / w ORDER BY step DESC) AS last_rank
    FROM p
)
SELECT s, k, step, v FROM r WHERE first_rank = 1 OR last_rank = 1 ORDER BY s, k, step
"""


def _index_probes() -> bool:
    return connection.vendor == "postgresql"


def _query(widths: dict[int, int], max_points: int = MAX_POINTS) -> dict[int, dict[str, Series]]:
    """One query: per stage and key, the first point and the last point of every bucket."""
    out: dict[int, dict[str, Series]] = {pk: {} for pk in widths}
    if not widths:
        return out
    ids = list(widths)
    table = connection.ops.quote_name(StageMetric._meta.db_table)
    if _index_probes():
        sql = _PG_SQL.format(table=table)
        params: list | dict = {"ids": ids, "widths": [widths[pk] for pk in ids], "buckets": max_points - 2}
    else:
        case = " ".join("WHEN %s THEN CAST(%s AS BIGINT)" for _ in ids)
        sql = _WINDOW_SQL.format(table=table, case=case, ids=", ".join(["%s"] * len(ids)))
        params = [value for pk in ids for value in (pk, widths[pk])] + ids
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for stage_id, key, step, value in cursor.fetchall():
            out[stage_id].setdefault(key, []).append((step, value))
    for by_key in out.values():
        for key, series in by_key.items():
            by_key[key] = _cap(series, max_points)
    return out


def _cap(series: Series, max_points: int = MAX_POINTS) -> Series:
    """The hard cap, for a stage that logged past its `total_steps`: keep evenly spaced points and the last."""
    if len(series) <= max_points:
        return series
    stride = len(series) / (max_points - 1)
    return [series[int(i * stride)] for i in range(max_points - 1)] + [series[-1]]


def _through_cache(
    params: dict[int, P],
    keys: dict[int, str],
    fetch: Callable[[dict[int, P]], dict[int, dict[str, list]]],
    *,
    fetch_nothing: bool = True,
) -> dict[int, dict[str, list]]:
    """Per stage id, its thinned series: from the cache for the stages in `keys` (finished ones, whose points no
    longer change) when it has them, the rest from one `fetch` of the missing stages' `params` (with
    `fetch_nothing`, called even when nothing is missing); what was fetched for a stage in `keys` is cached."""
    cached = cache.get_many(list(keys.values())) if keys else {}
    out = {pk: cached[key] for pk, key in keys.items() if key in cached}
    missing = {pk: value for pk, value in params.items() if pk not in out}
    fresh = fetch(missing) if missing or fetch_nothing else {}
    out.update(fresh)
    to_cache = {keys[pk]: series for pk, series in fresh.items() if pk in keys}
    if to_cache:
        cache.set_many(to_cache, CACHE_SECONDS)
    return out


def _cache_key(stage: StageRun, width: int) -> str:
    return f"refinery:run-series:{stage.pk}:{stage.finished_at.timestamp():.6f}:{width}"


def stage_series_sampled(*, stages: list[StageRun], max_points: int = MAX_POINTS) -> dict[int, dict[str, Series]]:
    """Per stage id, {key: [(step, value)]} with at most `max_points` points per series.
    One SQL query for the stages not in the cache; finished stages are cached."""
    widths = stage_bucket_widths(stages, max_points=max_points)
    finished = {s.pk: _cache_key(s, widths[s.pk]) for s in stages if s.is_finished and s.finished_at}
    return _through_cache(widths, finished, lambda missing: _query(missing, max_points))


def run_metric_table_sampled(
    *, run: Run, stages: list[StageRun] | None = None, max_points: int = MAX_POINTS
) -> dict[str, dict[str, Series]]:
    """run_metric_table's shape ({key: {stage name: [(step, value)]}}, stages one after the other on one
    step axis) with at most `max_points` points per series. `stages`: the run's stages in index order,
    when the caller has them already (no query then)."""
    stages = stages if stages is not None else list(run.stages.order_by("index"))
    points = stage_series_sampled(stages=stages, max_points=max_points)
    table: dict[str, dict[str, Series]] = {}
    offset = 0
    for stage in stages:
        last = offset
        for key, series in sorted(points.get(stage.pk, {}).items()):
            table.setdefault(key, {})[stage.name] = [(offset + step, value) for step, value in series]
            last = max(last, offset + series[-1][0])
        offset = max(last, offset + stage.total_steps)
    return dict(sorted(table.items()))


# --- Envelope buckets (the compare page) ------------------------------------------------------------------


def downsample(points: Sequence[tuple], max_points: int = MAX_POINTS, *, width: float | None = None) -> list[tuple]:
    """At most `max_points` points of a series of (x, y, ...) sorted by x: x is cut into max_points // 4 buckets
    of equal width, and each bucket keeps its first, last, lowest and highest point (the first of equal ones), in
    x order. Every point kept is a real one, and a spike inside a bucket still shows.

    By default the buckets span the series' own x range, and a series that fits is kept whole. With `width`, the
    buckets start at x = 0 and points past the last bucket share it: how `compare_metric_points` cuts a stage's
    steps in SQL (a fixed grid from the stage's length, so that the query never needs the series' range)."""
    buckets = max(1, max_points // 4)
    if width is None:
        if len(points) <= max_points:
            return list(points)
        start, width = points[0][0], ((points[-1][0] - points[0][0]) / buckets) or 1
    else:
        start = 0
    chosen: dict[int, list[int]] = {}  # bucket -> [first, last, lowest, highest] indexes
    for i, point in enumerate(points):
        b = min(int((point[0] - start) // width), buckets - 1)
        seen = chosen.get(b)
        if seen is None:
            chosen[b] = [i, i, i, i]
            continue
        seen[1] = i
        if point[1] < points[seen[2]][1]:
            seen[2] = i
        if point[1] > points[seen[3]][1]:
            seen[3] = i
    return [points[i] for i in sorted({i for seen in chosen.values() for i in seen})]


@dataclass(frozen=True)
class Grid:
    """How a stage's steps are cut for the charts: `buckets` buckets of `width` steps from step 0."""

    width: int
    buckets: int


def stage_grid(stage: StageRun, budget: int) -> Grid:
    """At most `budget` points per series of a stage: budget // 4 buckets across its length (total steps, or the
    step it reached), fixed while it runs."""
    buckets = max(1, budget // 4)
    span = max(stage.total_steps or 0, stage.step or 0, 1)
    return Grid(width=max(1, math.ceil((span + 1) / buckets)), buckets=buckets)


def _metric_sql(team_id: int, grids: dict[int, Grid]) -> tuple[str, list]:
    """One query for every stage's thinned series: per (stage, key, bucket) its first, last, lowest and highest
    point. PostgreSQL does it in one pass with one hash aggregate (min/max of arrays pick a whole point);
    elsewhere (SQLite) window functions rank the points of each bucket, slower but the same points."""
    q = connection.ops.quote_name
    ids = list(grids)
    case = " ".join("WHEN %s THEN %s" for _ in ids)
    widths = [v for pk in ids for v in (pk, grids[pk].width)]
    lasts = [v for pk in ids for v in (pk, grids[pk].buckets - 1)]
    in_ids = ", ".join(["%s"] * len(ids))
    # The team check is a one-time filter (nothing at all unless every stage is the team's): a join to the runs
    # would make PostgreSQL misjudge the row count and sort millions of points instead of hashing them.
    source = f"""
        FROM {q(StageMetric._meta.db_table)} m
        WHERE m.{q("stage_run_id")} IN ({in_ids}) AND NOT EXISTS (
            SELECT 1 FROM {q(StageRun._meta.db_table)} s JOIN {q(Run._meta.db_table)} r ON r.{q("id")} = s.{q("run_id")}
            WHERE s.{q("id")} IN ({in_ids}) AND r.{q("team_id")} <> %s)"""
    sid, key, step, value, ts = (f"m.{q(c)}" for c in ("stage_run_id", "key", "step", "value", "timestamp"))
    if connection.vendor == "postgresql":
        bucket = f"LEAST({step} / (CASE {sid} {case} END), CASE {sid} {case} END)"
        sql = f"""
            SELECT {sid}, {key},
                   MIN(ARRAY[{step}::float8, {value}, {ts}]), MAX(ARRAY[{step}::float8, {value}, {ts}]),
                   MIN(ARRAY[{value}, {step}::float8, {ts}]), MAX(ARRAY[{value}, -{step}::float8, {ts}])
            {source}
            GROUP BY {sid}, {key}, {bucket}"""
        return sql, [*ids, *ids, team_id, *widths, *lasts]
    bucket = f"MIN({step} / (CASE {sid} {case} END), CASE {sid} {case} END)"
    sql = f"""
        WITH bucketed AS (
            SELECT {sid} AS sid, {key} AS k, {step} AS step, {value} AS v, {ts} AS ts, {bucket} AS b {source}
        ), ranked AS (
            SELECT sid, k, step, v, ts,
                   ROW_NUMBER() OVER (PARTITION BY sid, k, b ORDER BY step) AS r_first,
                   ROW_NUMBER() OVER (PARTITION BY sid, k, b ORDER BY step DESC) AS r_last,
                   ROW_NUMBER() OVER (PARTITION BY sid, k, b ORDER BY v, step) AS r_low,
                   ROW_NUMBER() OVER (PARTITION BY sid, k, b ORDER BY v DESC, step) AS r_high
            FROM bucketed
        )
        SELECT sid, k, step, v, ts FROM ranked WHERE r_first = 1 OR r_last = 1 OR r_low = 1 OR r_high = 1"""
    return sql, [*widths, *lasts, *ids, *ids, team_id]


def compare_metric_points(
    *, team: Team, grids: dict[int, Grid], finished: dict[int, datetime] | None = None
) -> dict[int, dict[str, list[tuple]]]:
    """Per stage id (of the team's) and metric key, (step, value, timestamp) points sorted by step, thinned on
    the stage's grid in SQL (see `downsample` with a width): the database reads every point, Python gets at most
    4 per bucket. One query for all stages; the stages in `finished` (id -> finished_at), whose points no longer
    change, come from the cache when they can."""
    keys = {
        pk: f"refinery:compare:{team.pk}:{pk}:{grid.width}:{grid.buckets}:{finished[pk].timestamp():.6f}"
        for pk, grid in grids.items()
        if finished and finished.get(pk)
    }

    def fetch(missing: dict[int, Grid]) -> dict[int, dict[str, list[tuple]]]:
        sql, params = _metric_sql(team.pk, missing)
        found: dict[int, dict[str, dict[int, tuple]]] = {pk: {} for pk in missing}  # stage -> key -> step -> point
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for sid, key, *picked in cursor.fetchall():
                points = found[sid].setdefault(key, {})
                if connection.vendor == "postgresql":  # four arrays: first, last, lowest, highest
                    first, last, low, high = picked
                    for step, value, ts in (
                        (first[0], first[1], first[2]),
                        (last[0], last[1], last[2]),
                        (low[1], low[0], low[2]),
                        (-high[1], high[0], high[2]),
                    ):
                        points[int(step)] = (int(step), value, ts)
                else:
                    points[picked[0]] = tuple(picked)
        return {
            pk: {key: [points[step] for step in sorted(points)] for key, points in sorted(by_key.items())}
            for pk, by_key in found.items()
        }

    return {pk: {} for pk in grids} | _through_cache(grids, keys, fetch, fetch_nothing=False)
