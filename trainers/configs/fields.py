"""Config fields that several methods declare the same way (optimizer, schedule, data, evaluation, checkpoints).

Each function returns a fresh :func:`~trainers.schema.param`, so a method config reads::

    learning_rate: float = fields.learning_rate(5e-4, "... method-specific advice ...")

and every method's form, API schema and validation describe these settings identically. The shared
training settings are declared once with these in :mod:`trainers.configs.training`; a method's config
calls them only to override a default or the advice.
Standard library only (the web process imports config modules).
"""

from typing import Any

from ..schema import param

__all__ = [
    "LR_SCHEDULERS",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "warmup_ratio",
    "weight_decay",
    "lr_scheduler_type",
    "eval_fraction",
    "eval_steps",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "gradient_checkpointing",
    "check_max_steps",
]

LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "inverse_sqrt", "polynomial")


def learning_rate(default: float, advice: str) -> Any:
    return param(
        default,
        min=0,
        min_exclusive=True,
        max=1,
        group="optimization",
        help=f"Peak learning rate of the AdamW optimizer. {advice}",
    )


def num_train_epochs(default: float, advice: str = "Real models usually need 1 to 3.") -> Any:
    return param(
        default,
        min=0,
        min_exclusive=True,
        max=10000,
        label="Epochs",
        group="optimization",
        help=f"How many passes over the training data (fractions allowed). Ignored when max_steps is set. {advice}",
    )


def max_steps() -> Any:
    return param(
        -1,
        min=-1,
        max=10_000_000,
        group="optimization",
        help="Total optimizer steps; -1 means 'train for num_train_epochs'. A positive value overrides the epochs.",
    )


def per_device_train_batch_size(default: int, unit: str = "Examples") -> Any:
    return param(
        default,
        min=1,
        max=4096,
        label="Batch size per device",
        group="optimization",
        help=f"{unit} per forward pass on each GPU. Lower it if you run out of memory and raise "
        "gradient_accumulation_steps to keep the effective batch size.",
    )


def gradient_accumulation_steps() -> Any:
    return param(
        1,
        min=1,
        max=1024,
        group="optimization",
        help="Forward/backward passes summed before each optimizer step. "
        "Effective batch size = batch size per device x accumulation steps x number of GPUs.",
    )


def max_length(
    default: int, help: str = "Longest tokenized prompt + answer, in tokens; longer examples are truncated at the end."
) -> Any:
    return param(
        default,
        min=8,
        max=131072,
        label="Max sequence length",
        group="data",
        after="gradient_accumulation_steps",
        help=help,
    )


def warmup_ratio() -> Any:
    return param(
        0.0,
        min=0,
        max=0.5,
        group="optimization",
        help="Fraction of the training steps over which the learning rate rises linearly from 0 to its peak.",
    )


def weight_decay() -> Any:
    return param(
        0.0,
        min=0,
        max=1,
        group="optimization",
        help="Decoupled weight decay of AdamW (not applied to biases and norms). 0 to 0.1 is typical.",
    )


def lr_scheduler_type() -> Any:
    return param(
        "linear",
        choices=LR_SCHEDULERS,
        label="Learning-rate schedule",
        group="optimization",
        help="How the learning rate changes after warmup: 'linear' and 'cosine' decay to 0, 'constant' keeps it.",
    )


def eval_fraction(reports: str) -> Any:
    return param(
        0.0,
        min=0,
        max=0.5,
        group="evaluation",
        help="Fraction of the training data held out for evaluation when the stage has no eval dataset "
        f"(0 = none). {reports}",
    )


def eval_steps() -> Any:
    return param(
        0,
        min=0,
        max=10_000_000,
        group="evaluation",
        help="Evaluate every N optimizer steps; 0 evaluates once, at the end of training. "
        "Only used when there is eval data.",
    )


def logging_steps(what: str = "loss, learning rate, gradient norm") -> Any:
    return param(
        1,
        min=1,
        max=100_000,
        group="logging",
        help=f"Report training metrics ({what}) every N optimizer steps.",
    )


def save_steps() -> Any:
    return param(
        100,
        min=1,
        max=10_000_000,
        label="Checkpoint every N steps",
        group="logging",
        help="Save a resumable checkpoint every N optimizer steps. A stage whose worker dies resumes from "
        "the newest complete checkpoint.",
    )


def save_total_limit() -> Any:
    return param(
        2,
        min=1,
        max=1000,
        label="Checkpoints kept",
        group="logging",
        help="How many of the newest checkpoints to keep on disk; older ones are deleted.",
    )


def gradient_checkpointing() -> Any:
    return param(
        False,
        group="optimization",
        help="Recompute activations during the backward pass instead of storing them: much less GPU memory "
        "for about 20-30% more compute. Turn on for large models.",
    )


def check_max_steps(max_steps_value: int) -> dict[str, str]:
    """The rule every config with max_steps shares: -1 or a positive number."""
    if max_steps_value == 0:
        return {"max_steps": "must be -1 (train for num_train_epochs) or a positive number of steps, got 0"}
    return {}
