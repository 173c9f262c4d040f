"""Reward-model training with TRL's RewardTrainer, full or with an adapter.

The input causal LM is loaded as ``AutoModelForSequenceClassification`` with one label: the same backbone
weights plus a new, randomly initialised (seeded) score head. TRL appends the end-of-sequence token to
each chosen/rejected text and reads the score at the last non-padding token; trainers.scoring does the
same when the model is used later. With a PEFT adapter the head trains fully too (PEFT's sequence
classification task keeps the ``score`` module trainable and saves it with the adapter).

Metrics: train/loss, train/accuracy (pairwise, on the training batches), train/margin, train/mean_reward;
with eval data eval/accuracy (the share of held-out pairs whose chosen answer scores higher), eval/margin
and eval/loss, before training (a step-0 metrics event, ``eval/accuracy_initial`` in the summary) and after.
"""

import os
from typing import Any

from trl import RewardConfig as TRLRewardConfig
from trl import RewardTrainer

from ..cancel import cancel_requested
from ..events import Events
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
from .online import InitialMetrics, evaluate_quietly

__all__ = ["run", "trl_args"]


def trl_args(spec: StageSpec, *, has_eval: bool) -> TRLRewardConfig:
    """Map the stage's RewardConfig onto TRL's."""
    cfg = spec.config
    return TRLRewardConfig(
        **training_arguments(spec, cfg, has_eval=has_eval),
        max_length=cfg.max_length,
        center_rewards_coefficient=cfg.center_rewards_coefficient or None,
        disable_dropout=True,
    )


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    """Train; returns ``{"status": "finished", "outputs", "summary"}`` or ``{"status": "canceled", "step"}``."""
    cfg = spec.config
    quiet_progress_bars()
    seed_everything(spec.seed)  # before loading: the new score head is initialised randomly
    require_adapter_runtime(spec.adapter)
    if cancel_requested():
        return {"status": "canceled", "step": 0}

    train_ds, eval_ds = load_train_eval(spec, eval_fraction=cfg.eval_fraction)
    model, tokenizer = load_model_and_tokenizer(spec.model, adapter=spec.adapter, task="seq_cls")
    model, peft_config = apply_adapter(model, spec.adapter, task="seq_cls")
    resume = newest_complete_checkpoint(spec.checkpoint_dir)
    callback = EventsCallback(events, resumed_from=resume)
    os.makedirs(spec.checkpoint_dir, exist_ok=True)
    trainer = RewardTrainer(
        model=model,
        args=trl_args(spec, has_eval=eval_ds is not None),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )
    initial: dict[str, float] = {}
    if eval_ds is not None and resume is None and not cancel_requested():
        initial = evaluate_quietly(trainer, callback)  # the untrained head: accuracy about 0.5
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
        result["summary"].update({f"{name}_initial": value for name, value in initial.items()})
    return result
