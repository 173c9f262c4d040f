"""Pieces every Hugging Face Trainer-based method shares: loading the input model, the event
callback, finding a checkpoint to resume from, and writing outputs atomically."""

import os
import shutil
import sys
import time
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed

from ..cancel import cancel_requested
from ..checkpoints import discard_partial, make_checkpoints_atomic, newest_complete_checkpoint
from ..configs import AdapterConfig
from ..events import Events
from ..faults import failpoint
from ..stage_spec import ModelRef
from .adapter_apply import AdapterError, apply_adapter, lora_config, quantization_config, require_adapter_runtime

__all__ = [
    "quiet_progress_bars",
    "seed_everything",
    "load_model_and_tokenizer",
    "apply_adapter",
    "require_adapter_runtime",
    "AdapterError",
    "lora_config",
    "count_parameters",
    "newest_complete_checkpoint",
    "EventsCallback",
    "publish_dir",
    "use_bf16",
    "load_train_eval",
    "training_arguments",
    "train_and_publish",
]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def quiet_progress_bars() -> None:
    """No tqdm bars from datasets/transformers: progress leaves the trainer as events."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs (CPU and all GPUs)."""
    set_seed(seed)


def use_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


_PROMPT_LEARNING = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING", "CPT")


def _input_adapter_type(adapter_path: str) -> str:
    import json

    try:
        with open(os.path.join(adapter_path, "adapter_config.json"), encoding="utf-8") as fh:
            return str(json.load(fh).get("peft_type", ""))
    except (OSError, ValueError):
        return ""


def load_model_and_tokenizer(ref: ModelRef, *, adapter: AdapterConfig | None = None, task: str = "causal_lm"):
    """Load ``ref.name_or_path``; when ``ref.adapter_path`` is set, apply that adapter and merge it in.

    ``adapter`` is the stage's adapter choice: qlora loads the model quantized to 4 bits (pass the
    result to :func:`apply_adapter` next). ``task`` is ``causal_lm`` or ``seq_cls`` (a one-score
    sequence classifier whose new head is initialised randomly, for reward models).
    """
    require_adapter_runtime(adapter)
    if task not in ("causal_lm", "seq_cls"):
        raise ValueError(f"task must be causal_lm or seq_cls, got {task!r}")
    if ref.adapter_path and _input_adapter_type(ref.adapter_path) in _PROMPT_LEARNING:
        raise AdapterError(
            f"the input adapter ({_input_adapter_type(ref.adapter_path).lower()}) cannot be merged into its base "
            "model, so a training stage cannot start from it; evaluate it directly, or train it with another "
            "adapter type"
        )
    load_kwargs: dict[str, Any] = {"revision": ref.revision, "dtype": torch.float32, **quantization_config(adapter)}
    if task == "seq_cls":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(ref.name_or_path, num_labels=1, **load_kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(ref.name_or_path, **load_kwargs)
    tokenizer_source, tokenizer_revision = ref.name_or_path, ref.revision
    if ref.adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ref.adapter_path).merge_and_unload()
        model.requires_grad_(True)  # PEFT loads for inference and leaves the merged weights frozen
        if any(os.path.exists(os.path.join(ref.adapter_path, f)) for f in _TOKENIZER_FILES):
            tokenizer_source, tokenizer_revision = ref.adapter_path, None
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, revision=tokenizer_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if task == "seq_cls" and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # the classifier reads the last non-pad token
    return model, tokenizer


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, as PEFT's ``get_nb_trainable_parameters`` counts them."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if type(p).__name__ == "Params4bit":  # bitsandbytes packs two 4-bit values per byte of storage
            n *= 2 * p.element_size()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def _metric_name(key: str) -> str:
    if key.startswith("eval_"):
        return "eval/" + key[len("eval_") :]
    if key.startswith("train_"):
        return "train/" + key[len("train_") :]
    return "train/" + key


class EventsCallback(TrainerCallback):
    """Turns Trainer hooks into stage events, and a cancel request into a stop at the end of the step."""

    def __init__(self, events: Events, *, resumed_from: str | None = None, progress_interval_s: float = 1.0):
        self.events = events
        self.resumed_from = resumed_from
        self.progress_interval_s = progress_interval_s
        self.canceled = False
        self.last_metrics: dict[str, float] = {}
        self.final_metrics: dict[str, float] = {}
        self._last_progress = float("-inf")

    def _check_cancel(self, control) -> None:
        if cancel_requested():
            self.canceled = True
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        trainable, total = count_parameters(model)
        self.events.emit(
            "started",
            total_steps=state.max_steps,
            trainable_params=trainable,
            total_params=total,
            step=state.global_step,
            resumed_from=self.resumed_from,
        )
        self._check_cancel(control)

    def on_step_end(self, args, state, control, **kwargs):
        failpoint("step.end", step=state.global_step, state_dir=args.output_dir)
        self._check_cancel(control)
        now = time.monotonic()
        last = state.global_step >= state.max_steps
        if last or self.canceled or now - self._last_progress >= self.progress_interval_s:
            self._last_progress = now
            self.events.emit(
                "progress", step=state.global_step, total_steps=state.max_steps, epoch=round(state.epoch or 0.0, 4)
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        logs.pop("epoch", None)
        if "train_runtime" in logs:  # the summary Trainer logs once training ends
            for key, value in logs.items():
                name = "train/loss_mean" if key == "train_loss" else _metric_name(key)
                self.final_metrics[name] = value
            return
        metrics = {_metric_name(k): v for k, v in logs.items() if isinstance(v, (int, float))}
        if metrics:
            self.last_metrics.update(metrics)
            self.events.emit("metrics", step=state.global_step, metrics=metrics)

    def on_save(self, args, state, control, **kwargs):
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        self.events.emit("checkpoint", step=state.global_step, path=path)

    def summary(self) -> dict[str, Any]:
        return {**self.last_metrics, **self.final_metrics}


def publish_dir(build, final_path: str) -> str:
    """Write an output directory atomically: ``build(tmp_path)`` fills a sibling temp dir, then it is renamed."""
    parent = os.path.dirname(final_path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(final_path)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    if os.path.exists(final_path):
        shutil.rmtree(final_path)
    os.replace(tmp, final_path)
    return final_path


def load_train_eval(spec, *, eval_fraction: float):
    """The stage's (train, eval) datasets: ``data.eval`` when given, else ``eval_fraction`` of the train rows
    held out (a seeded shuffle), else no eval data. Data is read before any model: a bad row fails fast."""
    from ..data import load_dataset

    train_ds = load_dataset(spec.train)
    eval_ds = load_dataset(spec.eval) if spec.eval else None
    if eval_ds is None and eval_fraction > 0:
        n_eval = max(1, round(len(train_ds) * eval_fraction))
        if n_eval >= len(train_ds):
            raise ValueError(
                f"eval_fraction {eval_fraction} leaves no training rows out of {len(train_ds)}; "
                "lower it or add eval data"
            )
        split = train_ds.train_test_split(test_size=n_eval, seed=spec.seed, shuffle=True)
        train_ds, eval_ds = split["train"], split["test"]
    return train_ds, eval_ds


def training_arguments(spec, cfg, *, has_eval: bool) -> dict[str, Any]:
    """Keyword arguments for any TRL config (a ``TrainingArguments`` subclass) from the fields method configs
    share (see trainers/configs/fields.py): optimizer, schedule, logging, checkpoints, evaluation."""
    evaluate_periodically = has_eval and cfg.eval_steps > 0
    return {
        "output_dir": spec.checkpoint_dir,
        "seed": spec.seed,
        "data_seed": spec.seed,
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "per_device_eval_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        # transformers 5 dropped warmup_ratio: a float below 1 in warmup_steps is the ratio.
        "warmup_steps": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "lr_scheduler_type": cfg.lr_scheduler_type,
        "logging_strategy": "steps",
        "logging_steps": cfg.logging_steps,
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "eval_strategy": "steps" if evaluate_periodically else "no",
        "eval_steps": cfg.eval_steps if evaluate_periodically else None,
        # transformers 5 renamed gradient_checkpointing (TRL configs still default that one to True).
        "activation_checkpointing": cfg.gradient_checkpointing,
        "bf16": use_bf16(),
        "fp16": False,
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": torch.cuda.is_available(),
    }


def train_and_publish(
    spec,
    events: Events,
    trainer,
    callback: EventsCallback,
    *,
    resume: str | None,
    is_adapter: bool,
    evaluate_at_end: bool,
    after_training=None,
) -> dict[str, Any]:
    """Train (resuming from ``resume``), evaluate once at the end when asked, then publish the model or adapter.

    ``after_training(trainer)``, when given, returns extra final metrics (``eval/...`` names): they are sent as
    one ``metrics`` event at the last step and land in the summary. Returns the runner's result dict.
    """
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress leaves as events, not as printed dicts
    for name in discard_partial(spec.checkpoint_dir):  # what a save killed midway left behind
        print(f"[trainer] discarded the partial checkpoint {name}", file=sys.stderr, flush=True)
    make_checkpoints_atomic(trainer)
    if cancel_requested():
        return {"status": "canceled", "step": 0}
    trainer.train(resume_from_checkpoint=resume)
    if callback.canceled:
        return {"status": "canceled", "step": trainer.state.global_step}
    if evaluate_at_end:
        trainer.evaluate()  # logged through the callback as eval/... metrics
    if after_training is not None:
        final = after_training(trainer)
        if final:
            callback.last_metrics.update(final)
            events.emit("metrics", step=trainer.state.global_step, metrics=final)

    trainer.model.config.use_cache = True  # training switched the KV cache off; inference wants it back
    name = "adapter" if is_adapter else "model"
    path = publish_dir(trainer.save_model, os.path.join(spec.output_dir, name))
    events.emit("artifact", name=name, path=path)
    outputs: dict[str, Any] = {"kind": name, "path": path}
    if is_adapter:
        outputs["base"] = spec.model.as_dict()
    return {"status": "finished", "outputs": outputs, "summary": callback.summary()}
