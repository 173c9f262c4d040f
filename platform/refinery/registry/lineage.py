"""What a registered version records about itself at promotion: its numbers and its lineage.

Both are plain JSON copied from the run's rows (no MLflow call), so the registry pages show them without
touching the run: the run's snapshot is frozen, and a version keeps its run (on_delete=RESTRICT) for the
full config behind the link.
"""

from __future__ import annotations

import math
from typing import Any

from refinery.runs.models import Run, StageRun, Status

# Config fields worth showing in a lineage's stage chain (the full config stays in the run's snapshot).
KEY_CONFIG = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "beta",
    "loss_type",
    "num_generations",
    "teacher_stage",
    "reward_model_stage",
    "merge_method",
    "weights",
    "density",
    "quantization",
)
ADAPTER_KEYS = ("r", "alpha", "dropout", "use_rslora", "num_virtual_tokens", "freeze_layers")
# Training numbers shown next to the evaluation's in a version's headline.
TRAIN_HEADLINE = ("train/loss", "eval/loss", "train/reward_end", "eval/accuracy", "eval/rewards/accuracies")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def flat_numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """{"eval": {"loss": 1.2}, "note": "x"} -> {"eval/loss": 1.2}: every finite number, keys joined by "/"."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, dict):
                out.update(flat_numbers(value, f"{prefix}{key}/"))
            elif (number := _number(value)) is not None:
                out[f"{prefix}{key}"] = number
    return out


def _dataset(data: dict | None) -> dict | None:
    if not data:
        return None
    return {key: data.get(key) for key in ("dataset_id", "name", "kind", "version", "sha256", "rows")}


def evaluations_of(stage: StageRun, stages: list[StageRun]) -> tuple[list[StageRun], list[StageRun]]:
    """The run's evaluate stages that measure `stage`'s output: (succeeded ones, ones not finished yet)."""
    measuring = [s for s in stages if s.method == "evaluate" and s.spec.get("input") == stage.name]
    done = [s for s in measuring if s.status == Status.SUCCEEDED]
    pending = [s for s in measuring if not s.is_finished]
    return done, pending


def promotion_metrics(stage: StageRun, stages: list[StageRun]) -> dict:
    """The version's numbers: the stage's own summary, the evaluations of its output, a headline for tables."""
    own = flat_numbers(stage.summary or {})
    done, pending = evaluations_of(stage, stages)
    evaluations = []
    headline: list[dict] = []
    for ev in done:
        summary = ev.summary or {}
        target, retention = summary.get("target") or None, summary.get("retention") or None
        evaluations.append(
            {
                "stage": ev.name,
                "target": target,
                "retention": retention,
                "metrics": flat_numbers(summary.get("metrics") or {}),
            }
        )
        if target and _number(target.get("gain")) is not None and not any(h["key"] == "gain" for h in headline):
            headline.append(
                {
                    "key": "gain",
                    "label": f"{target.get('metric', 'target')} gain",
                    "value": target["gain"],
                    "model": target.get("model"),
                    "better": "higher",
                    "stage": ev.name,
                }
            )
        if (
            retention
            and _number(retention.get("forgetting")) is not None
            and not any(h["key"] == "forgetting" for h in headline)
        ):
            headline.append(
                {
                    "key": "forgetting",
                    "label": f"forgetting ({retention.get('metric', 'retention')})",
                    "value": retention["forgetting"],
                    "model": retention.get("model"),
                    "better": "lower",
                    "stage": ev.name,
                }
            )
    for key in TRAIN_HEADLINE:
        if key in own:
            headline.append(
                {
                    "key": key,
                    "label": key,
                    "value": own[key],
                    "model": None,
                    "better": "lower" if "loss" in key else "higher",
                    "stage": stage.name,
                }
            )
    return {"stage": own, "evaluations": evaluations, "headline": headline[:4], "pending": [s.name for s in pending]}


def _adapter(adapter: dict | None) -> dict | None:
    """The adapter's type and the fields that type reads (a full fine-tune is {"type": "none"})."""
    from trainers.configs.adapters import ADAPTER_FIELD_TYPES

    if not isinstance(adapter, dict) or not adapter.get("type"):
        return None
    kind = adapter["type"]
    return {
        "type": kind,
        **{
            k: adapter[k]
            for k in ADAPTER_KEYS
            if kind in ADAPTER_FIELD_TYPES.get(k, ()) and adapter.get(k) not in (None, "", [])
        },
    }


def _chain(stage: StageRun, by_name: dict[str, StageRun]) -> list[StageRun]:
    """The stage and every stage it was built from (inputs, merge inputs, aux models), in run order."""
    from refinery.pipelines.specs import stage_dependencies

    seen: dict[str, StageRun] = {}
    todo = [stage.name]
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name:
            continue
        seen[name] = by_name[name]
        todo.extend(stage_dependencies(by_name[name].spec))
    return sorted(seen.values(), key=lambda s: s.index)


def stage_lineage(stage: StageRun, run: Run, stages: list[StageRun]) -> dict:
    """Where a stage output came from, self-contained:

    {"run": {"id", "number", "name"}, "stage": name, "kind", "source": "runs:/<id>/<path>",
     "pipeline": {"id", "name", "version"}, "base_model": {"name", "name_or_path", "revision", "source"},
     "adapter_base": <the model reference an adapter applies to> | None,
     "datasets": [{"role", "stage", "dataset_id", "name", "kind", "version", "sha256", "rows"}],
     "chain": [{"name", "method", "input", "inputs", "adapter", "config", "train_data", "eval_data"}],
     "code_version", "seed", "overrides"}
    """
    snapshot = run.snapshot or {}
    by_name = {s.name: s for s in stages}
    chain = _chain(stage, by_name)
    datasets: list[dict] = []
    steps = []
    for step in chain:
        spec = step.spec or {}
        adapter = _adapter(spec.get("adapter"))
        config = spec.get("config") or {}
        steps.append(
            {
                "name": step.name,
                "method": step.method,
                "input": spec.get("input") or "base",
                "inputs": list(spec.get("inputs") or []),
                "adapter": adapter,
                "config": {k: config[k] for k in KEY_CONFIG if config.get(k) not in (None, "")},
                "train_data": _dataset(spec.get("train_data")),
                "eval_data": _dataset(spec.get("eval_data")),
            }
        )
        for role, key in (("train", "train_data"), ("eval", "eval_data")):
            if data := _dataset(spec.get(key)):
                datasets.append({"role": role, "stage": step.name, **data})
    done, _ = evaluations_of(stage, stages)
    for ev in done:
        for role, key in (("evaluation", "train_data"), ("retention", "retention_data")):
            if data := _dataset(ev.spec.get(key)):
                datasets.append({"role": role, "stage": ev.name, **data})
    base = snapshot.get("base_model") or {}
    pipeline = snapshot.get("pipeline") or {}
    outputs = stage.outputs or {}
    return {
        "run": {"id": run.pk, "number": run.number, "name": run.name},
        "stage": stage.name,
        "kind": outputs.get("kind"),
        "source": f"runs:/{outputs.get('mlflow_run_id')}/{outputs.get('artifact_path')}",
        "pipeline": {"id": pipeline.get("id"), "name": pipeline.get("name"), "version": pipeline.get("version")},
        "base_model": {k: base.get(k) for k in ("name", "name_or_path", "revision", "source")},
        "adapter_base": outputs.get("base") if outputs.get("kind") == "adapter" else None,
        "datasets": datasets,
        "chain": steps,
        "code_version": run.code_version or snapshot.get("code_version"),
        "seed": run.seed,
        "overrides": snapshot.get("overrides") or {},
    }


def version_tags(*, lineage: dict, team, user, stage: StageRun) -> dict[str, object]:
    """Tags on the MLflow version, so that a consumer of `models:/...@production` sees what it got."""
    base = lineage.get("base_model") or {}
    adapter_base = lineage.get("adapter_base") or {}
    return {
        "refinery.team": team.slug,
        "refinery.run_number": lineage["run"]["number"],
        "refinery.run_id": lineage["run"]["id"],
        "refinery.stage": stage.name,
        "refinery.stage_run_id": stage.pk,
        "refinery.kind": lineage.get("kind"),
        "refinery.pipeline": (lineage.get("pipeline") or {}).get("name"),
        "refinery.pipeline_version": (lineage.get("pipeline") or {}).get("version"),
        "refinery.base_model": base.get("name_or_path"),
        "refinery.base_model.revision": base.get("revision"),
        "refinery.adapter_base": adapter_base.get("name_or_path")
        or (
            f"runs:/{adapter_base['mlflow_run_id']}/{adapter_base.get('artifact_path')}"
            if adapter_base.get("mlflow_run_id")
            else None
        ),
        "refinery.datasets": ",".join(sorted({d["sha256"] for d in lineage.get("datasets") or [] if d.get("sha256")})),
        "refinery.code_version": lineage.get("code_version"),
        "refinery.seed": lineage.get("seed"),
        "refinery.promoted_by": user.get_username() if user is not None and user.is_authenticated else None,
    }
