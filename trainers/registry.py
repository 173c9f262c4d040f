"""The one list of post-training methods, with their configs and the data they accept.

Importing this module imports no heavy library: each method's runner is named by a dotted
path and imported only by :meth:`Method.load_runner` inside the trainer process.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .configs import AdapterConfig, DPOConfig, KTOConfig, ORPOConfig, SFTConfig, SimPOConfig
from .configs.adapters import ADAPTER_TYPES
from .schema import config_schema, json_schema, validate_config

__all__ = [
    "DATASET_KINDS",
    "Method",
    "METHODS",
    "get_method",
    "validate_stage",
    "describe_methods",
]

# Shapes of data a stage can read (see docs/stage-spec.md).
DATASET_KINDS = {
    "prompt_completion": "Prompt and completion columns (prompt, completion)",
    "chat": "Conversations: a messages column of {role, content} turns",
    "preference": "Prompt with a chosen and a rejected answer (prompt, chosen, rejected)",
    "reference": "Prompt and expected answer (prompt, answer)",
    "feedback": "Prompt with one answer marked desirable or not (prompt, completion, label: true/false)",
}


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
        ),
        Method(
            name="simpo",
            label="Simple Preference Optimization (SimPO)",
            description="Prefer chosen answers by a target margin of length-normalized log-probability, "
            "without a reference model.",
            config_class=SimPOConfig,
            dataset_kinds=("preference",),
            runner="trainers.methods.simpo:run",
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

    if dataset_kind not in spec.dataset_kinds:
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
