"""Supervised fine-tuning with TRL's SFTTrainer, full or with any adapter (see methods/adapters.py)."""

import os
from typing import Any

import torch
from transformers.trainer_callback import PrinterCallback
from trl import SFTConfig as TRLSFTConfig
from trl import SFTTrainer

from ..cancel import cancel_requested
from ..data import load_dataset
from ..events import Events
from ..spec import StageSpec
from .common import (
    EventsCallback,
    apply_adapter,
    load_model_and_tokenizer,
    newest_complete_checkpoint,
    publish_dir,
    quiet_progress_bars,
    require_adapter_runtime,
    seed_everything,
    use_bf16,
)

__all__ = ["run", "trl_args"]


def trl_args(spec: StageSpec, *, has_eval: bool) -> TRLSFTConfig:
    """Map the stage's SFTConfig onto TRL's (a TrainingArguments subclass)."""
    cfg = spec.config
    chat = spec.train.kind == "chat"
    evaluate_periodically = has_eval and cfg.eval_steps > 0
    return TRLSFTConfig(
        output_dir=spec.checkpoint_dir,
        seed=spec.seed,
        data_seed=spec.seed,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length,
        # transformers 5 dropped warmup_ratio: a float below 1 in warmup_steps is the ratio.
        warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler_type,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if evaluate_periodically else "no",
        eval_steps=cfg.eval_steps if evaluate_periodically else None,
        # prompt/completion data: loss on the completion; chat data: loss on the assistant turns.
        completion_only_loss=None if chat else cfg.completion_only_loss,
        assistant_only_loss=chat and cfg.completion_only_loss,
        # TRL's default "bfd" packing is padding-free; transformers 5 rebuilds the per-document causal mask from
        # position_ids for sdpa/eager attention too, so packed examples never attend to each other.
        packing=cfg.packing,
        # transformers 5 renamed gradient_checkpointing (TRL still defaults that one to True).
        activation_checkpointing=cfg.gradient_checkpointing,
        bf16=use_bf16(),
        fp16=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    """Train; returns ``{"status": "finished", "outputs", "summary"}`` or ``{"status": "canceled", "step"}``."""
    cfg = spec.config
    quiet_progress_bars()
    seed_everything(spec.seed)
    require_adapter_runtime(spec.adapter)  # e.g. qlora on a worker without a GPU: fail before loading anything
    if cancel_requested():
        return {"status": "canceled", "step": 0}

    train_ds = load_dataset(spec.train)  # data first: a bad row fails before a big model loads
    eval_ds = load_dataset(spec.eval) if spec.eval else None
    if eval_ds is None and cfg.eval_fraction > 0:
        n_eval = max(1, round(len(train_ds) * cfg.eval_fraction))
        if n_eval >= len(train_ds):
            raise ValueError(
                f"eval_fraction {cfg.eval_fraction} leaves no training rows out of {len(train_ds)}; "
                "lower it or add eval data"
            )
        split = train_ds.train_test_split(test_size=n_eval, seed=spec.seed, shuffle=True)
        train_ds, eval_ds = split["train"], split["test"]

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
    trainer.remove_callback(PrinterCallback)  # progress leaves as events, not as printed dicts
    if cancel_requested():
        return {"status": "canceled", "step": 0}

    trainer.train(resume_from_checkpoint=resume)
    if callback.canceled:
        return {"status": "canceled", "step": trainer.state.global_step}

    if eval_ds is not None and cfg.eval_steps == 0:
        trainer.evaluate()  # logged through the callback as eval/... metrics

    trainer.model.config.use_cache = True  # training switched the KV cache off; inference wants it back
    is_adapter = peft_config is not None  # PEFT adapters; full, bitfit and freeze stages output a whole model
    name = "adapter" if is_adapter else "model"
    path = publish_dir(trainer.save_model, os.path.join(spec.output_dir, name))
    events.emit("artifact", name=name, path=path)
    outputs: dict[str, Any] = {"kind": name, "path": path}
    if is_adapter:
        outputs["base"] = spec.model.as_dict()
    return {"status": "finished", "outputs": outputs, "summary": callback.summary()}
