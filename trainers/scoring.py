"""Scoring text with a reward model that a ``reward`` stage produced (a full model or an adapter).

    scorer = load_reward_model({"name_or_path": ".../output/model"})                  # full model
    scorer = load_reward_model({"name_or_path": base_dir, "adapter_path": ".../adapter"})  # adapter
    scorer.score(["3+4=7", "3+4=8"])   # -> [2.1, -1.7]: higher is better

Texts are scored exactly as the reward trainer saw them during training (TRL's RewardTrainer): the
end-of-sequence token appended when missing, the tokenizer's special tokens added, padding on the
right, and the score read at the last non-padding token. When the tokenizer has no padding token
(Llama), the end-of-sequence token pads, as in training, and the score is then read at the last
token before it.
"""

import json
import os
from typing import Any

__all__ = ["RewardModelError", "RewardScorer", "load_reward_model"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class RewardModelError(ValueError):
    """The given model is not a reward model (a one-score sequence classifier)."""


def _model_ref(model_ref: Any) -> tuple[str, str | None, str | None]:
    if isinstance(model_ref, (str, os.PathLike)):
        return os.fspath(model_ref), None, None
    if isinstance(model_ref, dict):
        name = model_ref.get("name_or_path")
        if not name:
            raise RewardModelError("a reward model reference needs name_or_path")
        return name, model_ref.get("revision"), model_ref.get("adapter_path")
    name = getattr(model_ref, "name_or_path", None)
    if not name:
        raise RewardModelError(f"cannot read a reward model reference from {type(model_ref).__name__}")
    return name, getattr(model_ref, "revision", None), getattr(model_ref, "adapter_path", None)


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


class RewardScorer:
    """A loaded reward model and its tokenizer; :meth:`score` turns texts into scalar rewards."""

    def __init__(self, model, tokenizer, *, batch_size: int = 16, max_length: int | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length

    @property
    def device(self):
        return next(self.model.parameters()).device

    def score(self, texts: list[str]) -> list[float]:
        """One reward per text (the text is the prompt and the answer together, as in training)."""
        return self._score_ids([self._encode(text) for text in texts])

    def score_pairs(self, prompts: list[Any], completions: list[Any]) -> list[float]:
        """Rewards for (prompt, completion) pairs. Plain strings are joined; conversations (lists of
        messages) are rendered with the reward model's chat template."""
        ids = []
        for prompt, completion in zip(prompts, completions, strict=True):
            if isinstance(prompt, list) or isinstance(completion, list):
                messages = (prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]) + (
                    completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
                )
                text = self.tokenizer.apply_chat_template(messages, tokenize=False)
                ids.append(self._encode(text, special_tokens=False))
            else:
                ids.append(self._encode(str(prompt) + str(completion)))
        return self._score_ids(ids)

    def _encode(self, text: str, *, special_tokens: bool = True) -> list[int]:
        eos = self.tokenizer.eos_token
        if eos and not text.endswith(eos):
            text = text + eos  # what RewardTrainer does to every chosen/rejected text
        ids = self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"]
        if self.max_length and len(ids) > self.max_length:
            ids = ids[: self.max_length]
        return ids

    def _score_ids(self, sequences: list[list[int]]) -> list[float]:
        import torch

        if not sequences:
            return []
        pad_id = self.tokenizer.pad_token_id
        scores: list[float] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(sequences), self.batch_size):
                batch = sequences[start : start + self.batch_size]
                width = max(len(s) for s in batch)
                input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for i, seq in enumerate(batch):
                    input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                    attention[i, : len(seq)] = 1
                with torch.inference_mode():
                    logits = self.model(
                        input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), use_cache=False
                    ).logits
                scores += logits[:, 0].float().tolist()
        finally:
            self.model.train(was_training)
        return scores


def load_reward_model(model_ref: Any, *, device: str | None = None, batch_size: int = 16) -> RewardScorer:
    """Load what a ``reward`` stage wrote: a model directory (``output_dir/model``), or its base model plus
    ``adapter_path`` (``output_dir/adapter``). ``model_ref`` is a path, a ``{"name_or_path", "revision",
    "adapter_path"}`` dict (the stage spec's ``aux_models.reward_model``) or a ModelRef.

    Raises :class:`RewardModelError` when the model is not a one-score sequence classifier (for example a
    causal language model from an sft stage), instead of scoring with a randomly initialised head.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    name, revision, adapter_path = _model_ref(model_ref)
    if adapter_path:
        adapter_cfg = _read_json(os.path.join(adapter_path, "adapter_config.json"))
        if not adapter_cfg:
            raise RewardModelError(f"no adapter (adapter_config.json) in {adapter_path}")
        if adapter_cfg.get("task_type") != "SEQ_CLS":
            raise RewardModelError(
                f"the adapter in {adapter_path} is a {adapter_cfg.get('task_type') or 'untyped'} adapter, not a "
                "reward model (SEQ_CLS); point at the output of a reward stage"
            )
    else:
        config = AutoConfig.from_pretrained(name, revision=revision)
        architectures = getattr(config, "architectures", None) or []
        if getattr(config, "num_labels", None) != 1 or not any(
            a.endswith("ForSequenceClassification") for a in architectures
        ):
            raise RewardModelError(
                f"{name} is not a reward model (architectures {architectures or 'unknown'}, "
                f"{getattr(config, 'num_labels', '?')} labels); point at the output of a reward stage"
            )

    # An adapter's base is a causal LM: its lm_head goes unused and the score head comes from the adapter.
    # TRL's context manager keeps transformers from reporting those two expected mismatches.
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    with suppress_seqcls_warning():
        model = AutoModelForSequenceClassification.from_pretrained(
            name, revision=revision, num_labels=1, dtype=torch.float32
        )
    tokenizer_source, tokenizer_revision = name, revision
    if adapter_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload()
        if any(os.path.exists(os.path.join(adapter_path, f)) for f in _TOKENIZER_FILES):
            tokenizer_source, tokenizer_revision = adapter_path, None
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, revision=tokenizer_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The classifier reads the score at the last token that is not padding: it must know the padding id.
    model.config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    return RewardScorer(model, tokenizer, batch_size=batch_size)
