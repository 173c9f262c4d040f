"""Greedy exact-match accuracy: does the model's answer to each prompt equal the expected one?"""

import json
import os
from typing import Any

__all__ = ["read_prompt_answers", "load_model", "exact_match"]


def read_prompt_answers(path: str) -> list[tuple[Any, str]]:
    """(prompt, answer) pairs from a reference (prompt, answer), prompt_completion or chat file (jsonl/csv/parquet).

    For chat rows the prompt is every message before the last assistant turn, and the
    answer is that turn's content.
    """
    from .data import read_raw_rows
    from .spec import FORMAT_BY_EXTENSION, DataFile

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


def load_model(model_dir: str, adapter_dir: str | None = None):
    """A causal LM (with an adapter applied when given) and its tokenizer, ready for generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer_dir = model_dir
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
        if os.path.exists(os.path.join(adapter_dir, "tokenizer_config.json")):
            tokenizer_dir = adapter_dir
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
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
