"""Everything a stage needs before its trainer starts: the input model, resolved configs, the spec.

The trainer's spec (docs/stage-spec.md) is built from the StageRun's frozen snapshot: the
method config and adapter with every default filled in, dataset files by content hash, and
the input model, which is either the run's base model or an earlier stage's output fetched
from MLflow (so that stages can run on hosts that share no disk).

Extra models a method loads (a grpo stage's reward model, a distill stage's teacher) are resolved the same
way, from the earlier stage its config names, into the spec's `aux_models`.

A model reference (stored in a stage's outputs, host-independent):
    {"source": "base", "name", "name_or_path", "revision"}
    {"source": "stage", "stage": <name>, "kind": "model"|"adapter", "artifact_path",
     "mlflow_run_id", "base": <the reference the adapter was trained on, for adapters>}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any

from django.conf import settings

from refinery.runs.models import StageRun, Status
from refinery.runs.selectors import run_stage_named
from refinery.tracking import runs as tracking_runs
from refinery.tracking.client import artifacts_download


class StageSetupError(Exception):
    """The stage cannot start; the message is the one-line reason shown to the user."""


def stage_work_dir(stage: StageRun) -> Path:
    """REFINERY_WORK_DIR/run-<id>/stage-<index>: spec.json, trainer.log, inputs/, output/, and checkpoints,
    a link to the stage's checkpoint area. Removed when the stage ends; kept while a retry is queued."""
    return Path(settings.REFINERY_WORK_DIR) / f"run-{stage.run_id}" / f"stage-{stage.index}"


def _checkpoint_key(root: Path) -> bytes:
    """A random key kept in the checkpoint dir itself (created once, 0600): the same for every worker that
    shares the dir, which is exactly where a retry can find the checkpoints; unknown to anyone else."""
    path = root / ".key"
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except FileNotFoundError:
        pass
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = root / f".key-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic: of two workers racing here, one key wins and both read it
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()


def stage_checkpoint_dir(stage: StageRun) -> Path:
    """REFINERY_CHECKPOINT_DIR/<team id>/<token>: the checkpoints every attempt of this stage resumes from.

    The token is an HMAC of the stage id under the checkpoint dir's own random key: the same for each
    attempt, opaque to everyone else (no run id in it). The area is outside every model root
    (refinery.basemodels.paths refuses both), so no team can register it as a model."""
    root = Path(settings.REFINERY_CHECKPOINT_DIR)
    token = hmac.new(_checkpoint_key(root), f"stage-checkpoints:{stage.pk}".encode(), hashlib.sha256).hexdigest()
    return root / str(stage.run.team_id) / token[:32]


def stage_redactions(stage: StageRun, work_dir: Path) -> list[tuple[str, str]]:
    """(host path, placeholder) pairs that make a stage's spec.json and trainer.log safe to publish:
    no absolute host path (work dir, checkpoints, datasets, model roots, var dir, code) and no global run id."""
    from refinery.basemodels.paths import model_roots

    pairs = [
        (work_dir, "."),
        (stage_checkpoint_dir(stage), "./checkpoints"),
        (Path(settings.REFINERY_DATASET_DIR), "<datasets>"),
        (Path(settings.REFINERY_CHECKPOINT_DIR), "<checkpoints>"),
        (Path(settings.REFINERY_WORK_DIR), "<work>"),
        *((root, "<models>") for root in model_roots(stage.run.team_id)),
        (Path(settings.VAR_DIR), "<var>"),
        (Path(sys.prefix), "<python>"),
        (Path(__file__).resolve().parent.parent, "<code>"),
    ]
    found: dict[str, str] = {}
    for path, label in pairs:
        for variant in (str(path), os.path.realpath(path)):
            if len(variant) > 1:
                found.setdefault(variant, label)
    return sorted(found.items(), key=lambda item: -len(item[0]))  # the longest (most specific) first


_RUN_DIR_RE = re.compile(r"run-\d+[/\\]stage-\d+")


def redact(text: str, redactions: list[tuple[str, str]]) -> str:
    for path, label in redactions:
        text = text.replace(path, label)
    return _RUN_DIR_RE.sub("stage", text)


def redacted_spec(spec: dict, redactions: list[tuple[str, str]]) -> str:
    """The spec as published next to the stage's outputs: host paths replaced, the global ids left out."""
    stage = {k: v for k, v in (spec.get("stage") or {}).items() if k not in ("run_id", "stage_run_id")}
    return redact(json.dumps({**spec, "stage": stage}, indent=2), redactions)


# --- input models ---------------------------------------------------------------


def model_reference(stage: StageRun) -> dict[str, Any]:
    """Where this stage's input comes from, host-independent (stored with the outputs)."""
    return _reference(stage, stage.spec.get("input") or "base", role="input stage", purpose="to train on")


def _reference(stage: StageRun, source: str, *, role: str, purpose: str) -> dict[str, Any]:
    if source == "base":
        base = stage.run.snapshot["base_model"]
        _check_base_model(stage, base)
        return {
            "source": "base",
            "name": base.get("name"),
            "name_or_path": base["name_or_path"],
            "revision": base.get("revision"),
        }
    upstream = run_stage_named(run_id=stage.run_id, name=source)
    if upstream is None or upstream.status != Status.SUCCEEDED or not upstream.outputs.get("mlflow_run_id"):
        state = upstream.status if upstream else "missing"
        raise StageSetupError(f"{role} {source!r} has no output {purpose} (it is {state})")
    return {"source": "stage", "stage": source, **upstream.outputs}


def _check_base_model(stage: StageRun, base: dict[str, Any]) -> None:
    """The run's base model, checked again here: a local path must still be inside the run's team's model
    roots (a row registered before they were enforced, or a folder replaced by a link since)."""
    from refinery.basemodels.paths import ModelPathRefused, model_path_check

    name = str(base.get("name_or_path") or "")
    local = base.get("source") == "local" or os.path.isabs(name) or name.startswith((".", "~"))
    if local:
        try:
            model_path_check(team_id=stage.run.team_id, path=name)
        except ModelPathRefused as exc:
            raise StageSetupError(f"base model {base.get('name') or ''!r}: {exc}") from None
    elif ".." in name.split("/"):
        raise StageSetupError(f"base model {base.get('name') or ''!r}: {name!r} is not a hub id")


def input_references(stage: StageRun) -> list[dict[str, Any]]:
    """The models a merge stage combines (its `inputs`), in order, host-independent like the input."""
    return [_reference(stage, name, role="input stage", purpose="to merge") for name in stage.spec.get("inputs") or []]


def materialize_inputs(refs: list[dict[str, Any]], dst: Path, *, client=None) -> list[dict[str, Any]]:
    """The spec's `inputs` list: each reference downloaded from MLflow, labelled with its stage."""
    return [{"stage": ref["stage"], **materialize_model(ref, dst, client=client)} for ref in refs]


def aux_model_references(stage: StageRun) -> dict[str, dict[str, Any]]:
    """The extra models the stage's method loads (grpo: reward_model; distill: teacher), by aux_models key:
    the output of the earlier stage its config names, or the base model; host-independent like the input."""
    from trainers.catalog import get_method  # light: no torch

    refs = {}
    for key, source in get_method(stage.method).aux_sources(stage.spec.get("config") or {}).items():
        refs[key] = _reference(stage, source, role=f"{key.replace('_', ' ')} stage", purpose=f"to use as {key}")
    return refs


def gate_references(stage: StageRun) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """A gate stage's extra models: `champion`, the holder of its registered model's alias now (None and left
    out when there is none yet: refinery.registry.gates.gate_champion), and `base`, the run's base model (the
    comparison when there is no champion). Returns (champion facts, {aux key: reference})."""
    from refinery.registry.gates import gate_champion

    refs = {"base": _reference(stage, "base", role="base model", purpose="to compare with")}
    champion = gate_champion(stage=stage)
    if champion is not None:
        base = champion["ref"].get("base")
        if base and base.get("source") == "base":
            _check_base_model(stage, base)  # an adapter's base model: inside the team's model roots
        refs["champion"] = champion["ref"]
    return champion, refs


def materialize_aux_models(refs: dict[str, dict[str, Any]], dst: Path, *, client=None) -> dict[str, dict]:
    """The spec's `aux_models` block: each reference downloaded from MLflow like the input model."""
    return {key: materialize_model(ref, dst, client=client) for key, ref in refs.items()}


def materialize_model(ref: dict[str, Any], dst: Path, *, client=None) -> dict[str, Any]:
    """Turn a model reference into the trainer's `model` block, downloading from MLflow as needed."""
    if ref["source"] == "base":
        return {"name_or_path": ref["name_or_path"], "revision": ref.get("revision"), "adapter_path": None}
    kind, artifact_path = ref.get("kind"), ref.get("artifact_path") or ref.get("kind")
    local = artifacts_download(
        mlflow_run_id=ref["mlflow_run_id"], artifact_path=artifact_path, dst=dst / ref["stage"], client=client
    )
    if kind == "model":
        return {"name_or_path": str(local), "revision": None, "adapter_path": None}
    if kind == "adapter":
        base = ref.get("base")
        if not base:
            raise StageSetupError(f"adapter of stage {ref['stage']!r} does not say which model it adapts")
        model = materialize_model(base, dst, client=client)
        if model["adapter_path"]:
            raise StageSetupError(
                f"input {ref['stage']!r} is an adapter trained on another adapter; "
                "the trainer applies one adapter only (train a full model or merge in between)"
            )
        return {**model, "adapter_path": str(local)}
    raise StageSetupError(f"input stage {ref['stage']!r} produced {kind!r}, which is not a model")


# --- stage spec -----------------------------------------------------------------


def resolve_configs(stage_spec: dict) -> tuple[dict, dict | None]:
    """The method config and adapter with every default filled in, as the trainer will run them."""
    from dataclasses import asdict

    from trainers.catalog import validate_stage  # light: no torch

    kind = (stage_spec.get("train_data") or {}).get("kind")
    config, adapter, errors = validate_stage(
        stage_spec["method"], stage_spec.get("config") or {}, stage_spec.get("adapter") or {}, kind
    )
    if errors:
        raise StageSetupError("invalid stage: " + "; ".join(errors.values()))
    return asdict(config), (asdict(adapter) if adapter is not None else None)


def _data_block(data: dict | None) -> dict | None:
    if not data:
        return None
    return {
        "path": str(Path(settings.REFINERY_DATASET_DIR) / data["storage_path"]),
        "format": data["format"],
        "kind": data["kind"],
        "sha256": data["sha256"],
    }


def build_stage_spec(
    *,
    stage: StageRun,
    model: dict,
    config: dict,
    adapter: dict | None,
    work_dir: Path,
    aux_models: dict | None = None,
    inputs: list | None = None,
    card: dict | None = None,
) -> dict:
    """The trainer's spec (docs/stage-spec.md) for this stage.

    A training stage's dataset is `data.train` (and its eval set `data.eval`). A stage that trains on nothing
    (merge, evaluate, export) reads its dataset, if any, as held-out data: `data.eval`; an evaluate stage
    also gets the pipeline's retention set as `data.retention`.
    """
    from trainers.catalog import get_method  # light: no torch

    method = get_method(stage.method)
    if method.trains:
        if not stage.spec.get("train_data"):
            raise StageSetupError("the stage has no training dataset")
        data = {"train": _data_block(stage.spec.get("train_data")), "eval": _data_block(stage.spec.get("eval_data"))}
    else:
        data = {"eval": _data_block(stage.spec.get("train_data"))}
        if stage.spec.get("retention_data"):
            data["retention"] = _data_block(stage.spec["retention_data"])
    spec = {
        "version": 1,
        "stage": {
            "name": stage.name,
            "index": stage.index,
            "stage_run_id": stage.pk,
            "run_id": stage.run_id,
            "attempt": stage.attempt,
        },
        "method": stage.method,
        "config": config,
        "adapter": adapter,
        "model": model,
        "data": data,
        "output_dir": str(work_dir / "output"),
        "checkpoint_dir": str(work_dir / "checkpoints"),
        "seed": int(stage.run.seed) % 2**32,
    }
    if aux_models:
        spec["aux_models"] = aux_models
    if inputs:
        spec["inputs"] = inputs
    if card:
        spec["card"] = card
    return spec


def _dataset_facts(snap: dict | None) -> dict | None:
    if not snap:
        return None
    return {k: snap.get(k) for k in ("name", "version", "sha256", "kind", "rows")}


def model_card_facts(stage: StageRun) -> dict[str, Any]:
    """What an export stage's model card says: the run, the pipeline version, the base model, and the chain of
    stages that made the model (method, adapter, key settings, data by hash, their final metrics)."""
    run = stage.run
    snapshot = run.snapshot
    from refinery.pipelines.specs import stage_dependencies

    by_name = {s.name: s for s in run.stages.all()}
    chain, todo, seen = [], list(stage_dependencies(stage.spec)), set()
    while todo:
        name = todo.pop(0)
        upstream = by_name.get(name)
        if upstream is None or name in seen:
            continue
        seen.add(name)
        todo.extend(stage_dependencies(upstream.spec))
        config = upstream.spec.get("config") or {}
        chain.append(
            {
                "name": name,
                "method": upstream.method,
                "adapter": (upstream.spec.get("adapter") or {}).get("type") or "none",
                "config": {
                    k: config[k]
                    for k in ("learning_rate", "num_train_epochs", "max_steps", "beta", "merge_method", "weights")
                    if k in config
                },
                "inputs": stage_dependencies(upstream.spec),
                "data": _dataset_facts(upstream.spec.get("train_data")),
                "metrics": {k: v for k, v in (upstream.summary or {}).items() if isinstance(v, (int, float))},
                "mlflow_run_id": upstream.mlflow_run_id,
            }
        )
    datasets = {d["sha256"]: d for s in chain if (d := s["data"])}
    return {
        "run": f"#{run.number} {run.name}",
        "pipeline": f"{snapshot.get('pipeline', {}).get('name')} v{snapshot.get('pipeline', {}).get('version') or 1}",
        "base_model": snapshot.get("base_model", {}).get("name_or_path"),
        "base_model_revision": snapshot.get("base_model", {}).get("revision"),
        "stages": list(reversed(chain)),
        "datasets": list(datasets.values()),
        "metrics": {f"{s['name']}/{k}": v for s in chain for k, v in s["metrics"].items()},
        "lineage": [f"{s['name']} ({s['method']}) <- {', '.join(s['inputs']) or 'base'}" for s in reversed(chain)],
        "seed": run.seed,
        "code_version": run.code_version,
    }


def tracking_params(
    *, stage: StageRun, config: dict, adapter: dict | None, input_ref: dict, inputs: list[dict] | None = None
) -> dict[str, str]:
    """MLflow params of a stage run: the full resolved config, data hashes and the input(s)."""
    data = {}
    for role, key in (("train", "train_data"), ("eval", "eval_data"), ("retention", "retention_data")):
        snap = stage.spec.get(key)
        if snap:
            data[role] = {k: snap.get(k) for k in ("name", "version", "sha256", "kind", "format", "rows")}
    input_summary = {k: v for k, v in input_ref.items() if k != "base" and v is not None}
    params = {
        "method": stage.method,
        "seed": stage.run.seed,
        "config": config,
        "adapter": adapter or {"type": "none"},
        "data": data,
        "input": input_summary,
    }
    if inputs:
        params["inputs"] = {
            ref["stage"]: {k: v for k, v in ref.items() if k not in ("base", "stage") and v} for ref in inputs
        }
    return tracking_runs.flatten(params)


def tracking_tags(*, stage: StageRun, input_ref: dict, inputs: list[dict] | None = None) -> dict[str, str]:
    tags = {"refinery.input": ", ".join(r["stage"] for r in inputs) if inputs else input_ref.get("stage") or "base"}
    for role, key in (("train", "train_data"), ("eval", "eval_data")):
        snap = stage.spec.get(key)
        if snap:
            tags[f"refinery.dataset.{role}.sha256"] = snap["sha256"]
            tags[f"refinery.dataset.{role}.name"] = f"{snap.get('name')} v{snap.get('version')}"
    return tags
