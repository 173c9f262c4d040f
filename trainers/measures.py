"""Measuring a causal language model on data, without training it.

- :func:`exact_match`: greedy exact-match accuracy (does the model's answer to each prompt equal the
  expected one?), for the ``eval-addition`` command.
- The measures of the ``evaluate``, ``gate`` and ``export`` stages (docs/evaluation.md): :func:`measure`
  computes every number they report on held-out rows, so the same model on the same data gets the same
  figures in every stage. Underneath, :func:`completion_sequence` and :func:`chat_sequence` tokenize rows
  exactly as the SFT stage trains on them (TRL's SFTTrainer: the completion plus the end-of-sequence token,
  or the assistant turns, are the scored tokens), :func:`sequence_logprobs` sums the log-probabilities of
  the scored tokens, and :func:`generate_answers` decodes greedy answers to prompts (strings, or
  conversations rendered with the chat template).

Importing this module imports nothing heavy; torch and transformers are imported inside the functions.
"""

import json
import math
import os
import re
from collections.abc import Callable
from typing import Any

from .metrics import EVAL_KINDS
from .rewards import REWARDS

__all__ = [
    "read_prompt_answers",
    "load_model",
    "exact_match",
    "context_length",
    "common_prefix_length",
    "completion_sequence",
    "chat_sequence",
    "sequence_logprobs",
    "generate_answers",
    "stop_token_ids",
    "LOSS_KINDS",
    "measure",
]

LOSS_KINDS = ("prompt_completion", "chat")  # measured by the loss of their completions


def read_prompt_answers(path: str) -> list[tuple[Any, str]]:
    """(prompt, answer) pairs from a reference (prompt, answer), prompt_completion or chat file (jsonl/csv/parquet).

    For chat rows the prompt is every message before the last assistant turn, and the
    answer is that turn's content.
    """
    from .data import read_raw_rows
    from .stage_spec import FORMAT_BY_EXTENSION, DataFile

    fmt = FORMAT_BY_EXTENSION.get(os.path.splitext(path)[1].lower(), "jsonl")
    rows = read_raw_rows(DataFile(path=path, format=fmt, kind="reference"))
    pairs: list[tuple[Any, str]] = []
    for number, row in enumerate(rows, start=1):
        if "messages" in row:
            messages = json.loads(row["messages"]) if isinstance(row["messages"], str) else row["messages"]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            pairs.append((messages[:last], messages[last]["content"]))
        elif "prompt" in row and ("answer" in row or "completion" in row):
            pairs.append((row["prompt"], str(row["answer"] if "answer" in row else row["completion"])))
        else:
            raise ValueError(f"{path}: row {number} needs prompt and answer (or completion), or messages")
    if not pairs:
        raise ValueError(f"{path}: no rows")
    return pairs


def load_model(
    model_dir: str, adapter_dir: str | None = None, *, revision: str | None = None, device: str | None = None
):
    """A causal LM (with an adapter applied when given) and its tokenizer, ready for generation.

    The adapter is applied, not merged, so adapters that cannot be merged (prompt tuning) work too.
    ``device``: where to put the model (default: the CPU, as before; ``"auto"``: the local GPU when there
    is one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, revision=revision, dtype=torch.float32)
    tokenizer_dir, tokenizer_revision = model_dir, revision
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
        if os.path.exists(os.path.join(adapter_dir, "tokenizer_config.json")):
            tokenizer_dir, tokenizer_revision = adapter_dir, None
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, revision=tokenizer_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device == "auto":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer


def _normalize(text: str) -> str:
    return " ".join(text.split())


def exact_match(
    model,
    tokenizer,
    pairs: list[tuple[Any, str]],
    *,
    chat: bool = False,
    batch_size: int = 64,
    max_new_tokens: int = 8,
) -> dict[str, Any]:
    """Greedy-decode an answer for each prompt and count exact (whitespace-normalised) matches.

    A prompt that is a list of messages, or any prompt when ``chat`` is set, goes through
    the tokenizer's chat template with the generation prompt.
    """
    import torch

    stop_ids = [tokenizer.eos_token_id]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end is not None:
        stop_ids.append(im_end)

    texts, use_template = [], []
    for prompt, _ in pairs:
        if isinstance(prompt, list) or chat:
            messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            use_template.append(True)
        else:
            texts.append(prompt)
            use_template.append(False)

    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    correct, samples = 0, []
    device = next(model.parameters()).device
    try:
        for start in range(0, len(pairs), batch_size):
            batch = texts[start : start + batch_size]
            # A rendered chat template already holds its special tokens.
            templated = use_template[start]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=not templated).to(device)
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=stop_ids,
                )
            for i, ids in enumerate(out[:, enc["input_ids"].shape[1] :]):
                predicted = tokenizer.decode(ids, skip_special_tokens=True)
                expected = pairs[start + i][1]
                ok = _normalize(predicted) == _normalize(expected)
                correct += ok
                if len(samples) < 5:
                    samples.append({"prompt": pairs[start + i][0], "expected": expected, "predicted": predicted})
    finally:
        tokenizer.padding_side = padding_side
    return {"exact_match": correct / len(pairs), "correct": correct, "total": len(pairs), "samples": samples}


# --- the evaluate stage's measures -------------------------------------------------------------------


def context_length(model, tokenizer) -> int | None:
    """The longest sequence the model takes: its position embeddings, or the tokenizer's limit (None: no
    known limit). Longer rows are cut at the end, as the SFT stage cuts them at its max_length."""
    limits = []
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 10**7:  # transformers' "no limit" is a huge number
        limits.append(model_max)
    return min(limits) if limits else None


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _cut(ids: list[int], mask: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    if max_length and len(ids) > max_length:
        return ids[:max_length], mask[:max_length]
    return ids, mask


def completion_sequence(tokenizer, prompt: str, completion: str, *, max_length: int | None = None):
    """``(input_ids, scored)`` for a (prompt, completion) row as TRL's SFTTrainer builds it: the
    end-of-sequence token appended to the completion (unless it ends with it), prompt and prompt+completion
    tokenized with the tokenizer's special tokens, and the scored tokens those after the two tokenizations
    diverge. The same scoring gives the log-probability of a preference pair's answers (as TRL's DPO)."""
    eos = tokenizer.eos_token or ""
    if eos and not completion.endswith(eos):
        completion = completion + eos
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = list(tokenizer(prompt + completion)["input_ids"])
    start = common_prefix_length(prompt_ids, ids)
    return _cut(ids, [0] * start + [1] * (len(ids) - start), max_length)


def _template_ids(tokenizer, messages: list[dict[str, str]], **kwargs) -> dict[str, list[int]]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return {key: list(value) for key, value in out.items() if key in ("input_ids", "assistant_masks")}


def chat_sequence(tokenizer, messages: list[dict[str, str]], *, max_length: int | None = None):
    """``(input_ids, scored)`` for a conversation as TRL's SFTTrainer builds it with assistant-only loss: the
    chat template rendered and tokenized, the scored tokens those its ``{% generation %}`` markers put in
    the assistant mask. A template without those markers (SFT refuses to train on it with assistant-only
    loss) gets the assistant turns found by rendering the conversation turn by turn: each assistant turn's
    tokens are those the conversation up to it adds to the conversation before it with the generation
    prompt (so whatever the template writes after the turn, such as a line break, is scored too)."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    marked = re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None
    full = _template_ids(tokenizer, messages, return_assistant_tokens_mask=marked)
    ids, mask = full["input_ids"], list(full.get("assistant_masks") or [])
    if len(mask) != len(ids) or not any(mask):
        mask = [0] * len(ids)
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = _template_ids(tokenizer, messages[:i], add_generation_prompt=True)["input_ids"] if i else []
            upto = _template_ids(tokenizer, messages[: i + 1])["input_ids"]
            start = common_prefix_length(before, upto)
            end = common_prefix_length(upto, ids)  # the turn as it appears in the whole conversation
            for position in range(start, end):
                mask[position] = 1
    if not any(mask):
        raise ValueError("a chat row has no assistant tokens to score (empty assistant turns?)")
    return _cut(ids, mask, max_length)


def sequence_logprobs(
    model,
    tokenizer,
    sequences: list[tuple[list[int], list[int]]],
    *,
    batch_size: int = 16,
    on_batch: Callable[[], None] | None = None,
) -> list[tuple[float, int]]:
    """``(sum of log p(token | tokens before it), number of tokens)`` over the scored tokens of each
    ``(input_ids, scored)`` sequence (a scored first token has no context and is skipped). Batches are
    padded on the right; ``on_batch`` is called after each."""
    import torch

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[tuple[float, int]] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start : start + batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            scored = torch.zeros((len(batch), width), dtype=torch.bool)
            for i, (ids, mask) in enumerate(batch):
                input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention[i, : len(ids)] = 1
                scored[i, : len(ids)] = torch.tensor(mask, dtype=torch.bool)
            input_ids, attention, scored = input_ids.to(device), attention.to(device), scored.to(device)
            with torch.inference_mode():
                logits = model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
                # The last `width` positions: prompt tuning puts its virtual tokens in front of the sequence.
                logits = logits[:, -width:-1].float()
                token_logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                keep = scored[:, 1:] & attention[:, 1:].bool()
                sums = (token_logps * keep).sum(dim=1).tolist()
                counts = keep.sum(dim=1).tolist()
            results += [(float(s), int(n)) for s, n in zip(sums, counts)]
            if on_batch is not None:
                on_batch()
    finally:
        model.train(was_training)
    return results


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end a generated answer: the tokenizer's end-of-sequence token and those of the
    model's generation config (e.g. an end-of-turn token)."""
    stop_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    generation_config = getattr(model, "generation_config", None)
    extra = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    for token_id in extra if isinstance(extra, list) else [extra]:
        if token_id is not None and token_id not in stop_ids:
            stop_ids.append(token_id)
    return stop_ids


def generate_answers(
    model,
    tokenizer,
    prompts: list[Any],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: Callable[[], None] | None = None,
) -> list[str]:
    """The model's greedy answer to each prompt, decoded without special tokens (whitespace kept).

    A prompt is a string (tokenized with the tokenizer's special tokens, as training saw it) or a
    conversation (a list of messages, rendered with the chat template and the generation prompt). Batches
    are padded on the left; generation stops at :func:`stop_token_ids`."""
    import torch

    device = next(model.parameters()).device
    stop_ids = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training, padding_side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"
    answers: list[str] = [""] * len(prompts)
    # Plain and templated prompts are tokenized differently (a rendered template holds its special tokens).
    groups = {
        templated: [i for i, p in enumerate(prompts) if isinstance(p, list) == templated] for templated in (False, True)
    }
    try:
        for templated, indices in groups.items():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                texts = [
                    tokenizer.apply_chat_template(prompts[i], tokenize=False, add_generation_prompt=True)
                    if templated
                    else str(prompts[i])
                    for i in chunk
                ]
                enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not templated).to(device)
                with torch.inference_mode():
                    out = model.generate(
                        **enc,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        pad_token_id=pad_id,
                        eos_token_id=stop_ids,
                    )
                for i, ids in zip(chunk, out[:, enc["input_ids"].shape[1] :]):
                    answers[i] = tokenizer.decode(ids, skip_special_tokens=True)
                if on_batch is not None:
                    on_batch()
    finally:
        model.train(was_training)
        tokenizer.padding_side = padding_side
    return answers


def measure(
    model,
    tokenizer,
    rows: list[dict[str, Any]],
    kind: str,
    *,
    accuracy_reward: str,
    max_new_tokens: int,
    batch_size: int = 16,
    answer: Callable[[list[Any]], list[str]] | None = None,
    on_batch: Callable[[], None] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """``(metrics, details)`` of a model on checked rows of ``kind`` (one of
    :data:`trainers.metrics.EVAL_KINDS`); ``details`` holds per-row results for reports.

    - ``prompt_completion`` / ``chat``: ``loss`` (mean negative log-likelihood per scored token, over all rows,
      each row cut at the model's context length) and ``perplexity``; details ``tokens`` (0: nothing scored,
      loss and perplexity are NaN).
    - ``reference``: the greedy answers (``answer(prompts)``, by default :func:`generate_answers`) scored by
      the rewards: ``exact_match``, ``accuracy`` (the share ``accuracy_reward`` scores 1) and ``mean_reward``;
      details ``predictions``.
    - ``preference``: ``preference_accuracy`` (the share of pairs whose chosen answer is more likely; a tie is
      not a win) and ``logp_margin``; details ``logp_margins``.
    """
    if kind not in EVAL_KINDS:
        raise ValueError(f"cannot measure {kind!r} data (measurable kinds: {', '.join(EVAL_KINDS)})")
    max_length = context_length(model, tokenizer)

    def logprobs(sequences):
        return sequence_logprobs(model, tokenizer, sequences, batch_size=batch_size, on_batch=on_batch)

    if kind in LOSS_KINDS:
        if kind == "chat":
            sequences = [chat_sequence(tokenizer, row["messages"], max_length=max_length) for row in rows]
        else:
            sequences = [
                completion_sequence(tokenizer, row["prompt"], row["completion"], max_length=max_length) for row in rows
            ]
        scored = logprobs(sequences)
        tokens = sum(n for _, n in scored)
        if tokens == 0:
            return {"loss": math.nan, "perplexity": math.nan}, {"tokens": 0}
        loss = -sum(s for s, _ in scored) / tokens
        return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}, {"tokens": tokens}
    if kind == "reference":
        prompts = [row["prompt"] for row in rows]
        answers = [row["answer"] for row in rows]
        if answer is None:
            predicted = generate_answers(
                model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=on_batch
            )
        else:
            predicted = answer(prompts)
        exact = REWARDS["exact_match"].function(predicted, answer=answers)
        scores = REWARDS[accuracy_reward].function(predicted, answer=answers)
        n = len(prompts)
        metrics = {
            "exact_match": sum(exact) / n,
            "accuracy": sum(1 for s in scores if s == 1.0) / n,
            "mean_reward": sum(scores) / n,
        }
        details = {
            "predictions": [
                {"prompt": p, "answer": a, "predicted": g, "exact_match": e, "reward": s}
                for p, a, g, e, s in zip(prompts, answers, predicted, exact, scores)
            ]
        }
        return metrics, details
    # preference
    chosen = logprobs([completion_sequence(tokenizer, r["prompt"], r["chosen"], max_length=max_length) for r in rows])
    rejected = logprobs(
        [completion_sequence(tokenizer, r["prompt"], r["rejected"], max_length=max_length) for r in rows]
    )
    diffs = [c - r for (c, _), (r, _) in zip(chosen, rejected)]
    metrics = {
        "preference_accuracy": sum(1 for d in diffs if d > 0) / len(diffs),  # a tie is not a win
        "logp_margin": sum(diffs) / len(diffs),
    }
    return metrics, {"logp_margins": diffs}
