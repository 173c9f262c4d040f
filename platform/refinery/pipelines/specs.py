"""Pipeline specs: parse, normalise and validate, using the trainers' method registry.

One source of truth per method: the config dataclass in `trainers.configs` decides
defaults, bounds and choices for the web form, the API and the trainer alike.
"""
from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from trainers.configs.adapters import MERGEABLE_TYPES, adapter_model_errors
from trainers.registry import METHODS, validate_stage

from refinery.basemodels.services import local_model_layout
from refinery.data.models import Dataset

FULL_MODEL_TYPES = ("none", "bitfit", "freeze")  # adapter types whose stage outputs a whole model

# Methods whose stage outputs a scoring model (a sequence classifier), not a model that generates text.
SCORING_METHODS = ("reward",)

STAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_STAGES = 32


class SpecError(Exception):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(errors.values()))


def _dataset_kind(team, dataset_id) -> tuple[Dataset | None, str | None]:
    if dataset_id in (None, ""):
        return None, "choose a training dataset"
    try:
        pk = int(dataset_id)
    except (TypeError, ValueError):
        return None, f"dataset must be a dataset id, got {dataset_id!r}"
    dataset = Dataset.objects.filter(team=team, pk=pk).first()
    if dataset is None:
        return None, f"dataset #{pk} does not exist in this team"
    if not dataset.versions.exists():
        return None, f"dataset {dataset.name!r} has no version yet"
    return dataset, None


def pipeline_spec_normalize(*, team, spec: Any, base_model=None) -> dict:
    """Validate a pipeline spec and return it with every config fully resolved (defaults filled).

    Raises SpecError whose `errors` maps a field path (`stages.1.config.learning_rate`)
    to a one-line message naming the stage.
    """
    errors: dict[str, str] = {}
    if not isinstance(spec, dict):
        raise SpecError({"spec": "spec must be an object with a 'stages' list"})
    unknown = set(spec) - {"stages", "seed"}
    if unknown:
        errors["spec"] = f"unknown spec fields: {', '.join(sorted(unknown))}"
    seed = spec.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int) or not (0 <= seed < 2**31):
        try:
            seed = int(str(seed))
            if not (0 <= seed < 2**31):
                raise ValueError
        except ValueError:
            errors["seed"] = f"seed: must be an integer between 0 and 2147483647, got {spec.get('seed')!r}"
    stages = spec.get("stages")
    if not isinstance(stages, list) or not stages:
        errors["stages"] = "a pipeline needs at least one stage"
        raise SpecError(errors)
    if len(stages) > MAX_STAGES:
        errors["stages"] = f"a pipeline has at most {MAX_STAGES} stages, got {len(stages)}"
        raise SpecError(errors)

    resolved = []
    seen: dict[str, str] = {}  # stage name -> method
    seen_adapters: dict[str, str] = {}  # stage name -> adapter type
    for i, stage in enumerate(stages):
        where = f"stages.{i}"
        label = f"stage {i + 1}"
        if not isinstance(stage, dict):
            errors[where] = f"{label}: must be an object"
            continue
        name = str(stage.get("name") or f"stage-{i + 1}").strip()
        if not STAGE_NAME_RE.match(name):
            errors[f"{where}.name"] = (
                f"{label}: name {name!r} must be 1-64 lowercase letters, digits, '-' or '_'"
            )
        elif name in seen:
            errors[f"{where}.name"] = f"{label}: the name {name!r} is used twice"
        label = f"stage {i + 1} ({name})"
        extra = set(stage) - {"name", "method", "config", "adapter", "dataset_id", "eval_dataset_id", "input"}
        if extra:
            errors[f"{where}"] = f"{label}: unknown fields {', '.join(sorted(extra))}"
        method = stage.get("method", "")
        source = stage.get("input") or "base"
        if source != "base" and source not in seen:
            errors[f"{where}.input"] = (
                f"{label}: input {source!r} is not an earlier stage (use 'base' or one of: "
                f"{', '.join(seen) or 'no earlier stages'})"
            )
        elif seen.get(source) in SCORING_METHODS:
            errors[f"{where}.input"] = (
                f"{label}: input {source!r} is a {seen[source]} stage, whose output scores text instead of "
                "generating it; train on 'base' or another stage (a grpo stage uses it as reward_model_stage)"
            )
        dataset, problem = _dataset_kind(team, stage.get("dataset_id"))
        if problem:
            errors[f"{where}.dataset_id"] = f"{label}: {problem}"
        eval_id = stage.get("eval_dataset_id") or None
        if eval_id is not None:
            eval_ds, problem = _dataset_kind(team, eval_id)
            if problem:
                errors[f"{where}.eval_dataset_id"] = f"{label}: eval {problem}"
            elif dataset and eval_ds.kind != dataset.kind:
                errors[f"{where}.eval_dataset_id"] = (
                    f"{label}: eval dataset is {eval_ds.kind!r} data but the training dataset is {dataset.kind!r}"
                )
        config, adapter, stage_errors = validate_stage(
            method, stage.get("config") or {}, stage.get("adapter") or {}, dataset.kind if dataset else None
        )
        for key, message in stage_errors.items():
            if key == "dataset_kind" and dataset is None:
                continue  # already reported as a missing dataset
            errors[f"{where}.{key}"] = f"{label}: {message}"
        if config is not None:
            for key, message in _aux_stage_errors(method, config, seen).items():
                errors[f"{where}.config.{key}"] = f"{label}: {message}"
        if adapter is not None:
            for key, message in _adapter_fit_errors(adapter, base_model, source, seen_adapters).items():
                errors[f"{where}.adapter.{key}"] = f"{label}: {message}"
        seen[name] = method
        seen_adapters[name] = adapter.type if adapter is not None else "none"
        if config is not None:
            resolved.append({
                "name": name,
                "method": method,
                "config": asdict(config),
                "adapter": asdict(adapter) if adapter is not None else None,
                "dataset_id": dataset.pk if dataset else None,
                "eval_dataset_id": int(eval_id) if eval_id else None,
                "input": source,
            })
    if errors:
        raise SpecError(errors)
    return {"seed": seed, "stages": resolved}


def _aux_stage_errors(method: str, config, seen: dict[str, str]) -> dict[str, str]:
    """Config fields that name another stage (grpo's reward_model_stage, distill's teacher_stage) must name
    an earlier stage whose method produces that kind of model."""
    errors: dict[str, str] = {}
    for aux in METHODS[method].aux_models:
        source = aux.source(config)
        if source in (None, "base"):
            continue
        fits = [name for name, m in seen.items() if aux.accepts(m)]
        wanted = f"of method {' or '.join(aux.stage_methods)}" if aux.stage_methods else "that outputs a model"
        if source in seen and aux.accepts(seen[source]):
            continue
        found = f"is a {seen[source]} stage" if source in seen else "is not an earlier stage"
        errors[aux.stage_field] = (
            f"{aux.stage_field} {source!r} {found}; it must name an earlier stage {wanted} "
            f"({'earlier ones: ' + ', '.join(fits) if fits else 'there is none before this stage'})"
        )
    return errors


def stage_dependencies(stage: dict) -> list[str]:
    """The earlier stages a (normalized) stage needs finished first: its input and the stages its config
    names for extra models (a grpo stage's reward_model_stage, a distill stage's teacher_stage)."""
    names = []
    source = stage.get("input") or "base"
    if source != "base":
        names.append(source)
    method = METHODS.get(stage.get("method", ""))
    if method is not None:
        for aux_source in method.aux_sources(stage.get("config") or {}).values():
            if aux_source != "base" and aux_source not in names:
                names.append(aux_source)
    return names


def _adapter_fit_errors(adapter, base_model, source: str, seen_adapters: dict[str, str]) -> dict[str, str]:
    """What the trainer would refuse about this adapter on this model, found before any worker runs."""
    errors: dict[str, str] = {}
    if source != "base":
        upstream = seen_adapters.get(source, "none")
        if upstream not in MERGEABLE_TYPES + FULL_MODEL_TYPES:
            errors["type"] = (f"input {source!r} outputs a {upstream} adapter, which cannot be merged into a model "
                              f"to train further; give {source!r} another adapter type or train from 'base'")
    if base_model is not None:
        layout = local_model_layout(base_model)
        if layout is not None:
            errors.update(adapter_model_errors(adapter, parameter_names=layout[0], num_layers=layout[1]))
    return errors
