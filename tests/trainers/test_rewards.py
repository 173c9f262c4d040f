"""GRPO's reward functions on hand-made completions, and the reward/grpo/distill configs (no training)."""

import dataclasses
import json

import pytest
from trainers.catalog import METHODS, validate_stage
from trainers.configs import DistillConfig, GRPOConfig, RewardConfig
from trainers.configs.grpo import GRPO_LOSS_TYPES
from trainers.rewards import (
    REWARDS,
    contains,
    exact_match,
    excludes,
    json_valid,
    length_penalty,
    numeric_match,
    parse_number,
    regex_match,
    reward_model,
    weight_field,
)
from trainers.schema import validate_config
from trainers.stage_spec import SpecError, parse_spec

# --- the reward functions -------------------------------------------------------------------------


def test_exact_match_normalisations():
    completions = ["7", " 7 \n", "The  answer", "the answer.", "'Paris'", "8"]
    answers = ["7", "7", "The answer", "The answer", "paris", "7"]
    assert exact_match(completions, answer=answers, normalize="none") == [1, 0, 0, 0, 0, 0]
    assert exact_match(completions, answer=answers, normalize="whitespace") == [1, 1, 1, 0, 0, 0]
    assert exact_match(completions, answer=answers, normalize="lenient") == [1, 1, 1, 1, 1, 0]


def test_exact_match_reads_conversational_completions_and_needs_an_answer_column():
    chat = [[{"role": "assistant", "content": "12"}], [{"role": "assistant", "content": "13"}]]
    assert exact_match(chat, answer=["12", "12"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="needs a 'answer' column"):
        exact_match(["1"], prompts=["x"])


@pytest.mark.parametrize(
    "text,value",
    [
        ("The answer is 7.", 7.0),
        ("7", 7.0),
        ("3 + 4 = 7", 7.0),
        ("I think -2.5 is right", -2.5),
        ("about 1,234 apples", 1234.0),
        ("3/4", 0.75),
        ("1e-3", 0.001),
        ("#### 42", 42.0),
        ("$1,000.50 total", 1000.5),
        ("no number here", None),
        ("x2 and v3", None),  # digits inside words are not numbers
    ],
)
def test_parse_number_takes_the_last_number(text, value):
    assert parse_number(text) == value


def test_numeric_match_tolerance_and_unparseable_text():
    completions = ["The answer is 7.", "7.0004", "seven", "It is 3.14159", "8"]
    answers = ["7", "7", "7", "3.1416", "#### 7"]
    assert numeric_match(completions, answer=answers, tolerance=1e-6) == [1, 0, 0, 0, 0]
    assert numeric_match(completions, answer=answers, tolerance=1e-3) == [1, 1, 0, 1, 0]
    assert numeric_match(["7"], answer=["no number"], tolerance=1) == [0.0]


def test_regex_match_search_and_full_match():
    completions = ["Answer: 42", "The Answer: 42 indeed", "answer: x"]
    assert regex_match(completions, pattern=r"Answer: \d+") == [1, 1, 0]
    assert regex_match(completions, pattern=r"Answer: \d+", full_match=True) == [1, 0, 0]


def test_json_valid_accepts_plain_and_fenced_json():
    completions = [
        '{"a": 1}',
        'Here it is:\n```json\n{"a": [1, 2]}\n```\nDone.',
        "```\n[1, 2, 3]\n```",
        "{'a': 1}",  # Python, not JSON
        '```json\n{"a": \n```',  # broken inside the fence
        "",
        "  42  ",
    ]
    assert json_valid(completions) == [1, 1, 1, 0, 0, 0, 1]


def test_contains_and_excludes_count_each_string():
    completions = ["Because X, therefore Y", "because only", "nothing"]
    assert contains(completions, text="because|therefore") == [1.0, 0.5, 0.0]
    assert contains(completions, text="because|therefore", ignore_case=False) == [0.5, 0.5, 0.0]
    assert excludes(completions, text="As an AI| because") == [0.5, 0.5, 1.0]
    with pytest.raises(ValueError, match="at least one string"):
        contains(completions, text=" | ")


def test_length_penalty_counts_tokens_and_saturates():
    ids = [[1] * 10, [1] * 15, [1] * 5, [1] * 40]
    rewards = length_penalty(["a"] * 4, target=10, scale=10, completion_ids=ids)
    assert rewards == [0.0, -0.5, -0.5, -1.0]
    assert length_penalty(["abcd"], target=4, scale=2) == [0.0]  # characters without completion_ids


def test_reward_model_reward_scores_prompt_and_completion():
    class Scorer:
        def score_pairs(self, prompts, completions):
            return [float(len(p) + len(c)) for p, c in zip(prompts, completions)]

    assert reward_model(["7", "77"], prompts=["3+4=", "3+4="], scorer=Scorer()) == [5.0, 6.0]


def test_every_reward_has_a_weight_field_and_its_parameters_exist():
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    for name, reward in REWARDS.items():
        assert weight_field(name) in fields, name
        assert set(reward.params.values()) <= fields, name
    weights = {f for f in fields if f.startswith("reward_") and f.endswith("_weight")}
    assert weights == {weight_field(name) for name in REWARDS}


# --- the grpo config ------------------------------------------------------------------------------


def test_grpo_without_a_reward_is_refused():
    cfg, errors = validate_config(GRPOConfig, {})
    assert cfg is None
    assert errors == {"__all__": "grpo needs at least one reward: set a weight above 0"}


@pytest.mark.parametrize(
    "data,field,message",
    [
        (
            {"reward_regex_match_weight": 1, "regex_pattern": "Answer: (\\d+"},
            "regex_pattern",
            "regex_pattern: not a valid regular expression: missing ) at position 12",
        ),
        ({"reward_regex_match_weight": 1}, "regex_pattern", "regex_pattern: the regex_match reward needs a pattern"),
        ({"reward_contains_weight": 1, "contains_text": " | "}, "contains_text", "needs at least one string"),
        ({"reward_excludes_weight": 1}, "excludes_text", "excludes_text: the excludes reward needs at least one"),
        (
            {"reward_reward_model_weight": 1},
            "reward_model_stage",
            "reward_model_stage: the reward_model reward needs the name of an earlier reward stage",
        ),
        (
            {"reward_exact_match_weight": 1, "reward_model_stage": "rm"},
            "reward_model_stage",
            "reward_model_stage: is set but reward_reward_model_weight is 0",
        ),
        (
            {"reward_reward_model_weight": 1, "reward_model_stage": "RM stage"},
            "reward_model_stage",
            "is not a stage name",
        ),
        (
            {"reward_exact_match_weight": 1, "per_device_train_batch_size": 12},
            "per_device_train_batch_size",
            "must be a multiple of num_generations (8)",
        ),
        ({"reward_exact_match_weight": -1}, "reward_exact_match_weight", "must be >= 0 and <= 100, got -1"),
        ({"reward_exact_match_weight": 1, "num_generations": 1}, "num_generations", "must be >= 2"),
        ({"reward_exact_match_weight": 1, "loss_type": "ppo"}, "loss_type", "must be one of dapo, grpo"),
    ],
)
def test_grpo_config_rejections_name_the_field(data, field, message):
    cfg, errors = validate_config(GRPOConfig, data)
    assert cfg is None
    assert set(errors) == {field}
    assert message in errors[field]


def test_grpo_config_reports_the_rewards_in_use():
    cfg, errors = validate_config(
        GRPOConfig,
        {"reward_exact_match_weight": "1", "reward_regex_match_weight": 0.5, "regex_pattern": r"^\d+$"},
    )
    assert errors == {}
    assert cfg.reward_weights() == {"exact_match": 1.0, "regex_match": 0.5}


def test_grpo_loss_types_mirror_the_installed_trl():
    from trainers.methods.grpo import installed_loss_types

    installed = installed_loss_types()
    assert len(installed) >= 4 and "grpo" in installed and "dapo" in installed
    assert set(GRPO_LOSS_TYPES) == set(installed)


def test_other_configs_default_to_valid():
    for cls in (RewardConfig, DistillConfig):
        cfg, errors = validate_config(cls, {})
        assert errors == {} and cfg == cls()
    _, errors = validate_config(DistillConfig, {"teacher_stage": "../x"})
    assert "teacher_stage: '../x' is not a stage name" in errors["teacher_stage"]


# --- the registry and the stage spec --------------------------------------------------------------


def test_methods_take_their_data_kinds():
    ok = {"reward_exact_match_weight": 1}
    assert validate_stage("grpo", ok, {"type": "none"}, "reference")[2] == {}
    assert validate_stage("grpo", ok, {"type": "lora"}, "chat")[2] == {}
    assert (
        "needs reference or prompt_completion or chat data"
        in (validate_stage("grpo", ok, {}, "preference")[2]["dataset_kind"])
    )
    assert validate_stage("reward", {}, {"type": "lora"}, "preference")[2] == {}
    assert "reward cannot train on 'reference' data" in validate_stage("reward", {}, {}, "reference")[2]["dataset_kind"]
    assert validate_stage("distill", {}, {"type": "none"}, "prompt_completion")[2] == {}
    assert (
        "cannot train a prompt_tuning adapter"
        in (validate_stage("reward", {}, {"type": "prompt_tuning"}, "preference")[2]["adapter.type"])
    )


def test_methods_declare_their_aux_models():
    described = {m["name"]: m for m in json.loads(json.dumps([m.describe() for m in METHODS.values()]))}
    assert described["grpo"]["aux_models"] == [
        {
            "key": "reward_model",
            "stage_field": "reward_model_stage",
            "stage_methods": ["reward"],
            "not_methods": [],
            "base_when_empty": False,
            "platform": False,
        }
    ]
    assert METHODS["distill"].aux_sources({"teacher_stage": ""}) == {"teacher": "base"}
    assert METHODS["distill"].aux_sources({"teacher_stage": "sft"}) == {"teacher": "sft"}
    assert METHODS["grpo"].aux_sources({"reward_model_stage": ""}) == {}
    assert not METHODS["distill"].aux_models[0].accepts("reward")


def _grpo_spec(demo_kit, tmp_path, **extra):
    return {
        "method": "grpo",
        "config": {"reward_reward_model_weight": 1, "reward_model_stage": "rm"},
        "model": {"name_or_path": demo_kit["model"]},
        "data": {"train": {"path": demo_kit["data"]["reference"], "kind": "reference"}},
        "output_dir": str(tmp_path / "out"),
        "checkpoint_dir": str(tmp_path / "ckpt"),
        **extra,
    }


def test_spec_needs_exactly_the_aux_models_the_config_uses(demo_kit, tmp_path):
    with pytest.raises(SpecError) as missing:
        parse_spec(_grpo_spec(demo_kit, tmp_path))
    assert "aux_models.reward_model: is required (the output of stage 'rm'" in str(missing.value)

    with pytest.raises(SpecError) as unknown:
        parse_spec(_grpo_spec(demo_kit, tmp_path, aux_models={"teacher": {"name_or_path": demo_kit["model"]}}))
    assert "aux_models.teacher: grpo uses no such model (it uses: reward_model)" in str(unknown.value)

    with pytest.raises(SpecError) as bad_path:
        parse_spec(_grpo_spec(demo_kit, tmp_path, aux_models={"reward_model": {"name_or_path": "/nope/rm"}}))
    assert "aux_models.reward_model.name_or_path: no such model directory: /nope/rm" in str(bad_path.value)

    spec = parse_spec(_grpo_spec(demo_kit, tmp_path, aux_models={"reward_model": {"name_or_path": demo_kit["model"]}}))
    assert spec.aux_models["reward_model"].name_or_path == demo_kit["model"]
