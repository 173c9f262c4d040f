"""What the numbers of the evaluate, gate and export stages mean, defined once.

For each kind of held-out data: the metrics two models can be compared on, the first being the primary one
(it decides gain and forgetting in evaluate, a gate's default, export's headline); and for any metric name,
whether lower or higher is better. The web side (run comparison, sweep ranking) reads the same rule.
Standard library only.
"""

__all__ = ["COMPARABLE_METRICS", "EVAL_KINDS", "LOWER_IS_BETTER", "PRIMARY_METRICS", "higher_is_better",
           "metric_goal"]

# Metrics by the kind of held-out data they are measured on; the first is the primary metric (docs/evaluation.md).
COMPARABLE_METRICS: dict[str, tuple[str, ...]] = {
    "prompt_completion": ("loss", "perplexity"),
    "chat": ("loss", "perplexity"),
    "reference": ("accuracy", "exact_match", "mean_reward"),
    "preference": ("preference_accuracy", "logp_margin"),
}
# The kinds of data the evaluate stage (and a gate) can measure.
EVAL_KINDS = tuple(COMPARABLE_METRICS)

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
