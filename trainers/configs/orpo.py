"""Odds Ratio Preference Optimization (ORPO) settings."""

from dataclasses import dataclass

from ..schema import param
from . import fields
from .training import SequenceTrainingConfig


@dataclass(frozen=True)
class ORPOConfig(SequenceTrainingConfig):
    """Odds Ratio Preference Optimization: supervised fine-tuning on the chosen answers plus a penalty that
    makes them more likely than the rejected ones, in one stage and without a reference model.

    Because it also learns the chosen answers, ORPO can start from a base model that has had no SFT.
    The defaults suit the built-in demo model; for real models use a learning rate of about 5e-6 to 8e-6
    (full) or 1e-5 to 1e-4 (LoRA) and 1 to 3 epochs.
    """

    beta: float = param(
        0.1,
        min=0,
        min_exclusive=True,
        max=100,
        label="Lambda (beta)",
        group="preference",
        help="Weight of the odds-ratio term against the supervised loss on the chosen answers (lambda in the "
        "ORPO paper, beta in TRL). 0.1 is typical; higher pushes harder against the rejected answers.",
    )
    learning_rate: float = fields.learning_rate(
        3e-3,
        "The default suits the tiny demo model; for real models use about 5e-6 to 8e-6 (full fine-tuning) "
        "or 1e-5 to 1e-4 (LoRA).",
    )
    per_device_train_batch_size: int = fields.per_device_train_batch_size(16, "Preference pairs")
    eval_fraction: float = fields.eval_fraction(
        "Evaluation reports eval/loss, the reward metrics (eval/rewards/accuracies, eval/rewards/margins, "
        "eval/log_odds_ratio, ...) and eval/preference_accuracy."
    )
    logging_steps: int = fields.logging_steps("loss, NLL loss, log odds ratio, rewards, reward accuracy")

    def check(self) -> dict[str, str]:
        return super().check()
