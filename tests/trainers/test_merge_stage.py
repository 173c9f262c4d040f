"""The merge stage on the tiny demo model: merged weights equal a computation done here by hand from the input
files (an adapter's update B @ A included), the output is a loadable model, and bad inputs are refused by name."""

import json
import os

import pytest
from trainers import cancel
from trainers.events import EventLog
from trainers.stage import EXIT_CANCELED, EXIT_FAILED, EXIT_FINISHED, execute

LORA_R, LORA_ALPHA = 4, 8


@pytest.fixture(autouse=True)
def _no_pending_cancel():
    cancel.reset()
    yield
    cancel.reset()


def _weights(path):
    from safetensors.torch import load_file

    return load_file(os.path.join(path, "model.safetensors"))


@pytest.fixture(scope="module")
def kit(demo_kit, tmp_path_factory):
    """Inputs to merge: two fine-tuned stand-ins (the demo model plus seeded noise), a LoRA adapter of the demo
    model with non-zero updates, and a narrower model that cannot be merged with them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from trainers.demo import build_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("merge_inputs")
    tokenizer = AutoTokenizer.from_pretrained(demo_kit["model"])
    paths = {}
    for name, seed in (("sft-a", 1), ("sft-b", 2)):
        model = AutoModelForCausalLM.from_pretrained(demo_kit["model"], dtype=torch.float32)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.02 * torch.randn(param.shape, generator=generator))
        paths[name] = str(root / name)
        model.save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])

    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(demo_kit["model"], dtype=torch.float32)
    lora = get_peft_model(
        base,
        LoraConfig(
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            target_modules=["q_proj", "v_proj"],
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        ),
    )
    paths["lora-c"] = str(root / "lora-c")
    lora.save_pretrained(paths["lora-c"])

    paths["narrow"] = str(root / "narrow")
    build_model(tokenizer, seed=0, hidden_size=32).save_pretrained(paths["narrow"])
    tokenizer.save_pretrained(paths["narrow"])
    return paths


def _spec(demo_kit, inputs, out, **config):
    return {
        "method": "merge",
        "config": config,
        "model": {"name_or_path": demo_kit["model"]},
        "inputs": inputs,
        "output_dir": str(out),
        "checkpoint_dir": str(out / "checkpoints"),
        "seed": 7,
    }


def _full(kit, name):
    return {"stage": name, "name_or_path": kit[name]}


def _adapter(demo_kit, kit, name):
    return {"stage": name, "name_or_path": demo_kit["model"], "adapter_path": kit[name]}


def _run(spec):
    log = EventLog()
    code = execute(spec, log)
    return code, log


def _finished(spec):
    code, log = _run(spec)
    failed = log.of("failed")
    assert code == EXIT_FINISHED and not failed, failed[0]["traceback"] if failed else code
    return log


def _lora_merged_by_hand(demo_kit, adapter_dir):
    """The base weights plus scaling * B @ A for every adapted module, from the adapter's own file."""
    from safetensors.torch import load_file

    weights = dict(_weights(demo_kit["model"]))
    adapter = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    with open(os.path.join(adapter_dir, "adapter_config.json")) as fh:
        scaling = json.load(fh)["lora_alpha"] / LORA_R
    updated = 0
    for key, a in adapter.items():
        if ".lora_A." not in key:
            continue
        b = adapter[key.replace(".lora_A.", ".lora_B.")]
        target = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        weights[target] = weights[target] + scaling * (b @ a)
        updated += 1
    assert updated == 4  # q_proj and v_proj of 2 layers
    return weights


def _in_order(state, keys):
    return {key: state[key] for key in keys}


def _assert_state_close(got, expected, atol=1e-6):
    import torch

    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.allclose(got[key], value, atol=atol, rtol=1e-5), key


def test_linear_merge_of_full_models_and_an_adapter_is_their_weighted_average(demo_kit, kit, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = _spec(
        demo_kit,
        [_full(kit, "sft-a"), _full(kit, "sft-b"), _adapter(demo_kit, kit, "lora-c")],
        tmp_path / "out",
        merge_method="linear",
        weights="2, 1, 1",
    )
    log = _finished(spec)

    finished = log.of("finished")[0]
    path = str(tmp_path / "out" / "model")
    assert finished["outputs"] == {"kind": "model", "path": path}
    summary = finished["summary"]
    assert summary["merge_method"] == "linear" and summary["inputs"] == ["sft-a", "sft-b", "lora-c"]
    assert summary["weights"] == [0.5, 0.25, 0.25]  # normalised to a weighted average

    a, b = _weights(kit["sft-a"]), _weights(kit["sft-b"])
    c = _lora_merged_by_hand(demo_kit, kit["lora-c"])
    expected = {k: 0.5 * a[k] + 0.25 * b[k] + 0.25 * c[k] for k in a}
    _assert_state_close(_weights(path), expected)

    # The protocol: started first, progress per phase, metrics, the artifact, finished last.
    kinds = [e["event"] for e in log.events]
    assert kinds[0] == "started" and kinds[-2:] == ["artifact", "finished"]
    started = log.of("started")[0]
    assert started["trainable_params"] == 0 and started["total_params"] > 0
    assert started["total_steps"] == 5  # 3 inputs, merge, save
    assert [e["step"] for e in log.of("progress")] == [1, 2, 3, 4, 5]
    merged_metrics = {k: v for e in log.of("metrics") for k, v in e["metrics"].items()}
    assert merged_metrics["merge/weight/lora-c"] == 0.25 and merged_metrics["merge/inputs"] == 3

    # A standalone model with the first input's tokenizer.
    assert os.path.exists(os.path.join(path, "tokenizer.json"))
    assert not os.path.exists(str(tmp_path / "out" / "adapter"))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    enc = tokenizer(["3+4="], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > enc["input_ids"].shape[1]
    with open(os.path.join(path, "merge.json")) as fh:
        assert json.load(fh)["weights"] == [0.5, 0.25, 0.25]


def test_task_arithmetic_adds_the_weighted_task_vectors_to_the_base(demo_kit, kit, tmp_path):
    spec = _spec(
        demo_kit,
        [_full(kit, "sft-a"), _adapter(demo_kit, kit, "lora-c")],
        tmp_path / "out",
        merge_method="task_arithmetic",
        weights="0.7, 0.3",
    )
    log = _finished(spec)
    assert log.of("finished")[0]["summary"]["weights"] == [0.7, 0.3]
    assert log.of("started")[0]["total_steps"] == 5  # base, 2 inputs, merge, save

    base, a = _weights(demo_kit["model"]), _weights(kit["sft-a"])
    c = _lora_merged_by_hand(demo_kit, kit["lora-c"])
    expected = {k: base[k] + 0.7 * (a[k] - base[k]) + 0.3 * (c[k] - base[k]) for k in base}
    _assert_state_close(_weights(str(tmp_path / "out" / "model")), expected)


@pytest.mark.parametrize("method", ["ties", "dare_ties", "model_stock"])
def test_the_all_at_once_methods_pass_their_settings_to_merge_state_dicts(demo_kit, kit, tmp_path, method):
    """ties / dare / model_stock go through trainers.merge_math (tested there by hand): here the wiring of the
    inputs, base, weights, density, sign election and seed."""
    from trainers.merge_math import merge_state_dicts
    from transformers import AutoModelForCausalLM

    config = {"merge_method": method}
    if method != "model_stock":
        config.update(weights="1, 0.5", density=0.4, majority_sign_method="frequency")
    spec = _spec(demo_kit, [_full(kit, "sft-a"), _full(kit, "sft-b")], tmp_path / "out", **config)
    summary = _finished(spec).of("finished")[0]["summary"]

    # In the model's own tensor order: DARE's random drops follow it.
    order = list(AutoModelForCausalLM.from_pretrained(kit["sft-a"]).state_dict())
    base, a, b = (_in_order(_weights(p), order) for p in (demo_kit["model"], kit["sft-a"], kit["sft-b"]))
    expected = merge_state_dicts(
        method,
        [a, b],
        base=base,
        weights=[1.0, 0.5] if method != "model_stock" else None,
        density=0.4,
        majority_sign_method="frequency",
        seed=7,
    )
    _assert_state_close(_weights(str(tmp_path / "out" / "model")), expected)
    if method == "model_stock":
        assert summary["weights"] == [] and summary["density"] is None
    else:
        assert summary["weights"] == [1.0, 0.5] and summary["density"] == 0.4
        assert summary["majority_sign_method"] == "frequency"


def test_inputs_of_other_shapes_are_refused_naming_the_stage(demo_kit, kit, tmp_path):
    spec = _spec(demo_kit, [_full(kit, "sft-a"), _full(kit, "narrow")], tmp_path / "out")
    code, log = _run(spec)
    assert code == EXIT_FAILED
    error = log.of("failed")[0]["error"]
    assert error.startswith("MergeInputError: the input of stage 'narrow' does not fit the input of stage 'sft-a'")
    assert "has shape" in error and "share one architecture" in error
    assert not os.path.exists(str(tmp_path / "out" / "model"))


def test_a_wrong_number_of_weights_is_refused_before_loading_anything(demo_kit, kit, tmp_path):
    spec = _spec(demo_kit, [_full(kit, "sft-a"), _full(kit, "sft-b")], tmp_path / "out", weights="0.5, 0.3, 0.2")
    code, log = _run(spec)
    assert code == EXIT_FAILED and [e["event"] for e in log.events] == ["failed"]
    assert log.of("failed")[0]["error"] == (
        "MergeInputError: 3 weights for 2 inputs (sft-a, sft-b): give one weight per input, in that order, or none"
    )


def test_a_cancel_request_stops_before_loading(demo_kit, kit, tmp_path):
    cancel.request_cancel()
    code, log = _run(_spec(demo_kit, [_full(kit, "sft-a"), _full(kit, "sft-b")], tmp_path / "out"))
    assert code == EXIT_CANCELED and log.of("canceled")[0]["step"] == 0
