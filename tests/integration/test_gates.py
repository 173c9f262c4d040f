"""Promotion gates end to end: runs through a real Celery worker, the candidate and the champion evaluated in
the gate stage, the alias moved (or kept) in the real MLflow Model Registry.

One team, one registered model `adder@production`, runs in sequence:
1. no holder yet, a threshold the candidate cannot meet: nothing is registered;
2. no holder yet, a threshold it meets: v1 becomes production (the absolute thresholds decide);
3. a barely trained candidate against v1: kept, the alias stays on v1, the history says why;
4. a better trained candidate: v2 becomes production, over v1;
5. a candidate that gains on subtraction (the held-out set) but forgot addition (the retention set) past R:
   kept, although it beats the champion on the target metric.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from django.test import Client

from refinery.notifications.models import NotificationEvent
from refinery.registry.models import AliasEvent, GateDecision, RegisteredModel
from refinery.runs.models import Run, Status
from refinery.runs.services import run_create
from refinery.tracking.client import tracking_client
from tests.conftest import QUICK_SFT
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def lab(demo_kit, tmp_path):
    """A team with the demo model and its data (addition), plus subtraction rows; `pipeline(...)` makes one."""
    from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory, TeamFactory, UserFactory

    user = UserFactory()
    team = TeamFactory(members=[user])
    base = BaseModelFactory(team=team, name="tiny-llama", name_or_path=demo_kit["model"])
    rows = [{"prompt": f"{a}-{b}=", "completion": str(a - b)} for a in range(10) for b in range(a + 1)]
    random.Random(0).shuffle(rows)
    files = {
        "addition": Path(demo_kit["data"]["train"]),
        "addition-held-out": Path(demo_kit["data"]["eval"]),
        "subtraction": _jsonl(tmp_path / "sub-train.jsonl", rows[:45]),
        "subtraction-held-out": _jsonl(tmp_path / "sub-eval.jsonl", rows[45:]),
    }
    datasets = {
        name: DatasetVersionFactory(
            dataset__team=team, dataset__name=name, dataset__kind="prompt_completion", source=path
        ).dataset_id
        for name, path in files.items()
    }

    def pipeline(
        name: str,
        *,
        train: str = "addition",
        sft: dict | None = None,
        gate: dict | None = None,
        held_out: str = "addition-held-out",
        retention: str | None = None,
    ):
        stages = [
            {
                "name": "sft",
                "method": "sft",
                "config": {**QUICK_SFT, **(sft or {})},
                "adapter": {"type": "none"},
                "dataset_id": datasets[train],
                "input": "base",
            },
            {
                "name": "gate",
                "method": "gate",
                "adapter": None,
                "dataset_id": datasets[held_out],
                "input": "sft",
                "config": {"registered_model": "adder", "alias": "production", "sample_count": 2, **(gate or {})},
            },
        ]
        made = PipelineFactory(team=team, base_model=base, created_by=user, stages=stages, seed=5, name=name)
        if retention:
            made.spec["retention_dataset_id"] = datasets[retention]
            made.save()
        return made

    return {"user": user, "team": team, "pipeline": pipeline}


def _run(worker, pipeline, user) -> Run:
    run = run_create(pipeline=pipeline, user=user)
    wait_until(
        lambda: Run.objects.get(pk=run.pk).is_finished,
        timeout=300,
        interval=0.5,
        message=lambda: f"run still {Run.objects.get(pk=run.pk).status}:\n{worker.log_tail(40)}",
    )
    run.refresh_from_db()
    failed = {s.name: (s.error, s.log_tail[-1500:]) for s in run.stages.all() if s.status != Status.SUCCEEDED}
    assert run.status == Status.SUCCEEDED, failed
    return run


def _production() -> int | None:
    model = RegisteredModel.objects.filter(name="adder").first()
    if model is None:
        return None
    found = tracking_client().get_registered_model(model.mlflow_name)
    return int(found.aliases["production"]) if "production" in (found.aliases or {}) else None


def test_gates_promote_better_candidates_and_keep_out_worse_and_forgetful_ones(
    celery_worker_process, mlflow_server, lab
):
    user, pipeline = lab["user"], lab["pipeline"]

    # 1. No holder: the absolute threshold decides, and loss <= 0.001 is out of reach.
    run = _run(celery_worker_process, pipeline("strict", gate={"target_threshold": "0.001"}), user)
    decision = GateDecision.objects.get(run=run)
    assert decision.outcome == "kept" and not decision.passed and decision.champion is None
    assert decision.message.startswith("not promoted (no holder yet): loss ") and "needs <= 0.001" in decision.message
    assert not RegisteredModel.objects.filter(name="adder").exists()
    gate_stage = run.stages.get(name="gate")
    assert gate_stage.summary["decision"]["outcome"] == "kept" and gate_stage.outputs["champion"] is None

    # 2. No holder, a threshold it meets: v1 becomes production, in MLflow too.
    run = _run(celery_worker_process, pipeline("first", gate={"target_threshold": "50"}), user)
    decision = GateDecision.objects.get(run=run)
    assert decision.outcome == "promoted" and decision.candidate.version == 1
    assert decision.message.startswith("promoted v1 to production (no holder yet): ")
    assert _production() == 1
    v1 = decision.candidate
    assert v1.stage_run.name == "sft" and v1.run_id == run.pk
    version = tracking_client().get_model_version(v1.registered_model.mlflow_name, "1")
    assert version.tags["refinery.gate.outcome"] == "promoted"
    gate_run = tracking_client().get_run(run.stages.get(name="gate").mlflow_run_id)
    assert gate_run.data.tags["refinery.gate.outcome"] == "promoted"
    assert gate_run.data.metrics["gate/passed"] == 1.0

    # 3. A barely trained candidate against v1: kept; the alias stays; the history says why.
    run = _run(celery_worker_process, pipeline("worse", sft={"max_steps": 1, "learning_rate": 1e-7}), user)
    decision = GateDecision.objects.get(run=run)
    assert decision.outcome == "kept" and decision.champion == v1 and decision.candidate is None
    numbers = decision.numbers
    assert numbers["metric"] == "loss" and numbers["candidate"] > numbers["champion"] and numbers["gain"] < 0
    assert decision.message.startswith("kept champion v1: loss ")
    assert _production() == 1
    kept = AliasEvent.objects.get(gate=decision)
    assert kept.action == "kept" and kept.version == v1 and kept.note == decision.message
    # The champion's numbers are measured in this run, on this run's data: the gate's stage spec named v1.
    assert run.stages.get(name="gate").outputs["champion"] == {
        "version_id": v1.pk,
        "version": 1,
        "model": "adder",
        "alias": "production",
        "run": v1.run.number,
        "stage": "sft",
    }

    # 4. A better trained candidate: v2 becomes production over v1.
    run = _run(
        celery_worker_process, pipeline("better", sft={"max_steps": 80, "per_device_train_batch_size": 16}), user
    )
    decision = GateDecision.objects.get(run=run)
    assert decision.outcome == "promoted", decision.message
    assert decision.candidate.version == 2 and decision.champion == v1 and decision.numbers["gain"] > 0
    assert decision.message.startswith("promoted v2 to production over v1: loss ")
    assert _production() == 2
    moved = AliasEvent.objects.get(gate=decision)
    assert moved.action == "set" and moved.previous_version == v1 and moved.note == decision.message

    # 5. Trained on subtraction only: better than v2 at subtraction, but it forgot addition (the retention set).
    run = _run(
        celery_worker_process,
        pipeline(
            "forgetful",
            train="subtraction",
            held_out="subtraction-held-out",
            retention="addition",
            sft={"max_steps": 60},
            gate={"max_forgetting": "0.2"},
        ),
        user,
    )
    decision = GateDecision.objects.get(run=run)
    numbers = decision.numbers
    assert numbers["gain"] > 0, numbers  # it won on the target metric...
    assert numbers["forgetting"] > 0.2  # ...and lost on what production knows
    assert decision.outcome == "kept" and [c["check"] for c in numbers["checks"] if not c["passed"]] == ["forgetting"]
    assert "retention drop" in decision.message and "(limit 0.2;" in decision.message
    assert _production() == 2

    kinds = list(
        NotificationEvent.objects.filter(team=lab["team"], kind__startswith="gate.")
        .order_by("id")
        .values_list("kind", flat=True)
    )
    assert kinds == ["gate.rejected", "gate.promoted", "gate.rejected", "gate.promoted", "gate.rejected"]

    # The run page shows the gate card with the decision.
    client = Client()
    client.force_login(user)
    page = client.get(f"/runs/{run.number}/").content.decode()
    assert 'data-testid="gate-gate"' in page and "retention drop" in page
