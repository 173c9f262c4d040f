"""Kahneman-Tversky Optimization (KTO) settings."""

from dataclasses import dataclass

from ..schema import param
from . import fields
from .training import SequenceTrainingConfig

# TRL's KTO losses (the choices of trl.KTOConfig.loss_type), mirrored because the web process cannot import
# trl. tests/trainers/test_preference_methods.py checks this list against the installed TRL.
KTO_LOSS_TYPES = ("kto", "apo_zero_unpaired")


@dataclass(frozen=True)
class KTOConfig(SequenceTrainingConfig):
    """Kahneman-Tversky Optimization: learn from answers marked good or bad one at a time (no pairs needed).

    Trains on feedback data (prompt, completion, label: true for a desirable answer) or on preference pairs,
    each pair giving one desirable (chosen) and one undesirable (rejected) example. The starting model is
    the reference. The defaults suit the built-in demo model after a short SFT; for real models use a
    learning rate of about 5e-7 to 5e-6 (full) or 5e-6 to 5e-5 (LoRA) and 1 to 3 epochs.
    """

    loss_type: str = param(
        "kto",
        choices=KTO_LOSS_TYPES,
        label="Loss",
        group="preference",
        help="'kto' is the loss of the KTO paper, which estimates a KL term from mismatched prompts and answers "
        "within each batch; 'apo_zero_unpaired' (APO-zero) pushes desirable answers up and undesirable ones "
        "down without that term.",
    )
    beta: float = param(
        0.1,
        min=0,
        min_exclusive=True,
        max=100,
        group="preference",
        help="How far the model may move from the reference: higher keeps it closer. 0.1 is typical.",
    )
    desirable_weight: float = param(
        1.0,
        min=0,
        min_exclusive=True,
        max=100,
        group="preference",
        help="Weight of the loss on desirable examples. With unequal numbers of desirable and undesirable "
        "examples, choose the weights so that desirable_weight x #desirable is about 1 to 1.33 times "
        "undesirable_weight x #undesirable.",
    )
    undesirable_weight: float = param(
        1.0,
        min=0,
        min_exclusive=True,
        max=100,
        group="preference",
        help="Weight of the loss on undesirable examples (see desirable_weight).",
    )
    learning_rate: float = fields.learning_rate(
        3e-4,
        "The default suits the tiny demo model; for real models use about 5e-7 to 5e-6 (full fine-tuning) "
        "or 5e-6 to 5e-5 (LoRA).",
    )
    per_device_train_batch_size: int = fields.per_device_train_batch_size(
        16, "Examples (a preference pair counts as two)"
    )
    eval_fraction: float = fields.eval_fraction(
        "Evaluation reports eval/loss, the reward metrics (eval/rewards/chosen, eval/rewards/margins, eval/kl, "
        "...) and, for preference pairs, eval/preference_accuracy."
    )
    logging_steps: int = fields.logging_steps("loss, rewards of desirable and undesirable answers, KL estimate")

    def check(self) -> dict[str, str]:
        errors = super().check()
        if self.loss_type == "kto" and self.per_device_train_batch_size < 2:
            errors["per_device_train_batch_size"] = (
                "the 'kto' loss needs at least 2 examples per batch (it estimates its KL term from mismatched "
                "pairs within a batch); raise it or use the 'apo_zero_unpaired' loss"
            )
        return errors
