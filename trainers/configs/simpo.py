"""Simple Preference Optimization (SimPO) settings."""

from dataclasses import dataclass

from ..schema import param
from . import fields
from .training import SequenceTrainingConfig


@dataclass(frozen=True)
class SimPOConfig(SequenceTrainingConfig):
    """Simple Preference Optimization: prefer the chosen answer by a target margin of length-normalized
    log-probability, without a reference model.

    With cpo_alpha above 0 it also learns the chosen answers (CPO-SimPO). The defaults suit the built-in demo
    model after a short SFT; for real models use a learning rate of about 3e-7 to 1e-6 (full) or 1e-5 to 1e-4
    (LoRA), beta 2 to 10, gamma about half of beta, and 1 epoch.
    """

    beta: float = param(
        2.0,
        min=0,
        min_exclusive=True,
        max=100,
        group="preference",
        help="Scale of the reward (the length-normalized log-probability of an answer). The SimPO paper uses 2 to 10.",
    )
    simpo_gamma: float = param(
        1.0,
        min=0,
        max=100,
        label="Target margin (gamma)",
        group="preference",
        help="Reward margin the chosen answer must win by. The SimPO paper sets it to about half of beta "
        "(gamma / beta between 0.3 and 0.8).",
    )
    cpo_alpha: float = param(
        0.0,
        min=0,
        max=100,
        label="SFT weight (cpo_alpha)",
        group="preference",
        help="Weight of a supervised loss on the chosen answers added to the SimPO loss; 0 is plain SimPO, "
        "a positive value (e.g. 0.05 to 1) is CPO-SimPO, which keeps the model closer to the chosen answers.",
    )
    learning_rate: float = fields.learning_rate(
        3e-4,
        "The default suits the tiny demo model; for real models use about 3e-7 to 1e-6 (full fine-tuning) "
        "or 1e-5 to 1e-4 (LoRA).",
    )
    num_train_epochs: float = fields.num_train_epochs(10.0, "Real models usually need 1.")
    per_device_train_batch_size: int = fields.per_device_train_batch_size(16, "Preference pairs")
    eval_fraction: float = fields.eval_fraction(
        "Evaluation reports eval/loss, the reward metrics (eval/rewards/accuracies, eval/rewards/margins, ...) "
        "and eval/preference_accuracy."
    )
    logging_steps: int = fields.logging_steps("loss, rewards of chosen and rejected answers, reward accuracy")

    def check(self) -> dict[str, str]:
        return super().check()
