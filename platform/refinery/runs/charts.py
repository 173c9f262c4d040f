"""Shape metric series for app.js charts: one shared x axis, series aligned with nulls."""
from __future__ import annotations


def chart_payload(series: dict[str, list[tuple[int, float]]], *, x_label: str = "step") -> dict:
    steps = sorted({step for points in series.values() for step, _ in points})
    index = {step: i for i, step in enumerate(steps)}
    out = []
    for label, points in series.items():
        values: list[float | None] = [None] * len(steps)
        for step, value in points:
            values[index[step]] = value
        out.append({"label": label, "values": values})
    return {"x": steps, "series": out, "x_label": x_label}
