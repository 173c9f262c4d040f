"""The evaluate stage: measure a model and its baseline on held-out data, measure what the model forgot on a
retention set, and store sample generations (docs/evaluation.md).

Nothing is trained. The model under test is ``spec.model`` (an adapter in ``adapter_path`` is applied, not
merged, so prompt-tuning adapters can be evaluated too) and the baseline is ``spec.aux_models["baseline"]``
(the run's base model, or the earlier stage that ``config.baseline_stage`` names). They are loaded one after
the other, never both at once. ``spec.aux_models["reward_model"]`` (optional, a reward stage's output) scores
the models' answers and the preference pairs.

By the kind of the data (held-out ``data.eval`` and retention ``data.retention`` alike):

- prompt_completion, chat: ``loss`` (mean negative log-likelihood per scored token: the completion and its
  end-of-sequence token, or the assistant turns; tokenized as the SFT stage trains) and ``perplexity``;
- reference: greedy answers scored by GRPO's reward functions: ``exact_match``, ``accuracy`` (the share that
  ``config.accuracy_reward`` scores 1) and ``mean_reward`` (its mean);
- preference: ``preference_accuracy`` (the share of pairs whose chosen answer is more likely than the
  rejected one) and ``logp_margin`` (the mean log-probability difference, nats);
- with a reward model, on the held-out set: ``reward_score`` (the mean score of each model's greedy answers
  to the prompts) and, for preference data, ``reward_accuracy`` (the share of pairs the reward model ranks
  right; it does not depend on the model under test).

Events: ``started`` (total_steps = the number of phases), ``progress`` after each phase (and at most about
once a second inside one), one ``metrics`` event at step 0, ``artifact`` (the report) and the result.
"""

import gc
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..cancel import cancel_requested
from ..data import read_rows
from ..events import Events
from ..measures import context_length, generate_answers, load_model, measure
from ..metrics import EVAL_KINDS, PRIMARY_METRICS
from ..rewards import completion_text
from ..stage_spec import DataFile, ModelRef, StageSpec
from .common import publish_dir, quiet_progress_bars, seed_everything

__all__ = ["run", "EVAL_KINDS", "PRIMARY_METRICS", "SAMPLE_TEXT_LIMIT", "SUMMARY_SAMPLES"]

# The summary is stored on a database row: it keeps the first SUMMARY_SAMPLES samples, each text cut to
# SAMPLE_TEXT_LIMIT characters (the report files keep them all, whole).
SAMPLE_TEXT_LIMIT = 500
SUMMARY_SAMPLES = 32

# Metric name prefixes: (data role, model role) -> prefix.
_PREFIX = {
    ("eval", "model"): "eval/",
    ("eval", "baseline"): "baseline/",
    ("retention", "model"): "retention/",
    ("retention", "baseline"): "retention_baseline/",
}


@dataclass
class _Data:
    role: str  # "eval" (held-out) or "retention"
    file: DataFile
    rows: list[dict[str, Any]]  # the first max_rows rows
    total_rows: int

    @property
    def kind(self) -> str:
        return self.file.kind


def _read(file: DataFile | None, role: str, max_rows: int) -> _Data | None:
    if file is None:
        return None
    if file.kind not in EVAL_KINDS:
        raise ValueError(f"data.{role}: evaluate reads {', '.join(EVAL_KINDS)} data, not {file.kind!r} ({file.path})")
    rows = read_rows(file)
    return _Data(role=role, file=file, rows=rows[:max_rows] if max_rows else rows, total_rows=len(rows))


def _key(prompt: Any) -> str:
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def _row_prompt(row: dict[str, Any], kind: str) -> Any:
    if kind == "chat":
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return messages[:last] or None  # a conversation that opens with the assistant has no prompt
    return row["prompt"]


def _prompts(data: _Data) -> list[Any]:
    """The distinct prompts of the rows, in file order (conversations for chat rows)."""
    seen, prompts = set(), []
    for row in data.rows:
        prompt = _row_prompt(row, data.kind)
        if prompt is None or _key(prompt) in seen:
            continue
        seen.add(_key(prompt))
        prompts.append(prompt)
    return prompts


def _display(prompt: Any) -> str:
    """A prompt as text for the samples table: a conversation as ``role: content`` lines."""
    if isinstance(prompt, list):
        return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    return str(prompt)


def _sample_prompts(cfg, held_out: _Data | None, retention: _Data | None) -> list[tuple[str, Any]]:
    """``(display text, prompt)`` for the sample generations: the config's lines (wrapped as a user turn
    when the data is chat), else the first sample_count prompts of the held-out set (or, without one, of the
    retention set)."""
    source = held_out or retention
    lines = [line.rstrip("\r") for line in (cfg.sample_prompts or "").split("\n")]
    lines = [line for line in lines if line.strip()]
    if lines:
        chat = source is not None and source.kind == "chat"
        return [(line, [{"role": "user", "content": line}] if chat else line) for line in lines]
    if source is None or cfg.sample_count == 0:
        return []
    return [(_display(p), p) for p in _prompts(source)[: cfg.sample_count]]


class _Canceled(Exception):
    """A cancel request (SIGTERM) seen between phases or between two batches of one."""


class _Progress:
    """``progress`` events: one when a phase ends, and at most about once a second while one runs (so the
    supervisor sees a long evaluation is alive). Between batches and phases it also checks for a cancel
    request (:class:`_Canceled`)."""

    def __init__(self, events: Events, total: int, interval_s: float = 1.0):
        self.events, self.total, self.interval_s = events, total, interval_s
        self.step = 0
        self._last = time.monotonic()

    def _emit(self, phase: str | None = None) -> None:
        self._last = time.monotonic()
        fields = {"phase": phase} if phase else {}
        self.events.emit("progress", step=self.step, total_steps=self.total, epoch=0.0, **fields)

    def check_cancel(self) -> None:
        if cancel_requested():
            raise _Canceled()

    def tick(self) -> None:
        self.check_cancel()
        if time.monotonic() - self._last >= self.interval_s:
            self._emit()

    def done(self, phase: str) -> None:
        self.step += 1
        self._emit(phase)


class _Measurer:
    """One loaded model: its metrics on a dataset, and its greedy answers (each prompt generated once)."""

    def __init__(self, model, tokenizer, cfg, progress: _Progress):
        self.model, self.tokenizer, self.cfg, self.progress = model, tokenizer, cfg, progress
        self.max_length = context_length(model, tokenizer)
        self._answers: dict[str, str] = {}

    def answers(self, prompts: list[Any]) -> list[str]:
        missing, seen = [], set()
        for prompt in prompts:
            key = _key(prompt)
            if key not in self._answers and key not in seen:
                seen.add(key)
                missing.append(prompt)
        if missing:
            found = generate_answers(
                self.model,
                self.tokenizer,
                missing,
                max_new_tokens=self.cfg.max_new_tokens,
                batch_size=self.cfg.batch_size,
                on_batch=self.progress.tick,
            )
            self._answers.update((_key(p), a) for p, a in zip(missing, found))
        return [self._answers[_key(p)] for p in prompts]

    def measure(self, data: _Data) -> tuple[dict[str, float], dict[str, Any]]:
        """``(metrics, details)`` of this model on ``data`` (details: per-row results for the report)."""
        metrics, details = measure(
            self.model,
            self.tokenizer,
            data.rows,
            data.kind,
            accuracy_reward=self.cfg.accuracy_reward,
            max_new_tokens=self.cfg.max_new_tokens,
            batch_size=self.cfg.batch_size,
            answer=self.answers,
            on_batch=self.progress.tick,
        )
        if details.get("tokens") == 0:
            raise ValueError(
                f"data.{data.role}: no completion tokens to score in {data.file.path} "
                f"(are the rows longer than the model's {self.max_length} tokens?)"
            )
        return metrics, details


def _release_memory() -> None:
    """Give back the memory of models no longer referenced (before the next one is loaded)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _comparison(model_value: float, baseline_value: float, higher_is_better: bool) -> float:
    """How much better the model is than the baseline (positive: better), in the metric's units."""
    return model_value - baseline_value if higher_is_better else baseline_value - model_value


def _clip(text: Any, limit: int = SAMPLE_TEXT_LIMIT) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load(ref: ModelRef):
    return load_model(ref.name_or_path, ref.adapter_path, revision=ref.revision, device="auto")


def _reward_metrics(
    reward_ref: ModelRef,
    held_out: _Data,
    generated: dict[str, list[str]],
    cfg,
    metrics: dict[str, float],
    progress: _Progress,
) -> dict[str, Any]:
    """Score both models' answers to the held-out prompts with the reward model (``reward_score``) and, for
    preference data, the pairs themselves (``reward_accuracy``); adds them to ``metrics`` and returns the
    scores for the report."""
    from ..scoring import load_reward_model

    scorer = load_reward_model(reward_ref, batch_size=cfg.batch_size)
    prompts = _prompts(held_out)
    reward: dict[str, Any] = {"model": reward_ref.as_dict(), "prompts": len(prompts)}
    for role, prefix in (("model", "eval/"), ("baseline", "baseline/")):
        scores = scorer.score_pairs(prompts, [completion_text(a) for a in generated[role]])
        metrics[prefix + "reward_score"] = sum(scores) / len(scores)
        reward[f"{role}_scores"] = scores
        progress.tick()
    if held_out.kind == "preference":
        rows = held_out.rows
        chosen = scorer.score_pairs([r["prompt"] for r in rows], [r["chosen"] for r in rows])
        rejected = scorer.score_pairs([r["prompt"] for r in rows], [r["rejected"] for r in rows])
        metrics["eval/reward_accuracy"] = sum(1 for c, r in zip(chosen, rejected) if c > r) / len(rows)
        reward["pair_margins"] = [c - r for c, r in zip(chosen, rejected)]
    return reward


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    """Evaluate; returns ``{"status": "finished", "outputs": {"kind": "report", "path"}, "summary"}`` or
    ``{"status": "canceled", "step"}``."""
    cfg = spec.config
    quiet_progress_bars()
    seed_everything(spec.seed)
    if cancel_requested():
        return {"status": "canceled", "step": 0}

    # Data first: a bad file fails before any model is loaded.
    held_out = _read(spec.eval, "eval", cfg.max_rows)
    retention = _read(spec.retention, "retention", cfg.max_rows)
    samples = _sample_prompts(cfg, held_out, retention)
    if held_out is None and retention is None and not samples:
        raise ValueError(
            "evaluate has nothing to measure: give held-out data (data.eval), a retention set (data.retention) "
            "or sample_prompts"
        )
    baseline_ref = spec.aux_models.get("baseline")
    if baseline_ref is None:
        raise ValueError("evaluate needs aux_models.baseline in the stage spec (the model to compare with)")
    reward_ref = spec.aux_models.get("reward_model")
    use_reward_model = reward_ref is not None and held_out is not None
    datasets = [d for d in (held_out, retention) if d is not None]

    roles = (("model", spec.model), ("baseline", baseline_ref))
    phases = [f"{role}: {d.role}" for role, _ in roles for d in datasets]
    phases += [f"{role}: samples" for role, _ in roles if samples]
    phases += ["reward model"] if use_reward_model else []
    progress = _Progress(events, len(phases))

    metrics: dict[str, float] = {}
    results: dict[str, dict[str, Any]] = {d.role: {} for d in datasets}  # data role -> model role -> found
    generated: dict[str, list[str]] = {}  # model role -> answers to the held-out prompts (for the reward model)
    sample_answers: dict[str, list[str]] = {}
    reward: dict[str, Any] | None = None
    try:
        for role, ref in roles:
            progress.check_cancel()
            model, tokenizer = _load(ref)
            if role == "model":
                total = sum(p.numel() for p in model.parameters())
                events.emit(
                    "started",
                    total_steps=len(phases),
                    trainable_params=0,
                    total_params=total,
                    step=0,
                    resumed_from=None,
                )
            measurer = _Measurer(model, tokenizer, cfg, progress)
            for data in datasets:
                progress.check_cancel()
                found, details = measurer.measure(data)
                if data is held_out and use_reward_model:
                    generated[role] = measurer.answers(_prompts(data))
                results[data.role][role] = {"metrics": found, **details}
                prefix = _PREFIX[(data.role, role)]
                metrics.update({prefix + name: value for name, value in found.items()})
                progress.done(f"{role}: {data.role}")
            if samples:
                progress.check_cancel()
                sample_answers[role] = measurer.answers([prompt for _, prompt in samples])
                progress.done(f"{role}: samples")
            measurer = model = tokenizer = None
            _release_memory()

        if use_reward_model:
            progress.check_cancel()
            reward = _reward_metrics(reward_ref, held_out, generated, cfg, metrics, progress)
            _release_memory()
            progress.done("reward model")
    except _Canceled:
        return {"status": "canceled", "step": progress.step}

    target = _compare(held_out, results, "gain")
    kept = _compare(retention, results, "forgetting")
    if target is not None:
        metrics["gain"] = target["gain"]
    if kept is not None:
        metrics["forgetting"] = kept["forgetting"]
    sample_rows = [
        {"prompt": display, "model": sample_answers["model"][i], "baseline": sample_answers["baseline"][i]}
        for i, (display, _) in enumerate(samples)
    ]
    events.emit("metrics", step=0, metrics=metrics)

    report = {
        "version": 1,
        "model": spec.model.as_dict(),
        "baseline": baseline_ref.as_dict(),
        "reward_model": reward_ref.as_dict() if reward_ref is not None else None,
        "config": asdict(cfg),
        "stage": spec.stage,
        "metrics": metrics,
        "target": target,
        "retention": kept,
        "datasets": {
            d.role: {
                "path": d.file.path,
                "kind": d.kind,
                "sha256": d.file.sha256,
                "rows": len(d.rows),
                "rows_in_file": d.total_rows,
                "metric": PRIMARY_METRICS[d.kind][0],
                "higher_is_better": PRIMARY_METRICS[d.kind][1],
                **results[d.role],
            }
            for d in datasets
        },
        "reward": reward,
        "samples": sample_rows,
    }
    if reward_ref is not None and not use_reward_model:
        report["notes"] = [
            "the reward model was not used: it scores answers to held-out prompts, and there is no held-out data"
        ]
    table = {
        "columns": ["prompt", "model", "baseline"],
        "data": [[r["prompt"], r["model"], r["baseline"]] for r in sample_rows],
    }

    def build(path: str) -> None:
        from ..events import jsonable

        os.makedirs(path)
        for name, content in (("report.json", report), ("generations.json", table)):
            with open(os.path.join(path, name), "w", encoding="utf-8") as fh:
                json.dump(jsonable(content), fh, indent=1, ensure_ascii=False, allow_nan=False)

    path = publish_dir(build, os.path.join(spec.output_dir, "report"))
    events.emit("artifact", name="report", path=path)
    summary = {
        "metrics": metrics,
        "target": target,
        "retention": kept,
        "samples": [{key: _clip(value) for key, value in row.items()} for row in sample_rows[:SUMMARY_SAMPLES]],
    }
    return {"status": "finished", "outputs": {"kind": "report", "path": path}, "summary": summary}


def _compare(data: _Data | None, results: dict[str, dict[str, Any]], difference: str) -> dict[str, Any] | None:
    """The primary metric of ``data`` on both models and their difference: ``gain`` (held-out; positive: the
    model is better) or ``forgetting`` (retention; positive: the model is worse, it forgot)."""
    if data is None:
        return None
    name, higher_is_better = PRIMARY_METRICS[data.kind]
    model_value = results[data.role]["model"]["metrics"][name]
    baseline_value = results[data.role]["baseline"]["metrics"][name]
    better = _comparison(model_value, baseline_value, higher_is_better)
    return {
        "dataset": data.kind,
        "metric": name,
        "higher_is_better": higher_is_better,
        "rows": len(data.rows),
        "model": model_value,
        "baseline": baseline_value,
        difference: better if difference == "gain" else -better,
    }
