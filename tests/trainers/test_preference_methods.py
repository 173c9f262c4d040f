"""Preference methods (dpo, kto, orpo, simpo) on the tiny demo model: they must really learn.

The measure (trainers.methods.preference.pairwise_preference): on held-out addition pairs -- the 20 sums
never used for SFT or preference training, each correct answer against every wrong answer 1 or 2 away --
the share of pairs whose correct answer the model finds more likely than the wrong one (summed
log-probability of the answer and the end-of-sequence token), and the mean log-probability difference.
It needs no reference model, so it compares all four methods, and the test computes it independently
on the published model. The starting model had a short SFT (80 steps): it answers with numbers but
ranks the right sum first only about as often as chance (~0.54); each method is trained for 200 steps.
"""

import json
import os

import pytest
from trainers import cancel
from trainers.catalog import validate_stage
from trainers.demo import addition_split, near_miss_preferences
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


@pytest.fixture(scope="module")
def sft_model(demo_kit, tmp_path_factory):
    """A short SFT of the demo model with the SFT runner: number-shaped answers, ~chance preference accuracy."""
    out = str(tmp_path_factory.mktemp("sft"))
    _run(
        {
            "method": "sft",
            "config": {"max_steps": 80, "save_steps": 1000},
            "adapter": {"type": "none"},
            "model": {"name_or_path": demo_kit["model"]},
            "data": {"train": {"path": demo_kit["data"]["train"], "kind": "prompt_completion"}},
            "output_dir": out,
            "checkpoint_dir": os.path.join(out, "checkpoints"),
            "seed": 42,
        }
    )
    return os.path.join(out, "model")


@pytest.fixture(scope="module")
def train_prefs(tmp_path_factory) -> str:
    """Every training sum's correct answer against each wrong answer 1 or 2 away (317 pairs)."""
    path = tmp_path_factory.mktemp("prefs") / "train_prefs.jsonl"
    train, _ = addition_split(0)
    path.write_text("".join(json.dumps(row) + "\n" for row in near_miss_preferences(train)))
    return str(path)


@pytest.fixture(scope="module")
def held_out_pairs(demo_kit) -> list[dict]:
    with open(demo_kit["data"]["prefs_eval"]) as fh:
        pairs = [json.loads(line) for line in fh]
    _, held = addition_split(0)
    assert {p["prompt"] for p in pairs} == {f"{a}+{b}=" for a, b in held}  # only sums never trained on
    return pairs


def _preference(model_dir, pairs, adapter_dir=None) -> dict[str, float]:
    from trainers.measures import load_model
    from trainers.methods.preference import pairwise_preference

    model, tokenizer = load_model(model_dir, adapter_dir)
    return pairwise_preference(model, tokenizer, pairs)


def _spec(method, *, model, train, kind="preference", eval_path=None, config=None, adapter=None, out):
    return {
        "method": method,
        "config": {"save_steps": 1000, **(config or {})},
        "adapter": adapter or {"type": "none"},
        "model": {"name_or_path": model},
        "data": {
            "train": {"path": train, "kind": kind},
            "eval": {"path": eval_path, "kind": kind} if eval_path else None,
        },
        "output_dir": out,
        "checkpoint_dir": os.path.join(out, "checkpoints"),
        "seed": 42,
    }


def _metric_names(log: EventLog) -> set[str]:
    return set().union(*(e["metrics"] for e in log.of("metrics")))


# Per method: settings that learn on the demo in 200 steps, and the held-out accuracy it must at least reach.
PROOF_RUNS = {
    "dpo": ({"learning_rate": 3e-4, "beta": 1.0, "max_steps": 200}, 0.7),
    "orpo": ({"learning_rate": 3e-3, "max_steps": 200}, 0.8),
    "simpo": ({"learning_rate": 3e-4, "max_steps": 200}, 0.7),
}


@pytest.mark.parametrize("method", list(PROOF_RUNS))
def test_paired_method_raises_held_out_preference_accuracy(
    method, sft_model, train_prefs, held_out_pairs, demo_kit, tmp_path
):
    config, must_reach = PROOF_RUNS[method]
    before = _preference(sft_model, held_out_pairs)
    spec = _spec(
        method, model=sft_model, train=train_prefs, eval_path=demo_kit["data"]["prefs_eval"], config=config,
        out=str(tmp_path),
    )  # fmt: skip
    log = _run(spec)
    after = _preference(os.path.join(tmp_path, "model"), held_out_pairs)
    print(f"{method}: held-out preference accuracy {before} -> {after}")

    assert 0.4 <= before["preference_accuracy"] <= 0.65  # about chance
    assert after["preference_accuracy"] >= must_reach
    assert after["preference_accuracy"] >= before["preference_accuracy"] + 0.15
    assert after["preference_margin"] > before["preference_margin"] + 0.5

    # TRL's reward metrics leave as events, for training and for the held-out data
    names = _metric_names(log)
    for part in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert f"train/{part}" in names and f"eval/{part}" in names, part
    # The runner measures the same held-out accuracy before (step 0) and after training
    series = [e for e in log.of("metrics") if "eval/preference_accuracy" in e["metrics"]]
    assert [e["step"] for e in series] == [0, 200]
    summary = log.of("finished")[0]["summary"]
    assert summary["eval/preference_accuracy_initial"] == pytest.approx(before["preference_accuracy"], abs=1e-6)
    assert summary["eval/preference_accuracy"] == pytest.approx(after["preference_accuracy"], abs=1e-6)
    assert summary["eval/preference_margin"] == pytest.approx(after["preference_margin"], abs=1e-3)
    assert summary["eval/rewards/accuracies"] > 0.6 and summary["eval/rewards/margins"] > 0
    assert log.of("started")[0]["total_steps"] == 200


def test_kto_learns_from_feedback_rows(sft_model, held_out_pairs, demo_kit, tmp_path):
    """Unpaired data: each training sum once right (label true) and once wrong (label false)."""
    before = _preference(sft_model, held_out_pairs)
    spec = _spec(
        "kto", model=sft_model, train=demo_kit["data"]["feedback"], kind="feedback",
        config={"learning_rate": 3e-4, "beta": 1.0, "max_steps": 200}, out=str(tmp_path),
    )  # fmt: skip
    log = _run(spec)
    after = _preference(os.path.join(tmp_path, "model"), held_out_pairs)
    print(f"kto: held-out preference accuracy {before} -> {after}")

    assert after["preference_accuracy"] >= before["preference_accuracy"] + 0.08
    assert after["preference_margin"] > before["preference_margin"] + 0.3
    names = _metric_names(log)
    assert {"train/rewards/chosen", "train/rewards/rejected", "train/rewards/margins", "train/kl"} <= names
    assert log.of("finished")[0]["summary"]["train/rewards/margins"] > 0


def test_kto_splits_preference_pairs_and_trains_a_lora_adapter(sft_model, demo_kit, tmp_path):
    from trainers.methods import kto
    from trainers.methods.preference import setup_stage
    from trainers.stage_spec import parse_spec

    spec = _spec(
        "kto", model=sft_model, train=demo_kit["data"]["prefs"], eval_path=demo_kit["data"]["prefs_eval"],
        config={"learning_rate": 1e-3, "max_steps": 10}, adapter={"type": "lora", "r": 8}, out=str(tmp_path),
    )  # fmt: skip
    trainer = kto.build_trainer(setup_stage(parse_spec(spec), EventLog()))
    assert trainer.ref_model is None  # the reference is the model with the adapter switched off
    labels = trainer.train_dataset["label"]
    assert len(labels) == 2 * 80 and sum(labels) == 80  # each pair: one desirable, one undesirable example
    assert len(set(labels[:16])) == 2  # shuffled: a batch mixes both labels

    log = _run(spec)
    names = _metric_names(log)
    assert {"eval/rewards/chosen", "eval/rewards/rejected", "eval/rewards/margins", "eval/kl"} <= names
    summary = log.of("finished")[0]["summary"]
    assert 0 <= summary["eval/preference_accuracy"] <= 1 and "eval/preference_margin" in summary
    outputs = log.of("finished")[0]["outputs"]
    assert outputs["kind"] == "adapter" and os.path.isfile(os.path.join(outputs["path"], "adapter_config.json"))


def test_dpo_reference_is_the_model_without_its_adapter(sft_model, train_prefs, demo_kit, tmp_path):
    import torch
    from trainers.methods import dpo
    from trainers.methods.preference import setup_stage
    from trainers.stage_spec import parse_spec

    def trainer_for(adapter):
        spec = _spec("dpo", model=sft_model, train=train_prefs, adapter=adapter, out=str(tmp_path / adapter["type"]))
        return dpo.build_trainer(setup_stage(parse_spec(spec), EventLog()))

    lora = trainer_for({"type": "lora", "r": 8})
    assert lora.ref_model is None  # no second copy of the model
    base_params = sum(p.numel() for p in lora.model.get_base_model().parameters() if not p.requires_grad)
    assert 0 < sum(p.numel() for p in lora.model.parameters() if p.requires_grad) < base_params / 4
    ids = torch.tensor([[1, 20, 21, 22]])
    with torch.no_grad(), lora.model.disable_adapter():
        without_adapter = lora.model(input_ids=ids).logits

    full = trainer_for({"type": "none"})
    assert full.ref_model is not None and full.ref_model is not full.model  # full fine-tuning: a frozen copy
    assert not any(p.requires_grad for p in full.ref_model.parameters())
    with torch.no_grad():
        assert torch.allclose(full.ref_model(input_ids=ids).logits, without_adapter, atol=1e-5)


@pytest.fixture(scope="module")
def dpo_lora_run(sft_model, train_prefs, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dpo-lora"))
    spec = _spec(
        "dpo", model=sft_model, train=train_prefs, adapter={"type": "lora", "r": 16, "alpha": 32},
        config={"learning_rate": 3e-3, "beta": 1.0, "max_steps": 150}, out=out,
    )  # fmt: skip
    return _run(spec)


def test_dpo_with_lora_learns_and_outputs_an_adapter(dpo_lora_run, sft_model, held_out_pairs):
    before = _preference(sft_model, held_out_pairs)
    outputs = dpo_lora_run.of("finished")[0]["outputs"]
    assert outputs["kind"] == "adapter" and outputs["base"]["name_or_path"] == sft_model
    after = _preference(sft_model, held_out_pairs, adapter_dir=outputs["path"])
    print(f"dpo+lora: held-out preference accuracy {before} -> {after}")
    assert after["preference_accuracy"] >= before["preference_accuracy"] + 0.15
    started = dpo_lora_run.of("started")[0]
    assert 0 < started["trainable_params"] < started["total_params"] / 4


def test_next_stage_from_an_adapter_uses_the_merged_model_as_reference(dpo_lora_run, sft_model, train_prefs, tmp_path):
    """TRL alone would reload the reference from the base directory and miss the merged adapter."""
    import torch
    from trainers.measures import load_model
    from trainers.methods import dpo
    from trainers.methods.preference import setup_stage
    from trainers.stage_spec import parse_spec

    adapter = dpo_lora_run.of("finished")[0]["outputs"]["path"]
    spec = _spec("dpo", model=sft_model, train=train_prefs, out=str(tmp_path))
    spec["model"]["adapter_path"] = adapter
    trainer = dpo.build_trainer(setup_stage(parse_spec(spec), EventLog()))
    ids = torch.tensor([[1, 20, 21, 22]])
    with torch.no_grad():
        reference = trainer.ref_model(input_ids=ids).logits
        merged = load_model(sft_model, adapter)[0](input_ids=ids).logits
        base = load_model(sft_model)[0](input_ids=ids).logits
    assert torch.allclose(reference, merged, atol=1e-4)
    assert not torch.allclose(reference, base, atol=1e-3)


def test_dpo_cancel_then_resume_from_checkpoint(sft_model, train_prefs, tmp_path):
    spec = _spec("dpo", model=sft_model, train=train_prefs, config={"max_steps": 6, "save_steps": 2}, out=str(tmp_path))

    class CancelAfterStep3(EventLog):
        def emit(self, event, **fields):
            record = super().emit(event, **fields)
            if event == "metrics" and fields["step"] == 3:
                cancel.request_cancel()
            return record

    log = CancelAfterStep3()
    assert execute(spec, log) == 3
    assert log.events[-1] == {**log.events[-1], "event": "canceled", "step": 4}
    assert [e["step"] for e in log.of("checkpoint")] == [2]  # none is written on the way out
    assert not os.path.exists(os.path.join(tmp_path, "model"))

    cancel.reset()
    resumed = _run(spec)
    assert resumed.of("started")[0]["resumed_from"].endswith("checkpoint-2")
    assert [e["step"] for e in resumed.of("metrics")] == [3, 4, 5, 6]
    assert os.path.isfile(os.path.join(tmp_path, "model", "model.safetensors"))


# --- configs and data kinds (no training) ---------------------------------------------------------


def test_dpo_loss_types_mirror_the_installed_trl():
    import inspect
    import re

    from trainers.configs.dpo import DPO_LOSS_TYPES, LABEL_SMOOTHING_LOSS_TYPES
    from trainers.methods.dpo import installed_loss_types
    from trl import DPOTrainer

    assert DPO_LOSS_TYPES == installed_loss_types()
    # ...and TRL's documented list is what its loss actually implements
    implemented = re.findall(r'loss_type == "(\w+)"', inspect.getsource(DPOTrainer._compute_loss))
    assert set(implemented) == set(DPO_LOSS_TYPES)
    # label smoothing appears exactly in the losses we allow it for
    for loss in DPO_LOSS_TYPES:
        branch = inspect.getsource(DPOTrainer._compute_loss).split(f'loss_type == "{loss}"')[1].split("elif")[0]
        assert ("label_smoothing" in branch) == (loss in LABEL_SMOOTHING_LOSS_TYPES), loss


def test_kto_loss_types_mirror_the_installed_trl():
    from trainers.configs.kto import KTO_LOSS_TYPES
    from trainers.methods.kto import installed_loss_types

    assert KTO_LOSS_TYPES == installed_loss_types()


def test_trl_classes_the_methods_are_pinned_to():
    """ORPO and CPO (which SimPO is) live in trl.experimental in TRL 1.16; KTO is stable. An upgrade that
    moves, renames or drops them, or the settings we pass, fails here."""
    import dataclasses

    from trainers.methods import kto, orpo, simpo
    from trl import KTOConfig, KTOTrainer
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    assert (orpo.ORPOTrainer, orpo.TRLORPOConfig) == (ORPOTrainer, ORPOConfig)
    assert (simpo.CPOTrainer, simpo.TRLCPOConfig) == (CPOTrainer, CPOConfig)
    assert (kto.KTOTrainer, kto.TRLKTOConfig) == (KTOTrainer, KTOConfig)
    assert {"beta", "max_length"} <= {f.name for f in dataclasses.fields(ORPOConfig)}
    cpo_fields = {f.name: f for f in dataclasses.fields(CPOConfig)}
    assert {"beta", "simpo_gamma", "cpo_alpha", "max_length"} <= set(cpo_fields)
    assert "simpo" in cpo_fields["loss_type"].metadata["choices"]
    assert {"beta", "desirable_weight", "undesirable_weight"} <= {f.name for f in dataclasses.fields(KTOConfig)}


@pytest.mark.parametrize(
    "method,config,field,message",
    [
        ("dpo", {"loss_type": "dpo2"}, "loss_type", "loss_type: must be one of sigmoid, hinge, ipo"),
        ("dpo", {"label_smoothing": 0.1}, "label_smoothing", "the 'sigmoid' loss does not use label smoothing"),
        ("dpo", {"loss_type": "ipo", "label_smoothing": 0.1}, "label_smoothing", "pick one of robust, exo_pair"),
        ("dpo", {"loss_type": "exo_pair"}, "label_smoothing", "'exo_pair' loss needs label smoothing above 0"),
        ("dpo", {"label_smoothing": 0.5}, "label_smoothing", "must be >= 0 and < 0.5, got 0.5"),
        ("dpo", {"beta": 0}, "beta", "beta: must be > 0"),
        ("kto", {"loss_type": "bco"}, "loss_type", "loss_type: must be one of kto, apo_zero_unpaired"),
        ("kto", {"per_device_train_batch_size": 1}, "per_device_train_batch_size", "needs at least 2 examples"),
        ("kto", {"desirable_weight": 0}, "desirable_weight", "desirable_weight: must be > 0"),
        ("simpo", {"simpo_gamma": -1}, "simpo_gamma", "simpo_gamma: must be >= 0"),
        ("orpo", {"max_steps": 0}, "max_steps", "max_steps: must be -1"),
    ],
)
def test_bad_settings_are_refused_with_a_specific_message(method, config, field, message):
    cfg, _, errors = validate_stage(method, config, {"type": "lora"}, "preference")
    assert cfg is None
    assert message in errors[f"config.{field}"]


def test_accepted_settings():
    for method in ("dpo", "kto", "orpo", "simpo"):
        assert validate_stage(method, {}, {"type": "lora"}, "preference")[2] == {}
    cfg, _, errors = validate_stage("dpo", {"loss_type": "robust", "label_smoothing": "0.1"}, {}, "preference")
    assert errors == {} and (cfg.loss_type, cfg.label_smoothing) == ("robust", 0.1)
    assert validate_stage("dpo", {"loss_type": "exo_pair", "label_smoothing": 1e-3}, {}, "preference")[2] == {}
    cfg, _, errors = validate_stage("simpo", {"beta": 2.5, "simpo_gamma": 1.4, "cpo_alpha": 0.05}, {}, "preference")
    assert errors == {} and cfg.cpo_alpha == 0.05


@pytest.mark.parametrize(
    "method,kind,ok",
    [
        ("dpo", "preference", True),
        ("dpo", "prompt_completion", False),
        ("dpo", "feedback", False),
        ("orpo", "chat", False),
        ("simpo", "preference", True),
        ("kto", "preference", True),
        ("kto", "feedback", True),
        ("kto", "prompt_completion", False),
        ("sft", "feedback", False),
    ],
)
def test_dataset_kinds(method, kind, ok):
    errors = validate_stage(method, {}, {"type": "none"}, kind)[2]
    if ok:
        assert errors == {}
    else:
        assert errors["dataset_kind"].startswith(f"dataset_kind: {method} cannot train on {kind!r} data")


def test_feedback_rows_are_read_and_checked(tmp_path):
    from trainers.data import DataError, read_rows
    from trainers.stage_spec import DataFile

    jsonl = tmp_path / "fb.jsonl"
    jsonl.write_text(
        '{"prompt": "1+1=", "completion": "2", "label": true, "x": 1}\n'
        '{"prompt": "1+1=", "completion": "3", "label": false}\n'
    )
    rows = read_rows(DataFile(str(jsonl), "jsonl", "feedback"))
    assert rows == [
        {"prompt": "1+1=", "completion": "2", "label": True},
        {"prompt": "1+1=", "completion": "3", "label": False},
    ]
    csv = tmp_path / "fb.csv"
    csv.write_text("prompt,completion,label\n1+1=,2,true\n1+1=,3,FALSE\n")
    assert read_rows(DataFile(str(csv), "csv", "feedback")) == rows

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "1+1=", "completion": "2", "label": true}\n{"prompt": "a", "completion": "b", "label": "yes"}\n'
    )
    with pytest.raises(DataError, match="row 2: 'label' must be true or false, got 'yes'"):
        read_rows(DataFile(str(bad), "jsonl", "feedback"))
    strings = tmp_path / "strings.jsonl"
    strings.write_text('{"prompt": "a", "completion": "b", "label": "true"}\n')  # JSON has real booleans
    with pytest.raises(DataError, match="row 1: 'label' must be true or false"):
        read_rows(DataFile(str(strings), "jsonl", "feedback"))
