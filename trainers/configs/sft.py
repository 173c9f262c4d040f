"""Supervised fine-tuning (SFT) settings."""

from dataclasses import dataclass

from ..schema import param
from . import fields
from .training import SequenceTrainingConfig


@dataclass(frozen=True)
class SFTConfig(SequenceTrainingConfig):
    """Supervised fine-tuning: teach the model to produce the completions (or assistant turns) of a dataset.

    The defaults train the built-in demo model (a tiny Llama learning single-digit addition)
    in a few seconds on a CPU. For real models lower the learning rate (about 1e-5 to 5e-5
    for full fine-tuning, 1e-4 to 3e-4 for LoRA) and the number of epochs (1 to 3).
    """

    completion_only_loss: bool = param(
        True,
        label="Loss on completions only",
        group="data",
        after="lr_scheduler_type",
        help="Train only on the completion (prompt/completion data) or the assistant turns (chat data), "
        "not on the prompt. Usually what you want; turn off to also learn to reproduce prompts.",
    )
    packing: bool = param(
        False,
        group="data",
        after="completion_only_loss",
        help="Concatenate several short examples into blocks of max_length tokens, which wastes less compute on "
        "padding when examples are short and of varied length.",
    )
    learning_rate: float = fields.learning_rate(
        3e-3,
        "The default suits the tiny demo model; for real models use about 1e-5 to 5e-5 (full fine-tuning) "
        "or 1e-4 to 3e-4 (LoRA).",
    )
    num_train_epochs: float = fields.num_train_epochs(40.0)
    max_length: int = fields.max_length(
        512,
        "Longest tokenized example, in tokens; longer examples are truncated at the end. "
        "With packing, the length of each packed block.",
    )

    def check_adapter(self, adapter) -> dict[str, str]:
        """Rules joining these settings and the stage's AdapterConfig (keys name the config or adapter field)."""
        if self.packing and adapter.type == "prompt_tuning":
            # Packed examples are kept apart by their position ids, which PEFT's prompt tuning drops.
            return {
                "config.packing": "packing: cannot be combined with prompt tuning (the virtual tokens would make "
                "packed examples attend to each other); turn packing off or choose another adapter type"
            }
        return {}
