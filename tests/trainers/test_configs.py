"""Config schemas, coercion of form values and specific error messages (no torch needed)."""

from dataclasses import dataclass

import pytest
from trainers.catalog import METHODS, describe_methods, get_method, validate_stage
from trainers.configs import AdapterConfig, SFTConfig
from trainers.schema import config_schema, json_schema, param, validate_config


def test_defaults_are_valid():
    for cls in (SFTConfig, AdapterConfig):
        cfg, errors = validate_config(cls, {})
        assert errors == {}
        assert cfg == cls()


def test_html_form_strings_are_coerced():
    form = {
        "learning_rate": "0.001",
        "num_train_epochs": "3",
        "max_steps": "-1",
        "per_device_train_batch_size": " 8 ",
        "completion_only_loss": "off",
        "packing": "on",
        "lr_scheduler_type": "cosine",
    }
    cfg, errors = validate_config(SFTConfig, form)
    assert errors == {}
    assert cfg.learning_rate == 0.001
    assert cfg.num_train_epochs == 3.0 and isinstance(cfg.num_train_epochs, float)
    assert cfg.per_device_train_batch_size == 8
    assert cfg.completion_only_loss is False
    assert cfg.packing is True
    assert cfg.lr_scheduler_type == "cosine"


@pytest.mark.parametrize("raw,expected", [("true", True), ("false", False), ("1", True), ("0", False), (True, True)])
def test_bool_spellings(raw, expected):
    cfg, errors = validate_config(AdapterConfig, {"use_rslora": raw})
    assert errors == {}
    assert cfg.use_rslora is expected


@pytest.mark.parametrize(
    "data,field,message",
    [
        ({"learning_rate": 5}, "learning_rate", "learning_rate: must be > 0 and <= 1, got 5"),
        ({"learning_rate": "0"}, "learning_rate", "learning_rate: must be > 0 and <= 1, got 0"),
        ({"learning_rate": "fast"}, "learning_rate", "learning_rate: must be a number, got 'fast'"),
        ({"per_device_train_batch_size": "2.5"}, "per_device_train_batch_size", "must be an integer, got '2.5'"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size", "must be >= 1 and <= 4096, got 0"),
        ({"lr_scheduler_type": "cyclic"}, "lr_scheduler_type", "must be one of linear, cosine"),
        ({"packing": "maybe"}, "packing", "packing: must be true or false, got 'maybe'"),
        ({"eval_fraction": 0.9}, "eval_fraction", "eval_fraction: must be >= 0 and <= 0.5, got 0.9"),
        ({"max_steps": 0}, "max_steps", "max_steps: must be -1 (train for num_train_epochs) or a positive"),
        ({"max_steps": ""}, "max_steps", "max_steps: a value is required"),
        ({"learning_rate": True}, "learning_rate", "learning_rate: must be a number, got True"),
        ({"bogus": 1}, "bogus", "bogus: unknown field"),
    ],
)
def test_sft_rejections_name_the_field(data, field, message):
    cfg, errors = validate_config(SFTConfig, data)
    assert cfg is None
    assert set(errors) == {field}
    assert message in errors[field]
    assert errors[field].startswith(f"{field}: ")


def test_every_bad_field_is_reported_once():
    cfg, errors = validate_config(SFTConfig, {"learning_rate": -1, "packing": "x", "nope": 1})
    assert cfg is None
    assert set(errors) == {"learning_rate", "packing", "nope"}


@pytest.mark.parametrize(
    "data,field,message",
    [
        ({"type": "qlora4"}, "type", "type: must be one of none, lora, dora, qlora, ia3, prompt_tuning"),
        ({"r": 2048}, "r", "r: must be >= 1 and <= 1024, got 2048"),
        ({"dropout": 1}, "dropout", "dropout: must be >= 0 and < 1, got 1"),
        ({"target_modules": "q_proj, v proj"}, "target_modules", "not a module name: 'v proj'"),
        ({"target_modules": " , "}, "target_modules", "give 'all-linear' or at least one module name"),
    ],
)
def test_adapter_rejections(data, field, message):
    cfg, errors = validate_config(AdapterConfig, data)
    assert cfg is None
    assert message in errors[field]


def test_adapter_module_list():
    cfg, errors = validate_config(AdapterConfig, {"target_modules": "q_proj, v_proj"})
    assert errors == {}
    assert cfg.target_module_list() == ["q_proj", "v_proj"]


def test_cross_field_check_hook():
    @dataclass(frozen=True)
    class Window:
        low: int = param(1, min=0, help="low end")
        high: int = param(2, min=0, help="high end")

        def check(self):
            return {"high": "must be above low"} if self.high <= self.low else {}

    assert validate_config(Window, {"low": "3", "high": "5"})[1] == {}
    cfg, errors = validate_config(Window, {"low": 5, "high": 3})
    assert cfg is None
    assert errors == {"high": "high: must be above low"}


def test_schema_lists_every_field_with_help():
    schema = config_schema(SFTConfig)
    names = [f["name"] for f in schema]
    for expected in (
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "max_length",
        "warmup_ratio",
        "weight_decay",
        "lr_scheduler_type",
        "logging_steps",
        "save_steps",
        "completion_only_loss",
        "packing",
        "eval_fraction",
    ):
        assert expected in names
    for field in schema + config_schema(AdapterConfig):
        assert field["type"] in {"int", "float", "bool", "str", "choice"}
        assert field["help"] and field["label"]
    lr = next(f for f in schema if f["name"] == "learning_rate")
    assert (lr["min"], lr["max"], lr["min_exclusive"]) == (0, 1, True)
    sched = next(f for f in schema if f["name"] == "lr_scheduler_type")
    assert sched["type"] == "choice" and "cosine" in sched["choices"]


def test_json_schema_shape():
    schema = json_schema(SFTConfig)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    lr = schema["properties"]["learning_rate"]
    assert lr["type"] == "number" and lr["exclusiveMinimum"] == 0 and lr["maximum"] == 1
    assert schema["properties"]["packing"]["type"] == "boolean"
    assert schema["properties"]["lr_scheduler_type"]["enum"][0] == "linear"
    r = json_schema(AdapterConfig)["properties"]["r"]
    assert (r["type"], r["minimum"], r["maximum"], r["default"]) == ("integer", 1, 1024, 8)


def test_registry_and_stage_validation():
    assert get_method("sft") is METHODS["sft"]
    assert METHODS["sft"].runner == "trainers.methods.sft:run"
    with pytest.raises(KeyError, match="unknown method 'ppo'"):
        get_method("ppo")

    cfg, adapter, errors = validate_stage("sft", {"learning_rate": "0.01"}, {"type": "lora", "r": "4"}, "chat")
    assert errors == {}
    assert cfg.learning_rate == 0.01 and adapter.r == 4

    cfg, adapter, errors = validate_stage("sft", {}, {}, "preference")
    assert cfg is None and adapter is None
    assert errors == {
        "dataset_kind": "dataset_kind: sft cannot train on 'preference' data; it needs prompt_completion or chat data"
    }

    _, _, errors = validate_stage("sft", {"learning_rate": 5}, {"r": 0}, "prompt_completion")
    assert errors == {
        "config.learning_rate": "learning_rate: must be > 0 and <= 1, got 5",
        "adapter.r": "r: must be >= 1 and <= 1024, got 0",
    }
    assert "method" in validate_stage("ppo", {}, {}, "chat")[2]


def test_describe_methods_is_json_ready():
    import json

    described = json.loads(json.dumps(describe_methods()))
    sft = described["methods"][0]
    assert sft["name"] == "sft" and sft["dataset_kinds"] == ["prompt_completion", "chat"]
    assert sft["config_json_schema"]["properties"]["learning_rate"]["default"] == SFTConfig().learning_rate
    assert described["adapter"]["config_fields"][0]["name"] == "type"


def test_method_configs_extend_the_shared_training_settings_and_keep_their_form_order():
    from trainers.configs.training import SequenceTrainingConfig, TrainingConfig
    from trainers.schema import config_fields

    shared = [f.name for f in config_fields(TrainingConfig)]
    for method in METHODS.values():
        if not method.trains:
            continue
        assert issubclass(method.config_class, TrainingConfig), method.name
        names = [f.name for f in config_fields(method.config_class)]
        assert [n for n in names if n in shared] == shared, method.name  # the shared ones, in their order
        if issubclass(method.config_class, SequenceTrainingConfig):
            assert names.index("max_length") == names.index("gradient_accumulation_steps") + 1
    sft = [f.name for f in config_fields(METHODS["sft"].config_class)]
    assert sft[sft.index("lr_scheduler_type") + 1 : sft.index("lr_scheduler_type") + 3] == [
        "completion_only_loss",
        "packing",
    ]
    dpo = [f.name for f in config_fields(METHODS["dpo"].config_class)]
    assert dpo[:3] == ["loss_type", "beta", "label_smoothing"]  # a method's own fields come first
    # the shared rule still runs in every method: max_steps 0 is refused
    for name in ("sft", "dpo", "grpo", "distill", "reward"):
        _, errors = validate_config(METHODS[name].config_class, {"max_steps": 0})
        assert "max_steps" in errors, name


def test_a_field_placed_after_a_missing_field_is_a_declaration_error():
    @dataclass(frozen=True)
    class Broken:
        a: int = param(1, help="a", after="nope")

    with pytest.raises(TypeError, match="after='nope' names no field"):
        config_schema(Broken)


def test_metric_facts_are_one_rule():
    from trainers.configs.gate import GATE_METRICS
    from trainers.metrics import EVAL_KINDS, PRIMARY_METRICS, higher_is_better, metric_goal, summary_numbers

    assert PRIMARY_METRICS == {
        "prompt_completion": ("loss", False),
        "chat": ("loss", False),
        "reference": ("accuracy", True),
        "preference": ("preference_accuracy", True),
    }
    assert all(GATE_METRICS[kind][0] == PRIMARY_METRICS[kind][0] for kind in EVAL_KINDS)
    assert METHODS["evaluate"].dataset_kinds == METHODS["gate"].dataset_kinds == EVAL_KINDS
    for key, goal in (
        ("eval/loss", "min"),
        ("retention/perplexity", "min"),
        ("forgetting", "min"),
        ("train/runtime", "min"),
        ("eval/accuracy", "max"),
        ("gain", "max"),
        ("Eval/NLL_loss", "min"),
        ("loss/accuracy", "max"),
    ):  # the last path segment decides
        assert metric_goal(key) == goal, key
        assert higher_is_better(key) is (goal == "max")
    assert summary_numbers({"train": {"loss": 0.5, "ok": True}, "note": "x", "nan": float("nan")}) == {
        "train/loss": 0.5
    }


def test_method_facts_the_web_side_reads():
    from trainers.configs.adapters import FULL_MODEL_TYPES

    assert [m.name for m in METHODS.values() if not m.trains] == ["merge", "evaluate", "gate", "export"]
    assert [m.name for m in METHODS.values() if m.scorer] == ["reward"]
    assert [m.name for m in METHODS.values() if m.retention] == ["evaluate", "gate"]
    assert FULL_MODEL_TYPES == ("none", "bitfit", "freeze")
