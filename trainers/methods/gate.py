"""The gate stage: evaluate the candidate (this stage's input) and the champion (the registered alias's current
holder, ``aux_models.champion``) on the same held-out and retention data, then decide whether the candidate may
replace it (trainers.gates.gate_decide). Without a champion, ``aux_models.base`` (the run's base model) is
measured for comparison and only the absolute thresholds decide.

The measuring is the evaluate stage's (trainers/methods/evaluate.py), so a gate's numbers equal an evaluate
stage's on the same models and data; in its metrics "baseline" is the champion. The summary adds ``gate``
(the decision) and the report folder a ``gate.json``. The platform moves the alias (refinery.registry.gates).
"""

import dataclasses
import json
import os
from typing import Any

from ..configs import EvaluateConfig
from ..events import Events, jsonable
from ..gates import GateDataError, gate_decide
from ..stage_spec import StageSpec
from . import evaluate

__all__ = ["run"]


def run(spec: StageSpec, events: Events) -> dict[str, Any]:
    cfg = spec.config
    champion = spec.aux_models.get("champion")
    baseline = champion or spec.aux_models.get("base")
    if baseline is None:
        raise ValueError(
            "gate needs aux_models.champion (the alias's holder) or aux_models.base (the run's base "
            "model, when the alias has no holder yet)"
        )
    if spec.eval is None:
        raise ValueError("gate needs held-out data (data.eval): the candidate is compared on it")
    eval_cfg = EvaluateConfig(
        max_rows=cfg.max_rows,
        batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens,
        accuracy_reward=cfg.accuracy_reward,
        sample_prompts="",
        sample_count=cfg.sample_count,
    )
    measured = evaluate.run(dataclasses.replace(spec, config=eval_cfg, aux_models={"baseline": baseline}), events)
    if measured.get("status") != "finished":
        return measured
    summary = measured["summary"]
    try:
        decision = gate_decide(
            cfg,
            metrics=summary["metrics"],
            target_kind=spec.eval.kind,
            retention_kind=spec.retention.kind if spec.retention is not None else None,
            has_champion=champion is not None,
        )
    except GateDataError as exc:
        raise ValueError(f"gate: {exc}") from None
    gate_metrics = {"gate/passed": 1.0 if decision["passed"] else 0.0}
    for key in ("gain", "forgetting"):
        if decision.get(key) is not None:
            gate_metrics[f"gate/{key}"] = decision[key]
    events.emit("metrics", step=0, metrics=gate_metrics)
    path = measured["outputs"]["path"]
    with open(os.path.join(path, "gate.json"), "w", encoding="utf-8") as fh:
        json.dump(
            jsonable(
                {
                    "decision": decision,
                    "config": dataclasses.asdict(cfg),
                    "champion": champion.as_dict() if champion else None,
                }
            ),
            fh,
            indent=1,
            allow_nan=False,
        )
    summary = {**summary, "metrics": {**summary["metrics"], **gate_metrics}, "gate": decision}
    return {**measured, "summary": summary}
