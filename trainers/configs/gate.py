"""Promotion gate settings: which registered model and alias the gate guards, the conditions a candidate
must meet against the alias's current holder (the champion), and how both are evaluated."""

from dataclasses import dataclass

from ..metrics import ALL_COMPARABLE_METRICS, COMPARABLE_METRICS
from ..schema import param
from .evaluate import ACCURACY_REWARDS

# Metrics a gate can compare, by the kind of its held-out data; the first is the default (the primary metric
# of the evaluate stage).
GATE_METRICS = COMPARABLE_METRICS


def optional_number(value: str) -> float | None:
    """An optional threshold field: empty means "none"; raises ValueError for anything but a finite number."""
    value = (value or "").strip()
    if not value:
        return None
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(value)
    return number


@dataclass(frozen=True)
class GateConfig:
    """Promote the input stage's model (the candidate) to a registered model's alias only if it beats the
    alias's current holder (the champion) on held-out data and has not forgotten what the champion knows.

    Both models are evaluated in this stage, on the same held-out set (this stage's dataset) and the same
    retention set (the pipeline's), exactly as an evaluate stage measures them. With no holder yet, the
    candidate is compared with the run's base model for information and the absolute thresholds decide.
    """

    registered_model: str = param(
        "",
        group="promotion",
        label="Registered model",
        help="The team's registered model the candidate becomes a version of (created on first promotion), "
        "e.g. support-bot.",
    )
    alias: str = param(
        "production",
        group="promotion",
        help="The alias the gate moves to the candidate when it passes, e.g. production or staging.",
    )
    metric: str = param(
        "",
        choices=("",) + ALL_COMPARABLE_METRICS,
        group="promotion",
        label="Target metric",
        help="The held-out metric the candidate must improve. Empty: the primary metric of the held-out data "
        "(loss for prompt/completion and chat, accuracy for reference, preference accuracy for preference).",
    )
    min_gain: float = param(
        0.0,
        min=0.0,
        group="promotion",
        label="Minimum gain (D)",
        help="The candidate must beat the champion on the target metric by more than 0 and at least this much "
        "(in the metric's units, or a fraction of the champion's value when gain mode is relative).",
    )
    gain_mode: str = param(
        "absolute",
        choices=("absolute", "relative"),
        group="promotion",
        help="absolute: D in the metric's units; relative: D as a fraction (0.02 = 2%).",
    )
    max_forgetting: str = param(
        "",
        group="promotion",
        label="Maximum retention drop (R)",
        help="The candidate may be at most this much worse than the champion on the retention set's primary "
        "metric (its forgetting, in the metric's units). Empty: no limit. Needs the pipeline's retention set.",
    )
    target_threshold: str = param(
        "",
        group="promotion",
        label="Absolute target threshold",
        help="Optional: the candidate's target metric must be at least this good (>= for accuracy-like "
        "metrics, <= for loss). Checked on every run, and the only target check when there is no holder yet.",
    )
    retention_threshold: str = param(
        "",
        group="promotion",
        label="Absolute retention threshold",
        help="Optional: the candidate's retention primary metric must be at least this good (>= or <= as "
        "above). Needs the pipeline's retention set.",
    )
    require_approval: bool = param(
        False,
        group="promotion",
        label="Require approval",
        help="A passing candidate is registered as a version awaiting an owner's approval; the alias moves only "
        "when an owner approves it.",
    )
    max_rows: int = param(
        200,
        min=0,
        max=1_000_000,
        group="evaluation",
        help="Evaluate at most this many rows of each dataset (the first ones, in file order); 0 means all.",
    )
    batch_size: int = param(16, min=1, max=1024, group="evaluation", help="Rows per forward pass or generation batch.")
    max_new_tokens: int = param(
        32,
        min=1,
        max=4096,
        group="evaluation",
        help="Longest generated answer, in tokens (reference data and sample generations).",
    )
    accuracy_reward: str = param(
        "numeric_match",
        choices=ACCURACY_REWARDS,
        group="evaluation",
        help="The GRPO reward that decides whether a generated answer to a reference row is correct.",
    )
    sample_count: int = param(
        4,
        min=0,
        max=100,
        group="evaluation",
        help="Sample answers of both models to store, from the first held-out prompts.",
    )

    def check(self) -> dict[str, str]:
        errors = {}
        if not self.registered_model.strip():
            errors["registered_model"] = "registered_model: name the registered model the gate promotes to"
        if not self.alias.strip():
            errors["alias"] = "alias: name the alias the gate moves, e.g. production"
        for name in ("max_forgetting", "target_threshold", "retention_threshold"):
            try:
                value = optional_number(getattr(self, name))
            except ValueError:
                errors[name] = f"{name}: must be a number or empty, got {getattr(self, name)!r}"
                continue
            if name == "max_forgetting" and value is not None and value < 0:
                errors[name] = f"{name}: must be 0 or more (a drop the candidate may have), got {value:g}"
        return errors

    def check_dataset_kind(self, kind: str) -> dict[str, str]:
        """The target metric must be one the held-out data gives."""
        offered = GATE_METRICS.get(kind, ())
        if self.metric and offered and self.metric not in offered:
            return {"config.metric": f"metric: {kind} data gives {', '.join(offered)}, not {self.metric!r}"}
        return {}
