"""Pipeline specs: parse, normalise and validate, using the trainers' method registry.

One source of truth per method: the config dataclass in `trainers.configs` decides
defaults, bounds and choices for the web form, the API and the trainer alike.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from trainers.catalog import METHODS, validate_stage
from trainers.configs.adapters import FULL_MODEL_TYPES, MERGEABLE_TYPES, adapter_model_errors

from refinery.data.models import Dataset
from refinery.pipelines.spec_lookups import SpecLookups

ADAPTER_LABELS = {"lora": "LoRA", "dora": "DoRA", "qlora": "QLoRA", "ia3": "IA3", "layernorm": "LayerNorm"}

STAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_STAGES = 32


class SpecError(Exception):
    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(errors.values()))


STAGE_FIELDS = {"name", "method", "config", "adapter", "dataset_id", "eval_dataset_id", "input", "inputs"}
MAX_MERGE_INPUTS = 8


def method_output(method: str) -> str:
    """What a stage of `method` hands on: "model" (a model that generates text, or an adapter for one),
    "scorer" (a reward model) or "report" (an evaluation)."""
    spec = METHODS.get(method)
    if spec is None:
        return "model"
    return "scorer" if spec.scorer else spec.output


def _stage_refs(stage: dict) -> list[tuple[str, str]]:
    """(field, stage name) for every other stage this raw stage names: its input(s) and aux models."""
    refs = []
    source = stage.get("input") or "base"
    if source != "base":
        refs.append(("input", str(source)))
    for name in stage.get("inputs") or []:
        refs.append(("inputs", str(name)))
    method = METHODS.get(stage.get("method", ""))
    if method is not None:
        for aux in method.aux_models:
            aux_source = aux.source(stage.get("config") or {})
            if aux_source not in (None, "base"):
                refs.append((f"config.{aux.stage_field}", aux_source))
    return refs


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in `graph` (stage -> stages it needs) as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for needed in graph.get(node, []):
            if state.get(needed) == 1:
                return path[path.index(needed) :] + [needed]
            if needed in graph and state.get(needed) is None:
                found = visit(needed)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def pipeline_spec_normalize(*, team, spec: Any, base_model=None) -> dict:
    """Validate a pipeline spec (a graph of stages) and return it with every config fully resolved.

    A stage's inputs are the base model or other stages named anywhere in the list (`input`, or
    `inputs` for a merge); stages run as soon as what they need has finished. Raises SpecError whose
    `errors` maps a field path (`stages.1.config.learning_rate`) to a one-line message naming the stage:
    dangling references, cycles, and inputs of the wrong type (a reward model or an evaluation report
    where a model is needed) are all refused here, before anything is saved.
    """
    return spec_validate(spec, lookups=SpecLookups(team=team, base_model=base_model))


def spec_validate(spec: Any, *, lookups: SpecLookups) -> dict:
    """pipeline_spec_normalize's work, reading the world only through `lookups` (the team's datasets, the base
    model's layout, the registry's name rules): the spec's settings, then the stage graph in three passes."""
    errors: dict[str, str] = {}
    if not isinstance(spec, dict):
        raise SpecError({"spec": "spec must be an object with a 'stages' list"})
    seed, retention, auto_evaluate = _spec_settings(spec, lookups, errors)
    stages = spec.get("stages")
    if not isinstance(stages, list) or not stages:
        errors["stages"] = "a pipeline needs at least one stage"
        raise SpecError(errors)
    if len(stages) > MAX_STAGES:
        errors["stages"] = f"a pipeline has at most {MAX_STAGES} stages, got {len(stages)}"
        raise SpecError(errors)
    names, methods, labels = _stage_names(stages, errors)
    _graph_errors(stages, names, methods, labels, errors)
    adapters = {
        n: ((s.get("adapter") or {}).get("type") or "lora")
        if METHODS.get(s.get("method", ""), None) is not None and METHODS[s["method"]].uses_adapter
        else "none"
        for n, s in zip(names, stages)
        if isinstance(s, dict)
    }
    resolved = []
    for i, stage in enumerate(stages):
        if isinstance(stage, dict):
            item = _stage_resolve(
                stage,
                where=f"stages.{i}",
                label=labels[i],
                name=names[i],
                methods=methods,
                adapters=adapters,
                retention=retention,
                lookups=lookups,
                errors=errors,
            )
            if item is not None:
                resolved.append(item)
    if errors:
        raise SpecError(errors)
    normalized = {"seed": seed, "stages": resolved}
    if retention is not None:
        normalized["retention_dataset_id"] = retention.pk
    if auto_evaluate is False:
        normalized["auto_evaluate"] = False
    return normalized


def _spec_settings(spec: dict, lookups: SpecLookups, errors: dict[str, str]) -> tuple[Any, Any, Any]:
    """The spec's own fields: (seed, retention dataset or None, auto_evaluate)."""
    unknown = set(spec) - {"stages", "seed", "retention_dataset_id", "auto_evaluate"}
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
    retention = None
    if spec.get("retention_dataset_id") not in (None, ""):
        retention, problem = lookups.dataset(spec.get("retention_dataset_id"))
        if problem:
            errors["retention_dataset_id"] = f"retention set: {problem}"
        elif retention.kind not in METHODS["evaluate"].dataset_kinds:
            errors["retention_dataset_id"] = (
                f"retention set: {retention.name!r} is {retention.kind!r} data; evaluation reads "
                f"{', '.join(METHODS['evaluate'].dataset_kinds)} data"
            )
    auto_evaluate = spec.get("auto_evaluate", True)
    if not isinstance(auto_evaluate, bool):
        errors["auto_evaluate"] = f"auto_evaluate: must be true or false, got {auto_evaluate!r}"
    return seed, retention, auto_evaluate


def _stage_names(stages: list, errors: dict[str, str]) -> tuple[list[str], dict[str, str], list[str]]:
    """Pass 1: names and methods, so that a stage may name any other stage, listed before or after it.
    Returns (each stage's name, {valid name: method}, each stage's label for messages)."""
    names: list[str] = []
    methods: dict[str, str] = {}
    labels: list[str] = []
    for i, stage in enumerate(stages):
        where, label = f"stages.{i}", f"stage {i + 1}"
        if not isinstance(stage, dict):
            errors[where] = f"{label}: must be an object"
            names.append("")
            labels.append(label)
            continue
        name = str(stage.get("name") or f"stage-{i + 1}").strip()
        if not STAGE_NAME_RE.match(name):
            errors[f"{where}.name"] = f"{label}: name {name!r} must be 1-64 lowercase letters, digits, '-' or '_'"
        elif name in methods:
            errors[f"{where}.name"] = f"{label}: the name {name!r} is used twice"
        else:
            methods[name] = str(stage.get("method", ""))
        names.append(name)
        labels.append(f"stage {i + 1} ({name})")
    return names, methods, labels


def _graph_errors(
    stages: list, names: list[str], methods: dict[str, str], labels: list[str], errors: dict[str, str]
) -> None:
    """Pass 2: the graph. Dangling references and type mismatches, then cycles."""
    graph: dict[str, list[str]] = {}
    for i, stage in enumerate(stages):
        if not isinstance(stage, dict) or names[i] not in methods:
            continue
        where, label, name = f"stages.{i}", labels[i], names[i]
        method = METHODS.get(stage.get("method", ""))
        inputs = stage.get("inputs")
        if inputs is not None and not (isinstance(inputs, list) and all(isinstance(x, str) for x in inputs)):
            errors[f"{where}.inputs"] = f"{label}: inputs must be a list of stage names"
            continue
        if method is not None and method.inputs == "many":
            if (stage.get("input") or "base") != "base":
                errors[f"{where}.input"] = f"{label}: a {method.name} stage takes its models from 'inputs', not 'input'"
            if not inputs or len(inputs) < 2:
                errors[f"{where}.inputs"] = (
                    f"{label}: a {method.name} stage needs at least 2 inputs (stage names), got {len(inputs or [])}"
                )
            elif len(inputs) > MAX_MERGE_INPUTS:
                errors[f"{where}.inputs"] = f"{label}: at most {MAX_MERGE_INPUTS} inputs, got {len(inputs)}"
            elif len(set(inputs)) != len(inputs):
                errors[f"{where}.inputs"] = f"{label}: an input is listed twice ({', '.join(inputs)})"
        elif inputs:
            errors[f"{where}.inputs"] = (
                f"{label}: only a merge stage takes several inputs; {stage.get('method')} takes one 'input'"
            )
        needed = []
        for field, ref in _stage_refs(stage):
            key = f"{where}.{field}"
            if ref == name:
                errors.setdefault(key, f"{label}: {field} {ref!r} is this stage itself")
            elif ref not in methods:
                others = [n for n in names if n and n != name]
                errors.setdefault(
                    key,
                    f"{label}: {field} {ref!r} is not a stage of this pipeline "
                    f"(use 'base' or one of: {', '.join(others) or 'no other stages'})",
                )
            else:
                needed.append(ref)
                output = method_output(methods[ref])
                if field in ("input", "inputs") and output != "model":
                    what = (
                        "a reward model, which scores text instead of generating it"
                        if output == "scorer"
                        else "an evaluation report, not a model"
                    )
                    hint = "; a grpo stage uses it as reward_model_stage" if output == "scorer" else ""
                    verb = "merge" if field == "inputs" else "train on"
                    errors.setdefault(
                        key,
                        f"{label}: {field} {ref!r} is a {methods[ref]} stage whose output is "
                        f"{what}; cannot {verb} it{hint}",
                    )
        graph[name] = needed
    cycle = _find_cycle(graph)
    if cycle:
        at = names.index(cycle[0])
        errors[f"stages.{at}.input"] = (
            f"{labels[at]}: its inputs form a cycle ({' -> '.join(cycle)}); "
            "a stage can only use stages that finish before it"
        )


def _stage_resolve(
    stage: dict,
    *,
    where: str,
    label: str,
    name: str,
    methods: dict[str, str],
    adapters: dict[str, str],
    retention,
    lookups: SpecLookups,
    errors: dict[str, str],
) -> dict | None:
    """Pass 3, one stage: its data, config and adapter. The resolved stage, or None when its config is invalid."""
    extra = set(stage) - STAGE_FIELDS
    if extra:
        errors[f"{where}"] = f"{label}: unknown fields {', '.join(sorted(extra))}"
    method = stage.get("method", "")
    method_spec = METHODS.get(method)
    trains = method_spec.trains if method_spec else True
    source = stage.get("input") or "base"
    dataset = None
    if trains or stage.get("dataset_id") not in (None, "") or (method_spec and method_spec.dataset_required):
        dataset, problem = lookups.dataset(stage.get("dataset_id"))
        if problem:
            if not trains:
                problem = problem.replace("a training dataset", "a held-out dataset")
            errors[f"{where}.dataset_id"] = f"{label}: {problem}"
    eval_id = stage.get("eval_dataset_id") or None
    if eval_id is not None and not trains:
        errors[f"{where}.eval_dataset_id"] = (
            f"{label}: a {method} stage reads its held-out data from its dataset; leave eval data empty"
        )
    elif eval_id is not None:
        eval_ds, problem = lookups.dataset(eval_id)
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
        for key, message in _aux_stage_errors(method, config, methods, name).items():
            errors.setdefault(f"{where}.config.{key}", f"{label}: {message}")
    if config is not None and method == "gate":
        for key, message in _gate_errors(config, source=source, retention=retention, lookups=lookups).items():
            errors.setdefault(f"{where}.{key}", f"{label}: {message}")
    if adapter is not None:
        for key, message in _adapter_fit_errors(adapter, source, adapters, lookups=lookups).items():
            errors[f"{where}.adapter.{key}"] = f"{label}: {message}"
    if method_spec is not None and method_spec.inputs == "many":
        for ref in stage.get("inputs") or []:
            if adapters.get(ref, "none") not in MERGEABLE_TYPES + FULL_MODEL_TYPES:
                errors.setdefault(
                    f"{where}.inputs",
                    (
                        f"{label}: input {ref!r} outputs a {adapters[ref]} adapter, which cannot be merged into "
                        "weights; give it another adapter type"
                    ),
                )
    if config is None:
        return None
    item = {
        "name": name,
        "method": method,
        "config": asdict(config),
        "adapter": asdict(adapter) if adapter is not None else None,
        "dataset_id": dataset.pk if dataset else None,
        "eval_dataset_id": int(eval_id) if eval_id and trains else None,
        "input": source if not (method_spec and method_spec.inputs == "many") else "base",
    }
    if method_spec is not None and method_spec.inputs == "many":
        item["inputs"] = list(stage.get("inputs") or [])
    return item


def _gate_errors(config, *, source: str, retention, lookups: SpecLookups) -> dict[str, str]:
    """A gate promotes its input stage's model into the registry: the input must be a stage (the base model
    cannot be registered), the model and alias names must be ones the registry takes, and a retention
    condition needs the pipeline's retention set."""
    errors: dict[str, str] = {}
    if source == "base":
        errors["input"] = (
            "a gate's input is the stage whose model it may promote (the candidate); name a stage "
            "of this pipeline (the base model itself cannot be registered)"
        )
    for field in ("registered_model", "alias"):
        problem = lookups.registry_name_problem(field, getattr(config, field))
        if problem:
            errors[f"config.{field}"] = problem
    if retention is None:
        for field in ("max_forgetting", "retention_threshold"):
            if getattr(config, field).strip():
                errors[f"config.{field}"] = (
                    f"{field} needs the pipeline's retention set (choose one, or leave {field} empty)"
                )
    return errors


GATE_FIELDS = {"candidate", "dataset_id", "config"}


def spec_with_gate(spec: dict, gate: dict | None) -> tuple[dict, str | None]:
    """A copy of a (raw) pipeline spec with a schedule's gate appended as one more stage, and that stage's name
    ("gate", or "schedule-gate" when the pipeline already has a stage called "gate"). `gate` is
    {"candidate": <stage name>, "dataset_id": <held-out dataset id>, "config": {<gate config fields>}}; it is
    validated with the rest by pipeline_spec_normalize. No gate: the spec as it is, and None."""
    if not gate:
        return spec, None
    names = {s.get("name") for s in spec.get("stages") or [] if isinstance(s, dict)}
    name, n = "gate", 1
    while name in names:
        name, n = f"schedule-gate{'' if n == 1 else f'-{n}'}", n + 1
    stage = {
        "name": name,
        "method": "gate",
        "input": gate.get("candidate") or "base",
        "dataset_id": gate.get("dataset_id"),
        "config": dict(gate.get("config") or {}),
        "adapter": None,
    }
    return {**spec, "stages": [*(spec.get("stages") or []), stage]}, name


def _aux_stage_errors(method: str, config, methods: dict[str, str], own: str) -> dict[str, str]:
    """Config fields that name another stage (grpo's reward_model_stage, distill's teacher_stage, evaluate's
    baseline_stage) must name a stage of this pipeline whose method produces that kind of model."""
    errors: dict[str, str] = {}
    for aux in METHODS[method].aux_models:
        source = aux.source(config)
        if source in (None, "base") or source not in methods or source == own:
            continue  # absent, or already reported as a dangling reference
        if aux.accepts(methods[source]):
            continue
        fits = [name for name, m in methods.items() if aux.accepts(m) and name != own]
        wanted = f"of method {' or '.join(aux.stage_methods)}" if aux.stage_methods else "that outputs a model"
        errors[aux.stage_field] = (
            f"{aux.stage_field} {source!r} is a {methods[source]} stage; it must name a stage {wanted} "
            f"({'candidates: ' + ', '.join(fits) if fits else 'there is none in this pipeline'})"
        )
    return errors


OVERRIDE_RE = re.compile(
    r"^(?P<stage>[a-z0-9][a-z0-9_-]{0,63})\.(?P<part>config|adapter)\.(?P<field>[a-z_][a-z0-9_]*)$"
)


def apply_overrides(spec: dict, overrides: dict[str, Any]) -> dict:
    """A copy of `spec` with `{"<stage>.config.<field>" | "<stage>.adapter.<field>": value}` set (a sweep's
    parameters). Unknown stages and malformed paths raise SpecError naming the path; the values themselves
    are checked by pipeline_spec_normalize like any edit."""
    import copy

    spec = copy.deepcopy(spec)
    stages = {s.get("name"): s for s in spec.get("stages") or [] if isinstance(s, dict)}
    errors = {}
    for path, value in overrides.items():
        match = OVERRIDE_RE.match(str(path))
        if not match:
            errors[f"overrides.{path}"] = (
                f"parameter {path!r}: write it as <stage>.config.<field> or <stage>.adapter.<field>"
            )
            continue
        stage = stages.get(match["stage"])
        if stage is None:
            errors[f"overrides.{path}"] = (
                f"parameter {path!r}: the pipeline has no stage {match['stage']!r} "
                f"(stages: {', '.join(n for n in stages if n)})"
            )
            continue
        if (
            match["part"] == "adapter"
            and stage.get("adapter") is None
            and not METHODS.get(stage.get("method", ""), METHODS["sft"]).uses_adapter
        ):
            errors[f"overrides.{path}"] = f"parameter {path!r}: a {stage.get('method')} stage has no adapter"
            continue
        part = stage.get(match["part"]) or {}
        stage[match["part"]] = {**part, match["field"]: value}
    if errors:
        raise SpecError(errors)
    return spec


def stage_dependencies(stage: dict) -> list[str]:
    """The stages a (normalized) stage needs finished first: its input(s) and the stages its config
    names for extra models (a grpo stage's reward_model_stage, a distill stage's teacher_stage)."""
    names = []
    for _, ref in _stage_refs(stage):
        if ref not in names:
            names.append(ref)
    return names


def auto_evaluate_stages(normalized: dict) -> list[dict]:
    """The evaluate stages added to a run when the pipeline asks for automatic evaluation (the default):
    one per final model (a stage no other stage uses, whose output generates text) that no evaluate stage
    of the pipeline already measures. Its held-out data is the nearest eval set up its inputs (or, lacking
    one, none: it then measures the retention set and writes sample generations). Not added when the
    pipeline has neither any held-out data nor a retention set."""
    if normalized.get("auto_evaluate") is False:
        return []
    from trainers.configs import EvaluateConfig

    stages = normalized.get("stages") or []
    by_name = {s["name"]: s for s in stages}
    used = {ref for s in stages for ref in stage_dependencies(s)}
    evaluated = {s.get("input") for s in stages if s["method"] == "evaluate"}
    readable = set(METHODS["evaluate"].dataset_kinds)
    kinds = dict(
        Dataset.objects.filter(pk__in={s.get("eval_dataset_id") for s in stages} - {None}).values_list("pk", "kind")
    )

    def held_out(name: str, seen: set) -> int | None:
        stage = by_name.get(name)
        if stage is None or name in seen:
            return None
        seen.add(name)
        if stage.get("eval_dataset_id") and kinds.get(stage["eval_dataset_id"]) in readable:
            return stage["eval_dataset_id"]
        for ref in ([stage.get("input")] if stage.get("input") not in (None, "base") else []) + stage.get("inputs", []):
            found = held_out(ref, seen)
            if found:
                return found
        return None

    taken = set(by_name)
    added = []
    for stage in stages:
        name = stage["name"]
        if name in used or name in evaluated or method_output(stage["method"]) != "model":
            continue
        dataset_id = held_out(name, set())
        if dataset_id is None and not normalized.get("retention_dataset_id"):
            continue
        auto_name = f"evaluate-{name}"[:64]
        n = 2
        while auto_name in taken:
            auto_name = f"evaluate-{name}"[:60] + f"-{n}"
            n += 1
        taken.add(auto_name)
        added.append(
            {
                "name": auto_name,
                "method": "evaluate",
                "config": asdict(EvaluateConfig()),
                "adapter": None,
                "dataset_id": dataset_id,
                "eval_dataset_id": None,
                "input": name,
                "auto": True,
            }
        )
    return added


def _adapter_fit_errors(adapter, source: str, adapters: dict[str, str], *, lookups: SpecLookups) -> dict[str, str]:
    """What the trainer would refuse about this adapter on this model, found before any worker runs."""
    errors: dict[str, str] = {}
    if source != "base":
        upstream = adapters.get(source, "none")
        if upstream not in MERGEABLE_TYPES + FULL_MODEL_TYPES:
            errors["type"] = (
                f"input {source!r} outputs a {upstream} adapter, which cannot be merged into a model "
                f"to train further; give {source!r} another adapter type or train from 'base'"
            )
        elif upstream not in FULL_MODEL_TYPES and adapter.type not in FULL_MODEL_TYPES:
            # The trainer would merge the input adapter and train a new one on the result: an adapter whose
            # base is base+adapter, which no later stage (evaluate, export, merge, the registry) can load.
            errors["type"] = (
                f"its input {source!r} is a {ADAPTER_LABELS.get(upstream, upstream)} adapter; training another "
                f"adapter on top of it is not supported: train {source!r} with full fine-tuning (adapter type "
                f"'none'), train this stage with full fine-tuning, or put an export stage (it merges the adapter "
                f"into its base model) between them and take that stage as input"
            )
    layout = lookups.model_layout()
    if layout is not None:
        errors.update(adapter_model_errors(adapter, parameter_names=layout[0], num_layers=layout[1]))
    return errors
