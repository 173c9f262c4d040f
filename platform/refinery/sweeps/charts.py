"""Scatter plots of a sweep, one per parameter (x: the parameter's value, y: the metric), as geometry for an
inline SVG (templates/sweeps/scatter.html): no JavaScript, every point a link to its run."""

from __future__ import annotations

import math
from typing import Any

from django.urls import reverse

from refinery.sweeps.parameters import value_label as label

WIDTH, HEIGHT = 360, 220
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 12, 26
LOG_SPAN = 10  # values spanning more than this factor get a log axis


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * power:
            return mult * power
    return 10 * power


def _linear_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    step = _nice_step(hi - lo, count)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


class _Axis:
    """Maps data values to pixels between `start` and `end`: numeric (linear or log) or categories."""

    def __init__(
        self, values: list[Any], start: float, end: float, *, categories: list[Any] | None = None, pad: float = 0.06
    ):
        self.start, self.end = start, end
        self.categories = categories
        self.log = False
        if categories is not None:
            return
        lo, hi = min(values), max(values)
        self.log = lo > 0 and hi / lo > LOG_SPAN
        if self.log:
            lo, hi = math.log10(lo), math.log10(hi)
        if lo == hi:
            lo, hi = lo - (abs(lo) * 0.1 or 1), hi + (abs(hi) * 0.1 or 1)
        margin = (hi - lo) * pad
        self.lo, self.hi = lo - margin, hi + margin

    def __call__(self, value: Any) -> float:
        if self.categories is not None:
            slot = (self.end - self.start) / len(self.categories)
            return round(self.start + slot * (self.categories.index(value) + 0.5), 1)
        v = math.log10(value) if self.log else value
        return round(self.start + (v - self.lo) / (self.hi - self.lo) * (self.end - self.start), 1)

    def ticks(self, values: list[Any]) -> list[dict]:
        if self.categories is not None:
            picked = self.categories
        elif len(set(values)) <= 6:
            picked = sorted(set(values))  # a grid's values: label each one
        elif self.log:
            picked = [10.0**p for p in range(math.ceil(self.lo), math.floor(self.hi) + 1)]
            if len(picked) < 2:
                picked = [min(values), max(values)]
        else:
            picked = _linear_ticks(min(values), max(values))
        return [{"at": self(v), "label": label(v)} for v in picked]


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def sweep_scatters(*, sweep, results) -> list[dict]:
    """One chart per parameter of the sweep, from sweep_results rows that have the metric."""
    rows = [r for r in results.rows if r.value is not None]
    if not rows:
        return []
    ys = [r.value for r in rows]
    y_axis = _Axis(ys, HEIGHT - BOTTOM, TOP, pad=0.1)
    y_ticks = (
        [
            {"at": y_axis(v), "label": label(v)}
            for v in _linear_ticks(y_axis.lo, y_axis.hi)
            if y_axis.lo <= v <= y_axis.hi
        ]
        if not y_axis.log
        else y_axis.ticks(ys)
    )
    charts = []
    for i, parameter in enumerate(sweep.parameters):
        xs = [r.params[i][1] for r in rows]
        if _numeric(xs):
            x_axis = _Axis(xs, LEFT, WIDTH - RIGHT)
        else:
            order = [v for v in parameter.get("values") or [] if v in xs]
            categories = order + sorted({v for v in xs if v not in order}, key=str)
            x_axis = _Axis(xs, LEFT, WIDTH - RIGHT, categories=categories)
        points = [
            {
                "x": x_axis(x),
                "y": y_axis(r.value),
                "best": r.best,
                "run": r.run.number,
                "url": reverse("runs:detail", args=[r.run.number]),
                "title": f"#{r.trial.index} (run #{r.run.number}): {parameter['path']}={label(x)}, "
                f"{results.metric}={label(r.value)}",
            }
            for x, r in zip(xs, rows)
        ]
        points.sort(key=lambda p: p["best"])  # the best point is drawn last, on top
        charts.append(
            {
                "path": parameter["path"],
                "log": x_axis.log,
                "points": points,
                "x_ticks": x_axis.ticks(xs),
                "y_ticks": y_ticks,
                "width": WIDTH,
                "height": HEIGHT,
                "left": LEFT,
                "right": WIDTH - RIGHT,
                "top": TOP,
                "bottom": HEIGHT - BOTTOM,
                "tick_x": LEFT - 6,
                "tick_y": HEIGHT - BOTTOM + 16,
                "metric": results.metric,
            }
        )
    return charts
