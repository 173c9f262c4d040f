"""Direct Preference Optimization (DPO) settings."""

from dataclasses import dataclass

from ..schema import param
from . import fields
from .training import SequenceTrainingConfig

# TRL's DPO loss variants (trl.DPOConfig.loss_type), mirrored here because the web process cannot import
# trl. tests/trainers/test_preference_methods.py checks this list against the installed TRL.
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
# The losses whose formula has a label-smoothing term (robust: probability a label is flipped; exo_pair: its
# epsilon, which must be above 0; aot/aot_unpaired: conservative smoothing of their sigmoid loss).
LABEL_SMOOTHING_LOSS_TYPES = ("robust", "exo_pair", "aot", "aot_unpaired")


@dataclass(frozen=True)
class DPOConfig(SequenceTrainingConfig):
    """Direct Preference Optimization: make the chosen answer more likely than the rejected one, relative to the
    starting model, without a reward model.

    The starting model (the input model, or with a LoRA adapter the same model with the adapter switched off)
    is the reference. The defaults suit the built-in demo model after a short SFT; for real models use a
    learning rate of about 5e-7 to 5e-6 (full) or 5e-6 to 5e-5 (LoRA) and 1 to 3 epochs.
    """

    loss_type: str = param(
        "sigmoid",
        choices=DPO_LOSS_TYPES,
        label="Loss",
        group="preference",
        help="Which DPO variant to optimize: 'sigmoid' is the original DPO; 'ipo' (IPO) regresses the margin "
        "towards 1/(2 beta) and overfits less; 'hinge' (SLiC); 'robust' and 'exo_pair' tolerate noisy labels "
        "(set label_smoothing); 'nca_pair', 'bco_pair', 'sppo_hard', 'aot', 'aot_unpaired', 'apo_zero', "
        "'apo_down', 'discopop' and 'sigmoid_norm' (length-normalized DPO) are the variants of their papers; "
        "'sft' trains only on the chosen answers.",
    )
    beta: float = param(
        0.1,
        min=0,
        min_exclusive=True,
        max=100,
        group="preference",
        help="How far the model may move from the reference: higher keeps it closer. 0.1 is typical; "
        "for 'ipo' this is the regularization tau of the IPO paper.",
    )
    label_smoothing: float = param(
        0.0,
        min=0,
        max=0.5,
        max_exclusive=True,
        group="preference",
        help="Assumed share of pairs whose preference label is wrong. Only the 'robust', 'exo_pair' (which needs "
        "a value above 0; 1e-3 is typical), 'aot' and 'aot_unpaired' losses use it; keep 0 otherwise.",
    )
    learning_rate: float = fields.learning_rate(
        3e-4,
        "The default suits the tiny demo model; for real models use about 5e-7 to 5e-6 (full fine-tuning) "
        "or 5e-6 to 5e-5 (LoRA).",
    )
    per_device_train_batch_size: int = fields.per_device_train_batch_size(16, "Preference pairs")
    eval_fraction: float = fields.eval_fraction(
        "Evaluation reports eval/loss, the reward metrics (eval/rewards/accuracies, eval/rewards/margins, ...) "
        "and eval/preference_accuracy."
    )
    logging_steps: int = fields.logging_steps("loss, rewards of chosen and rejected answers, reward accuracy")

    def check(self) -> dict[str, str]:
        errors = super().check()
        if self.label_smoothing > 0 and self.loss_type not in LABEL_SMOOTHING_LOSS_TYPES:
            errors["label_smoothing"] = (
                f"the {self.loss_type!r} loss does not use label smoothing; set it to 0 or pick one of "
                f"{', '.join(LABEL_SMOOTHING_LOSS_TYPES)}"
            )
        elif self.loss_type == "exo_pair" and self.label_smoothing == 0:
            errors["label_smoothing"] = "the 'exo_pair' loss needs label smoothing above 0 (1e-3 is typical)"
        return errors
