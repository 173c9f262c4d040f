"""What the numbers of the evaluate, gate and export stages mean, defined once.

For each kind of held-out data: the metrics two models can be compared on, the first being the primary one
(it decides gain and forgetting in evaluate, a gate's default, export's headline); and for any metric name,
whether lower or higher is better; and the final numbers of a stage summary, flat. The web side (run
comparison, sweep ranking) reads the same rules.
Standard library only.
"""

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ALL_COMPARABLE_METRICS",
    "COMPARABLE_METRICS",
    "EVAL_KINDS",
    "LOWER_IS_BETTER",
    "PRIMARY_METRICS",
    "higher_is_better",
    "metric_goal",
    "flatten_keys",
    "summary_numbers",
]

# Metrics by the kind of held-out data they are measured on; the first is the primary metric (docs/evaluation.md).
COMPARABLE_METRICS: dict[str, tuple[str, ...]] = {
    "prompt_completion": ("loss", "perplexity"),
    "chat": ("loss", "perplexity"),
    "reference": ("accuracy", "exact_match", "mean_reward"),
    "preference": ("preference_accuracy", "logp_margin"),
}
# The kinds of data the evaluate stage (and a gate) can measure.
EVAL_KINDS = tuple(COMPARABLE_METRICS)
# Every comparable metric once, in that order (a gate's choice of target metric).
ALL_COMPARABLE_METRICS = tuple(dict.fromkeys(m for names in COMPARABLE_METRICS.values() for m in names))

# Words in a metric's last path segment that mean "lower is better"; any other metric: higher is better.
LOWER_IS_BETTER = ("loss", "perplexity", "forgetting", "nll", "runtime", "error")


def higher_is_better(metric: str) -> bool:
    """Whether a higher value of ``metric`` (a name such as ``loss`` or a key such as ``eval/accuracy``) is
    better."""
    last = metric.rsplit("/", 1)[-1].lower()
    return not any(word in last for word in LOWER_IS_BETTER)


def metric_goal(metric: str) -> str:
    """``"max"`` when higher is better, else ``"min"``."""
    return "max" if higher_is_better(metric) else "min"


# The primary metric by data kind: (name, higher is better).
PRIMARY_METRICS: dict[str, tuple[str, bool]] = {
    kind: (names[0], higher_is_better(names[0])) for kind, names in COMPARABLE_METRICS.items()
}


def flatten_keys(data: Mapping[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level, keys joined by ``sep``: ``{"eval": {"loss": 1.2}}`` -> ``{"eval/loss": 1.2}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten_keys(value, sep, f"{prefix}{key}{sep}"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def summary_numbers(summary: Mapping[str, Any] | None) -> dict[str, float]:
    """A stage summary's final numbers, flat: a training stage's as they are (``train/loss``, nested keys joined
    by ``/``), an evaluate stage's report ``metrics`` plus its headline ``gain`` (on its target) and
    ``forgetting`` (on its retention set). Only finite numbers (no booleans)."""
    summary = summary or {}
    if isinstance(summary.get("metrics"), Mapping):
        items = dict(summary["metrics"])
        for part, key in (("target", "gain"), ("retention", "forgetting")):
            block = summary.get(part)
            if isinstance(block, Mapping) and key in block:
                items.setdefault(key, block[key])
    else:
        items = flatten_keys(summary)
    return {
        key: float(value)
        for key, value in items.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }
