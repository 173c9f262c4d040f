"""A demo kit built offline in seconds: a tokenizer, a tiny untrained Llama and addition datasets.

The model starts knowing nothing; a few seconds of SFT on ``addition_train.jsonl`` teach it
single-digit addition, which ``python -m trainers eval-addition`` measures on held-out sums.
Everything is deterministic given the seed.
"""

import csv
import json
import os
import random
from typing import Any

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "build_demo",
    "build_tokenizer",
    "build_model",
    "write_datasets",
    "near_miss_preferences",
]

BOS, EOS, PAD, IM_START, IM_END = "<|bos|>", "<|eos|>", "<|pad|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, IM_END]

# ChatML with {% generation %} markers around what the assistant says (so assistant-only loss
# works) and the end-of-turn token inside them (so the model learns to stop).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

DEMO_FILES = {
    "train": "addition_train.jsonl",
    "eval": "addition_eval.jsonl",
    "chat": "addition_chat.jsonl",
    "chat_eval": "addition_chat_eval.jsonl",
    "prefs": "addition_prefs.jsonl",
    "reference": "addition_reference.jsonl",
    "prefs_eval": "addition_prefs_eval.jsonl",
    "feedback": "addition_feedback.jsonl",
    "train_csv": "addition_train.csv",
    "train_parquet": "addition_train.parquet",
}


def addition_split(seed: int = 0, held_out: int = 20) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All single-digit pairs (a, b), split into train and held-out sets."""
    pairs = [(a, b) for a in range(10) for b in range(10)]
    rng = random.Random(seed)
    rng.shuffle(pairs)
    held, train = pairs[:held_out], pairs[held_out:]
    return sorted(train), sorted(held)


def _corpus(seed: int) -> list[str]:
    lines = [f"{a}+{b}={a + b}" for a in range(10) for b in range(10)]
    lines += [f"{a} + {b} = {a + b}" for a in range(10) for b in range(10)]
    lines += ["user", "assistant", "system", "user\n", "assistant\n", "system\n", "the answer is", "Add the numbers"]
    lines += [str(n) for n in range(100)]
    random.Random(seed).shuffle(lines)
    return lines


def build_tokenizer(seed: int = 0):
    """Train a byte-level BPE on the spot and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),  # one token per digit: sums stay composable
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        padding_side="right",
        model_max_length=256,
    )


def build_model(tokenizer, seed: int = 0, hidden_size: int = 64, layers: int = 2):
    """A tiny randomly initialised LlamaForCausalLM sized for the demo tokenizer."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=8,
    )
    return model


def _write_jsonl(path: str, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def near_miss_preferences(pairs: list[tuple[int, int]]) -> list[dict[str, str]]:
    """Preference rows for each sum: the correct answer chosen over each wrong answer 1 or 2 away (>= 0)."""
    return [
        {"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + delta)}
        for a, b in pairs
        for delta in (-2, -1, 1, 2)
        if a + b + delta >= 0
    ]


def write_datasets(out_dir: str, seed: int = 0) -> dict[str, str]:
    """Write the addition datasets; returns {name: path}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    train, held = addition_split(seed)
    rng = random.Random(seed + 1)
    paths = {name: os.path.join(out_dir, filename) for name, filename in DEMO_FILES.items()}

    def pc(pairs):
        return [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in pairs]

    def chat(pairs):
        return [
            {"messages": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}]}
            for a, b in pairs
        ]

    def wrong(a: int, b: int) -> str:
        return str(a + b + rng.choice([-2, -1, 1, 2]) if a + b >= 2 else a + b + rng.choice([1, 2]))

    train_rows = pc(train)
    _write_jsonl(paths["train"], train_rows)
    _write_jsonl(paths["eval"], pc(held))
    _write_jsonl(paths["chat"], chat(train))
    _write_jsonl(paths["chat_eval"], chat(held))
    _write_jsonl(
        paths["prefs"],
        [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": wrong(a, b)} for a, b in train],
    )
    _write_jsonl(paths["reference"], [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a, b in held])
    _write_jsonl(paths["prefs_eval"], near_miss_preferences(held))
    feedback = []
    for a, b in train:
        feedback.append({"prompt": f"{a}+{b}=", "completion": str(a + b), "label": True})
        feedback.append({"prompt": f"{a}+{b}=", "completion": wrong(a, b), "label": False})
    _write_jsonl(paths["feedback"], feedback)
    with open(paths["train_csv"], "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows(train_rows)
    pq.write_table(pa.Table.from_pylist(train_rows), paths["train_parquet"])
    return paths


def build_demo(out_dir: str, seed: int = 0) -> dict[str, Any]:
    """Build the whole kit under ``out_dir``; returns the paths as JSON-ready data."""
    out_dir = os.path.abspath(out_dir)
    model_dir = os.path.join(out_dir, "model")
    os.makedirs(model_dir, exist_ok=True)
    tokenizer = build_tokenizer(seed)
    model = build_model(tokenizer, seed)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir, save_jinja_files=False)  # chat_template inside tokenizer_config.json
    data = write_datasets(out_dir, seed)
    train, held = addition_split(seed)
    return {
        "dir": out_dir,
        "model": model_dir,
        "data": data,
        "kinds": {
            "train": "prompt_completion",
            "eval": "prompt_completion",
            "chat": "chat",
            "chat_eval": "chat",
            "prefs": "preference",
            "reference": "reference",
            "prefs_eval": "preference",
            "feedback": "feedback",
            "train_csv": "prompt_completion",
            "train_parquet": "prompt_completion",
        },
        "train_pairs": len(train),
        "held_out_pairs": len(held),
        "seed": seed,
    }
