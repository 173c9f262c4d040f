"""The one list of post-training methods, with their configs and the data they accept.

Importing this module imports no heavy library: each method's runner is named by a dotted
path and imported only by :meth:`Method.load_runner` inside the trainer process.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .configs import (
    AdapterConfig,
    DistillConfig,
    DPOConfig,
    EvaluateConfig,
    ExportConfig,
    GateConfig,
    GRPOConfig,
    KTOConfig,
    MergeConfig,
    ORPOConfig,
    RewardConfig,
    SFTConfig,
    SimPOConfig,
)
from .configs.adapters import ADAPTER_TYPES
from .dataset_kinds import DATASET_KINDS
from .metrics import EVAL_KINDS
from .schema import config_schema, json_schema, validate_config

__all__ = [
    "DATASET_KINDS",
    "AuxModel",
    "Method",
    "METHODS",
    "get_method",
    "validate_stage",
    "describe_methods",
]

_NO_PROMPT_TUNING = tuple(t for t in ADAPTER_TYPES if t != "prompt_tuning")


@dataclass(frozen=True)
class AuxModel:
    """A model a method loads besides its input model: stage spec ``aux_models.<key>``, the output of the
    earlier stage that the config field ``stage_field`` names (docs/stage-spec.md)."""

    key: str  # aux_models key, e.g. "reward_model"
    stage_field: str  # config field that names the earlier stage, e.g. "reward_model_stage"
    stage_methods: tuple[str, ...] = ()  # the methods that stage may use (empty: any)
    not_methods: tuple[str, ...] = ()  # methods that stage may not use (their output is another kind of model)
    base_when_empty: bool = False  # an empty stage_field means the run's base model (else: not used)
    # Given by the platform from elsewhere than a stage (a gate's champion from the model registry, the run's
    # base model): optional in the spec, never named by a config field (stage_field is empty).
    platform: bool = False

    def accepts(self, method: str) -> bool:
        """Whether the output of a stage of ``method`` can serve as this model."""
        return (not self.stage_methods or method in self.stage_methods) and method not in self.not_methods

    def source(self, config: Any) -> str | None:
        """Where this model comes from for a config (a dataclass instance or a dict of field values): the
        earlier stage's name, ``"base"``, or None when the stage does not use it."""
        if self.platform:
            return None
        value = config.get(self.stage_field, "") if isinstance(config, dict) else getattr(config, self.stage_field)
        value = str(value or "").strip()
        if value:
            return value
        return "base" if self.base_when_empty else None


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    description: str
    config_class: type
    dataset_kinds: tuple[str, ...]
    runner: str  # "package.module:function", called as function(spec, events) -> dict
    uses_adapter: bool = True
    # The adapter types this method can train; others are refused when the stage is validated.
    adapter_types: tuple[str, ...] = ADAPTER_TYPES
    # Models this method loads besides its input, each from an earlier stage a config field names.
    aux_models: tuple[AuxModel, ...] = ()
    # False: the stage trains on nothing (merge, evaluate, export); its dataset, if any, is read as held-out
    # data (spec `data.eval`) and `dataset_kinds` lists the kinds it can read there.
    trains: bool = True
    dataset_required: bool = True  # with trains=False: whether the stage needs its (held-out) dataset
    # "one": `model` is the input. "many": `inputs` lists 2 or more models (merge) and `model` is the base.
    inputs: str = "one"
    # What the stage outputs: "model" (a model or an adapter a later stage can take) or "report" (evaluate).
    output: str = "model"
    # With output "model": True when that model scores text (a sequence classifier, as a reward stage makes)
    # rather than generating it.
    scorer: bool = False
    # True: the stage also measures forgetting on the pipeline's retention set (spec `data.retention`).
    retention: bool = False

    def aux_sources(self, config: Any) -> dict[str, str]:
        """``{aux_models key: earlier stage name or "base"}`` for the models this config uses."""
        found = {aux.key: aux.source(config) for aux in self.aux_models}
        return {key: source for key, source in found.items() if source is not None}

    def load_runner(self) -> Callable[..., dict[str, Any]]:
        """Import the runner (this is where torch & co. get imported)."""
        module_name, _, attr = self.runner.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: identity, accepted data and the config form."""
        return {
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "dataset_kinds": list(self.dataset_kinds),
            "uses_adapter": self.uses_adapter,
            "adapter_types": list(self.adapter_types) if self.uses_adapter else [],
            "aux_models": [
                {
                    "key": a.key,
                    "stage_field": a.stage_field,
                    "stage_methods": list(a.stage_methods),
                    "not_methods": list(a.not_methods),
                    "base_when_empty": a.base_when_empty,
                    "platform": a.platform,
                }
                for a in self.aux_models
            ],
            "trains": self.trains,
            "dataset_required": self.dataset_required,
            "inputs": self.inputs,
            "output": self.output,
            "runner": self.runner,
            "config_fields": config_schema(self.config_class),
            "config_json_schema": json_schema(self.config_class),
        }


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            name="sft",
            label="Supervised fine-tuning (SFT)",
            description="Train the model to reproduce the completions of prompt/completion pairs, "
            "or the assistant turns of conversations.",
            config_class=SFTConfig,
            dataset_kinds=("prompt_completion", "chat"),
            runner="trainers.methods.sft:run",
        ),
        Method(
            name="dpo",
            label="Direct Preference Optimization (DPO)",
            description="Make chosen answers more likely than rejected ones, relative to the starting model; "
            "choose among TRL's DPO loss variants (IPO, robust, hinge, ...).",
            config_class=DPOConfig,
            dataset_kinds=("preference",),
            runner="trainers.methods.dpo:run",
        ),
        Method(
            name="kto",
            label="Kahneman-Tversky Optimization (KTO)",
            description="Learn from single answers marked desirable or undesirable (feedback data), "
            "or from preference pairs split into one of each.",
            config_class=KTOConfig,
            dataset_kinds=("preference", "feedback"),
            runner="trainers.methods.kto:run",
        ),
        Method(
            name="orpo",
            label="Odds Ratio Preference Optimization (ORPO)",
            description="Supervised fine-tuning on the chosen answers plus an odds-ratio penalty on the rejected "
            "ones, in one stage and without a reference model.",
            config_class=ORPOConfig,
            dataset_kinds=("preference",),
            runner="trainers.methods.orpo:run",
            # TRL's experimental trainer misaligns logits and labels under prompt tuning's virtual tokens.
            adapter_types=_NO_PROMPT_TUNING,
        ),
        Method(
            name="simpo",
            label="Simple Preference Optimization (SimPO)",
            description="Prefer chosen answers by a target margin of length-normalized log-probability, "
            "without a reference model.",
            config_class=SimPOConfig,
            dataset_kinds=("preference",),
            runner="trainers.methods.simpo:run",
            # TRL's experimental trainer misaligns logits and labels under prompt tuning's virtual tokens.
            adapter_types=_NO_PROMPT_TUNING,
        ),
        Method(
            name="reward",
            label="Reward model",
            description="Train a model to score answers so that chosen ones score above rejected ones; "
            "a later grpo stage can use it as its reward, and trainers.scoring can score data with it.",
            config_class=RewardConfig,
            dataset_kinds=("preference",),
            runner="trainers.methods.reward:run",
            # A prompt-tuning adapter cannot be merged, so the scorer could not load it.
            adapter_types=_NO_PROMPT_TUNING,
            scorer=True,
        ),
        Method(
            name="grpo",
            label="GRPO (RL with verifiable rewards)",
            description="Sample several answers per prompt, score them with rewards chosen by name "
            "(exact or numeric match with the reference, format, JSON, keywords, length, a reward model) "
            "and learn to prefer the better ones.",
            config_class=GRPOConfig,
            dataset_kinds=("reference", "prompt_completion", "chat"),
            runner="trainers.methods.grpo:run",
            adapter_types=_NO_PROMPT_TUNING,
            aux_models=(AuxModel("reward_model", "reward_model_stage", stage_methods=("reward",)),),
        ),
        Method(
            name="distill",
            label="Distillation from a teacher",
            description="The model answers the prompts itself and learns to match a teacher model's "
            "token distributions on its answers (on-policy distillation); the teacher is the base model "
            "or an earlier stage's output.",
            config_class=DistillConfig,
            dataset_kinds=("prompt_completion", "chat", "reference"),
            runner="trainers.methods.distill:run",
            adapter_types=_NO_PROMPT_TUNING,
            # A reward stage outputs a scoring model, not a language model that could teach.
            aux_models=(AuxModel("teacher", "teacher_stage", not_methods=("reward",), base_when_empty=True),),
        ),
        Method(
            name="merge",
            label="Merge models",
            description="Combine the outputs of several earlier stages into one model: a weighted average "
            "(model soup), task arithmetic, TIES, DARE (with or without TIES) or Model Stock.",
            config_class=MergeConfig,
            dataset_kinds=(),
            runner="trainers.methods.merge:run",
            uses_adapter=False,
            trains=False,
            dataset_required=False,
            inputs="many",
        ),
        Method(
            name="evaluate",
            label="Evaluate",
            description="Measure a model on held-out data (loss and perplexity, exact match and accuracy of "
            "generated answers, preference accuracy, reward-model score) against a baseline, its forgetting on "
            "the retention set, and sample generations for a fixed prompt list.",
            config_class=EvaluateConfig,
            dataset_kinds=EVAL_KINDS,
            runner="trainers.methods.evaluate:run",
            uses_adapter=False,
            trains=False,
            retention=True,
            dataset_required=False,
            output="report",
            aux_models=(
                AuxModel("baseline", "baseline_stage", not_methods=("reward", "evaluate"), base_when_empty=True),
                AuxModel("reward_model", "reward_model_stage", stage_methods=("reward",)),
            ),
        ),
        Method(
            name="gate",
            label="Promotion gate",
            description="Evaluate the input model (the candidate) and the current holder of a registered model's "
            "alias (the champion) on the same held-out and retention data; promote the candidate to the alias only "
            "if it beats the champion by the set margin and forgot no more than allowed.",
            config_class=GateConfig,
            dataset_kinds=EVAL_KINDS,
            runner="trainers.methods.gate:run",
            uses_adapter=False,
            trains=False,
            retention=True,
            dataset_required=True,
            output="report",
            aux_models=(
                AuxModel("champion", "", platform=True),
                AuxModel("base", "", platform=True),
            ),
        ),
        Method(
            name="export",
            label="Export and quantize",
            description="Merge an adapter into its base and save a standalone model (safetensors, tokenizer, "
            "model card), optionally with an int8 or 4-bit copy evaluated before and after quantization.",
            config_class=ExportConfig,
            dataset_kinds=("prompt_completion", "chat", "reference"),
            runner="trainers.methods.export:run",
            uses_adapter=False,
            trains=False,
            dataset_required=False,
        ),
    )
}


def get_method(name: str) -> Method:
    """The registered method called ``name``; KeyError with the known names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r} (known methods: {', '.join(sorted(METHODS))})") from None


def validate_stage(
    method: str, config: dict[str, Any] | None, adapter: dict[str, Any] | None, dataset_kind: str | None
) -> tuple[Any, AdapterConfig | None, dict[str, str]]:
    """Validate everything a stage form holds.

    Returns ``(method_config, adapter_config, errors)``. ``errors`` keys are
    ``method``, ``dataset_kind``, ``config.<field>`` and ``adapter.<field>``; each
    message is one line that names what is wrong. On any error both configs are None.
    """
    errors: dict[str, str] = {}
    try:
        spec = get_method(method)
    except KeyError as exc:
        return None, None, {"method": f"method: {exc.args[0]}"}

    if dataset_kind is None and not (spec.trains or spec.dataset_required):
        pass  # a merge, or an evaluate/export stage without held-out data
    elif not spec.trains and dataset_kind not in spec.dataset_kinds:
        accepted = " or ".join(spec.dataset_kinds) or "no"
        errors["dataset_kind"] = (
            f"dataset_kind: {spec.name} cannot read {dataset_kind!r} data; it reads {accepted} data"
        )
    elif dataset_kind not in spec.dataset_kinds:
        accepted = " or ".join(spec.dataset_kinds)
        if dataset_kind in DATASET_KINDS:
            errors["dataset_kind"] = (
                f"dataset_kind: {spec.name} cannot train on {dataset_kind!r} data; it needs {accepted} data"
            )
        else:
            errors["dataset_kind"] = (
                f"dataset_kind: unknown kind {dataset_kind!r} (known kinds: {', '.join(DATASET_KINDS)}); "
                f"{spec.name} needs {accepted} data"
            )

    method_cfg, config_errors = validate_config(spec.config_class, config)
    errors.update({f"config.{k}": v for k, v in config_errors.items()})

    adapter_cfg = None
    if spec.uses_adapter:
        adapter_cfg, adapter_errors = validate_config(AdapterConfig, adapter)
        errors.update({f"adapter.{k}": v for k, v in adapter_errors.items()})
        if adapter_cfg is not None and adapter_cfg.type not in spec.adapter_types:
            errors["adapter.type"] = (
                f"type: {spec.name} cannot train a {adapter_cfg.type} adapter; "
                f"choose one of {', '.join(spec.adapter_types)}"
            )
    elif adapter:
        errors["adapter.type"] = f"adapter: {spec.name} does not train an adapter; leave it empty"

    # Rules that join the method's settings and the adapter: an optional check_adapter(adapter) on the config,
    # returning {"config.<field>" or "adapter.<field>": message}.
    check_dataset_kind = getattr(method_cfg, "check_dataset_kind", None)
    if method_cfg is not None and dataset_kind is not None and callable(check_dataset_kind):
        errors.update(check_dataset_kind(dataset_kind) or {})
    check_adapter = getattr(method_cfg, "check_adapter", None)
    if method_cfg is not None and adapter_cfg is not None and callable(check_adapter):
        errors.update(check_adapter(adapter_cfg) or {})

    if errors:
        return None, None, errors
    return method_cfg, adapter_cfg, {}


def describe_methods() -> dict[str, Any]:
    """Everything the web side needs to build stage forms, as JSON-ready data."""
    return {
        "version": 1,
        "methods": [m.describe() for m in METHODS.values()],
        "adapter": {
            "config_fields": config_schema(AdapterConfig),
            "config_json_schema": json_schema(AdapterConfig),
        },
        "dataset_kinds": DATASET_KINDS,
    }
