"""Supervised fine-tuning with TRL's SFTTrainer, full or with any adapter (see methods/adapter_apply.py)."""

import os
from typing import Any

from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

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

__all__ = ["run", "trl_args"]


def trl_args(spec: StageSpec, *, has_eval: bool) -> TRLSFTConfig:
    """Map the stage's SFTConfig onto TRL's (a TrainingArguments subclass)."""
    cfg = spec.config
    chat = spec.train.kind == "chat"
    return TRLSFTConfig(
        **training_arguments(spec, cfg, has_eval=has_eval),
        max_length=cfg.max_length,
        # prompt/completion data: loss on the completion; chat data: loss on the assistant turns.
        completion_only_loss=None if chat else cfg.completion_only_loss,
        assistant_only_loss=chat and cfg.completion_only_loss,
        # TRL's default "bfd" packing is padding-free; transformers 5 rebuilds the per-document causal mask from
        # position_ids for sdpa/eager attention too, so packed examples never attend to each other.
        packing=cfg.packing,
    )


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    """Train; returns ``{"status": "finished", "outputs", "summary"}`` or ``{"status": "canceled", "step"}``."""
    cfg = spec.config
    quiet_progress_bars()
    seed_everything(spec.seed)
    require_adapter_runtime(spec.adapter)  # e.g. qlora on a worker without a GPU: fail before loading anything
    if cancel_requested():
        return {"status": "canceled", "step": 0}

    train_ds, eval_ds = load_train_eval(spec, eval_fraction=cfg.eval_fraction)  # data first: fail fast

    model, tokenizer = load_model_and_tokenizer(spec.model, adapter=spec.adapter)
    model, peft_config = apply_adapter(model, spec.adapter)
    resume = newest_complete_checkpoint(spec.checkpoint_dir)
    callback = EventsCallback(events, resumed_from=resume)
    os.makedirs(spec.checkpoint_dir, exist_ok=True)
    trainer = SFTTrainer(
        model=model,
        args=trl_args(spec, has_eval=eval_ds is not None),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )
    return train_and_publish(
        spec,
        events,
        trainer,
        callback,
        resume=resume,
        is_adapter=peft_config is not None,  # PEFT adapters; full, bitfit and freeze stages output a whole model
        evaluate_at_end=eval_ds is not None and cfg.eval_steps == 0,
    )
