"""Model merging settings (trainers/merge_math.py does the arithmetic)."""

from dataclasses import dataclass

from ..schema import param

# trainers/merge_math.py implements these (it imports torch; this module must not).
MERGE_METHODS = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "model_stock")


def parse_weights(text: str) -> list[float]:
    """``"0.5, 0.3,0.2"`` -> ``[0.5, 0.3, 0.2]``; ``""`` -> ``[]`` (equal weights). ValueError names the bad item."""
    out = []
    for item in str(text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(float(item))
        except ValueError:
            raise ValueError(f"{item!r} is not a number") from None
    return out


@dataclass(frozen=True)
class MergeConfig:
    """Merge the outputs of several earlier stages (full models or adapters of the same base) into one model.

    Adapters are merged into the base first, so every method works on whole weights; the task-vector methods
    (task arithmetic, TIES, DARE, Model Stock) take differences from the run's base model.
    """

    merge_method: str = param(
        "linear",
        choices=MERGE_METHODS,
        label="Merge method",
        group="merge",
        help="linear: weighted average of the weights (a model soup). task_arithmetic: base plus the weighted sum "
        "of task vectors. ties: trim each task vector to its largest entries, elect a sign per weight, average "
        "those that agree. dare_linear / dare_ties: drop task-vector entries at random and rescale, then add / "
        "TIES-merge. model_stock: average pulled towards the base by the models' agreement (Jang et al. 2024).",
    )
    weights: str = param(
        "",
        group="merge",
        help="One weight per input, comma-separated, in the order of the stage's inputs (e.g. '0.5, 0.3, 0.2'). "
        "Empty: equal weights (1/N for linear; 1 each for the task-vector methods). Model Stock uses none.",
    )
    density: float = param(
        0.5,
        min=0,
        min_exclusive=True,
        max=1,
        group="merge",
        help="ties and dare: the share of each task vector's entries kept (by magnitude for ties, at random "
        "for dare). Other methods ignore it.",
    )
    majority_sign_method: str = param(
        "total",
        choices=("total", "frequency"),
        group="merge",
        help="ties and dare_ties: elect each weight's sign by the summed magnitude ('total') or by the number "
        "of models agreeing ('frequency').",
    )

    def check(self) -> dict[str, str]:
        try:
            weights = parse_weights(self.weights)
        except ValueError as exc:
            return {"weights": f"weights: {exc}; give numbers separated by commas"}
        if weights and self.merge_method == "model_stock":
            return {"weights": "weights: model_stock derives its own weights; leave this empty"}
        if self.merge_method == "linear" and weights and sum(weights) <= 0:
            return {"weights": "weights: a linear merge needs weights that sum to more than 0"}
        return {}
