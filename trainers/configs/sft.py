"""Supervised fine-tuning (SFT) settings."""

from dataclasses import dataclass

from ..schema import param

LR_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "inverse_sqrt", "polynomial")


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning: teach the model to produce the completions (or assistant turns) of a dataset.

    The defaults train the built-in demo model (a tiny Llama learning single-digit addition)
    in a few seconds on a CPU. For real models lower the learning rate (about 1e-5 to 5e-5
    for full fine-tuning, 1e-4 to 3e-4 for LoRA) and the number of epochs (1 to 3).
    """

    learning_rate: float = param(
        3e-3,
        min=0,
        min_exclusive=True,
        max=1,
        group="optimization",
        help="Peak learning rate of the AdamW optimizer. The default suits the tiny demo model; for real models "
        "use about 1e-5 to 5e-5 (full fine-tuning) or 1e-4 to 3e-4 (LoRA).",
    )
    num_train_epochs: float = param(
        40.0,
        min=0,
        min_exclusive=True,
        max=10000,
        label="Epochs",
        group="optimization",
        help="How many passes over the training data (fractions allowed). Ignored when max_steps is set. "
        "Real models usually need 1 to 3.",
    )
    max_steps: int = param(
        -1,
        min=-1,
        max=10_000_000,
        group="optimization",
        help="Total optimizer steps; -1 means 'train for num_train_epochs'. A positive value overrides the epochs.",
    )
    per_device_train_batch_size: int = param(
        16,
        min=1,
        max=4096,
        label="Batch size per device",
        group="optimization",
        help="Examples per forward pass on each GPU. Lower it if you run out of memory and raise "
        "gradient_accumulation_steps to keep the effective batch size.",
    )
    gradient_accumulation_steps: int = param(
        1,
        min=1,
        max=1024,
        group="optimization",
        help="Forward/backward passes summed before each optimizer step. "
        "Effective batch size = batch size per device x accumulation steps x number of GPUs.",
    )
    max_length: int = param(
        512,
        min=8,
        max=131072,
        label="Max sequence length",
        group="data",
        help="Longest tokenized example, in tokens; longer examples are truncated at the end. "
        "With packing, the length of each packed block.",
    )
    warmup_ratio: float = param(
        0.0,
        min=0,
        max=0.5,
        group="optimization",
        help="Fraction of the training steps over which the learning rate rises linearly from 0 to its peak.",
    )
    weight_decay: float = param(
        0.0,
        min=0,
        max=1,
        group="optimization",
        help="Decoupled weight decay of AdamW (not applied to biases and norms). 0 to 0.1 is typical.",
    )
    lr_scheduler_type: str = param(
        "linear",
        choices=LR_SCHEDULERS,
        label="Learning-rate schedule",
        group="optimization",
        help="How the learning rate changes after warmup: 'linear' and 'cosine' decay to 0, 'constant' keeps it.",
    )
    completion_only_loss: bool = param(
        True,
        label="Loss on completions only",
        group="data",
        help="Train only on the completion (prompt/completion data) or the assistant turns (chat data), "
        "not on the prompt. Usually what you want; turn off to also learn to reproduce prompts.",
    )
    packing: bool = param(
        False,
        group="data",
        help="Concatenate several short examples into blocks of max_length tokens, which wastes less compute on "
        "padding when examples are short and of varied length.",
    )
    eval_fraction: float = param(
        0.0,
        min=0,
        max=0.5,
        group="evaluation",
        help="Fraction of the training data held out for evaluation when the stage has no eval dataset "
        "(0 = none). Evaluation reports eval/loss.",
    )
    eval_steps: int = param(
        0,
        min=0,
        max=10_000_000,
        group="evaluation",
        help="Evaluate every N optimizer steps; 0 evaluates once, at the end of training. "
        "Only used when there is eval data.",
    )
    logging_steps: int = param(
        1,
        min=1,
        max=100_000,
        group="logging",
        help="Report training metrics (loss, learning rate, gradient norm) every N optimizer steps.",
    )
    save_steps: int = param(
        100,
        min=1,
        max=10_000_000,
        label="Checkpoint every N steps",
        group="logging",
        help="Save a resumable checkpoint every N optimizer steps. A stage whose worker dies resumes from "
        "the newest complete checkpoint.",
    )
    save_total_limit: int = param(
        2,
        min=1,
        max=1000,
        label="Checkpoints kept",
        group="logging",
        help="How many of the newest checkpoints to keep on disk; older ones are deleted.",
    )
    gradient_checkpointing: bool = param(
        False,
        group="optimization",
        help="Recompute activations during the backward pass instead of storing them: much less GPU memory "
        "for about 20-30% more compute. Turn on for large models.",
    )

    def check(self) -> dict[str, str]:
        errors = {}
        if self.max_steps == 0:
            errors["max_steps"] = "must be -1 (train for num_train_epochs) or a positive number of steps, got 0"
        return errors

    def check_adapter(self, adapter) -> dict[str, str]:
        """Rules joining these settings and the stage's AdapterConfig (keys name the config or adapter field)."""
        if self.packing and adapter.type == "prompt_tuning":
            # Packed examples are kept apart by their position ids, which PEFT's prompt tuning drops.
            return {
                "config.packing": "packing: cannot be combined with prompt tuning (the virtual tokens would make "
                "packed examples attend to each other); turn packing off or choose another adapter type"
            }
        return {}
