"""What the reward, grpo and distill methods share: prompts from any prompt-bearing data, metrics measured
before training (sent at step 0), greedy answers for agreement checks, and loading an aux model.

Data shapes (see docs/stage-spec.md): ``reference`` rows are (prompt, answer); ``prompt_completion`` rows
give their completion as the answer; ``chat`` rows give every message before the last assistant turn as the
prompt (a conversation, so the chat template applies) and that turn's content as the answer.
"""

from typing import Any

from transformers import TrainerCallback

from ..events import Events

__all__ = [
    "prompt_answer_dataset",
    "InitialMetrics",
    "evaluate_quietly",
    "greedy_answers",
    "mean_of_ends",
]


def prompt_answer_dataset(dataset, kind: str):
    """The rows as (prompt, answer) columns, whatever prompt-bearing kind they came as."""
    if dataset is None:
        return None
    if kind == "reference":
        return dataset.select_columns(["prompt", "answer"])
    if kind == "prompt_completion":
        return dataset.select_columns(["prompt", "completion"]).rename_column("completion", "answer")
    if kind == "chat":
        from datasets import Dataset

        rows = []
        for messages in dataset["messages"]:
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            rows.append({"prompt": messages[:last], "answer": messages[last]["content"]})
        if any(not row["prompt"] for row in rows):
            raise ValueError("a chat row whose first message is the assistant's has no prompt to answer")
        return Dataset.from_list(rows)
    raise ValueError(f"no prompts in {kind!r} data")


class InitialMetrics(TrainerCallback):
    """Sends metrics measured before training as one metrics event at step 0, right after ``started``."""

    def __init__(self, events: Events, metrics: dict[str, float]):
        self.events, self.metrics = events, metrics

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0 and self.metrics:
            self.events.emit("metrics", step=0, metrics=self.metrics)


def evaluate_quietly(trainer, events_callback) -> dict[str, float]:
    """``trainer.evaluate()`` before training, without sending events (``started`` must come first): returns
    the ``eval/...`` metrics, for :class:`InitialMetrics`."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress leaves as events, not as printed dicts
    trainer.remove_callback(events_callback)
    try:
        found = trainer.evaluate()
    finally:
        trainer.add_callback(events_callback)
    skip = (
        "eval_runtime",
        "eval_samples_per_second",
        "eval_steps_per_second",
        "eval_model_preparation_time",
        "eval_num_tokens",
    )
    return {
        "eval/" + key.removeprefix("eval_"): float(value)
        for key, value in found.items()
        if key.startswith("eval_") and key not in skip and isinstance(value, (int, float))
    }


def _rendered(tokenizer, prompt: Any) -> tuple[str, bool]:
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), False
    return str(prompt), True


def greedy_answers(model, tokenizer, prompts: list[Any], *, max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """The model's greedy answer to each prompt (a string, or a conversation rendered with the chat template),
    decoded without special tokens and with whitespace collapsed."""
    import torch

    stop_ids = [tokenizer.eos_token_id]
    generation_config = getattr(model, "generation_config", None)
    extra = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    for token_id in extra if isinstance(extra, list) else [extra]:
        if token_id is not None and token_id not in stop_ids:
            stop_ids.append(token_id)
    device = next(model.parameters()).device
    was_training, padding_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            rendered = [_rendered(tokenizer, p) for p in prompts[start : start + batch_size]]
            texts = [text for text, _ in rendered]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=rendered[0][1]).to(device)
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=stop_ids,
                )
            for ids in out[:, enc["input_ids"].shape[1] :]:
                answers.append(" ".join(tokenizer.decode(ids, skip_special_tokens=True).split()))
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side
    return answers


def mean_of_ends(values: list[float], share: float = 0.1) -> tuple[float, float] | None:
    """(mean of the first, mean of the last) ``share`` of ``values`` (at least one value each); None if empty."""
    if not values:
        return None
    k = max(1, int(len(values) * share))
    return sum(values[:k]) / k, sum(values[-k:]) / k
