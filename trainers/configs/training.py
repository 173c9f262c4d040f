"""The training settings every training method shares, declared once.

A method's config extends :class:`TrainingConfig` (or :class:`SequenceTrainingConfig` when it trains on given
texts with a length cap), the way TRL's ``DPOConfig`` extends ``TrainingArguments``: it declares its own fields
and overrides only the shared ones whose default or advice differ (``learning_rate`` always does). The form lists
the method's own fields first, then the shared ones (:func:`trainers.schema.config_fields`).
Standard library only (the web process imports config modules).
"""

from dataclasses import dataclass

from . import fields

__all__ = ["TrainingConfig", "SequenceTrainingConfig"]


@dataclass(frozen=True)
class TrainingConfig:
    """Optimizer, schedule, evaluation during training and checkpoints."""

    learning_rate: float = fields.learning_rate(3e-4, "The default suits the tiny demo model.")
    num_train_epochs: float = fields.num_train_epochs(10.0)
    max_steps: int = fields.max_steps()
    per_device_train_batch_size: int = fields.per_device_train_batch_size(16)
    gradient_accumulation_steps: int = fields.gradient_accumulation_steps()
    warmup_ratio: float = fields.warmup_ratio()
    weight_decay: float = fields.weight_decay()
    lr_scheduler_type: str = fields.lr_scheduler_type()
    eval_fraction: float = fields.eval_fraction("Evaluation reports eval/loss.")
    eval_steps: int = fields.eval_steps()
    logging_steps: int = fields.logging_steps()
    save_steps: int = fields.save_steps()
    save_total_limit: int = fields.save_total_limit()
    gradient_checkpointing: bool = fields.gradient_checkpointing()

    def check(self) -> dict[str, str]:
        """Cross-field rules; a method that adds its own extends ``super().check()``."""
        return fields.check_max_steps(self.max_steps)


@dataclass(frozen=True)
class SequenceTrainingConfig(TrainingConfig):
    """:class:`TrainingConfig` plus the length cap of methods that train on given texts (not on their own
    generations, as grpo and distill do)."""

    max_length: int = fields.max_length(512)
