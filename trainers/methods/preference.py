"""What the preference methods (dpo, kto, orpo, simpo) share: setting a stage up, the reference model, turning
pairs into unpaired feedback, the held-out preference accuracy, and the run itself.

Held-out preference accuracy (``eval/preference_accuracy``) is one measure for every method: the share of
eval pairs whose chosen answer the model finds more likely than the rejected one (summed log-probability
of the answer's tokens and the end-of-sequence token, given the prompt, tokenized as TRL does).
``eval/preference_margin`` is the mean of that log-probability difference, in nats. TRL's own
``rewards/accuracies`` differ from method to method (DPO compares to the reference model, SimPO normalizes
by length, ORPO uses odds, KTO has none), so they cannot be compared across methods; this one can.
"""

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import TrainerCallback

from ..cancel import cancel_requested
from ..events import Events
from ..measures import common_prefix_length
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
)

__all__ = [
    "PreferenceStage",
    "setup_stage",
    "frozen_reference",
    "unpaired",
    "pairwise_preference",
    "run_stage",
]


@dataclass
class PreferenceStage:
    """Everything a preference method needs to build its TRL trainer."""

    spec: StageSpec
    model: Any  # the input model, with selective adapters applied; PEFT adapters are wrapped by the trainer
    tokenizer: Any
    peft_config: Any  # a peft.PeftConfig, or None when the stage outputs a whole model
    train_ds: Any
    eval_ds: Any  # None without eval data
    eval_pairs: list[dict[str, Any]] | None  # the eval rows when they are preference pairs
    callback: EventsCallback
    resume: str | None


def setup_stage(spec: StageSpec, events: Events) -> PreferenceStage:
    """Read the data (train, and eval from data.eval or the config's eval_fraction), load the model, apply the
    adapter, and find a checkpoint to resume from."""
    quiet_progress_bars()
    seed_everything(spec.seed)
    require_adapter_runtime(spec.adapter)  # e.g. qlora on a worker without a GPU: fail before loading anything
    train_ds, eval_ds = load_train_eval(spec, eval_fraction=spec.config.eval_fraction)
    eval_pairs = eval_ds.to_list() if eval_ds is not None and spec.train.kind == "preference" else None
    model, tokenizer = load_model_and_tokenizer(spec.model, adapter=spec.adapter)
    model, peft_config = apply_adapter(model, spec.adapter)
    resume = newest_complete_checkpoint(spec.checkpoint_dir)
    os.makedirs(spec.checkpoint_dir, exist_ok=True)
    return PreferenceStage(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        peft_config=peft_config,
        train_ds=train_ds,
        eval_ds=eval_ds,
        eval_pairs=eval_pairs,
        callback=EventsCallback(events, resumed_from=resume),
        resume=resume,
    )


def frozen_reference(stage: PreferenceStage):
    """The reference model for methods that need one (DPO, KTO), or None.

    With a PEFT adapter, None: TRL then scores the reference with the adapter switched off, so no second
    copy of the model is held. Without one, a frozen copy of the input model. TRL would otherwise reload
    the reference from ``config._name_or_path``, which names the base directory and so misses an input
    ``model.adapter_path`` that was merged in.
    """
    if stage.peft_config is not None:
        return None
    reference = copy.deepcopy(stage.model)
    reference.requires_grad_(False)
    return reference.eval()


def unpaired(dataset, *, seed: int):
    """Rows for KTO: preference pairs become one desirable (chosen) and one undesirable (rejected) example
    each; feedback rows stay as they are. Shuffled once (seeded): KTO reads its data in order and
    estimates its KL term within each batch, so a batch should mix prompts, answers and labels."""
    from datasets import Dataset

    if "chosen" in dataset.column_names:
        rows = []
        for row in dataset:
            rows.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
            rows.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
        dataset = Dataset.from_list(rows)
    return dataset.shuffle(seed=seed).flatten_indices()


@torch.no_grad()
def _answer_logps(model, tokenizer, prompts: list[str], answers: list[str], max_length: int | None) -> list[float]:
    """Summed log-probability of each answer (plus the end-of-sequence token) given its prompt."""
    sequences, starts = [], []
    for prompt, answer in zip(prompts, answers):
        prompt_ids = tokenizer(prompt)["input_ids"]
        full_ids = tokenizer(prompt + answer + tokenizer.eos_token)["input_ids"]
        # The answer starts where the two tokenizations diverge (as in TRL's DPO/KTO data preparation).
        starts.append(common_prefix_length(prompt_ids, full_ids))
        sequences.append(full_ids[:max_length] if max_length else full_ids)
    device = next(model.parameters()).device
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    # The last `width` positions: prompt tuning puts its virtual tokens in front of the sequence.
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, -width:-1].float()
    targets = input_ids[:, 1:]
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    positions = torch.arange(1, width, device=device).unsqueeze(0)
    in_answer = (positions >= torch.tensor(starts, device=device).unsqueeze(1)) & attention[:, 1:].bool()
    return (token_logps * in_answer).sum(dim=1).tolist()


def pairwise_preference(
    model, tokenizer, pairs: list[dict[str, Any]], *, max_length: int | None = None, batch_size: int = 8
) -> dict[str, float]:
    """``{"preference_accuracy", "preference_margin"}`` of ``model`` on preference rows (prompt, chosen,
    rejected): the share of pairs whose chosen answer is more likely (ties count as wrong), and the mean
    log-probability difference chosen - rejected."""
    was_training = model.training
    model.eval()
    diffs: list[float] = []
    try:
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            prompts = [row["prompt"] for row in batch]
            chosen = _answer_logps(model, tokenizer, prompts, [row["chosen"] for row in batch], max_length)
            rejected = _answer_logps(model, tokenizer, prompts, [row["rejected"] for row in batch], max_length)
            diffs += [c - r for c, r in zip(chosen, rejected)]
    finally:
        model.train(was_training)
    return {
        "preference_accuracy": sum(d > 0 for d in diffs) / len(diffs),
        "preference_margin": sum(diffs) / len(diffs),
    }


class _EmitAtStart(TrainerCallback):
    """Sends metrics measured before training as a metrics event at step 0 (after ``started``)."""

    def __init__(self, events: Events, metrics: dict[str, float]):
        self.events, self.metrics = events, metrics

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0 and self.metrics:
            self.events.emit("metrics", step=0, metrics=self.metrics)


def run_stage(spec: StageSpec, events: Events, build_trainer: Callable[[PreferenceStage], Any]) -> dict[str, Any]:
    """Set the stage up, build the method's TRL trainer with ``build_trainer(stage)``, train and publish.

    With preference eval data, eval/preference_accuracy and eval/preference_margin are measured before
    training (a step-0 metrics event, and ``..._initial`` in the summary) and after it (the last metrics
    event and the summary).
    """
    if cancel_requested():
        return {"status": "canceled", "step": 0}
    stage = setup_stage(spec, events)
    trainer = build_trainer(stage)
    max_length = spec.config.max_length

    def measure(model) -> dict[str, float]:
        if not stage.eval_pairs:
            return {}
        found = pairwise_preference(model, stage.tokenizer, stage.eval_pairs, max_length=max_length)
        return {f"eval/{name}": value for name, value in found.items()}

    initial = measure(trainer.model)
    trainer.add_callback(_EmitAtStart(events, initial))
    result = train_and_publish(
        spec,
        events,
        trainer,
        stage.callback,
        resume=stage.resume,
        is_adapter=stage.peft_config is not None,
        evaluate_at_end=stage.eval_ds is not None and spec.config.eval_steps == 0,
        after_training=lambda t: measure(t.model),
    )
    if result["status"] == "finished":
        result["summary"].update({f"{name}_initial": value for name, value in initial.items()})
    return result
