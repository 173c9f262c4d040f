"""The evaluate stage on the tiny demo model, run in-process.

Every number the stage reports is checked against an independent computation in this file (per-row
forward passes, hand-summed log-probabilities, a token-by-token greedy loop) or against what the SFT
stage itself reported as eval/loss on the same rows. The retention test fine-tunes a model that knows
addition on subtraction, fully and with a rank-1 LoRA, and checks the full fine-tune forgets more.
"""

import json
import math
import os
import random
import re

import pytest
from trainers import cancel
from trainers.events import EventLog
from trainers.stage import EXIT_CANCELED, EXIT_FAILED, execute

IM_END = "<|im_end|>"


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


def _data(path, kind):
    return {"path": str(path), "kind": kind}


def _sft_spec(out, model, train, kind, *, config=None, adapter=None, eval_path=None):
    spec = {
        "method": "sft",
        "config": {"save_steps": 1000, **(config or {})},
        "adapter": adapter or {"type": "none"},
        "model": model if isinstance(model, dict) else {"name_or_path": model},
        "data": {"train": _data(train, kind)},
        "output_dir": str(out),
        "checkpoint_dir": os.path.join(str(out), "checkpoints"),
        "seed": 42,
    }
    if eval_path:
        spec["data"]["eval"] = _data(eval_path, kind)
    return spec


def _eval_spec(out, model, baseline, *, eval_data=None, retention=None, config=None, reward_model=None):
    """An evaluate stage spec; ``eval_data``/``retention`` are (path, kind)."""
    config = dict(config or {})
    aux = {"baseline": baseline if isinstance(baseline, dict) else {"name_or_path": baseline}}
    if reward_model:
        config["reward_model_stage"] = "rm"
        aux["reward_model"] = {"name_or_path": reward_model}
    data = {}
    if eval_data:
        data["eval"] = _data(*eval_data)
    if retention:
        data["retention"] = _data(*retention)
    return {
        "method": "evaluate",
        "config": config,
        "model": model if isinstance(model, dict) else {"name_or_path": model},
        "data": data,
        "aux_models": aux,
        "output_dir": str(out),
        "checkpoint_dir": os.path.join(str(out), "checkpoints"),
        "seed": 42,
    }


def _write_jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return str(path)


def _read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _finished(log: EventLog) -> dict:
    return log.of("finished")[0]


# --- independent computations (plain transformers and torch, nothing from the code under test) ----------


class Hand:
    """A model loaded with transformers directly, measured one row at a time."""

    def __init__(self, model_dir, adapter_dir=None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        if adapter_dir:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter_dir).eval()
        self.tok = AutoTokenizer.from_pretrained(model_dir)

    def _logps(self, ids):
        with self.torch.no_grad():
            logits = self.model(input_ids=self.torch.tensor([ids])).logits[0].double()
        return self.torch.log_softmax(logits, dim=-1)

    def answer_logp(self, prompt: str, answer: str) -> tuple[float, int]:
        """log p(answer + end-of-sequence | prompt), summed, and the number of those tokens."""
        prompt_ids = self.tok(prompt)["input_ids"]
        ids = self.tok(prompt + answer + self.tok.eos_token)["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids  # digits are single tokens: the prompt is a prefix
        logps = self._logps(ids)
        positions = range(len(prompt_ids), len(ids))
        return sum(logps[t - 1, ids[t]].item() for t in positions), len(positions)

    def chat_logp(self, messages) -> tuple[float, int]:
        """log p of each assistant turn's content and its end-of-turn token, from the rendered template."""
        text = self.tok.apply_chat_template(messages, tokenize=False)
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        logps = self._logps(ids)
        total, count = 0.0, 0
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix = self.tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            start = len(self.tok(prefix, add_special_tokens=False)["input_ids"])
            end = len(self.tok(prefix + message["content"] + IM_END, add_special_tokens=False)["input_ids"])
            assert ids[:end] == self.tok(prefix + message["content"] + IM_END, add_special_tokens=False)["input_ids"]
            total += sum(logps[t - 1, ids[t]].item() for t in range(start, end))
            count += end - start
        return total, count

    def greedy(self, prompt: str, max_new_tokens: int) -> str:
        """Token-by-token greedy decoding without a cache, stopping at end-of-sequence or end-of-turn."""
        stop = {self.tok.eos_token_id, self.tok.convert_tokens_to_ids(IM_END)}
        ids = self.tok(prompt)["input_ids"]
        new = []
        for _ in range(max_new_tokens):
            with self.torch.no_grad():
                logits = self.model(input_ids=self.torch.tensor([ids + new])).logits[0, -1]
            token = int(logits.argmax())
            if token in stop:
                break
            new.append(token)
        return self.tok.decode(new, skip_special_tokens=True)


def _loss(hand: Hand, rows) -> float:
    found = [hand.answer_logp(r["prompt"], r["completion"]) for r in rows]
    return -sum(s for s, _ in found) / sum(n for _, n in found)


def _last_int(text: str):
    numbers = re.findall(r"-?\d+", text)
    return int(numbers[-1]) if numbers else None


# --- models -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(demo_kit, tmp_path_factory):
    """The random demo model after a quick SFT on addition (100 steps, batch 32): it knows some addition.
    The 20 held-out rows fit one eval batch, so SFT's eval/loss is the token-weighted mean NLL."""
    out = tmp_path_factory.mktemp("base")
    log = _run(
        _sft_spec(
            out,
            demo_kit["model"],
            demo_kit["data"]["train"],
            "prompt_completion",
            config={"per_device_train_batch_size": 32},
            eval_path=demo_kit["data"]["eval"],
        )
    )
    return {"path": os.path.join(str(out), "model"), "summary": _finished(log)["summary"]}


@pytest.fixture(scope="module")
def reference_run(base, demo_kit, tmp_path_factory):
    """Held-out reference rows (greedy answers) and the addition eval rows as retention set."""
    out = tmp_path_factory.mktemp("eval-reference")
    spec = _eval_spec(
        out,
        base["path"],
        demo_kit["model"],
        eval_data=(demo_kit["data"]["reference"], "reference"),
        retention=(demo_kit["data"]["eval"], "prompt_completion"),
        config={"max_new_tokens": 8, "batch_size": 7},
    )
    return {"log": _run(spec), "out": str(out)}


def test_reference_and_loss_metrics_match_an_independent_computation(reference_run, base, demo_kit):
    summary = _finished(reference_run["log"])["summary"]
    metrics = summary["metrics"]
    with open(os.path.join(reference_run["out"], "report", "report.json")) as fh:
        report = json.load(fh)
    reference = _read_jsonl(demo_kit["data"]["reference"])
    retention = _read_jsonl(demo_kit["data"]["eval"])

    for prefix, model_dir in (("", base["path"]), ("baseline", demo_kit["model"])):
        hand = Hand(model_dir)
        role = "model" if not prefix else "baseline"
        answers = [hand.greedy(r["prompt"], 8) for r in reference]
        exact = sum(a.strip() == r["answer"] for a, r in zip(answers, reference)) / len(reference)
        numeric = sum(_last_int(a) == int(r["answer"]) for a, r in zip(answers, reference)) / len(reference)
        predictions = report["datasets"]["eval"][role]["predictions"]
        assert [p["predicted"] for p in predictions] == answers
        held_out_key = "eval/" if not prefix else "baseline/"
        assert metrics[held_out_key + "exact_match"] == pytest.approx(exact, abs=1e-9)
        assert metrics[held_out_key + "accuracy"] == pytest.approx(numeric, abs=1e-9)
        assert metrics[held_out_key + "mean_reward"] == pytest.approx(numeric, abs=1e-9)  # numeric_match is 0/1

        loss = _loss(hand, retention)
        retention_key = "retention/" if not prefix else "retention_baseline/"
        assert metrics[retention_key + "loss"] == pytest.approx(loss, abs=1e-4)
        assert metrics[retention_key + "perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
        if role == "model":
            print(f"held-out exact match {exact:.2f}, accuracy {numeric:.2f}; eval-rows loss {loss:.4f}")
            assert 0 < exact < 1  # the model knows some addition, not all of it
            # The same rows, the same number as the SFT stage's own final eval/loss.
            assert metrics["retention/loss"] == pytest.approx(base["summary"]["eval/loss"], abs=1e-4)

    assert summary["target"] == {
        "dataset": "reference",
        "metric": "accuracy",
        "higher_is_better": True,
        "rows": 20,
        "model": metrics["eval/accuracy"],
        "baseline": metrics["baseline/accuracy"],
        "gain": pytest.approx(metrics["eval/accuracy"] - metrics["baseline/accuracy"]),
    }
    assert summary["retention"] == {
        "dataset": "prompt_completion",
        "metric": "loss",
        "higher_is_better": False,
        "rows": 20,
        "model": metrics["retention/loss"],
        "baseline": metrics["retention_baseline/loss"],
        "forgetting": pytest.approx(metrics["retention/loss"] - metrics["retention_baseline/loss"]),
    }
    assert metrics["gain"] == summary["target"]["gain"] > 0
    assert metrics["forgetting"] == summary["retention"]["forgetting"] < 0  # trained on addition: it got better


def test_event_stream_and_report_files(reference_run):
    log = reference_run["log"]
    kinds = [e["event"] for e in log.events]
    assert kinds[0] == "started" and kinds[-2:] == ["artifact", "finished"]
    assert set(kinds) == {"started", "progress", "metrics", "artifact", "finished"}
    started = log.events[0]
    # model and baseline: held-out set, retention set, samples
    assert started["total_steps"] == 6 and started["step"] == 0 and started["total_params"] > 100_000
    phases = [e["phase"] for e in log.of("progress") if "phase" in e]
    assert phases == [
        "model: eval",
        "model: retention",
        "model: samples",
        "baseline: eval",
        "baseline: retention",
        "baseline: samples",
    ]
    assert [e["step"] for e in log.of("progress") if "phase" in e] == [1, 2, 3, 4, 5, 6]
    (metrics_event,) = log.of("metrics")
    finished = _finished(log)
    assert metrics_event["step"] == 0 and metrics_event["metrics"] == finished["summary"]["metrics"]

    report_dir = os.path.join(reference_run["out"], "report")
    assert finished["outputs"] == {"kind": "report", "path": report_dir}
    assert log.of("artifact")[0]["path"] == report_dir
    assert sorted(os.listdir(reference_run["out"])) == ["report"]  # no temp dir left behind
    assert sorted(os.listdir(report_dir)) == ["generations.json", "report.json"]
    with open(os.path.join(report_dir, "report.json")) as fh:
        report = json.load(fh)
    assert report["metrics"] == finished["summary"]["metrics"]
    assert (
        report["datasets"]["retention"]["rows"] == 20 and report["datasets"]["retention"]["kind"] == "prompt_completion"
    )
    # Default samples: the first 8 held-out prompts, answered greedily by both models.
    with open(os.path.join(report_dir, "generations.json")) as fh:
        table = json.load(fh)
    assert table["columns"] == ["prompt", "model", "baseline"]
    predictions = report["datasets"]["eval"]["model"]["predictions"]
    assert [row[0] for row in table["data"]] == [p["prompt"] for p in predictions[:8]]
    assert [row[1] for row in table["data"]] == [p["predicted"] for p in predictions[:8]]
    assert finished["summary"]["samples"] == [dict(zip(table["columns"], row)) for row in table["data"]]
    assert len(json.dumps(finished["summary"])) < 10_000


def test_chat_loss_matches_sft_eval_loss_and_a_hand_computation(demo_kit, tmp_path):
    sft_out = tmp_path / "chat-sft"
    sft_log = _run(
        _sft_spec(
            sft_out,
            demo_kit["model"],
            demo_kit["data"]["chat"],
            "chat",
            config={"per_device_train_batch_size": 32, "max_steps": 30},
            eval_path=demo_kit["data"]["chat_eval"],
        )
    )
    model = os.path.join(str(sft_out), "model")
    out = tmp_path / "eval"
    log = _run(
        _eval_spec(
            out,
            model,
            demo_kit["model"],
            eval_data=(demo_kit["data"]["chat_eval"], "chat"),
            config={"sample_count": 2, "max_new_tokens": 4},
        )
    )
    metrics = _finished(log)["summary"]["metrics"]
    rows = _read_jsonl(demo_kit["data"]["chat_eval"])
    for key, model_dir in (("eval/loss", model), ("baseline/loss", demo_kit["model"])):
        hand = Hand(model_dir)
        found = [hand.chat_logp(r["messages"]) for r in rows]
        assert metrics[key] == pytest.approx(-sum(s for s, _ in found) / sum(n for _, n in found), abs=1e-4)
    assert metrics["eval/loss"] == pytest.approx(_finished(sft_log)["summary"]["eval/loss"], abs=1e-4)
    # Chat prompts are shown as role: content lines.
    assert _finished(log)["summary"]["samples"][0]["prompt"] == "user: " + rows[0]["messages"][0]["content"]


# --- preference data, a reward model and fixed sample prompts ----------------------------------------------


@pytest.fixture(scope="module")
def reward_model(base, demo_kit, tmp_path_factory) -> str:
    """A reward model (full, a few steps from the SFT model): cheap, and all the scoring path needs."""
    out = tmp_path_factory.mktemp("rm")
    spec = _sft_spec(out, base["path"], demo_kit["data"]["prefs"], "preference", config={"max_steps": 10})
    spec["method"] = "reward"
    _run(spec)
    return os.path.join(str(out), "model")


SAMPLE_PROMPTS = ["3+4=", "9+9=", "12+5="]


@pytest.fixture(scope="module")
def preference_run(base, reward_model, demo_kit, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-preference")
    spec = _eval_spec(
        out,
        base["path"],
        demo_kit["model"],
        eval_data=(demo_kit["data"]["prefs_eval"], "preference"),
        config={"max_new_tokens": 6, "sample_prompts": "\n".join(SAMPLE_PROMPTS) + "\n\n"},
        reward_model=reward_model,
    )
    return {"log": _run(spec), "out": str(out)}


def test_preference_metrics_match_hand_summed_log_probabilities(preference_run, base, demo_kit):
    metrics = _finished(preference_run["log"])["summary"]["metrics"]
    pairs = _read_jsonl(demo_kit["data"]["prefs_eval"])
    for prefix, model_dir in (("eval/", base["path"]), ("baseline/", demo_kit["model"])):
        hand = Hand(model_dir)
        diffs = [
            hand.answer_logp(p["prompt"], p["chosen"])[0] - hand.answer_logp(p["prompt"], p["rejected"])[0]
            for p in pairs
        ]
        assert metrics[prefix + "preference_accuracy"] == pytest.approx(
            sum(d > 0 for d in diffs) / len(diffs), abs=1e-9
        )
        assert metrics[prefix + "logp_margin"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-4)
    target = _finished(preference_run["log"])["summary"]["target"]
    assert target["metric"] == "preference_accuracy" and target["rows"] == len(pairs)
    assert metrics["gain"] == pytest.approx(
        metrics["eval/preference_accuracy"] - metrics["baseline/preference_accuracy"]
    )
    assert metrics["gain"] > 0
    assert _finished(preference_run["log"])["summary"]["retention"] is None
    assert "forgetting" not in metrics


def test_reward_model_scores_and_fixed_sample_prompts(preference_run, base, reward_model, demo_kit):
    from trainers.scoring import load_reward_model

    finished = _finished(preference_run["log"])
    metrics = finished["summary"]["metrics"]
    pairs = _read_jsonl(demo_kit["data"]["prefs_eval"])
    prompts = list(dict.fromkeys(p["prompt"] for p in pairs))
    scorer = load_reward_model(reward_model, device="cpu")

    hands = {"model": Hand(base["path"]), "baseline": Hand(demo_kit["model"])}
    for role, key in (("model", "eval/reward_score"), ("baseline", "baseline/reward_score")):
        answers = [hands[role].greedy(p, 6) for p in prompts]
        scores = scorer.score_pairs(prompts, answers)
        assert metrics[key] == pytest.approx(sum(scores) / len(scores), abs=1e-4)
    chosen = scorer.score_pairs([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    rejected = scorer.score_pairs([p["prompt"] for p in pairs], [p["rejected"] for p in pairs])
    assert metrics["eval/reward_accuracy"] == pytest.approx(
        sum(c > r for c, r in zip(chosen, rejected)) / len(pairs), abs=1e-9
    )
    assert "baseline/reward_accuracy" not in metrics  # the reward model ranks the data: no model in it

    # The fixed prompt list (blank lines skipped), greedy answers of both models, as an MLflow table.
    with open(os.path.join(preference_run["out"], "report", "generations.json")) as fh:
        table = json.load(fh)
    expected = [[p, hands["model"].greedy(p, 6), hands["baseline"].greedy(p, 6)] for p in SAMPLE_PROMPTS]
    assert table == {"columns": ["prompt", "model", "baseline"], "data": expected}
    assert finished["summary"]["samples"] == [{"prompt": p, "model": m, "baseline": b} for p, m, b in expected]
    with open(os.path.join(preference_run["out"], "report", "report.json")) as fh:
        report = json.load(fh)
    assert report["reward_model"]["name_or_path"] == reward_model
    assert len(report["reward"]["model_scores"]) == len(prompts)


# --- retention: full fine-tuning forgets more than a rank-1 LoRA --------------------------------------


@pytest.fixture(scope="module")
def subtraction_files(tmp_path_factory) -> dict[str, str]:
    rows = [{"prompt": f"{a}-{b}=", "completion": str(a - b)} for a in range(10) for b in range(a + 1)]
    random.Random(0).shuffle(rows)
    root = tmp_path_factory.mktemp("subtraction")
    return {
        "train": _write_jsonl(root / "train.jsonl", rows[:45]),
        "eval": _write_jsonl(root / "eval.jsonl", rows[45:]),
    }


def test_retention_full_fine_tune_forgets_more_than_rank_1_lora(base, subtraction_files, demo_kit, tmp_path):
    """The addition model, fine-tuned on subtraction (45 rows, 40 epochs: it overfits the narrow task),
    evaluated on held-out subtraction with the addition training rows as retention set, against itself."""
    found = {}
    for name, adapter in (("full", {"type": "none"}), ("lora", {"type": "lora", "r": 1, "alpha": 2})):
        sft = _run(
            _sft_spec(
                tmp_path / f"{name}-sft", base["path"], subtraction_files["train"], "prompt_completion", adapter=adapter
            )
        )
        outputs = _finished(sft)["outputs"]
        model = (
            {"name_or_path": base["path"], "adapter_path": outputs["path"]}
            if outputs["kind"] == "adapter"
            else {"name_or_path": outputs["path"]}
        )
        log = _run(
            _eval_spec(
                tmp_path / f"{name}-eval",
                model,
                base["path"],
                eval_data=(subtraction_files["eval"], "prompt_completion"),
                retention=(demo_kit["data"]["train"], "prompt_completion"),
                config={"sample_count": 0},
            )
        )
        found[name] = _finished(log)["summary"]
        if name == "lora":  # the adapter is applied as it is: the numbers match the base model plus the adapter
            hand = Hand(base["path"], outputs["path"])
            assert found[name]["retention"]["model"] == pytest.approx(
                _loss(hand, _read_jsonl(demo_kit["data"]["train"])), abs=1e-4
            )
    full, lora = found["full"], found["lora"]
    print(
        f"forgetting (addition loss increase, nats/token): full {full['retention']['forgetting']:.3f}, "
        f"LoRA r=1 {lora['retention']['forgetting']:.3f}; subtraction gain: full {full['target']['gain']:.3f}, "
        f"LoRA r=1 {lora['target']['gain']:.3f}"
    )
    for summary in (full, lora):
        assert summary["target"]["gain"] > 0.5  # both learned the new task
        assert summary["retention"]["metric"] == "loss" and summary["retention"]["rows"] == 80
        assert summary["metrics"]["forgetting"] == summary["retention"]["forgetting"]
        assert summary["samples"] == []
    assert full["retention"]["forgetting"] > 1.0
    assert full["retention"]["forgetting"] > lora["retention"]["forgetting"] + 0.5
    # The LoRA model was evaluated with its adapter applied: it differs from the base it was compared with.
    assert lora["retention"]["forgetting"] > 0.05


# --- refusals -----------------------------------------------------------------------------------------


def test_data_evaluate_cannot_read_is_refused_with_a_clear_message(demo_kit, tmp_path):
    feedback = (demo_kit["data"]["feedback"], "feedback")

    log = EventLog()
    assert (
        execute(_eval_spec(tmp_path / "a", demo_kit["model"], demo_kit["model"], eval_data=feedback), log)
        == EXIT_FAILED
    )
    error = log.of("failed")[0]["error"]
    assert "data.eval.kind" in error and "feedback" in error and "preference" in error, error

    log = EventLog()
    spec = _eval_spec(
        tmp_path / "b",
        demo_kit["model"],
        demo_kit["model"],
        eval_data=(demo_kit["data"]["reference"], "reference"),
        retention=feedback,
    )
    assert execute(spec, log) == EXIT_FAILED
    error = log.of("failed")[0]["error"]
    assert (
        "data.retention: evaluate reads prompt_completion, chat, reference, preference data, not 'feedback'" in error
    ), error
    assert [e["event"] for e in log.events] == ["failed"]  # refused before any model was loaded

    log = EventLog()
    assert execute(_eval_spec(tmp_path / "c", demo_kit["model"], demo_kit["model"]), log) == EXIT_FAILED
    assert "nothing to measure" in log.of("failed")[0]["error"]
    for name in ("a", "b", "c"):
        assert not os.path.exists(tmp_path / name / "report")


def test_cancel_before_start(demo_kit, tmp_path):
    cancel.request_cancel()
    log = EventLog()
    spec = _eval_spec(
        tmp_path, demo_kit["model"], demo_kit["model"], eval_data=(demo_kit["data"]["eval"], "prompt_completion")
    )
    assert execute(spec, log) == EXIT_CANCELED
    assert [e["event"] for e in log.events] == ["canceled"] and log.events[0]["step"] == 0
    assert not os.path.exists(tmp_path / "report")


def test_cancel_between_phases_and_max_rows(demo_kit, tmp_path):
    """A cancel request during the first phase stops the stage before the next one; max_rows caps the rows."""

    class CancelAfterFirstPhase(EventLog):
        def emit(self, event, **fields):
            record = super().emit(event, **fields)
            if event == "progress" and fields.get("phase"):
                cancel.request_cancel()
            return record

    spec = _eval_spec(
        tmp_path / "canceled",
        demo_kit["model"],
        demo_kit["model"],
        eval_data=(demo_kit["data"]["eval"], "prompt_completion"),
    )
    log = CancelAfterFirstPhase()
    assert execute(spec, log) == EXIT_CANCELED
    assert [e["event"] for e in log.events] == ["started", "progress", "canceled"]
    assert log.of("canceled")[0]["step"] == 1
    assert not os.path.exists(tmp_path / "canceled" / "report")

    cancel.reset()
    spec = _eval_spec(
        tmp_path / "capped",
        demo_kit["model"],
        demo_kit["model"],
        eval_data=(demo_kit["data"]["eval"], "prompt_completion"),
        config={"max_rows": 5},
    )
    summary = _finished(_run(spec))["summary"]
    hand = Hand(demo_kit["model"])
    assert summary["target"]["rows"] == 5 and summary["target"]["gain"] == 0  # the model is its own baseline
    assert summary["metrics"]["eval/loss"] == pytest.approx(
        _loss(hand, _read_jsonl(demo_kit["data"]["eval"])[:5]), abs=1e-4
    )
    assert len(summary["samples"]) == 5  # sample_count 8, but only 5 prompts were read


def test_chat_scoring_without_generation_markers_finds_the_assistant_turns(demo_kit):
    """A chat template without {% generation %} markers: the assistant turns are found turn by turn and
    cover the same tokens (plus the line break the template writes after each turn)."""
    from trainers.measures import chat_sequence
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_kit["model"])
    messages = [
        {"role": "system", "content": "Add."},
        {"role": "user", "content": "3+4="},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "12+1="},
        {"role": "assistant", "content": "13"},
    ]
    ids, marked = chat_sequence(tok, messages)
    tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    same_ids, found = chat_sequence(tok, messages)
    assert same_ids == ids
    assert tok.decode([t for t, m in zip(ids, marked) if m]) == "7<|im_end|>13<|im_end|>"
    assert tok.decode([t for t, m in zip(ids, found) if m]) == "7<|im_end|>\n13<|im_end|>\n"


def test_summary_sample_texts_are_cut():
    from trainers.methods.evaluate import SAMPLE_TEXT_LIMIT, _clip

    assert _clip("x" * 10) == "x" * 10
    cut = _clip("y" * (SAMPLE_TEXT_LIMIT + 100))
    assert len(cut) == SAMPLE_TEXT_LIMIT and cut.endswith("...")
