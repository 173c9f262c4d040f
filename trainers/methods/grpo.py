"""GRPO with TRL's GRPOTrainer and the verifiable rewards of trainers/rewards.py, full or with an adapter.

Data: reference (prompt, answer), prompt_completion (the completion is the answer) or chat (the last
assistant turn is the answer; the prompt is a conversation). Rewards with a weight above 0 are bound to
their parameters from the config (functools.partial: TRL names each after its function) and summed with
those weights. The reward_model reward scores with ``aux_models.reward_model`` (an earlier reward stage).

Metrics (TRL's names under train/): train/reward (the weighted total), train/reward_std,
train/rewards/<name>/mean and /std, train/kl (when beta > 0), train/loss, train/entropy,
train/completions/mean_length, ...; with eval data the same under eval/, before training (step 0) and
after. The summary adds train/reward_start and train/reward_end: the mean train/reward over the first and
the last tenth of the logged steps.
"""

import functools
import os
import re
from typing import Any

from transformers import TrainerCallback
from trl import GRPOConfig as TRLGRPOConfig
from trl import GRPOTrainer

from ..cancel import cancel_requested
from ..events import Events
from ..rewards import REWARDS
from ..stage_spec import StageSpec
from .common import (
    EventsCallback,
    apply_adapter,
    load_model_and_tokenizer,
    load_train_eval,
    newest_complete_checkpoint,
    quiet_progress_bars,
    require_adapter_runtime,
    seed_everything,
    train_and_publish,
    training_arguments,
)
from .online import InitialMetrics, evaluate_quietly, mean_of_ends, prompt_answer_dataset

__all__ = ["run", "trl_args", "build_rewards", "installed_loss_types"]


def installed_loss_types() -> tuple[str, ...]:
    """The loss formulations the installed TRL documents for ``GRPOConfig.loss_type`` (its help text lists
    them; there is no Literal); trainers.configs.grpo.GRPO_LOSS_TYPES mirrors them."""
    help_text = TRLGRPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    listed = help_text.split("Supported values are", 1)[1].split(". ", 1)[0]
    return tuple(re.findall(r"'(\w+)'", listed))


def build_rewards(spec: StageSpec) -> tuple[list[Any], list[float]]:
    """The reward functions in use, bound to their parameters, and their weights (same order)."""
    cfg = spec.config
    functions, weights = [], []
    for name, weight in cfg.reward_weights().items():
        reward = REWARDS[name]
        params = {keyword: getattr(cfg, field) for keyword, field in reward.params.items()}
        if name == "reward_model":
            from ..scoring import load_reward_model

            ref = spec.aux_models.get("reward_model")
            if ref is None:
                raise ValueError("the reward_model reward needs aux_models.reward_model in the stage spec")
            params["scorer"] = load_reward_model(ref)
        functions.append(functools.partial(reward.function, **params))
        weights.append(weight)
    if not functions:
        raise ValueError("grpo needs at least one reward: set a weight above 0")
    return functions, weights


def trl_args(spec: StageSpec, *, has_eval: bool, reward_weights: list[float]) -> TRLGRPOConfig:
    """Map the stage's GRPOConfig onto TRL's."""
    cfg = spec.config
    if cfg.loss_type not in installed_loss_types():
        raise ValueError(f"the installed TRL has no GRPO loss {cfg.loss_type!r}")
    return TRLGRPOConfig(
        **training_arguments(spec, cfg, has_eval=has_eval),
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        # LUSPO is defined on sequence-level importance ratios; every other loss on token-level ones.
        importance_sampling_level="sequence" if cfg.loss_type == "luspo" else "token",
        scale_rewards=cfg.scale_rewards,
        reward_weights=reward_weights,
        shuffle_dataset=True,
    )


class _RewardHistory(TrainerCallback):
    """Every logged training reward, for the summary's start-versus-end comparison."""

    def __init__(self) -> None:
        self.rewards: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        value = (logs or {}).get("reward")
        if isinstance(value, (int, float)):
            self.rewards.append(float(value))


def _same_reference(trainer, spec: StageSpec) -> None:
    """GRPOTrainer builds its KL reference (full fine-tuning, beta > 0) by loading ``config._name_or_path``
    again, which misses an input ``model.adapter_path`` merged into the policy: copy the policy's starting
    weights into it instead."""
    if trainer.ref_model is None or not spec.model.adapter_path:
        return
    policy = trainer.accelerator.unwrap_model(trainer.model)
    reference = trainer.accelerator.unwrap_model(trainer.ref_model)
    reference.load_state_dict(policy.state_dict(), strict=True)


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    """Train; returns ``{"status": "finished", "outputs", "summary"}`` or ``{"status": "canceled", "step"}``."""
    cfg = spec.config
    quiet_progress_bars()
    seed_everything(spec.seed)
    require_adapter_runtime(spec.adapter)
    if cancel_requested():
        return {"status": "canceled", "step": 0}

    train_ds, eval_ds = load_train_eval(spec, eval_fraction=cfg.eval_fraction)
    train_ds = prompt_answer_dataset(train_ds, spec.train.kind)
    eval_ds = prompt_answer_dataset(eval_ds, spec.train.kind)
    reward_funcs, weights = build_rewards(spec)  # a bad reward setup fails before the policy loads
    model, tokenizer = load_model_and_tokenizer(spec.model, adapter=spec.adapter)
    model, peft_config = apply_adapter(model, spec.adapter)
    resume = newest_complete_checkpoint(spec.checkpoint_dir)
    callback = EventsCallback(events, resumed_from=resume)
    history = _RewardHistory()
    os.makedirs(spec.checkpoint_dir, exist_ok=True)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=trl_args(spec, has_eval=eval_ds is not None, reward_weights=weights),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback, history],
    )
    _same_reference(trainer, spec)
    initial: dict[str, float] = {}
    if eval_ds is not None and resume is None and not cancel_requested():
        initial = evaluate_quietly(trainer, callback)
        trainer.add_callback(InitialMetrics(events, initial))

    result = train_and_publish(
        spec,
        events,
        trainer,
        callback,
        resume=resume,
        is_adapter=peft_config is not None,
        evaluate_at_end=eval_ds is not None and cfg.eval_steps == 0,
    )
    if result["status"] == "finished":
        summary = result["summary"]
        summary.update({f"{name}_initial": value for name, value in initial.items()})
        ends = mean_of_ends(history.rewards)
        if ends is not None:
            summary["train/reward_start"], summary["train/reward_end"] = ends
    return result
