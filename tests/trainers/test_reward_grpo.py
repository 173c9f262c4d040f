"""reward, grpo and distill on the tiny demo model, run in-process: each must really learn.

One quick SFT (the sft method's defaults) gives a model that knows some addition; the reward model,
GRPO and the distillation teacher start from it.
"""

import json
import math
import os

import pytest
from trainers import cancel
from trainers.demo import addition_split
from trainers.events import EventLog
from trainers.stage import execute


@pytest.fixture(autouse=True)
def _no_pending_cancel():
    cancel.reset()
    yield
    cancel.reset()


def _run(spec) -> EventLog:
    log = EventLog()
    code = execute(spec, log)
    failed = log.of("failed")
    assert not failed, failed[0]["traceback"] if failed else ""
    assert code == 0
    return log


def _spec(method, out, model, train, kind, *, config=None, adapter=None, eval_path=None, aux_models=None):
    spec = {
        "method": method,
        "config": config or {},
        "adapter": adapter or {"type": "none"},
        "model": model if isinstance(model, dict) else {"name_or_path": model},
        "data": {"train": {"path": train, "kind": kind}},
        "output_dir": str(out),
        "checkpoint_dir": os.path.join(str(out), "checkpoints"),
        "seed": 42,
    }
    if eval_path:
        spec["data"]["eval"] = {"path": eval_path, "kind": kind}
    if aux_models:
        spec["aux_models"] = aux_models
    return spec


def _series(log: EventLog, name: str) -> list[float]:
    return [e["metrics"][name] for e in log.of("metrics") if e["metrics"].get(name) is not None]


def _write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def sft_model(demo_kit, tmp_path_factory) -> str:
    """The demo model after the sft method's default run (200 steps): greedy held-out accuracy about 0.8."""
    out = tmp_path_factory.mktemp("sft")
    _run(_spec("sft", out, demo_kit["model"], demo_kit["data"]["train"], "prompt_completion"))
    return os.path.join(str(out), "model")


@pytest.fixture(scope="session")
def preference_files(tmp_path_factory) -> dict[str, str]:
    """Pairs on the training sums: the right sum chosen over one 1 or 3 away (train), and over one 2 away
    (eval: rejected answers the reward model never saw for these prompts)."""
    train_sums, _ = addition_split(0)
    root = tmp_path_factory.mktemp("prefs")

    def rows(deltas):
        return [
            {"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + d)}
            for a, b in train_sums
            for d in deltas
            if a + b + d >= 0
        ]

    return {
        "train": _write_jsonl(root / "train.jsonl", rows((-3, -1, 1, 3))),
        "eval": _write_jsonl(root / "eval.jsonl", rows((-2, 2))),
    }


@pytest.fixture(scope="session")
def reward_run(sft_model, preference_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("reward")
    spec = _spec(
        "reward",
        out,
        sft_model,
        preference_files["train"],
        "preference",
        config={"learning_rate": 1e-3, "num_train_epochs": 20, "save_steps": 1000},
        adapter={"type": "lora", "r": 16, "alpha": 32},
        eval_path=preference_files["eval"],
    )
    return {"log": _run(spec), "out": str(out)}


def test_reward_model_learns_to_rank_held_out_pairs(reward_run):
    log = reward_run["log"]
    accuracy = _series(log, "eval/accuracy")
    first_metrics = log.of("metrics")[0]
    assert first_metrics["step"] == 0 and "eval/accuracy" in first_metrics["metrics"]  # measured before training
    summary = log.of("finished")[0]["summary"]
    print(f"reward model held-out pairwise accuracy: {accuracy[0]:.3f} -> {summary['eval/accuracy']:.3f}")
    assert 0.3 <= summary["eval/accuracy_initial"] == accuracy[0] <= 0.7  # a random score head: a coin flip
    assert summary["eval/accuracy"] >= 0.8
    losses = _series(log, "train/loss")
    q = len(losses) // 4
    assert sum(losses[-q:]) / q < 0.6 * sum(losses[:q]) / q
    assert {"train/accuracy", "train/margin", "eval/margin"} <= set(summary)


def test_reward_adapter_scores_data_as_training_measured(reward_run, sft_model, preference_files):
    from trainers.scoring import load_reward_model

    outputs = reward_run["log"].of("finished")[0]["outputs"]
    assert outputs["kind"] == "adapter" and outputs["base"]["name_or_path"] == sft_model
    scorer = load_reward_model({**outputs["base"], "adapter_path": outputs["path"]})
    with open(preference_files["eval"]) as fh:
        pairs = [json.loads(line) for line in fh]
    chosen = scorer.score([p["prompt"] + p["chosen"] for p in pairs])
    rejected = scorer.score([p["prompt"] + p["rejected"] for p in pairs])
    accuracy = sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)
    assert accuracy >= 0.8
    # The summary averages per-batch accuracies; the scorer counts pairs: the two agree closely.
    assert accuracy == pytest.approx(reward_run["log"].of("finished")[0]["summary"]["eval/accuracy"], abs=0.05)
    assert scorer.score_pairs([pairs[0]["prompt"]], [pairs[0]["chosen"]]) == pytest.approx(chosen[:1], abs=1e-4)


def test_full_reward_model_is_a_scorer_and_a_language_model_is_refused(sft_model, preference_files, tmp_path):
    from trainers.scoring import RewardModelError, load_reward_model

    log = _run(
        _spec(
            "reward",
            tmp_path,
            sft_model,
            preference_files["train"],
            "preference",
            config={"max_steps": 3, "save_steps": 1000},
        )
    )
    outputs = log.of("finished")[0]["outputs"]
    assert outputs == {"kind": "model", "path": os.path.join(str(tmp_path), "model")}
    scorer = load_reward_model(outputs["path"])
    scores = scorer.score(["3+4=7", "3+4=8", "1+1=2"])
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    # Padding never changes a score: each is read at its own last real token.
    assert scorer.score(["1+1=2", "9+9=18, and then a much longer text"])[0] == pytest.approx(scores[2], abs=1e-5)
    # A tokenizer without a padding token (Llama) pads with end-of-sequence, as TRL does in training: the
    # appended end-of-sequence token then counts as padding and the score is read just before it.
    scorer.tokenizer.pad_token = scorer.tokenizer.eos_token
    scorer.model.config.pad_token_id = scorer.tokenizer.eos_token_id
    alone = scorer.score(["1+1=2"])
    assert scorer.score(["1+1=2", "9+9=18, and then a much longer text"])[0] == pytest.approx(alone[0], abs=1e-5)
    with pytest.raises(RewardModelError, match="is not a reward model"):
        load_reward_model(sft_model)


@pytest.fixture(scope="session")
def grpo_run(sft_model, demo_kit, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo")
    spec = _spec(
        "grpo",
        out,
        sft_model,
        demo_kit["data"]["reference"],
        "reference",
        config={"reward_exact_match_weight": 1.0, "max_completion_length": 4, "save_steps": 1000},
    )
    return {"log": _run(spec), "out": str(out)}


def test_grpo_raises_the_exact_match_reward(grpo_run, sft_model, demo_kit):
    log = grpo_run["log"]
    rewards = _series(log, "train/reward")
    assert len(rewards) == log.of("started")[0]["total_steps"] == 150  # 20 prompts x 8 / 32 per step x 30 epochs
    summary = log.of("finished")[0]["summary"]
    start, end = summary["train/reward_start"], summary["train/reward_end"]
    print(f"grpo mean exact-match reward (sampled, T=1): first tenth {start:.3f} -> last tenth {end:.3f}")
    assert end >= start + 0.2, (start, end)
    assert _series(log, "train/rewards/exact_match/mean") == rewards  # one reward, weight 1: the same series
    assert _series(log, "train/kl")[-1] > 0
    assert {"train/loss", "train/completions/mean_length"} <= set(summary)

    from trainers.measures import exact_match, load_model, read_prompt_answers

    pairs = read_prompt_answers(demo_kit["data"]["reference"])
    before = exact_match(*load_model(sft_model), pairs)["exact_match"]
    after = exact_match(*load_model(os.path.join(grpo_run["out"], "model")), pairs)["exact_match"]
    print(f"grpo greedy exact match on its prompts: {before:.2f} -> {after:.2f}")
    assert after >= before


def test_grpo_kl_reference_is_the_input_model_with_its_adapter_merged(demo_kit, tmp_path):
    """TRL reloads the KL reference from the model's path, which would drop an input adapter: the first step's
    KL would then be well above 0 (about 0.02 here) instead of 0 (policy and reference are the same model)."""
    sft = _run(
        _spec(
            "sft",
            tmp_path / "sft",
            demo_kit["model"],
            demo_kit["data"]["train"],
            "prompt_completion",
            config={"max_steps": 30, "save_steps": 1000},
            adapter={"type": "lora", "r": 16, "alpha": 32},
        )
    )
    adapter = sft.of("finished")[0]["outputs"]["path"]
    log = _run(
        _spec(
            "grpo",
            tmp_path / "grpo",
            {"name_or_path": demo_kit["model"], "adapter_path": adapter},
            demo_kit["data"]["reference"],
            "reference",
            config={
                "reward_length_penalty_weight": 1.0,
                "length_target": 2,
                "length_scale": 2,
                "max_steps": 2,
                "max_completion_length": 4,
                "beta": 0.04,
                "save_steps": 1000,
            },
        )
    )
    assert _series(log, "train/kl")[0] == pytest.approx(0.0, abs=1e-6)


def test_grpo_scores_with_the_reward_stage_model(reward_run, sft_model, demo_kit, tmp_path):
    outputs = reward_run["log"].of("finished")[0]["outputs"]
    spec = _spec(
        "grpo",
        tmp_path,
        sft_model,
        demo_kit["data"]["reference"],
        "reference",
        config={
            "reward_reward_model_weight": 1.0,
            "reward_model_stage": "rm",
            "reward_numeric_match_weight": 0.5,
            "max_completion_length": 4,
            "max_steps": 3,
            "eval_fraction": 0.2,
        },
        adapter={"type": "lora"},
        aux_models={"reward_model": {**outputs["base"], "adapter_path": outputs["path"]}},
    )
    log = _run(spec)
    summary = log.of("finished")[0]["summary"]
    for name in (
        "train/rewards/reward_model/mean",
        "train/rewards/numeric_match/mean",
        "eval/reward",
        "eval/reward_initial",
    ):
        assert math.isfinite(summary[name]), name
    assert summary["train/rewards/reward_model/std"] > 0  # the reward model tells the sampled answers apart
    assert log.of("finished")[0]["outputs"]["kind"] == "adapter"


def test_distill_student_converges_on_the_teacher(sft_model, demo_kit, tmp_path):
    spec = _spec(
        "distill",
        tmp_path,
        demo_kit["model"],  # an untrained student
        demo_kit["data"]["train"],
        "prompt_completion",
        config={"max_completion_length": 4, "save_steps": 1000},
        eval_path=demo_kit["data"]["eval"],
        aux_models={"teacher": {"name_or_path": sft_model}},
    )
    log = _run(spec)
    summary = log.of("finished")[0]["summary"]
    before, after = summary["eval/teacher_agreement_initial"], summary["eval/teacher_agreement"]
    print(
        f"distill held-out agreement with the teacher: {before:.2f} -> {after:.2f}; "
        f"eval divergence {summary['eval/loss_initial']:.3f} -> {summary['eval/loss']:.3f}"
    )
    assert before <= 0.1 and after >= 0.5
    assert summary["eval/loss"] < summary["eval/loss_initial"] / 4
    losses = _series(log, "train/loss")
    q = len(losses) // 4
    assert sum(losses[-q:]) / q < sum(losses[:q]) / q / 4
