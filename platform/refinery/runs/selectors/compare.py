"""Compare 2 to 10 runs, or stages of runs, side by side: overlaid metric charts (x = step or wall time), a
diff of their frozen configs, their final numbers, and both as CSV.

    /runs/compare/?run=3&run=7                  whole runs (a run's stages follow each other on one step axis)
    /runs/compare/?stage=3:sft&stage=7:sft      single stages ("<run number>:<stage name>")
        &x=time                                 wall time since the run (stage) started instead of steps
        &all=1                                  the config diff starts with every key shown
    /runs/compare.csv?run=3&run=7               the metric table as CSV (one row per metric)
        &part=config [&all=1]                   the config diff instead (differing keys; every key with all=1)

The page costs the same few queries for 2 runs as for 10: the runs with their stages (two queries) and one
metric query that thins every series in SQL (refinery.runs.selectors.series, "envelope" buckets), so a stage
with 100k points per key sends at most MAX_POINTS of them to Python and to the browser; a finished stage's
thinned series are cached.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Prefetch
from trainers.metrics import higher_is_better, summary_numbers

from refinery.runs.charts import LOSS_KEYS, METRIC_PRIORITY, ONE_OFF_METHODS, ROUTINE_METRICS
from refinery.runs.models import Run, StageRun
from refinery.runs.selectors.series import MAX_POINTS, Grid, compare_metric_points, downsample, stage_grid
from refinery.teams.models import Team

MIN_ITEMS, MAX_ITEMS = 2, 10
# One colour per compared item, the same in every chart and in the tables (app.js's palette, in its order).
PALETTE = ("#5046e5", "#f97316", "#10b981", "#e11d48", "#0ea5e9", "#a855f7", "#eab308", "#14b8a6", "#64748b", "#ec4899")
# Bookkeeping numbers where neither direction is better (no highlight); for the others
# trainers.metrics.higher_is_better says which direction is better.
NEUTRAL_METRICS = ("learning_rate", "epoch", "num_tokens", "total_flos", "global_step", "grad_norm", "size_bytes")
# Snapshot keys left out of the config diff: row ids and timestamps that differ without meaning anything, and
# the overrides a sweep applied (already visible in the stage configs they changed).
UNCOMPARED_KEYS = frozenset(
    {"id", "dataset_id", "eval_dataset_id", "version_id", "updated_at", "overrides", "storage_path"}
)
ABSENT = object()  # a key one run has and another has not
# The diff's order of keys (the database's JSON does not keep the snapshot's): the rest alphabetically after.
KEY_ORDER = {
    key: i
    for i, key in enumerate(
        (
            "pipeline",
            "base_model",
            "seed",
            "code_version",
            "name",
            "method",
            "input",
            "inputs",
            "config",
            "adapter",
            "train_data",
            "eval_data",
            "retention_data",
        )
    )
}


class CompareError(Exception):
    """The picks cannot be compared as asked (too few, too many, malformed); the message says why."""


# --- What is being compared -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pick:
    run: int  # the run's per-team number
    stage: str | None = None  # a stage name, or None for the whole run

    @property
    def param(self) -> tuple[str, str]:
        return ("stage", f"{self.run}:{self.stage}") if self.stage is not None else ("run", str(self.run))


@dataclass
class Item:
    """One compared thing: a whole run, or one stage of it."""

    run: Run
    stage: StageRun | None
    color: str
    stages: list[StageRun] = field(default_factory=list)  # the run's stages in order
    remove_url: str = ""  # the same comparison without this item

    @property
    def pick(self) -> Pick:
        return Pick(self.run.number, self.stage.name if self.stage else None)

    @property
    def label(self) -> str:
        name = f"#{self.run.number} {self.run.name}"
        return f"{name} · {self.stage.name}" if self.stage else name

    @property
    def short(self) -> str:
        return f"#{self.run.number} {self.stage.name}" if self.stage else f"#{self.run.number}"

    @property
    def chart_stages(self) -> list[StageRun]:
        """Stages whose metrics are curves: a run's training stages (merge/evaluate/export log one-off numbers,
        which the metric table shows), or the one chosen stage."""
        if self.stage is not None:
            return [self.stage]
        return [s for s in self.stages if s.method not in ONE_OFF_METHODS]

    @property
    def started(self):
        return (self.stage or self.run).started_at

    @property
    def duration(self):
        return (self.stage or self.run).duration

    @property
    def status(self) -> str:
        return (self.stage or self.run).status


def _run_number(raw: str) -> int:
    number = int(raw)
    if not 0 < number < 2**31:  # a positive integer column
        raise ValueError(raw)
    return number


def compare_picks(params) -> list[Pick]:
    """The runs (`run=3`) or stages (`stage=3:sft`) of a query string, duplicates dropped, in the order given.
    Raises CompareError unless there are 2 to 10 of one kind."""
    runs, stages = params.getlist("run"), params.getlist("stage")
    if runs and stages:
        raise CompareError("Compare either whole runs (run=…) or single stages (stage=…), not both.")
    picks: list[Pick] = []
    for raw in runs:
        try:
            picks.append(Pick(_run_number(raw)))
        except ValueError:
            raise CompareError(f"{raw!r} is not a run number.") from None
    for raw in stages:
        number, sep, name = raw.partition(":")
        try:
            if not sep or not name.strip():
                raise ValueError
            picks.append(Pick(_run_number(number), name.strip()))
        except ValueError:
            raise CompareError(f"{raw!r} is not a stage; write <run number>:<stage name>, e.g. 3:sft.") from None
    picks = list(dict.fromkeys(picks))
    kind = "stages" if stages else "runs"
    if len(picks) < MIN_ITEMS:
        raise CompareError(
            f"Pick at least {MIN_ITEMS} different {kind} to compare" + (f" (got {len(picks)})." if picks else ".")
        )
    if len(picks) > MAX_ITEMS:
        raise CompareError(f"Compare at most {MAX_ITEMS} {kind} at a time (got {len(picks)}).")
    return picks


def compare_items(*, team: Team, picks: Sequence[Pick]) -> list[Item]:
    """The picked runs (or stages) of the team, in the order picked: two queries, however many.
    Raises Run.DoesNotExist when any of them is not the team's (without saying which)."""
    stages = StageRun.objects.defer("log_tail", "outputs", "spec").order_by("index")
    runs = {
        run.number: run
        for run in Run.objects.filter(team=team, number__in={p.run for p in picks}).prefetch_related(
            Prefetch("stages", queryset=stages)
        )
    }
    items = []
    for i, pick in enumerate(picks):
        run = runs.get(pick.run)
        if run is None:
            raise Run.DoesNotExist
        run_stages = list(run.stages.all())
        stage = None
        if pick.stage is not None:
            stage = next((s for s in run_stages if s.name == pick.stage), None)
            if stage is None:
                raise Run.DoesNotExist
        items.append(Item(run=run, stage=stage, color=PALETTE[i % len(PALETTE)], stages=run_stages))
    return items


# --- Metric series ------------------------------------------------------------------------------------------


def _stage_grids(items: Sequence[Item]) -> dict[int, Grid]:
    """Each charted stage's grid: its share of its item's MAX_POINTS (a run's stages end up in one series)."""
    grids: dict[int, Grid] = {}
    for item in items:
        stages = item.chart_stages
        for stage in stages:
            grid = stage_grid(stage, max(40, MAX_POINTS // max(1, len(stages))))
            if stage.pk not in grids or grid.buckets > grids[stage.pk].buckets:
                grids[stage.pk] = grid
    return grids


def _time_unit(span_seconds: float) -> tuple[str, float]:
    if span_seconds >= 2 * 3600:
        return "h", 3600.0
    if span_seconds >= 120:
        return "min", 60.0
    return "s", 1.0


def _item_series(item: Item, points: dict[int, dict[str, list[tuple]]], *, x: str) -> dict[str, list[tuple]]:
    """{key: [(x, value)]} for one item before scaling: x is a step (a run's stages follow each other on one
    axis, as on the run page) or seconds since the item started."""
    out: dict[str, list[tuple]] = {}
    if x == "time":
        first = [p[0][2] for stage in item.chart_stages for p in points.get(stage.pk, {}).values() if p]
        if not first:
            return out
        origin = min(first)
        if item.started and item.started.timestamp() <= origin:
            origin = item.started.timestamp()
        for stage in item.chart_stages:
            for key, series in points.get(stage.pk, {}).items():
                out.setdefault(key, []).extend((ts - origin, value) for _, value, ts in series)
        for series in out.values():
            series.sort(key=lambda p: p[0])
        return out
    if item.stage is not None:
        return {
            key: [(step, value) for step, value, _ in series] for key, series in points.get(item.stage.pk, {}).items()
        }
    charted = {s.pk for s in item.chart_stages}
    offset = 0
    for stage in item.stages:
        last, span = offset, stage.total_steps
        if stage.pk in charted:
            for key, series in points.get(stage.pk, {}).items():
                out.setdefault(key, []).extend((offset + step, value) for step, value, _ in series)
                last = max(last, offset + series[-1][0])
        else:
            span = max(stage.total_steps, stage.step)  # its one-off points are not read
        offset = max(last, offset + span)
    return out


def _finite(value) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")


def _chart_order(key: str) -> tuple[int, int, str]:
    if key in LOSS_KEYS:
        return (0, LOSS_KEYS.index(key), key)
    hits = [i for i, word in enumerate(METRIC_PRIORITY) if word in key]
    return (1, min(hits) if hits else len(METRIC_PRIORITY), key)


def overlay_charts(items: Sequence[Item], points: dict[int, dict[str, list[tuple]]], *, x: str = "step") -> dict:
    """One chart per metric key, one series per item (its colour), each with its own x values:
    {"main": [chart], "routine": [chart]} with chart = {"key", "id", "data": {"x_label", "series": [{"label",
    "color", "x", "y"}]}}. app.js's "Compare overlays" block aligns the series on one x axis in the browser,
    so a page sends each series' points once instead of a shared x padded with nulls."""
    per_item = [_item_series(item, points, x=x) for item in items]
    x_label, scale = "step", 1.0
    if x == "time":
        span = max((p[-1][0] for series in per_item for p in series.values() if p), default=0.0)
        unit, scale = _time_unit(span)
        x_label = f"wall time ({unit})"
    keys = sorted({key for series in per_item for key in series}, key=_chart_order)
    main, routine, ids = [], [], set()
    for key in keys:
        data = []
        for item, series in zip(items, per_item):
            pts = downsample(series.get(key) or [], MAX_POINTS)
            if not pts:
                continue
            xs = [round(px / scale, 4) if x == "time" else px for px, _ in pts]
            data.append({"label": item.label, "color": item.color, "x": xs, "y": [_finite(v) for _, v in pts]})
        chart_id = f"cmp-{x}-" + "".join(c if c.isalnum() else "-" for c in key)
        while chart_id in ids:  # "a/b" and "a-b" would share one
            chart_id += "-"
        ids.add(chart_id)
        chart = {"key": key, "id": chart_id, "data": {"x_label": x_label, "series": data}}
        (routine if any(word in key for word in ROUTINE_METRICS) else main).append(chart)
    return {"main": main, "routine": routine, "x": x, "x_label": x_label}


# --- Config diff ----------------------------------------------------------------------------------------------


def _dataset_label(data: dict) -> str:
    return f"{data.get('name')} v{data.get('version')} sha256:{data.get('sha256')}"


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and "sha256" in value and "name" in value:
        out[prefix] = _dataset_label(value)  # a dataset is its name, version and content hash
    elif isinstance(value, dict):
        if not value and prefix:
            out[prefix] = None
        for key, sub in sorted(value.items(), key=lambda kv: (KEY_ORDER.get(kv[0], len(KEY_ORDER)), kv[0])):
            if key not in UNCOMPARED_KEYS:
                _flatten(sub, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def flatten_snapshot(snapshot: dict, *, stage: str | None = None) -> dict[str, Any]:
    """A run's frozen inputs as dotted keys: pipeline name and version, base model, seed, code version,
    retention set, and per stage (by name) its method, inputs, config, adapter and datasets (each dataset as
    "name vN sha256:…"). With `stage`, the run-wide keys plus that stage's under "stage." (so stages with
    different names line up)."""
    snapshot = snapshot or {}
    out: dict[str, Any] = {}
    stages = [s for s in snapshot.get("stages") or [] if isinstance(s, dict)]
    _flatten({k: v for k, v in snapshot.items() if k != "stages"}, "", out)
    for item in stages:
        name = str(item.get("name", "?"))
        if stage is None:
            _flatten({k: v for k, v in item.items() if k != "name"}, f"stages.{name}", out)
        elif name == stage:
            _flatten(item, "stage", out)
    return out


def _canonical(value: Any) -> str:
    if value is ABSENT:
        return "\x00absent"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))  # 1 and 1.0 are the same setting (True and 1 are not)
    return json.dumps(value, sort_keys=True, default=str)


def _merge_order(key_lists: Iterable[Iterable[str]]) -> list[str]:
    """The union of several ordered key lists, each new key placed after the key it followed where first seen
    (so a stage's keys stay together when another run adds one)."""
    order: list[str] = []
    index: set[str] = set()
    for keys in key_lists:
        at = -1
        for key in keys:
            if key in index:
                at = order.index(key)
            else:
                order.insert(at + 1, key)
                index.add(key)
                at += 1
    return order


def display_value(value: Any) -> str:
    """How a config value reads in the diff: strings as they are, the rest as JSON; content hashes short."""
    if value is ABSENT:
        return "—"
    if isinstance(value, str):
        head, sep, digest = value.rpartition("sha256:")
        return f"{head}{sep}{digest[:12]}" if sep and len(digest) > 12 else value
    return json.dumps(value, default=str)


def config_diff(flats: Sequence[dict[str, Any]], *, show_all: bool = False) -> list[dict]:
    """Rows {"key", "values" (one per run, ABSENT where a run lacks the key), "differs"}: only the keys whose
    values differ across the runs, or every key with `show_all`."""
    rows = []
    for key in _merge_order(flat.keys() for flat in flats):
        values = [flat.get(key, ABSENT) for flat in flats]
        canonical = [_canonical(v) for v in values]
        differs = len(set(canonical)) > 1
        if differs or show_all:
            # "changed": differs from the first run's value (the reference the others are read against)
            rows.append(
                {
                    "key": key,
                    "values": values,
                    "differs": differs,
                    "cells": [
                        {
                            "text": display_value(v),
                            "full": "" if v is ABSENT else _plain(v),
                            "absent": v is ABSENT,
                            "changed": c != canonical[0],
                        }
                        for v, c in zip(values, canonical)
                    ],
                }
            )
    return rows


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def item_flat_config(item: Item) -> dict[str, Any]:
    flat = flatten_snapshot(item.run.snapshot, stage=item.stage.name if item.stage else None)
    flat.setdefault("seed", item.run.seed)
    flat.setdefault("code_version", item.run.code_version)
    return flat


# --- Final numbers --------------------------------------------------------------------------------------------


def item_numbers(item: Item) -> dict[str, float]:
    """An item's final numbers: a run's as "<stage>/<key>" over all its stages, a stage's as "<key>"."""
    if item.stage is not None:
        return dict(sorted(summary_numbers(item.stage.summary).items()))
    return {
        f"{stage.name}/{key}": value
        for stage in item.stages  # in stage order
        for key, value in sorted(summary_numbers(stage.summary).items())
    }


def metric_goal(key: str) -> str | None:
    """ "min" for losses, perplexity, forgetting and the like, "max" otherwise, None for bookkeeping numbers."""
    last = key.rsplit("/", 1)[-1].lower()
    if any(word in last for word in NEUTRAL_METRICS):
        return None
    return "max" if higher_is_better(last) else "min"


def metric_table(numbers: Sequence[dict[str, float]]) -> list[dict]:
    """One row per metric any item has (in the items' order of keys): {"key", "goal", "values" (None where an
    item lacks it), "best" (indexes of the best values; empty when fewer than two items have the metric or all
    are equal), "cells"}."""
    rows = []
    for key in _merge_order(n.keys() for n in numbers):
        values = [n.get(key) for n in numbers]
        goal = metric_goal(key)
        present = [v for v in values if v is not None]
        best: list[int] = []
        if goal and len(present) >= 2 and len(set(present)) > 1:
            target = min(present) if goal == "min" else max(present)
            best = [i for i, v in enumerate(values) if v == target]
        rows.append(
            {
                "key": key,
                "goal": goal,
                "values": values,
                "best": best,
                "cells": [{"value": v, "best": i in best} for i, v in enumerate(values)],
            }
        )
    return rows


# --- The page's parts -------------------------------------------------------------------------------------


def compare_charts(*, team: Team, items: Sequence[Item], x: str = "step") -> dict:
    """The overlaid charts of the items (see overlay_charts): one metric query, finished stages cached."""
    stages = [stage for item in items for stage in item.chart_stages]
    points = compare_metric_points(
        team=team,
        grids=_stage_grids(items),
        finished={s.pk: s.finished_at for s in stages if s.is_finished and s.finished_at},
    )
    return overlay_charts(items, points, x=x)


def compare_numbers(items: Sequence[Item]) -> list[dict]:
    """metric_table of the items' final numbers, a run's "<stage>/<key>" split into "stage" and "name"."""
    table = metric_table([item_numbers(item) for item in items])
    for row in table:
        split = items[0].stage is None and "/" in row["key"]
        row["stage"], row["name"] = row["key"].split("/", 1) if split else ("", row["key"])
    return table


# --- CSV ------------------------------------------------------------------------------------------------------


def _csv_text(value: Any) -> str:
    """A text cell that a spreadsheet will not run as a formula (run names and configs are user input)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def metrics_csv_rows(items: Sequence[Item], rows: Sequence[dict]) -> list[list]:
    """Header: metric, better (lower/higher/blank), then one column per item; a row per metric, full precision,
    blank where an item lacks the metric."""
    out = [["metric", "better"] + [_csv_text(item.label) for item in items]]
    for row in rows:
        better = {"min": "lower", "max": "higher"}.get(row["goal"], "")
        out.append([_csv_text(row["key"]), better] + [repr(v) if v is not None else "" for v in row["values"]])
    return out


def config_csv_rows(items: Sequence[Item], rows: Sequence[dict]) -> list[list]:
    """Header: key, differs (yes/no), then one column per item; values in full (JSON for non-strings), blank
    where an item lacks the key."""
    out = [["key", "differs"] + [_csv_text(item.label) for item in items]]
    for row in rows:
        out.append(
            [_csv_text(row["key"]), "yes" if row["differs"] else "no"]
            + [
                _csv_text(cell["full"]) if isinstance(value, str) else cell["full"]
                for value, cell in zip(row["values"], row["cells"])
            ]
        )
    return out
