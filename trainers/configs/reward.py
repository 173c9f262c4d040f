"""Reward-model training settings."""

from dataclasses import dataclass

from ..schema import param
from . import fields
from .training import SequenceTrainingConfig


@dataclass(frozen=True)
class RewardConfig(SequenceTrainingConfig):
    """Reward model: learn a score for prompt + answer such that chosen answers score higher than rejected ones.

    The input model gets a one-score head (a sequence classifier on the same weights); the stage outputs that
    model, or an adapter with the head, which a later grpo stage can use as its reward (reward_model_stage)
    and trainers.scoring.load_reward_model can load to score data. The defaults suit the built-in demo model;
    for real models use a learning rate of about 1e-5 (full) or 1e-4 (LoRA) and 1 to 2 epochs.
    """

    learning_rate: float = fields.learning_rate(
        3e-4,
        "The default suits the tiny demo model; for real models use about 5e-6 to 2e-5 (full fine-tuning) "
        "or 5e-5 to 2e-4 (LoRA).",
    )
    num_train_epochs: float = fields.num_train_epochs(30.0, "Real models usually need 1 or 2.")
    per_device_train_batch_size: int = fields.per_device_train_batch_size(16, "Preference pairs")
    max_length: int = fields.max_length(
        512,
        "Longest tokenized prompt + answer, in tokens. Pairs with a longer chosen or rejected text are "
        "left out of training (TRL's RewardTrainer filters them; it does not truncate).",
    )
    center_rewards_coefficient: float = param(
        0.0,
        min=0,
        max=1,
        group="reward",
        after="max_length",
        help="Pull the mean score towards 0 by adding this times the mean squared score to the loss, so scores "
        "from different runs are comparable; 0.01 is the usual value, 0 turns it off.",
    )
    eval_fraction: float = fields.eval_fraction(
        "Evaluation reports eval/accuracy (the share of held-out pairs whose chosen answer scores higher) "
        "and eval/margin."
    )
    logging_steps: int = fields.logging_steps("loss, pairwise accuracy, margin and scores")

    def check(self) -> dict[str, str]:
        return super().check()
