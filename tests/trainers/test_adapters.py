"""Every adapter type on the tiny demo model: what trains is what should, a few SFT steps lower the loss,
merged adapters equal unmerged ones, and what cannot run is refused with a clear reason."""

import json
import os
import subprocess
import sys

import pytest
from trainers import cancel
from trainers.catalog import validate_stage
from trainers.configs import AdapterConfig
from trainers.configs.adapters import adapter_model_errors
from trainers.events import EventLog
from trainers.schema import config_schema, validate_config
from trainers.stage import execute

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 12
# adapter fields, learning rate: a tiny random model moves slowly with few trainable parameters.
RUNS = {
    "lora": ({"type": "lora", "r": 4, "alpha": 8}, 1e-2),
    "dora": ({"type": "dora", "r": 4, "alpha": 8}, 1e-2),
    "ia3": ({"type": "ia3"}, 1e-1),
    "prompt_tuning": ({"type": "prompt_tuning", "num_virtual_tokens": 4}, 1e-1),
    "layernorm": ({"type": "layernorm"}, 1e-1),
    "bitfit": ({"type": "bitfit"}, 3e-2),  # on a copy of the demo model with biases
    "freeze": ({"type": "freeze", "freeze_layers": 1}, 3e-3),
}
PEFT_RUNS = ("lora", "dora", "ia3", "prompt_tuning", "layernorm")


@pytest.fixture(autouse=True)
def _no_pending_cancel():
    cancel.reset()
    yield
    cancel.reset()


def _spec(model_dir, data_path, adapter, out, config):
    return {
        "method": "sft",
        "config": config,
        "adapter": adapter,
        "model": {"name_or_path": model_dir},
        "data": {"train": {"path": data_path, "format": "jsonl", "kind": "prompt_completion"}},
        "output_dir": out,
        "checkpoint_dir": os.path.join(out, "checkpoints"),
        "seed": 42,
    }


def _losses(log):
    return [e["metrics"]["train/loss"] for e in log.of("metrics") if "train/loss" in e["metrics"]]


def _load(model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


@pytest.fixture(scope="module")
def bias_model(demo_kit, tmp_path_factory):
    """The demo Llama with biases in every attention and MLP projection (the demo model has none)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(demo_kit["model"])
    config.attention_bias = config.mlp_bias = True
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("bias_model"))
    LlamaForCausalLM(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(demo_kit["model"]).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def runs(demo_kit, bias_model, tmp_path_factory):
    """A short SFT run per adapter type, each run once on first use."""
    done = {}

    def get(kind):
        if kind not in done:
            adapter, lr = RUNS[kind]
            model = bias_model if kind == "bitfit" else demo_kit["model"]
            out = str(tmp_path_factory.mktemp(kind))
            config = {"max_steps": STEPS, "save_steps": 1000, "learning_rate": lr}
            log = EventLog()
            code = execute(_spec(model, demo_kit["data"]["train"], adapter, out, config), log)
            failed = log.of("failed")
            assert code == 0 and not failed, failed[0]["traceback"] if failed else code
            done[kind] = {"log": log, "out": out, "model": model, "adapter": AdapterConfig(**adapter)}
        return done[kind]

    return get


def _independent_trainable(kind, base, adapter):
    """The trainable-parameter count an adapter type should give, from the base model's modules alone."""
    from torch import nn
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    linears = [(n, m) for n, m in base.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    if kind == "lora":
        return sum(adapter.r * (m.in_features + m.out_features) for _, m in linears)
    if kind == "dora":  # LoRA plus one magnitude per output row
        return sum(adapter.r * (m.in_features + m.out_features) + m.out_features for _, m in linears)
    if kind == "ia3":  # one scale per output, per input for the feed-forward down projection
        return sum(m.in_features if n.endswith("down_proj") else m.out_features for n, m in linears)
    if kind == "prompt_tuning":
        return adapter.num_virtual_tokens * base.config.hidden_size
    if kind == "layernorm":
        return sum(p.numel() for m in base.modules() if isinstance(m, LlamaRMSNorm) for p in m.parameters())
    if kind == "bitfit":
        return sum(p.numel() for n, p in base.named_parameters() if n.endswith(".bias"))
    if kind == "freeze":
        frozen = list(base.model.embed_tokens.parameters())
        frozen += [p for layer in base.model.layers[: adapter.freeze_layers] for p in layer.parameters()]
        return sum(p.numel() for p in base.parameters()) - sum(p.numel() for p in frozen)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", list(RUNS))
def test_started_event_counts_what_trains(kind, runs):
    from peft import get_peft_model
    from trainers.methods.common import apply_adapter

    run = runs(kind)
    started = run["log"].of("started")[0]
    base = _load(run["model"])
    base_total = sum(p.numel() for p in base.parameters())
    expected = _independent_trainable(kind, base, run["adapter"])
    print(f"{kind}: {started['trainable_params']} of {started['total_params']} trainable (expected {expected})")
    assert started["trainable_params"] == expected > 0
    if kind in PEFT_RUNS:
        peft_model = get_peft_model(*apply_adapter(_load(run["model"]), run["adapter"]))
        assert (started["trainable_params"], started["total_params"]) == peft_model.get_nb_trainable_parameters()
        assert started["total_params"] == base_total + expected  # PEFT adds its weights next to the base's
    else:
        assert started["total_params"] == base_total


@pytest.mark.parametrize("kind", list(RUNS))
def test_a_few_sft_steps_lower_the_loss(kind, runs):
    run = runs(kind)
    losses = _losses(run["log"])
    assert len(losses) == STEPS
    final = sum(losses[-3:]) / 3
    print(f"{kind}: loss {losses[0]:.3f} -> {final:.3f}")
    assert final < losses[0] - 0.15, losses
    outputs = run["log"].of("finished")[0]["outputs"]
    assert outputs["kind"] == ("adapter" if kind in PEFT_RUNS else "model")
    assert os.path.isfile(os.path.join(outputs["path"], "adapter_config.json" if kind in PEFT_RUNS else "config.json"))


@pytest.mark.parametrize("kind", ["freeze", "bitfit"])
def test_selective_tuning_changes_only_the_chosen_weights(kind, runs):
    run = runs(kind)
    before = dict(_load(run["model"]).named_parameters())
    after = dict(_load(os.path.join(run["out"], "model")).named_parameters())
    changed = {n for n, p in after.items() if not bool((p == before[n]).all())}
    if kind == "freeze":  # embeddings and layer 0 frozen
        frozen = {n for n in before if n.startswith(("model.embed_tokens.", "model.layers.0."))}
        assert frozen and not changed & frozen
        assert changed == set(before) - frozen - {n for n in before if "rotary" in n}
    else:
        assert changed == {n for n in before if n.endswith(".bias")}


def _logits(model, tokenizer):
    import torch

    batch = tokenizer(["3+4=", "9+9=1", "0+5="], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("kind", ["lora", "dora", "ia3", "layernorm"])
def test_merged_adapter_gives_the_same_logits(kind, runs):
    """What a later stage trains on (the adapter merged in) is what evaluation measured (the adapter applied)."""
    from trainers.measures import load_model
    from trainers.methods.common import load_model_and_tokenizer
    from trainers.stage_spec import ModelRef

    run = runs(kind)
    adapter_dir = os.path.join(run["out"], "adapter")
    unmerged, tokenizer = load_model(run["model"], adapter_dir)
    merged, _ = load_model_and_tokenizer(ModelRef(run["model"], adapter_path=adapter_dir))
    assert type(merged).__name__ == "LlamaForCausalLM"
    merged.eval()
    expected = _logits(unmerged, tokenizer)
    diff = (_logits(merged, tokenizer) - expected).abs().max().item()
    moved = (_logits(_load(run["model"]), tokenizer) - expected).abs().max().item()
    print(f"{kind}: merged vs unmerged max |diff| {diff:.2e}; adapter moved logits by up to {moved:.3f}")
    assert diff < 1e-5
    assert moved > 1e-2  # the adapter is not a no-op, so the comparison means something


def test_prompt_tuning_adapter_evaluates_but_cannot_be_merged(runs):
    from trainers.measures import load_model
    from trainers.methods.common import AdapterError, load_model_and_tokenizer
    from trainers.stage_spec import ModelRef

    run = runs("prompt_tuning")
    adapter_dir = os.path.join(run["out"], "adapter")
    model, tokenizer = load_model(run["model"], adapter_dir)
    logits = _logits(model, tokenizer)
    assert logits.shape[1] == 4 + tokenizer(["9+9=1"], return_tensors="pt")["input_ids"].shape[1]  # virtual tokens
    with pytest.raises(AdapterError, match=r"input adapter \(prompt_tuning\) cannot be merged"):
        load_model_and_tokenizer(ModelRef(run["model"], adapter_path=adapter_dir))


@pytest.mark.parametrize(
    "adapter,message",
    [
        ({"type": "bitfit"}, "bitfit trains only bias parameters and this model has 0 bias parameters"),
        ({"type": "freeze", "freeze_layers": 3}, "freeze_layers is 3 but the model has only 2 transformer layers"),
    ],
)
def test_adapter_that_does_not_fit_the_model_fails_at_start(adapter, message, demo_kit, tmp_path):
    spec = _spec(demo_kit["model"], demo_kit["data"]["train"], adapter, str(tmp_path), {"max_steps": 2})
    log = EventLog()
    assert execute(spec, log) == 1
    (failed,) = log.events
    assert failed["event"] == "failed"
    assert failed["error"] == f"AdapterError: {message}" or message in failed["error"]
    assert "\n" not in failed["error"]


def test_qlora_without_cuda_and_bitsandbytes_fails_fast_with_one_line(demo_kit, tmp_path):
    import importlib.util

    import torch

    if torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes"):
        pytest.skip("this machine can run qlora")
    spec = _spec(demo_kit["model"], demo_kit["data"]["train"], {"type": "qlora"}, str(tmp_path), {"max_steps": 2})
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    result = subprocess.run(
        [sys.executable, "-m", "trainers", "run", str(path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in events] == ["failed"]  # before any data or model was loaded
    assert events[0]["error"] == "AdapterError: qlora needs a CUDA GPU and bitsandbytes; this worker has neither"


# --- validation at form/API time (no torch) ---


@pytest.mark.parametrize(
    "data,field,message",
    [
        (
            {"type": "ia3", "r": 16},
            "r",
            "r: ia3 does not use this field (only lora, dora, qlora do); leave it at its default (8)",
        ),
        ({"type": "none", "alpha": 32}, "alpha", "alpha: none does not use this field (only lora, dora, qlora do)"),
        (
            {"type": "lora", "num_virtual_tokens": 8},
            "num_virtual_tokens",
            "lora does not use this field (only prompt_tuning do)",
        ),
        ({"type": "dora", "freeze_layers": 2}, "freeze_layers", "freeze_layers: dora does not use this field"),
        (
            {"type": "layernorm", "target_modules": "q_proj"},
            "target_modules",
            "(only lora, dora, qlora, ia3 do); leave it at its default ('all-linear')",
        ),
        ({"type": "ia3", "target_modules": "q proj"}, "target_modules", "not a module name: 'q proj'"),
        ({"type": "adapter9"}, "type", "type: must be one of none, lora, dora, qlora, ia3, prompt_tuning, layernorm"),
        ({"type": "prompt_tuning", "num_virtual_tokens": 0}, "num_virtual_tokens", "must be >= 1"),
    ],
)
def test_fields_that_do_not_apply_are_refused(data, field, message):
    cfg, errors = validate_config(AdapterConfig, data)
    assert cfg is None
    assert message in errors[field], errors


def test_every_type_validates_with_its_own_fields():
    for data in (
        {"type": "dora", "r": 16, "alpha": 32, "use_rslora": True},
        {"type": "qlora", "r": 64, "dropout": 0.05, "target_modules": "q_proj,v_proj"},
        {"type": "ia3", "target_modules": "k_proj,v_proj,down_proj"},
        {"type": "prompt_tuning", "num_virtual_tokens": 50},
        {"type": "freeze", "freeze_layers": 12},
        {"type": "layernorm"},
        {"type": "bitfit"},
    ):
        cfg, errors = validate_config(AdapterConfig, data)
        assert errors == {} and cfg.type == data["type"], errors
    # A stored spec holds every field with its default: it validates for any type.
    assert validate_config(AdapterConfig, {**AdapterConfig().__dict__, "type": "ia3"})[1] == {}


def test_form_help_says_which_types_use_each_field():
    helps = {f["name"]: f["help"] for f in config_schema(AdapterConfig)}
    assert helps["r"].endswith("Used by: lora, dora, qlora.")
    assert helps["target_modules"].endswith("Used by: lora, dora, qlora, ia3.")
    assert helps["num_virtual_tokens"].endswith("Used by: prompt_tuning.")
    assert helps["freeze_layers"].endswith("Used by: freeze.")
    assert "'qlora'" in helps["type"] and "needs a CUDA GPU and bitsandbytes on the worker" in helps["type"]


def test_stage_validation_refuses_prompt_tuning_with_packing():
    _, _, errors = validate_stage("sft", {"packing": True}, {"type": "prompt_tuning"}, "prompt_completion")
    assert set(errors) == {"config.packing"}
    assert errors["config.packing"].startswith("packing: cannot be combined with prompt tuning")
    assert validate_stage("sft", {"packing": True}, {"type": "lora"}, "prompt_completion")[2] == {}


def test_model_checks_need_only_names_and_layer_count():
    names = ["model.layers.0.self_attn.q_proj.weight", "model.norm.weight"]
    bitfit, freeze = AdapterConfig(type="bitfit"), AdapterConfig(type="freeze", freeze_layers=4)
    assert "0 bias parameters" in adapter_model_errors(bitfit, parameter_names=names, num_layers=2)["type"]
    assert adapter_model_errors(bitfit, parameter_names=[*names, "model.layers.0.mlp.up_proj.bias"], num_layers=2) == {}
    assert (
        "only 2 transformer layers"
        in adapter_model_errors(freeze, parameter_names=names, num_layers=2)["freeze_layers"]
    )
    assert adapter_model_errors(freeze, parameter_names=names, num_layers=4) == {}


def test_a_method_can_restrict_its_adapter_types(monkeypatch):
    from trainers.catalog import METHODS, Method
    from trainers.configs import SFTConfig

    narrow = Method(
        "narrow", "Narrow", "test", SFTConfig, ("prompt_completion",), "x:y", adapter_types=("none", "lora")
    )
    monkeypatch.setitem(METHODS, "narrow", narrow)
    _, _, errors = validate_stage("narrow", {}, {"type": "ia3"}, "prompt_completion")
    assert errors == {"adapter.type": "type: narrow cannot train a ia3 adapter; choose one of none, lora"}
    assert validate_stage("narrow", {}, {"type": "lora"}, "prompt_completion")[2] == {}


def test_lora_config_still_serves_older_callers():
    from trainers.methods.common import AdapterError, lora_config

    assert lora_config(AdapterConfig(type="none")) is None
    assert lora_config(AdapterConfig(type="dora", r=4)).use_dora is True
    with pytest.raises(AdapterError, match="use apply_adapter"):
        lora_config(AdapterConfig(type="qlora"))
