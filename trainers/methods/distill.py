"""On-policy knowledge distillation with TRL's DistillationTrainer (trl 1.16: ``trl.DistillationTrainer``, the
generalized-JSD loss of GKD on the student's own samples), full or with an adapter.

The teacher is ``aux_models.teacher`` (the base model, or an earlier stage's output merged into it), loaded
frozen; it must share the student's vocabulary. Only the prompts of the data are used: reference,
prompt_completion and chat rows all give prompts (see trainers/methods/online.py).

Metrics: train/loss (the divergence), train/entropy, train/completions/...; with eval data eval/loss and
eval/teacher_agreement (the share of held-out prompts whose greedy student answer equals the teacher's),
before training (step 0, ``..._initial`` in the summary) and after.
"""

import os
from typing import Any

from trl import DistillationConfig as TRLDistillationConfig
from trl import DistillationTrainer

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
from .online import InitialMetrics, evaluate_quietly, greedy_answers, prompt_answer_dataset

__all__ = ["run", "trl_args", "load_teacher", "teacher_agreement"]


def trl_args(spec: StageSpec, *, has_eval: bool) -> TRLDistillationConfig:
    """Map the stage's DistillConfig onto TRL's."""
    cfg = spec.config
    return TRLDistillationConfig(
        **training_arguments(spec, cfg, has_eval=has_eval),
        beta=cfg.beta,
        temperature=cfg.temperature,
        max_completion_length=cfg.max_completion_length,
    )


def load_teacher(spec: StageSpec):
    """The frozen teacher model in eval mode (an adapter in its reference merged in)."""
    ref = spec.aux_models.get("teacher")
    if ref is None:
        raise ValueError("distill needs aux_models.teacher in the stage spec (the teacher model)")
    teacher, _ = load_model_and_tokenizer(ref)
    teacher.requires_grad_(False)
    return teacher.eval()


def teacher_agreement(
    student, teacher, tokenizer, prompts: list[Any], teacher_answers: list[str], *, max_new_tokens: int
) -> float:
    """The share of prompts whose greedy student answer equals the teacher's (whitespace-normalised)."""
    student_answers = greedy_answers(student, tokenizer, prompts, max_new_tokens=max_new_tokens)
    return sum(s == t for s, t in zip(student_answers, teacher_answers)) / len(prompts)


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    """Train; returns ``{"status": "finished", "outputs", "summary"}`` or ``{"status": "canceled", "step"}``."""
    cfg = spec.config
    quiet_progress_bars()
    seed_everything(spec.seed)
    require_adapter_runtime(spec.adapter)
    if cancel_requested():
        return {"status": "canceled", "step": 0}

    train_ds, eval_ds = load_train_eval(spec, eval_fraction=cfg.eval_fraction)
    train_ds = prompt_answer_dataset(train_ds, spec.train.kind).select_columns(["prompt"])
    if eval_ds is not None:
        eval_ds = prompt_answer_dataset(eval_ds, spec.train.kind).select_columns(["prompt"])
    teacher = load_teacher(spec)
    model, tokenizer = load_model_and_tokenizer(spec.model, adapter=spec.adapter)
    if model.config.get_text_config().vocab_size != teacher.config.get_text_config().vocab_size:
        raise ValueError(
            f"the teacher's vocabulary ({teacher.config.get_text_config().vocab_size} tokens) differs from the "
            f"student's ({model.config.get_text_config().vocab_size}); distillation compares their token "
            "distributions, so both must use the same tokenizer"
        )
    model, peft_config = apply_adapter(model, spec.adapter)
    resume = newest_complete_checkpoint(spec.checkpoint_dir)
    callback = EventsCallback(events, resumed_from=resume)
    os.makedirs(spec.checkpoint_dir, exist_ok=True)
    trainer = DistillationTrainer(
        model=model,
        teacher_model=teacher,
        args=trl_args(spec, has_eval=eval_ds is not None),
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )

    def agreement(student, teacher_answers) -> dict[str, float]:
        value = teacher_agreement(
            student, teacher, tokenizer, eval_prompts, teacher_answers, max_new_tokens=cfg.max_completion_length
        )
        return {"eval/teacher_agreement": value}

    initial: dict[str, float] = {}
    after_training = None
    if eval_ds is not None:
        eval_prompts = list(eval_ds["prompt"])
        teacher_answers = greedy_answers(teacher, tokenizer, eval_prompts, max_new_tokens=cfg.max_completion_length)
        after_training = lambda t: agreement(t.model, teacher_answers)  # noqa: E731
        if resume is None and not cancel_requested():
            initial = {**evaluate_quietly(trainer, callback), **agreement(trainer.model, teacher_answers)}
            trainer.add_callback(InitialMetrics(events, initial))

    result = train_and_publish(
        spec,
        events,
        trainer,
        callback,
        resume=resume,
        is_adapter=peft_config is not None,
        evaluate_at_end=eval_ds is not None and cfg.eval_steps == 0,
        after_training=after_training,
    )
    if result["status"] == "finished":
        result["summary"].update({f"{name}_initial": value for name, value in initial.items()})
    return result
