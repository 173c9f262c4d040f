"""A sweep's parameters: which settings of a pipeline version it may vary, their values, and the trials.

Pure functions on specs (no database): the service checks each trial's whole spec afterwards with
refinery.pipelines.specs.pipeline_spec_normalize, exactly as an edit of the pipeline would be checked.
"""

from __future__ import annotations

import difflib
import itertools
import math
import random
from typing import Any

from trainers.catalog import METHODS
from trainers.configs import AdapterConfig
from trainers.schema import config_schema

from refinery.pipelines.specs import OVERRIDE_RE

NUMERIC = ("int", "float")
SCALES = ("linear", "log")


def tunable_fields(spec: dict) -> dict[str, dict]:
    """{"<stage>.config.<field>" | "<stage>.adapter.<field>": field schema (type, default, min, max, choices,
    help) with "current" (the stage's value)} for every setting of the spec's stages that a sweep can vary."""
    fields: dict[str, dict] = {}
    for stage in spec.get("stages") or []:
        method = METHODS.get(stage.get("method", ""))
        if method is None or not stage.get("name"):
            continue
        parts = [("config", method.config_class, stage.get("config") or {})]
        if method.uses_adapter:
            parts.append(("adapter", AdapterConfig, stage.get("adapter") or {}))
        for part, cls, values in parts:
            for field in config_schema(cls):
                current = values.get(field["name"], field["default"])
                fields[f"{stage['name']}.{part}.{field['name']}"] = {**field, "current": current}
    return fields


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def value_label(value: Any) -> str:
    """A parameter value or metric as a short label: 0.0003, 1e-05, 32, 0.8125, lora, true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def coerce(field: dict, value: Any) -> Any:
    """A value (JSON, or text from the form) as the field's type, or ValueError saying why not.
    Bounds are left to the stage's validation, which names them."""
    kind = field["type"]
    text = value.strip() if isinstance(value, str) else value
    if kind == "bool":
        if isinstance(text, bool):
            return text
        if isinstance(text, int) and text in (0, 1):
            return bool(text)
        if isinstance(text, str) and text.lower() in ("true", "false", "on", "off", "yes", "no", "1", "0"):
            return text.lower() in ("true", "on", "yes", "1")
        raise ValueError(f"must be true or false, got {value!r}")
    if kind == "choice":
        if text not in (field.get("choices") or ()):
            raise ValueError(f"must be one of {', '.join(field.get('choices') or ())}; got {value!r}")
        return text
    if kind == "str":
        if not isinstance(text, str) or not text:
            raise ValueError(f"must be a non-empty string, got {value!r}")
        return text
    if isinstance(text, bool):
        raise ValueError(f"must be a number, got {value!r}")
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {value!r}")
    if kind == "int":
        if not number.is_integer():
            raise ValueError(f"must be an integer, got {value!r}")
        return int(number)
    return number


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parameters_check(*, spec: dict, mode: str, parameters: Any) -> tuple[list[dict], dict[str, str]]:
    """Each parameter checked against the spec's stages and coerced: ([{"path", "values"} | {"path", "min",
    "max", "scale"}], {"parameters.<i>.<part>": message naming the parameter})."""
    errors: dict[str, str] = {}
    if not isinstance(parameters, list) or not parameters:
        return [], {"parameters": "parameters: vary at least one setting (a path and its values)"}
    fields = tunable_fields(spec)
    stages = [s.get("name") for s in spec.get("stages") or []]
    checked: list[dict] = []
    seen: set[str] = set()
    for i, raw in enumerate(parameters):
        where = f"parameters.{i}"
        if not isinstance(raw, dict):
            errors[where] = f"parameter {i + 1}: must be an object with a path and values"
            continue
        path = str(raw.get("path") or "").strip()
        label = f"parameter {i + 1} ({path})" if path else f"parameter {i + 1}"
        match = OVERRIDE_RE.match(path)
        if not match:
            errors[f"{where}.path"] = f"{label}: write the path as <stage>.config.<field> or <stage>.adapter.<field>"
            continue
        if match["stage"] not in stages:
            errors[f"{where}.path"] = (
                f"{label}: the pipeline has no stage {match['stage']!r} (stages: {', '.join(n for n in stages if n)})"
            )
            continue
        field = fields.get(path)
        if field is None:
            stage = next(s for s in spec["stages"] if s.get("name") == match["stage"])
            method = METHODS.get(stage.get("method", ""))
            if match["part"] == "adapter" and method is not None and not method.uses_adapter:
                errors[f"{where}.path"] = f"{label}: a {stage['method']} stage trains no adapter"
                continue
            prefix = f"{match['stage']}.{match['part']}."
            known = [p[len(prefix) :] for p in fields if p.startswith(prefix)]
            close = difflib.get_close_matches(match["field"], known, n=1)
            errors[f"{where}.path"] = (
                f"{label}: {stage.get('method')} has no {match['part']} field "
                f"{match['field']!r}" + (f" (did you mean {close[0]}?)" if close else "")
            )
            continue
        if path in seen:
            errors[f"{where}.path"] = f"{label}: this setting is listed twice"
            continue
        seen.add(path)
        values = raw.get("values")
        ranged = any(not _blank(raw.get(k)) for k in ("min", "max"))
        if values not in (None, [], "") and ranged:
            errors[f"{where}.values"] = f"{label}: give either a list of values or min and max, not both"
        elif ranged:
            item = _range_check(where, label, field, raw, mode, errors)
            if item is not None:
                checked.append({"path": path, **item})
        elif values in (None, [], ""):
            errors[f"{where}.values"] = f"{label}: give the values to try" + (
                " (or min and max)" if mode == "random" and field["type"] in NUMERIC else ""
            )
        elif not isinstance(values, list):
            errors[f"{where}.values"] = f"{label}: values must be a list"
        else:
            coerced = []
            for value in values:
                try:
                    value = coerce(field, value)
                except ValueError as exc:
                    errors[f"{where}.values"] = f"{label}: {exc}"
                    break
                if value in coerced:
                    errors[f"{where}.values"] = f"{label}: the value {_fmt(value)} is listed twice"
                    break
                coerced.append(value)
            else:
                checked.append({"path": path, "values": coerced})
    return checked, errors


def _range_check(where: str, label: str, field: dict, raw: dict, mode: str, errors: dict) -> dict | None:
    if mode != "random":
        errors[f"{where}.values"] = f"{label}: a grid needs a list of values; min and max are for random sweeps"
        return None
    if field["type"] not in NUMERIC:
        errors[f"{where}.values"] = f"{label}: min and max need a number field; give a list of values"
        return None
    bounds = {}
    for key in ("min", "max"):
        try:
            bounds[key] = coerce(field, raw.get(key))
        except ValueError as exc:
            errors[f"{where}.{key}"] = f"{label}: {key} {exc}"
    if len(bounds) < 2:
        return None
    scale = str(raw.get("scale") or "linear").strip()
    if scale not in SCALES:
        errors[f"{where}.scale"] = f"{label}: scale must be linear or log, got {scale!r}"
    elif bounds["min"] >= bounds["max"]:
        errors[f"{where}.max"] = f"{label}: max must be above min, got {_fmt(bounds['min'])} to {_fmt(bounds['max'])}"
    elif scale == "log" and bounds["min"] <= 0:
        errors[f"{where}.min"] = f"{label}: a log scale needs min > 0, got {_fmt(bounds['min'])}"
    else:
        return {"min": bounds["min"], "max": bounds["max"], "scale": scale}
    return None


def trial_count(*, mode: str, parameters: list[dict], samples: int) -> int:
    if mode == "grid":
        return math.prod(len(p["values"]) for p in parameters)
    return samples


def _draw(rng: random.Random, parameter: dict, kind: str) -> Any:
    if "values" in parameter:
        return rng.choice(parameter["values"])
    lo, hi = parameter["min"], parameter["max"]
    if parameter["scale"] == "log":
        value = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    else:
        value = rng.uniform(lo, hi)
    value = round(value) if kind == "int" else float(f"{value:.4g}")  # 4 significant digits read better
    return min(max(value, lo), hi)


def trial_overrides(*, spec: dict, mode: str, parameters: list[dict], samples: int, seed: int) -> list[dict]:
    """The overrides of every trial: the grid's combinations in parameter order, or `samples` draws made
    with random.Random(seed), so that the same sweep draws the same trials."""
    if mode == "grid":
        paths = [p["path"] for p in parameters]
        return [dict(zip(paths, combo)) for combo in itertools.product(*(p["values"] for p in parameters))]
    kinds = {path: field["type"] for path, field in tunable_fields(spec).items()}
    rng = random.Random(seed)
    return [{p["path"]: _draw(rng, p, kinds[p["path"]]) for p in parameters} for _ in range(samples)]
