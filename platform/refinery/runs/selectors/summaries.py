"""A run's final numbers, read from its stages' summaries (what the runs list sorts by and sweeps rank by), and
which way a metric is better."""

from __future__ import annotations

from trainers.metrics import metric_goal, summary_numbers

from refinery.runs.models import Run


def run_summary_metrics(run: Run) -> dict[str, float]:
    """A run's final numbers, one flat dict: "<stage>/<key>" for every number of every stage's summary.

    A training stage's summary is already flat ("sft/train/loss"); an evaluate stage contributes its
    report's metrics ("evaluate-sft/eval/loss", "evaluate-sft/baseline/loss") and its headline numbers
    "<stage>/gain" and "<stage>/forgetting". Reads `run.stages.all()`: prefetch them for many runs.
    """
    out: dict[str, float] = {}
    for stage in run.stages.all():
        out.update((f"{stage.name}/{key}", value) for key, value in summary_numbers(stage.summary).items())
    return out


def default_goal(metric: str) -> str:
    """ "min" for losses, perplexity, forgetting and the like, "max" otherwise (gains, accuracies, rewards)."""
    return metric_goal(metric)
