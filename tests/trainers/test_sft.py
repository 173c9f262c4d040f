"""SFT on the tiny demo model, run in-process: it must really learn."""

import json
import os

import pytest
from trainers import cancel
from trainers.events import EventLog
from trainers.stage import execute


def _losses(log: EventLog) -> list[float]:
    return [e["metrics"]["train/loss"] for e in log.of("metrics") if "train/loss" in e["metrics"]]


def _run(spec) -> tuple[int, EventLog]:
    log = EventLog()
    code = execute(spec, log)
    failed = log.of("failed")
    assert not failed, failed[0]["traceback"] if failed else ""
    return code, log


@pytest.fixture(autouse=True)
def _no_pending_cancel():
    cancel.reset()
    yield
    cancel.reset()


@pytest.fixture(scope="module")
def full_run(demo_kit, tmp_path_factory):
    """Full fine-tuning with the default SFTConfig (the demo's known datapoint)."""
    out = str(tmp_path_factory.mktemp("full"))
    spec = {
        "method": "sft",
        "config": {},
        "adapter": {"type": "none"},
        "model": {"name_or_path": demo_kit["model"]},
        "data": {"train": {"path": demo_kit["data"]["train"], "format": "jsonl", "kind": "prompt_completion"}},
        "output_dir": out,
        "checkpoint_dir": os.path.join(out, "checkpoints"),
        "seed": 42,
    }
    code, log = _run(spec)
    return {"code": code, "log": log, "out": out}


@pytest.fixture(scope="module")
def lora_run(demo_kit, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("lora"))
    spec = {
        "method": "sft",
        "config": {"num_train_epochs": 20},
        "adapter": {"type": "lora", "r": 16, "alpha": 32, "target_modules": "all-linear"},
        "model": {"name_or_path": demo_kit["model"]},
        "data": {"train": {"path": demo_kit["data"]["train"], "format": "jsonl", "kind": "prompt_completion"}},
        "output_dir": out,
        "checkpoint_dir": os.path.join(out, "checkpoints"),
        "seed": 42,
    }
    code, log = _run(spec)
    return {"code": code, "log": log, "out": out}


def _exact_match(demo_kit, model_dir, adapter_dir=None) -> float:
    from trainers.measures import exact_match, load_model, read_prompt_answers

    model, tokenizer = load_model(model_dir, adapter_dir)
    return exact_match(model, tokenizer, read_prompt_answers(demo_kit["data"]["reference"]))["exact_match"]


def test_full_sft_lowers_loss_and_learns_held_out_addition(full_run, demo_kit):
    log = full_run["log"]
    assert full_run["code"] == 0
    losses = _losses(log)
    assert len(losses) >= 50  # logging_steps=1 by default: a real curve
    assert losses[-1] < losses[0] / 4, (losses[0], losses[-1])

    base = _exact_match(demo_kit, demo_kit["model"])
    trained = _exact_match(demo_kit, os.path.join(full_run["out"], "model"))
    print(f"held-out exact match: base {base:.2f} -> trained {trained:.2f}")
    assert base < 0.2
    assert trained >= 0.5


def test_full_sft_event_stream(full_run):
    events = full_run["log"].events
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert kinds[-2] == "artifact"
    assert set(kinds) <= {"started", "progress", "metrics", "checkpoint", "artifact", "finished"}

    started = events[0]
    assert started["total_steps"] == 200  # 80 rows / 16 per batch x 40 epochs
    assert started["trainable_params"] == started["total_params"] > 100_000

    steps = [e["step"] for e in events if e["event"] in ("progress", "metrics")]
    assert steps == sorted(steps)
    progress = full_run["log"].of("progress")
    assert progress[-1]["step"] == progress[-1]["total_steps"] == 200
    metric_names = set().union(*(e["metrics"] for e in full_run["log"].of("metrics")))
    assert {"train/loss", "train/learning_rate", "train/grad_norm"} <= metric_names
    assert all(name.startswith(("train/", "eval/")) for name in metric_names)
    assert [e["step"] for e in full_run["log"].of("checkpoint")] == [100, 200]

    finished = events[-1]
    path = os.path.join(full_run["out"], "model")
    assert finished["outputs"] == {"kind": "model", "path": path}
    assert events[-2] == {**events[-2], "name": "model", "path": path}
    assert finished["summary"]["train/loss"] < 1.0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert os.path.exists(os.path.join(path, name)), name
    with open(os.path.join(path, "config.json")) as fh:
        assert json.load(fh)["use_cache"] is True  # ready for fast generation
    json.dumps(events)  # the whole stream is plain JSON


def test_lora_sft_lowers_loss_and_writes_adapter(lora_run):
    assert lora_run["code"] == 0
    losses = _losses(lora_run["log"])
    assert losses[-1] < losses[0] - 0.5, (losses[0], losses[-1])

    started = lora_run["log"].of("started")[0]
    assert 0 < started["trainable_params"] < started["total_params"] / 2

    adapter = os.path.join(lora_run["out"], "adapter")
    assert os.path.exists(os.path.join(adapter, "adapter_config.json"))
    assert os.path.exists(os.path.join(adapter, "adapter_model.safetensors"))
    assert not os.path.exists(os.path.join(lora_run["out"], "model"))
    outputs = lora_run["log"].of("finished")[0]["outputs"]
    assert outputs["kind"] == "adapter" and outputs["path"] == adapter
    assert outputs["base"]["name_or_path"].endswith("model")
    with open(os.path.join(adapter, "adapter_config.json")) as fh:
        assert json.load(fh)["r"] == 16


def test_second_stage_starts_from_merged_adapter(lora_run, make_spec, demo_kit):
    adapter = os.path.join(lora_run["out"], "adapter")
    spec = make_spec(
        config={"max_steps": 10, "save_steps": 100},
        adapter={"type": "none"},
        model={"name_or_path": demo_kit["model"], "adapter_path": adapter},
    )
    code, log = _run(spec)
    assert code == 0
    first_stage_start = _losses(lora_run["log"])[0]
    # The merged adapter already knows some addition: the second stage starts well below a fresh model.
    assert _losses(log)[0] < first_stage_start - 0.5
    started = log.of("started")[0]
    assert started["trainable_params"] == started["total_params"]  # merged: plain model, fully trained
    assert os.path.exists(os.path.join(spec["output_dir"], "model", "model.safetensors"))


def test_chat_data_trains_on_assistant_turns(make_spec, demo_kit):
    spec = make_spec(data="chat", eval_data="chat_eval", config={"max_steps": 40, "eval_steps": 20})
    code, log = _run(spec)
    assert code == 0
    losses = _losses(log)
    assert losses[-1] < losses[0] / 2
    evals = [e for e in log.of("metrics") if "eval/loss" in e["metrics"]]
    assert [e["step"] for e in evals] == [20, 40]
    assert log.of("finished")[0]["summary"]["eval/loss"] == evals[-1]["metrics"]["eval/loss"]


def test_eval_fraction_holds_out_rows_and_evaluates_at_end(make_spec):
    spec = make_spec(config={"max_steps": 5, "eval_fraction": 0.25, "save_steps": 100})
    code, log = _run(spec)
    assert code == 0
    evals = [e for e in log.of("metrics") if "eval/loss" in e["metrics"]]
    assert len(evals) == 1 and evals[0]["step"] == 5


def test_cancel_stops_at_step_end_then_resumes_from_checkpoint(make_spec):
    spec = make_spec(config={"max_steps": 8, "save_steps": 2, "save_total_limit": 5})

    class CancelAfterStep3(EventLog):
        def emit(self, event, **fields):
            record = super().emit(event, **fields)
            if event == "metrics" and fields["step"] == 3:
                cancel.request_cancel()
            return record

    log = CancelAfterStep3()
    assert execute(spec, log) == 3
    assert log.events[-1]["event"] == "canceled"
    assert log.events[-1]["step"] == 4  # the step running when the request came is finished
    assert not log.of("artifact") and not os.path.exists(os.path.join(spec["output_dir"], "model"))
    assert [e["step"] for e in log.of("checkpoint")] == [2]

    cancel.reset()
    code, resumed = _run(spec)
    assert code == 0
    started = resumed.of("started")[0]
    assert started["resumed_from"].endswith("checkpoint-2")
    assert started["step"] == 2
    assert [e["step"] for e in resumed.of("metrics")] == [3, 4, 5, 6, 7, 8]
    assert os.path.exists(os.path.join(spec["output_dir"], "model", "model.safetensors"))


def test_bad_data_row_fails_with_row_number(make_spec, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "1+2="}\n')
    spec = make_spec()
    spec["data"]["train"]["path"] = str(bad)
    log = EventLog()
    assert execute(spec, log) == 1
    (failed,) = log.events
    assert failed["event"] == "failed"
    assert "row 2: missing column 'completion'" in failed["error"]
    assert "\n" not in failed["error"]
    assert "Traceback" in failed["traceback"]


def test_eval_addition_command_agrees(full_run, demo_kit, capfd):
    from trainers.cli import main

    model_dir = os.path.join(full_run["out"], "model")
    assert main(["eval-addition", "--model", model_dir, "--data", demo_kit["data"]["reference"]]) == 0
    report = json.loads(capfd.readouterr().out)
    assert report["total"] == 20
    assert report["exact_match"] == _exact_match(demo_kit, model_dir) >= 0.5


def _collated_epoch(spec_dict) -> tuple[list[dict], object]:
    """The batches of one training epoch exactly as the SFT stage builds them (same TRL args, data, tokenizer)."""
    from trainers.data import load_dataset
    from trainers.methods.common import load_model_and_tokenizer
    from trainers.methods.sft import trl_args
    from trainers.stage_spec import parse_spec
    from trl import SFTTrainer

    spec = parse_spec(spec_dict)
    model, tokenizer = load_model_and_tokenizer(spec.model)
    trainer = SFTTrainer(
        model=model,
        args=trl_args(spec, has_eval=False),
        train_dataset=load_dataset(spec.train),
        processing_class=tokenizer,
    )
    return list(trainer.get_train_dataloader()), tokenizer


def test_packing_pads_fewer_tokens_and_learns_alike(make_spec, tmp_path):
    # Demo examples are ~7 tokens: 32-token packs hold ~4, so 4 packs per step see about the 16 rows of a plain batch.
    plain = make_spec(
        config={"max_length": 32, "per_device_train_batch_size": 16, "num_train_epochs": 4}, out=str(tmp_path / "plain")
    )
    packed = make_spec(
        config={"max_length": 32, "per_device_train_batch_size": 4, "num_train_epochs": 4, "packing": True},
        out=str(tmp_path / "packed"),
    )

    counts = {}
    for name, spec in (("plain", plain), ("packed", packed)):
        batches, tokenizer = _collated_epoch(spec)
        pad = tokenizer.pad_token_id
        counts[name] = {
            "padded": sum(int((b["input_ids"] == pad).sum()) for b in batches),
            "real": sum(int((b["input_ids"] != pad).sum()) for b in batches),
            "batches": len(batches),
        }
    print(f"tokens per epoch: {counts}")
    assert counts["packed"]["real"] == counts["plain"]["real"]  # the same data...
    assert counts["packed"]["padded"] < counts["plain"]["padded"]  # ...with less padding
    assert counts["packed"]["batches"] == counts["plain"]["batches"]

    curves = {}
    for name, spec in (("plain", plain), ("packed", packed)):
        code, log = _run(spec)
        assert code == 0
        curves[name] = _losses(log)
    print(
        f"loss: plain {curves['plain'][0]:.3f} -> {curves['plain'][-1]:.3f}, "
        f"packed {curves['packed'][0]:.3f} -> {curves['packed'][-1]:.3f}"
    )
    assert len(curves["plain"]) == len(curves["packed"]) == 20
    for losses in curves.values():
        assert losses[-1] < losses[0] - 2
    assert max(abs(a - b) for a, b in zip(curves["plain"], curves["packed"])) < 0.3


@pytest.mark.parametrize("completion_only", [True, False])
def test_loss_mask_covers_completions_only_by_default(completion_only, make_spec, demo_kit):
    config = {} if completion_only else {"completion_only_loss": False}
    batches, tokenizer = _collated_epoch(make_spec(config=config))
    rows = [json.loads(line) for line in open(demo_kit["data"]["train"])]
    by_prompt = {tuple(tokenizer(r["prompt"])["input_ids"]): r for r in rows}
    checked = 0
    for batch in batches:
        for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
            real = [i for i in ids if i != tokenizer.pad_token_id]
            assert labels[len(real) :] == [-100] * (len(ids) - len(real))  # padding never counts
            prompt = next(p for p in by_prompt if tuple(real[: len(p)]) == p)
            completion = real[len(prompt) :]
            assert tokenizer.decode(completion) == by_prompt[prompt]["completion"] + tokenizer.eos_token
            prompt_labels = labels[: len(prompt)]
            assert prompt_labels == ([-100] * len(prompt) if completion_only else list(prompt))
            assert labels[len(prompt) : len(real)] == completion
            checked += 1
    assert checked == demo_kit["train_pairs"]
