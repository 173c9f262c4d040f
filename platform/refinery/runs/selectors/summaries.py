"""A run's final numbers, read from its stages' summaries (what the runs list sorts by and sweeps rank by), and
which way a metric is better."""
from __future__ import annotations

import math
from typing import Any

from refinery.runs.models import Run

# Words in a metric key that mean "lower is better"; any other metric is taken as "higher is better".
LOWER_IS_BETTER = ("loss", "perplexity", "forgetting", "nll", "runtime", "error")


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_summary_metrics(run: Run) -> dict[str, float]:
    """A run's final numbers, one flat dict: "<stage>/<key>" for every number of every stage's summary.

    A training stage's summary is already flat ("sft/train/loss"); an evaluate stage contributes its
    report's metrics ("evaluate-sft/eval/loss", "evaluate-sft/baseline/loss") and its headline numbers
    "<stage>/gain" and "<stage>/forgetting". Reads `run.stages.all()`: prefetch them for many runs.
    """
    out: dict[str, float] = {}
    for stage in run.stages.all():
        summary = stage.summary or {}
        if isinstance(summary.get("metrics"), dict):
            items = dict(summary["metrics"])
            for part, key in (("target", "gain"), ("retention", "forgetting")):
                block = summary.get(part)
                if isinstance(block, dict) and key in block:
                    items.setdefault(key, block[key])
        else:
            items = _flat(summary)
        for key, value in items.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{stage.name}/{key}"] = float(value)
    return out


def default_goal(metric: str) -> str:
    """"min" for losses, perplexity, forgetting and the like, "max" otherwise (gains, accuracies, rewards)."""
    key = metric.rsplit("/", 1)[-1].lower()
    return "min" if any(word in key for word in LOWER_IS_BETTER) else "max"
