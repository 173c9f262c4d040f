"""Knowledge distillation settings (TRL's on-policy DistillationTrainer)."""

from dataclasses import dataclass

from ..schema import param
from . import fields
from .grpo import STAGE_NAME
from .training import TrainingConfig


@dataclass(frozen=True)
class DistillConfig(TrainingConfig):
    """Distillation: the model (the student) answers the prompts itself and learns to match, token by token, the
    next-token distribution a teacher model gives on those answers (on-policy distillation, Agarwal et al. 2024).

    The teacher is the pipeline's base model, or the model an earlier stage produced (teacher_stage); it must
    use the same tokenizer vocabulary as the student. Only the prompts of the data are used. The defaults suit
    the built-in demo model; for real models use a learning rate of about 1e-6 to 1e-5 and 1 epoch.
    """

    teacher_stage: str = param(
        "",
        group="distillation",
        help="Name of an earlier stage of this pipeline whose output model is the teacher; empty: the "
        "pipeline's base model.",
    )
    beta: float = param(
        0.5,
        min=0,
        max=1,
        label="Divergence (beta)",
        group="distillation",
        help="Which divergence between the teacher's and the student's token distributions is minimized: "
        "0 forward KL (cover everything the teacher might say), 1 reverse KL (stick to the teacher's most likely "
        "answers), 0.5 the Jensen-Shannon divergence.",
    )
    temperature: float = param(
        1.0,
        min=0,
        min_exclusive=True,
        max=10,
        group="distillation",
        help="Temperature of the student's sampling and of both distributions in the loss; higher is softer.",
    )
    max_completion_length: int = param(
        64,
        min=1,
        max=131072,
        group="distillation",
        help="Longest answer the student generates per prompt, in tokens.",
    )
    learning_rate: float = fields.learning_rate(
        3e-3,
        "The default suits the tiny demo model; for real models use about 1e-6 to 1e-5 (full fine-tuning) "
        "or 1e-5 to 1e-4 (LoRA).",
    )
    num_train_epochs: float = fields.num_train_epochs(30.0, "Real models usually need 1.")
    per_device_train_batch_size: int = fields.per_device_train_batch_size(16, "Prompts")
    eval_fraction: float = fields.eval_fraction(
        "Evaluation reports eval/loss (the divergence on the student's answers to held-out prompts) and "
        "eval/teacher_agreement (the share of held-out prompts where the student's greedy answer equals the "
        "teacher's), before and after training."
    )
    logging_steps: int = fields.logging_steps("divergence loss, entropy, completion lengths")

    def check(self) -> dict[str, str]:
        errors = super().check()
        if self.teacher_stage and not STAGE_NAME.match(self.teacher_stage):
            errors["teacher_stage"] = (
                f"{self.teacher_stage!r} is not a stage name (lowercase letters, digits, '-' or '_')"
            )
        return errors
