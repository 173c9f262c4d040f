"""GRPO settings: online RL with verifiable rewards chosen by name (trainers/rewards.py)."""

import re
from dataclasses import dataclass

import regex

from ..rewards import NORMALIZATIONS, REGEX_TIMEOUT_SECONDS, REWARDS, weight_field
from ..schema import param
from . import fields
from .training import TrainingConfig

# TRL's GRPO loss formulations (trl.GRPOConfig.loss_type), mirrored because the web process cannot import
# trl. tests/trainers/test_rewards.py checks this list against the installed TRL.
GRPO_LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")
STAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # as pipeline stage names are spelled
MAX_PATTERN_LENGTH = 1000


def _weight(name: str, label: str) -> float:
    reward = REWARDS[name]
    return param(
        0.0,
        min=0,
        max=100,
        label=f"{label} weight",
        group="rewards",
        help=f"{reward.description} Range {reward.value_range}. 0 turns this reward off.",
    )


@dataclass(frozen=True)
class GRPOConfig(TrainingConfig):
    """Group Relative Policy Optimization: the model answers each prompt several times, the answers are scored
    by the chosen rewards, and it learns to give the answers that score above their group's average.

    Pick rewards by giving them a weight above 0; the total reward is the weighted sum. exact_match and
    numeric_match compare with the reference answer of reference data (prompt, answer). reward_model scores
    with the model an earlier reward stage trained. The defaults suit the built-in demo model after SFT; for
    real models use a learning rate of about 1e-6 (full) or 1e-5 (LoRA), 1 epoch and longer completions.
    """

    # --- rewards ---
    reward_exact_match_weight: float = _weight("exact_match", "Exact match")
    exact_match_normalize: str = param(
        "whitespace",
        choices=NORMALIZATIONS,
        group="rewards",
        help="How exact_match compares: 'none' character for character; 'whitespace' ignores spacing at the ends "
        "and collapses runs of spaces; 'lenient' also ignores case, surrounding quotes and trailing punctuation.",
    )
    reward_numeric_match_weight: float = _weight("numeric_match", "Numeric match")
    numeric_tolerance: float = param(
        1e-6,
        min=0,
        max=1e12,
        group="rewards",
        help="numeric_match accepts a number this far (absolute difference) from the reference.",
    )
    reward_regex_match_weight: float = _weight("regex_match", "Regex (format)")
    regex_pattern: str = param(
        "",
        label="Regex pattern",
        group="rewards",
        help="Regular expression for regex_match (Python syntax, run by the regex package), e.g. "
        f"'^Answer: \\d+$' or '<answer>.*</answer>'. A pattern that takes over {REGEX_TIMEOUT_SECONDS:g} s "
        "on a completion fails the stage.",
    )
    regex_full_match: bool = param(
        False,
        label="Regex must match the whole completion",
        group="rewards",
        help="Match the pattern against the whole completion instead of searching for it anywhere in it.",
    )
    reward_json_valid_weight: float = _weight("json_valid", "Valid JSON")
    reward_contains_weight: float = _weight("contains", "Contains")
    contains_text: str = param(
        "",
        group="rewards",
        help="Strings the completion should contain, separated by '|' (e.g. 'because|therefore').",
    )
    reward_excludes_weight: float = _weight("excludes", "Excludes")
    excludes_text: str = param(
        "",
        group="rewards",
        help="Strings the completion should not contain, separated by '|' (e.g. 'As an AI|I cannot').",
    )
    text_ignore_case: bool = param(
        True,
        label="Contains/excludes ignore case",
        group="rewards",
        help="Compare contains_text and excludes_text without regard to upper or lower case.",
    )
    reward_length_penalty_weight: float = _weight("length_penalty", "Length penalty")
    length_target: int = param(
        32,
        min=1,
        max=131072,
        group="rewards",
        help="The completion length (in tokens) that length_penalty does not penalize.",
    )
    length_scale: int = param(
        32,
        min=1,
        max=131072,
        group="rewards",
        help="How many tokens longer or shorter than length_target a completion must be for the full penalty (-1).",
    )
    reward_reward_model_weight: float = _weight("reward_model", "Reward model")
    reward_model_stage: str = param(
        "",
        group="rewards",
        help="Name of an earlier stage of this pipeline with method 'reward' whose model scores the completions "
        "(needed when the reward-model weight is above 0).",
    )

    # --- generation and the GRPO objective ---
    num_generations: int = param(
        8,
        min=2,
        max=256,
        group="grpo",
        help="Completions sampled per prompt (the group whose average is the baseline). More give a steadier "
        "signal for more compute; 8 to 16 is typical.",
    )
    max_completion_length: int = param(
        64,
        min=1,
        max=131072,
        group="grpo",
        help="Longest completion generated, in tokens; longer ones are cut off.",
    )
    temperature: float = param(
        1.0,
        min=0,
        min_exclusive=True,
        max=10,
        group="grpo",
        help="Sampling temperature: higher gives more varied completions within a group (which GRPO needs to "
        "learn anything); 0.7 to 1.0 is typical.",
    )
    beta: float = param(
        0.04,
        min=0,
        max=10,
        label="KL coefficient (beta)",
        group="grpo",
        help="Penalty on drifting away from the input model (reported as train/kl). 0 turns it off and saves "
        "the memory of a reference model copy (with full fine-tuning); 0.001 to 0.04 is typical.",
    )
    loss_type: str = param(
        "dapo",
        choices=GRPO_LOSS_TYPES,
        label="Loss",
        group="grpo",
        help="How per-token losses are averaged: 'dapo' (default) over all tokens of the batch, without length "
        "bias; 'grpo' per sequence (the original; favors short correct answers); 'dr_grpo' by a constant; "
        "'bnpo' over the local batch; 'cispo' clips importance weights; 'sapo' soft gating; 'luspo' "
        "sequence-level (importance sampling is then per sequence); 'vespo' soft sequence weighting.",
    )
    scale_rewards: str = param(
        "group",
        choices=SCALE_REWARDS,
        group="grpo",
        help="Divide rewards by their standard deviation within each group ('group', the original GRPO), across "
        "the batch ('batch'), or not at all ('none', as Dr. GRPO recommends).",
    )

    # --- optimization ---
    learning_rate: float = fields.learning_rate(
        1e-3,
        "The default suits the tiny demo model; for real models use about 1e-6 (full fine-tuning) or 1e-5 (LoRA).",
    )
    num_train_epochs: float = fields.num_train_epochs(30.0, "Real models usually need 1.")
    per_device_train_batch_size: int = param(
        32,
        min=2,
        max=4096,
        label="Completions per device",
        group="optimization",
        help="Completions per forward pass on each GPU: a multiple of num_generations (32 with 8 generations "
        "is 4 prompts per step).",
    )
    eval_fraction: float = fields.eval_fraction(
        "Evaluation samples completions for the held-out prompts and reports their rewards (eval/reward, "
        "eval/rewards/<name>/mean)."
    )
    logging_steps: int = fields.logging_steps("reward, rewards per function, KL, loss, completion lengths")

    def reward_weights(self) -> dict[str, float]:
        """The rewards in use (weight above 0), by name, in registry order."""
        return {name: getattr(self, weight_field(name)) for name in REWARDS if getattr(self, weight_field(name)) > 0}

    def check(self) -> dict[str, str]:
        errors = super().check()
        used = self.reward_weights()
        if not used:
            errors["__all__"] = "grpo needs at least one reward: set a weight above 0"
        if self.regex_pattern:
            if len(self.regex_pattern) > MAX_PATTERN_LENGTH:
                errors["regex_pattern"] = f"at most {MAX_PATTERN_LENGTH} characters, got {len(self.regex_pattern)}"
            else:
                try:
                    regex.compile(self.regex_pattern)  # the engine regex_match runs on
                except regex.error as exc:
                    errors["regex_pattern"] = f"not a valid regular expression: {exc}"
        elif "regex_match" in used:
            errors["regex_pattern"] = "the regex_match reward needs a pattern"
        for name, text_field in (("contains", "contains_text"), ("excludes", "excludes_text")):
            if name in used and not [s for s in getattr(self, text_field).split("|") if s.strip()]:
                errors[text_field] = f"the {name} reward needs at least one string ('|' separates several)"
        if self.reward_model_stage:
            if not STAGE_NAME.match(self.reward_model_stage):
                errors["reward_model_stage"] = (
                    f"{self.reward_model_stage!r} is not a stage name (lowercase letters, digits, '-' or '_')"
                )
            elif "reward_model" not in used:
                errors["reward_model_stage"] = (
                    "is set but reward_reward_model_weight is 0; set that weight above 0 or leave this empty"
                )
        elif "reward_model" in used:
            errors["reward_model_stage"] = (
                "the reward_model reward needs the name of an earlier reward stage whose model scores completions"
            )
        if self.per_device_train_batch_size % self.num_generations:
            errors["per_device_train_batch_size"] = (
                f"must be a multiple of num_generations ({self.num_generations}): each step scores whole groups "
                f"of completions of the same prompt; got {self.per_device_train_batch_size}"
            )
        return errors
