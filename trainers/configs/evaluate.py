"""Evaluation settings: what an evaluate stage measures on its held-out set, retention set and prompts."""

from dataclasses import dataclass

from ..rewards import REWARDS
from ..schema import param

# Rewards that judge an answer against the reference (prompt, answer) rows without extra settings.
ACCURACY_REWARDS = tuple(name for name in ("exact_match", "numeric_match") if name in REWARDS)


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluate the input model, and the baseline it is compared with, on held-out data.

    By the data's kind: prompt_completion and chat -> loss and perplexity of the completions; reference ->
    greedy answers scored by GRPO's reward functions (exact_match and the chosen accuracy reward);
    preference -> the share of pairs whose chosen answer is more likely than the rejected one (and, with a
    reward model, its scores). A retention set is measured the same way on both models, and the difference
    is what the model forgot. Sample generations for a fixed prompt list are stored as a table.
    """

    max_rows: int = param(
        200,
        min=0,
        max=1_000_000,
        group="evaluation",
        help="Evaluate at most this many rows of each dataset (the first ones, in file order); 0 means all.",
    )
    batch_size: int = param(16, min=1, max=1024, group="evaluation", help="Rows per forward pass or generation batch.")
    max_new_tokens: int = param(
        32,
        min=1,
        max=4096,
        group="generation",
        help="Longest generated answer, in tokens (reference data and sample generations).",
    )
    accuracy_reward: str = param(
        "numeric_match",
        choices=ACCURACY_REWARDS,
        group="evaluation",
        help="The GRPO reward that decides whether a generated answer to a reference row is correct "
        "(accuracy is the share that score 1); exact_match is always reported as well.",
    )
    sample_prompts: str = param(
        "",
        group="generation",
        help="Prompts to generate sample answers for, one per line (the same list every run, so runs compare). "
        "Empty: the first sample_count prompts of the held-out set.",
    )
    sample_count: int = param(
        8, min=0, max=100, group="generation", help="Sample generations to store when sample_prompts is empty."
    )
    baseline_stage: str = param(
        "",
        group="comparison",
        help="The model this one is compared with (gain on the held-out set, forgetting on the retention set): "
        "the name of an earlier stage, or empty for the run's base model.",
    )
    reward_model_stage: str = param(
        "",
        group="comparison",
        help="Name of an earlier stage with method 'reward' whose model scores the generated answers and the "
        "preference pairs (optional).",
    )
