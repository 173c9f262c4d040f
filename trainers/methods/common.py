"""Pieces every Hugging Face Trainer-based method shares: loading the input model, the event
callback, finding a checkpoint to resume from, and writing outputs atomically."""

import os
import re
import shutil
import time
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed

from ..cancel import cancel_requested
from ..configs import AdapterConfig
from ..events import Events
from ..spec import ModelRef

__all__ = [
    "quiet_progress_bars",
    "seed_everything",
    "load_model_and_tokenizer",
    "lora_config",
    "count_parameters",
    "newest_complete_checkpoint",
    "EventsCallback",
    "publish_dir",
    "use_bf16",
]

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
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


def load_model_and_tokenizer(ref: ModelRef):
    """Load ``ref.name_or_path``; when ``ref.adapter_path`` is set, apply that adapter and merge it in."""
    model = AutoModelForCausalLM.from_pretrained(ref.name_or_path, revision=ref.revision, dtype=torch.float32)
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
    return model, tokenizer


def lora_config(adapter: AdapterConfig):
    """A PEFT LoraConfig for ``adapter.type == 'lora'``, else None (full fine-tuning)."""
    if adapter is None or adapter.type == "none":
        return None
    from peft import LoraConfig

    modules = adapter.target_module_list()
    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules="all-linear" if modules == ["all-linear"] else modules,
        use_rslora=adapter.use_rslora,
        task_type="CAUSAL_LM",
    )


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def newest_complete_checkpoint(checkpoint_dir: str) -> str | None:
    """The highest-numbered ``checkpoint-N`` directory whose trainer state was written (it is written last)."""
    if not os.path.isdir(checkpoint_dir):
        return None
    found = []
    for name in os.listdir(checkpoint_dir):
        match = _CHECKPOINT.match(name)
        path = os.path.join(checkpoint_dir, name)
        if match and os.path.isfile(os.path.join(path, "trainer_state.json")):
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


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
