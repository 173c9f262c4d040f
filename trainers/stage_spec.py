"""Reading and checking a stage spec (docs/stage-spec.md) before anything heavy is imported."""

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .catalog import DATASET_KINDS, get_method, validate_stage
from .configs import AdapterConfig

__all__ = [
    "SpecError",
    "DataFile",
    "ModelRef",
    "StageSpec",
    "parse_spec",
    "load_spec",
    "DATA_FORMATS",
    "FORMAT_BY_EXTENSION",
]

DATA_FORMATS = ("jsonl", "csv", "parquet")
FORMAT_BY_EXTENSION = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


class SpecError(ValueError):
    """A spec that cannot run; ``str()`` is one line naming every problem, ``errors`` has them by key."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("invalid stage spec: " + "; ".join(errors.values()))


@dataclass(frozen=True)
class DataFile:
    path: str
    format: str
    kind: str
    sha256: str | None = None


@dataclass(frozen=True)
class ModelRef:
    name_or_path: str
    revision: str | None = None
    adapter_path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name_or_path": self.name_or_path, "revision": self.revision, "adapter_path": self.adapter_path}


@dataclass(frozen=True)
class StageSpec:
    method: str
    config: Any  # the method's config dataclass instance
    adapter: AdapterConfig | None
    model: ModelRef
    train: DataFile | None  # None for methods that train on nothing (Method.trains is False)
    eval: DataFile | None
    output_dir: str
    checkpoint_dir: str
    seed: int = 42
    stage: dict[str, Any] = field(default_factory=dict)
    # Extra models the method loads by role (grpo: reward_model; distill: teacher); see Method.aux_models.
    aux_models: dict[str, ModelRef] = field(default_factory=dict)
    version: int = 1
    # Methods with several input models (merge): (stage name, model), in order; `model` is then the base.
    inputs: tuple[tuple[str, ModelRef], ...] = ()
    # Data kept to measure forgetting (evaluate): any kind, scored on the model and its baseline.
    retention: DataFile | None = None
    # Free-form facts about the run for a model card (export): run, pipeline, data, lineage, metrics.
    card: dict[str, Any] = field(default_factory=dict)


def _looks_like_path(value: str) -> bool:
    return os.path.isabs(value) or value.startswith(("./", "../", "~")) or os.path.exists(value)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _data_file(raw: Any, where: str, errors: dict[str, str], check_hash: bool) -> DataFile | None:
    if not isinstance(raw, dict):
        errors[where] = f"{where}: must be an object with path, format and kind"
        return None
    path = raw.get("path")
    if not isinstance(path, str) or not path:
        errors[f"{where}.path"] = f"{where}.path: is required"
        return None
    path = os.path.expanduser(path)
    fmt = raw.get("format") or FORMAT_BY_EXTENSION.get(os.path.splitext(path)[1].lower())
    if fmt not in DATA_FORMATS:
        errors[f"{where}.format"] = f"{where}.format: must be one of {', '.join(DATA_FORMATS)}, got {fmt!r}"
    kind = raw.get("kind")
    if kind not in DATASET_KINDS:
        errors[f"{where}.kind"] = f"{where}.kind: must be one of {', '.join(DATASET_KINDS)}, got {kind!r}"
    sha = raw.get("sha256")
    if not os.path.isfile(path):
        errors[f"{where}.path"] = f"{where}.path: no such file: {path}"
    elif check_hash and sha:
        actual = _sha256(path)
        if actual != str(sha).lower():
            errors[f"{where}.sha256"] = (
                f"{where}.sha256: file content does not match (expected {str(sha)[:12]}..., got {actual[:12]}...)"
            )
    return DataFile(path=os.path.abspath(path), format=fmt or "", kind=kind or "", sha256=sha)


def _model_ref(raw: Any, where: str, errors: dict[str, str]) -> ModelRef | None:
    """A ``{name_or_path, revision, adapter_path}`` object (``model`` or an ``aux_models`` entry)."""
    if not isinstance(raw, dict):
        errors[where] = f"{where}: must be an object with name_or_path"
        return None
    name = raw.get("name_or_path")
    if not isinstance(name, str) or not name.strip():
        errors[f"{where}.name_or_path"] = f"{where}.name_or_path: is required"
        return None
    if _looks_like_path(name) and not os.path.isdir(os.path.expanduser(name)):
        errors[f"{where}.name_or_path"] = f"{where}.name_or_path: no such model directory: {name}"
    adapter_path = raw.get("adapter_path")
    if adapter_path and not os.path.isfile(os.path.join(os.path.expanduser(adapter_path), "adapter_config.json")):
        errors[f"{where}.adapter_path"] = f"{where}.adapter_path: no adapter (adapter_config.json) in {adapter_path}"
    return ModelRef(
        name_or_path=os.path.abspath(os.path.expanduser(name)) if _looks_like_path(name) else name,
        revision=raw.get("revision") or None,
        adapter_path=os.path.abspath(os.path.expanduser(adapter_path)) if adapter_path else None,
    )


def _aux_models(raw: Any, method: str, config: Any, errors: dict[str, str]) -> dict[str, ModelRef]:
    """``aux_models``: exactly the extra models the method's config uses (e.g. grpo's reward_model)."""
    spec = get_method(method)
    needed = spec.aux_sources(config) if config is not None else {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors["aux_models"] = "aux_models: must be an object of {name_or_path, revision, adapter_path} objects"
        return {}
    known = {aux.key: aux for aux in spec.aux_models}
    models: dict[str, ModelRef] = {}
    for key, value in raw.items():
        if key not in known:
            errors[f"aux_models.{key}"] = (
                f"aux_models.{key}: {method} uses no such model (it uses: {', '.join(known) or 'none'})"
            )
        elif key in needed or known[key].platform:
            ref = _model_ref(value, f"aux_models.{key}", errors)
            if ref is not None:
                models[key] = ref
    for key, source in needed.items():
        if key not in raw:
            stage_field = known[key].stage_field
            cause = f"the output of stage {source!r}" if source != "base" else "the base model"
            errors[f"aux_models.{key}"] = (
                f"aux_models.{key}: is required ({cause}, as config.{stage_field} says): give its name_or_path"
            )
    return models


def parse_spec(raw: Any, *, check_hashes: bool = True) -> StageSpec:
    """Check a spec dict and turn it into a :class:`StageSpec`; raise :class:`SpecError` otherwise."""
    if not isinstance(raw, dict):
        raise SpecError({"spec": f"spec: must be a JSON object, got {type(raw).__name__}"})
    errors: dict[str, str] = {}
    version = raw.get("version", 1)
    if version != 1:
        errors["version"] = f"version: this trainer reads spec version 1, got {version!r}"

    method = raw.get("method")
    try:
        method_spec = get_method(str(method))
    except KeyError as exc:
        raise SpecError({"method": f"method: {exc.args[0]}"}) from None

    # Model
    model = _model_ref(raw.get("model"), "model", errors)

    # Data
    data = raw.get("data")
    train = eval_ = retention = None
    if data is None and not method_spec.trains:
        data = {}
    if not isinstance(data, dict):
        errors["data"] = "data: must be an object with a train entry"
    elif method_spec.trains:
        train = _data_file(data.get("train"), "data.train", errors, check_hashes)
    elif data.get("train") is not None:
        errors["data.train"] = f"data.train: {method} trains on nothing; give held-out data as data.eval"
    if isinstance(data, dict):
        if data.get("eval") is not None:
            eval_ = _data_file(data.get("eval"), "data.eval", errors, check_hashes)
        if data.get("retention") is not None:
            retention = _data_file(data.get("retention"), "data.retention", errors, check_hashes)
    # The data a method's dataset_kinds speaks of: what it trains on, or (trains=False) its held-out data.
    own, own_key = (train, "data.train") if method_spec.trains else (eval_, "data.eval")
    if not method_spec.trains and own is None and method_spec.dataset_required:
        errors.setdefault("data.eval", f"data.eval: {method} needs held-out data")

    # Method config, adapter and the data kind they need
    method_cfg, adapter_cfg, stage_errors = validate_stage(
        method, raw.get("config") or {}, raw.get("adapter") or {}, own.kind if own else None
    )
    for key, message in stage_errors.items():
        if key == "dataset_kind":
            if own is None or own.kind not in DATASET_KINDS:
                continue  # already reported under data.*
            key, message = f"{own_key}.kind", f"{own_key}.kind: " + message.removeprefix("dataset_kind: ")
        errors.setdefault(key, message)
    if (
        method_spec.trains
        and eval_ is not None
        and train is not None
        and eval_.kind != train.kind
        and eval_.kind in DATASET_KINDS
    ):
        errors["data.eval.kind"] = f"data.eval.kind: must match the train data ({train.kind!r}), got {eval_.kind!r}"

    # Several input models (merge)
    inputs: list[tuple[str, ModelRef]] = []
    raw_inputs = raw.get("inputs")
    if method_spec.inputs == "many":
        if not isinstance(raw_inputs, list) or len(raw_inputs) < 2:
            errors["inputs"] = f"inputs: {method} needs a list of at least 2 models"
        else:
            for i, item in enumerate(raw_inputs):
                ref = _model_ref(item, f"inputs.{i}", errors)
                if ref is not None:
                    name = item.get("stage") if isinstance(item, dict) else None
                    inputs.append((str(name or f"input-{i + 1}"), ref))
    elif raw_inputs:
        errors["inputs"] = f"inputs: {method} takes one input model (model), not a list"
    card = raw.get("card") or {}
    if not isinstance(card, dict):
        errors["card"] = "card: must be an object"

    # Directories and seed
    dirs = {}
    for key in ("output_dir", "checkpoint_dir"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            errors[key] = f"{key}: is required"
        else:
            dirs[key] = os.path.abspath(os.path.expanduser(value))
    seed = raw.get("seed", 42)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        errors["seed"] = f"seed: must be an integer between 0 and 2**32-1, got {seed!r}"

    aux_models = _aux_models(raw.get("aux_models"), method, method_cfg, errors)

    stage = raw.get("stage") or {}
    if not isinstance(stage, dict):
        errors["stage"] = "stage: must be an object"

    if errors:
        raise SpecError(errors)
    return StageSpec(
        method=method,
        config=method_cfg,
        adapter=adapter_cfg,
        model=model,
        train=train,
        eval=eval_,
        output_dir=dirs["output_dir"],
        checkpoint_dir=dirs["checkpoint_dir"],
        seed=seed,
        stage=stage,
        version=version,
        aux_models=aux_models,
        inputs=tuple(inputs),
        retention=retention,
        card=card,
    )


def load_spec(path: str) -> StageSpec:
    """Read a spec file and check it."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise SpecError({"spec": f"spec: no such file: {path}"}) from None
    except json.JSONDecodeError as exc:
        raise SpecError({"spec": f"spec: {path} is not valid JSON ({exc.msg} at line {exc.lineno})"}) from None
    return parse_spec(raw)
