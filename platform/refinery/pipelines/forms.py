"""The pipeline editor's form, generated from each method's typed config.

Field names: `stages-<i>-name|method|dataset_id|eval_dataset_id|input|inputs`,
`stages-<i>-config-<field>`, `stages-<i>-adapter-<field>`. A stage's input is
`base` or `@<j>`, the output of the earlier stage j; a merge stage's `inputs` is
several `@<j>`.
"""

from __future__ import annotations

import re
from typing import Any

from trainers.catalog import METHODS
from trainers.configs import AdapterConfig
from trainers.schema import config_schema

STAGE_KEY_RE = re.compile(r"^stages-(\d+)-method$")
DEFAULT_METHOD = "sft"


def _value_for(field: dict, raw: dict) -> Any:
    if field["name"] in raw:
        return raw[field["name"]]
    return field["default"]


def _step(field: dict) -> str:
    if field["type"] == "int":
        return "1"
    return "any"


def build_fields(schema: list[dict], values: dict, errors: dict[str, str], prefix: str) -> list[dict]:
    out = []
    for field in schema:
        value = _value_for(field, values)
        error = errors.get(f"{prefix}.{field['name']}", "")
        out.append(
            {
                **field,
                "value": value,
                "checked": str(value).lower() in ("true", "on", "1"),
                "step": _step(field),
                "error": error.split(": ", 2)[-1] if error else "",
            }
        )
    return out


def group_fields(fields: list[dict]) -> list[tuple[str, list[dict]]]:
    groups: dict[str, list[dict]] = {}
    for field in fields:
        group = field.get("group") or "general"
        groups.setdefault(group.upper() if group in METHODS else group.capitalize(), []).append(field)
    return list(groups.items())


def _input_options(index: int, chosen: str, names: list[str] | None = None) -> list[tuple[str, str, bool]]:
    names = names or []

    def label(j: int) -> str:
        return f"Output of stage {j + 1}" + (f" ({names[j]})" if j < len(names) and names[j] else "")

    options = [("base", "Base model")] + [(f"@{j}", label(j)) for j in range(index)]
    return [(value, text, value == chosen) for value, text in options]


def _inputs_options(index: int, chosen: list[str], names: list[str] | None = None) -> list[tuple[str, str, bool]]:
    options = _input_options(index, "", names)[1:]
    return [(value, text, value in chosen) for value, text, _ in options]


def stage_context(
    *, index: int, stage: dict | None = None, errors: dict[str, str] | None = None, names: list[str] | None = None
) -> dict:
    """Everything the stage fieldset template needs (`names`: every stage's name, for input labels)."""
    stage = stage or {}
    errors = errors or {}
    method_name = stage.get("method") or DEFAULT_METHOD
    method = METHODS.get(method_name) or METHODS[DEFAULT_METHOD]
    where = f"stages.{index}"
    config_fields = build_fields(
        config_schema(method.config_class), stage.get("config") or {}, errors, f"{where}.config"
    )
    adapter_fields = []
    if method.uses_adapter:
        adapter_fields = build_fields(
            config_schema(AdapterConfig), stage.get("adapter") or {}, errors, f"{where}.adapter"
        )
    stage_errors = [
        message
        for key, message in errors.items()
        if key.startswith(where + ".") and not key.startswith((f"{where}.config.", f"{where}.adapter.")) or key == where
    ]
    return {
        "index": index,
        "number": index + 1,
        "name": stage.get("name") or f"stage-{index + 1}",
        "method": method,
        "methods": list(METHODS.values()),
        "dataset_id": str(stage.get("dataset_id") or ""),
        "eval_dataset_id": str(stage.get("eval_dataset_id") or ""),
        "input_options": _input_options(index, stage.get("input_ref") or (f"@{index - 1}" if index else "base"), names),
        "inputs_options": _inputs_options(index, stage.get("inputs_refs") or [f"@{j}" for j in range(index)], names),
        "config_groups": group_fields(config_fields),
        "adapter_fields": adapter_fields,
        "errors": stage_errors,
    }


def _last(post, key: str, default: str = "") -> str:
    values = post.getlist(key)
    return values[-1] if values else default


def parse_stages(post) -> list[dict]:
    """Turn the editor's POST data into a spec's stage list (input refs resolved to stage names)."""
    indices = sorted({int(m.group(1)) for key in post.keys() if (m := STAGE_KEY_RE.match(key))})
    stages = []
    for i in indices:
        prefix = f"stages-{i}-"
        method = METHODS.get(_last(post, prefix + "method"))
        config, adapter = {}, {}
        for key in post.keys():
            if key.startswith(prefix + "config-"):
                config[key[len(prefix + "config-") :]] = _last(post, key)
            elif key.startswith(prefix + "adapter-"):
                adapter[key[len(prefix + "adapter-") :]] = _last(post, key)
        stages.append(
            {
                "name": _last(post, prefix + "name").strip(),
                "method": _last(post, prefix + "method"),
                "config": config,
                "adapter": adapter if (method is None or method.uses_adapter) else None,
                "dataset_id": _last(post, prefix + "dataset_id") or None,
                "eval_dataset_id": _last(post, prefix + "eval_dataset_id") or None,
                "input_ref": _last(post, prefix + "input", "base"),
                "inputs_refs": post.getlist(prefix + "inputs"),
            }
        )

    def resolve(ref: str) -> str:
        if ref.startswith("@") and ref[1:].isdigit() and int(ref[1:]) < len(stages):
            return stages[int(ref[1:])]["name"] or f"stage-{int(ref[1:]) + 1}"
        return ref

    for stage in stages:
        method = METHODS.get(stage["method"])
        if method is not None and method.inputs == "many":
            stage["input"] = "base"
            stage["inputs"] = [resolve(ref) for ref in stage["inputs_refs"]]
        else:
            stage["input"] = resolve(stage["input_ref"])
    return stages


def stages_for_editor(spec: dict) -> list[dict]:
    """A saved spec's stages with their inputs as the editor's `@<j>` references."""
    stages = [dict(s) for s in spec.get("stages", [])]
    position = {s["name"]: j for j, s in enumerate(stages)}
    for stage in stages:
        source = stage.get("input") or "base"
        stage["input_ref"] = f"@{position[source]}" if source in position else "base"
        stage["inputs_refs"] = [f"@{position[n]}" for n in stage.get("inputs") or [] if n in position]
    return stages


def spec_from_stages(stages: list[dict], seed, *, retention_dataset_id=None, auto_evaluate: bool = True) -> dict:
    spec = {
        "seed": seed,
        "stages": [
            {k: v for k, v in s.items() if k not in ("input_ref", "inputs_refs") and not (k == "inputs" and not v)}
            for s in stages
        ],
        "auto_evaluate": auto_evaluate,
    }
    if retention_dataset_id not in (None, ""):
        spec["retention_dataset_id"] = retention_dataset_id
    return spec
