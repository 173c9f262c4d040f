"""Shape metric series for app.js charts (one shared x axis, series aligned with nulls), and which metrics a
run's charts show first."""

from __future__ import annotations

from trainers.catalog import METHODS

LOSS_KEYS = ["train/loss", "eval/loss"]
# Stages that train on nothing (merge, evaluate, export, gate): no loss curve of their own.
ONE_OFF_METHODS = tuple(name for name, method in METHODS.items() if not method.trains)
# Method metrics worth seeing first (DPO rewards and margins, GRPO reward and KL, accuracies).
METRIC_PRIORITY = ("reward", "margin", "accurac", "kl", "exact_match", "log_odds", "nll", "agreement", "entropy")
# Optimiser and bookkeeping series: charted, but folded away under "More metrics".
ROUTINE_METRICS = (
    "learning_rate",
    "grad_norm",
    "epoch",
    "num_tokens",
    "runtime",
    "per_second",
    "total_flos",
    "logits/",
    "logps/",
    "step_time",
    "clip_ratio",
    "completions/",
)


def _metric_order(key: str) -> tuple[int, str]:
    hits = [i for i, word in enumerate(METRIC_PRIORITY) if word in key]
    return (min(hits) if hits else len(METRIC_PRIORITY), key)


def metric_charts(table: dict) -> tuple[list[dict], list[dict]]:
    """Small charts for every metric but the loss, stages side by side on the run's step axis:
    (the method's own metrics, priority first; the routine optimiser/bookkeeping ones)."""
    keys = sorted((k for k in table if k not in LOSS_KEYS), key=_metric_order)
    charts = [
        {
            "key": key,
            "id": "metric-" + "".join(c if c.isalnum() else "-" for c in key),
            "chart": chart_payload(table[key]),
        }
        for key in keys
    ]
    routine = [c for c in charts if any(word in c["key"] for word in ROUTINE_METRICS)]
    return [c for c in charts if c not in routine], routine


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


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    import math

    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step) + 1)]


def scatter_layout(
    points: list[dict], *, x_label: str, y_label: str, width: int = 880, height: int = 400, zero_lines: bool = True
) -> dict:
    """Place points ({"x", "y", "label", "href", "group"}) on an SVG plot for components/scatter.html: axes
    padded around the data (and around 0 when `zero_lines`, so the quadrants read), ticks, one colour per group."""
    left, right, top, bottom = 64, 16, 16, 44
    xs = [p["x"] for p in points] or [0.0]
    ys = [p["y"] for p in points] or [0.0]
    if zero_lines:
        xs, ys = xs + [0.0], ys + [0.0]

    def bounds(values):
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad

    (x0, x1), (y0, y1) = bounds(xs), bounds(ys)
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y):
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    groups = sorted({p.get("group") or "" for p in points})
    placed = [
        {**p, "cx": round(px(p["x"]), 1), "cy": round(py(p["y"]), 1), "color": groups.index(p.get("group") or "") % 8}
        for p in points
    ]
    return {
        "width": width,
        "height": height,
        "left": left,
        "top": top,
        "right": width - right,
        "bottom": height - bottom,
        "x_label": x_label,
        "y_label": y_label,
        "points": placed,
        "groups": groups,
        "x_ticks": [{"v": f"{t:g}", "p": round(px(t), 1)} for t in _ticks(x0, x1)],
        "y_ticks": [{"v": f"{t:g}", "p": round(py(t), 1)} for t in _ticks(y0, y1)],
        "zero_x": round(px(0), 1) if zero_lines else None,
        "zero_y": round(py(0), 1) if zero_lines else None,
        "mid_x": left + plot_w / 2,
        "mid_y": top + plot_h / 2,
    }
