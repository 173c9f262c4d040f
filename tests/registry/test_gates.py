"""Promotion gates on the platform side, against the real MLflow server: applying a gate stage's decision
(promote, keep, await approval, stale), applying it once, approval and rejection by an owner (page and API),
the run page's gate card, the alias history and the spec checks. The gate stage's numbers are given here
(trainers/methods/gate.py makes them; tests/trainers/test_gate_stage.py and tests/integration/test_gates.py
run it for real)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.utils import timezone

from refinery.notifications.models import NotificationEvent
from refinery.pipelines.specs import SpecError, pipeline_spec_normalize
from refinery.registry.gates import GateError, gate_apply, gate_approve, gate_champion, gate_reject
from refinery.registry.models import AliasEvent, GateDecision, ModelAlias, RegisteredModel
from refinery.runs.models import StageRun, Status
from refinery.runs.services import run_create
from refinery.teams.models import AuditEvent, Membership
from refinery.teams.services import membership_add, user_create
from refinery.tracking.client import artifacts_upload, tracking_client
from refinery.tracking.runs import stage_run_ensure
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory
from tests.fixtures import ApiClient

pytestmark = pytest.mark.integration


def _numbers(passed: bool, *, champion: float | None = 0.5, candidate: float = 0.4) -> dict:
    checks = [{"check": "gain", "passed": passed, "text": f"loss {candidate} vs {champion} (needs > 0)"}]
    return {
        "passed": passed,
        "metric": "loss",
        "higher_is_better": False,
        "candidate": candidate,
        "champion": champion,
        "gain": None if champion is None else champion - candidate,
        "checks": checks,
        "reasons": [c["text"] for c in checks],
        "has_champion": champion is not None,
    }


@pytest.fixture
def lab(alice, team, tmp_path, mlflow_server, sent_stages):
    """A pipeline sft -> gate (support-bot@production) and `run(gate_config)`: a run whose sft stage succeeded
    with a real model artifact in MLflow, its gate stage running (as when its trainer has just finished)."""
    rows = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(5) for b in range(5)]
    path = tmp_path / "add.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DatasetVersionFactory(dataset__team=team, dataset__name="addition", source=path)
    base = BaseModelFactory(team=team, name="tiny", name_or_path="/models/tiny")

    def run(**gate) -> StageRun:
        stages = [
            {
                "name": "sft",
                "method": "sft",
                "config": {"max_steps": 2},
                "adapter": {"type": "none"},
                "dataset_id": data.dataset_id,
                "input": "base",
            },
            {
                "name": "gate",
                "method": "gate",
                "adapter": None,
                "dataset_id": data.dataset_id,
                "input": "sft",
                "config": {"registered_model": "support-bot", **gate},
            },
        ]
        pipeline = PipelineFactory(team=team, base_model=base, created_by=alice, stages=stages)
        made = run_create(pipeline=pipeline, user=alice)
        sft, gate_stage = made.stages.order_by("index")
        mlflow_run_id = stage_run_ensure(stage=sft, params={"method": "sft"})
        folder = tmp_path / f"model-{made.pk}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
        artifacts_upload(mlflow_run_id=mlflow_run_id, local_path=folder, artifact_path="model")
        StageRun.objects.filter(pk=sft.pk).update(
            status=Status.SUCCEEDED,
            finished_at=timezone.now(),
            outputs={"kind": "model", "artifact_path": "model", "mlflow_run_id": mlflow_run_id, "base": None},
        )
        stage_run_ensure(stage=gate_stage, params={"method": "gate"})
        StageRun.objects.filter(pk=gate_stage.pk).update(status=Status.RUNNING)
        return StageRun.objects.select_related("run__team").get(pk=gate_stage.pk)

    return {"run": run, "team": team}


def _apply(stage: StageRun, numbers: dict) -> GateDecision:
    return gate_apply(stage_run_id=stage.pk, summary={"gate": numbers}, champion=gate_champion(stage=stage))


def _mlflow_alias(alias: str = "production") -> int | None:
    model = RegisteredModel.objects.get(name="support-bot")
    aliases = tracking_client().get_registered_model(model.mlflow_name).aliases or {}
    return int(aliases[alias]) if alias in aliases else None


def test_promote_keep_and_apply_once(lab, alice):
    first = lab["run"]()
    assert gate_champion(stage=first) is None
    decision = _apply(first, _numbers(True, champion=None))
    assert decision.outcome == "promoted" and decision.candidate.version == 1
    assert decision.message.startswith("promoted v1 to production (no holder yet): ")
    assert _mlflow_alias() == 1
    assert _apply(first, _numbers(False)) == decision  # a retried stage gets the recorded decision

    second = lab["run"]()
    champion = gate_champion(stage=second)
    assert champion["version"] == 1 and champion["ref"]["kind"] == "model" and champion["stage"] == "sft"
    kept = _apply(second, _numbers(False))
    assert kept.outcome == "kept" and kept.champion.version == 1 and kept.candidate is None
    assert kept.message == "kept champion v1: loss 0.4 vs 0.5 (needs > 0)"
    assert _mlflow_alias() == 1 and RegisteredModel.objects.get().versions.count() == 1
    event = AliasEvent.objects.get(gate=kept)
    assert (event.action, event.version.version, event.note) == ("kept", 1, kept.message)
    tags = tracking_client().get_run(second.mlflow_run_id).data.tags
    assert tags["refinery.gate.outcome"] == "kept" and tags["refinery.gate.champion_version"] == "1"
    assert set(AuditEvent.objects.filter(action__startswith="gate.").values_list("action", flat=True)) == {
        "gate.promoted",
        "gate.kept",
    }

    # A kept entry is not a change: rollback still undoes the gate's promotion (to nothing before it).
    page = Client()
    page.force_login(alice)
    html = page.get("/registry/support-bot/").content.decode()
    assert 'data-action="kept"' in html and "kept champion v1" in html and "the gate of" in html


def test_the_alias_moving_while_the_gate_ran_makes_the_decision_stale(lab, alice, team):
    first = lab["run"]()
    _apply(first, _numbers(True, champion=None))
    second, third = lab["run"](), lab["run"]()
    champion_then = gate_champion(stage=third)  # the third gate started while v1 held production...
    _apply(second, _numbers(True))  # ...then the second promoted v2
    assert _mlflow_alias() == 2
    stale = gate_apply(stage_run_id=third.pk, summary={"gate": _numbers(True)}, champion=champion_then)
    assert stale.outcome == "stale" and stale.candidate is None
    assert stale.message.startswith("not promoted: production moved from v1 to v2 while the gate ran")
    assert _mlflow_alias() == 2


def test_approval_by_an_owner_moves_the_alias_and_rejection_keeps_it(lab, alice, team):
    bob = user_create(username="bobby", password="pw-bobby-123")
    membership_add(team=team, user=bob, role=Membership.Role.MEMBER)
    first = lab["run"](require_approval=True)
    waiting = _apply(first, _numbers(True, champion=None))
    assert waiting.outcome == "awaiting_approval" and waiting.candidate.version == 1
    assert waiting.message.startswith("v1 awaits approval for production (holder: none): ")
    assert not ModelAlias.objects.exists() and _mlflow_alias() is None
    assert NotificationEvent.objects.filter(kind="gate.awaiting_approval").count() == 1

    with pytest.raises(GateError, match="only an owner"):
        gate_approve(decision=waiting, user=bob)
    member = Client()
    member.force_login(bob)
    assert member.post(f"/runs/{first.run.number}/gates/gate/approve/").status_code == 403

    owner = Client()
    owner.force_login(alice)
    card = owner.get(f"/runs/{first.run.number}/").content.decode()
    assert 'data-testid="gate-approve"' in card and "Awaiting approval" in card
    listed = owner.get("/registry/support-bot/").content.decode()
    assert 'data-testid="awaiting-approval"' in listed and "v1 awaits approval" in listed
    response = owner.post(f"/runs/{first.run.number}/gates/gate/approve/", {"note": "looks good"})
    assert response.status_code == 302
    waiting.refresh_from_db()
    assert waiting.outcome == "approved" and waiting.reviewed_by == alice and waiting.review_note == "looks good"
    assert _mlflow_alias() == 1
    assert AliasEvent.objects.get(gate=waiting, action="set").user == alice
    with pytest.raises(GateError, match="not awaiting approval"):
        gate_reject(decision=waiting, user=alice)

    second = lab["run"](require_approval=True)
    pending = _apply(second, _numbers(True))
    api = ApiClient(_token(alice, team))
    listed = api.get("/api/v1/gates?outcome=awaiting_approval").json()
    assert [g["id"] for g in listed] == [pending.pk] and listed[0]["candidate_version"] == 2
    rejected = api.post(f"/api/v1/gates/{pending.pk}/reject", {"note": "too slow"})
    assert rejected.status_code == 200, rejected.content
    body = rejected.json()
    assert body["outcome"] == "rejected" and body["review_note"] == "too slow" and body["champion_version"] == 1
    assert _mlflow_alias() == 1
    again = api.post(f"/api/v1/gates/{pending.pk}/approve", {})
    assert again.status_code == 400 and "not awaiting approval" in again.json()["detail"]
    assert NotificationEvent.objects.filter(kind="gate.rejected").count() == 1
    assert NotificationEvent.objects.filter(kind="gate.promoted").count() == 1


def test_approval_is_refused_when_the_alias_moved_since_the_comparison(lab, alice, team):
    first = lab["run"]()
    _apply(first, _numbers(True, champion=None))  # v1 in production
    second = lab["run"](require_approval=True)
    pending = _apply(second, _numbers(True))  # v2 awaits, compared with v1
    third = lab["run"]()
    _apply(third, _numbers(True))  # v3 promoted over v1 meanwhile
    with pytest.raises(GateError, match="points at v3 now, not at v1"):
        gate_approve(decision=pending, user=alice)
    assert _mlflow_alias() == 3


def test_gates_api_is_team_scoped_and_owner_only(lab, alice, team, bob):
    decision = _apply(lab["run"](require_approval=True), _numbers(True, champion=None))
    outsider = ApiClient(_token(bob, bob.teams.get()))
    assert outsider.get(f"/api/v1/gates/{decision.pk}").status_code == 404
    assert outsider.post(f"/api/v1/gates/{decision.pk}/approve", {}).status_code == 404
    assert outsider.get("/api/v1/gates").json() == []
    member = user_create(username="mia", password="pw-mia-123")
    membership_add(team=team, user=member, role=Membership.Role.MEMBER)
    response = ApiClient(_token(member, team)).post(f"/api/v1/gates/{decision.pk}/approve", {})
    assert response.status_code == 403 and "only an owner" in response.json()["detail"]
    one = ApiClient(_token(alice, team)).get(f"/api/v1/gates/{decision.pk}").json()
    assert one["outcome"] == "awaiting_approval" and one["stage"] == "gate" and one["candidate_stage"] == "sft"
    assert one["numbers"]["metric"] == "loss"


def _token(user, team) -> str:
    from refinery.teams.services import api_token_create

    return api_token_create(user=user, team=team)[1]


def test_gate_specs_are_checked_before_saving(db, alice, team, tmp_path):
    rows = [{"prompt": "1+1=", "completion": "2"}]
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n")
    data = DatasetVersionFactory(dataset__team=team, dataset__name="a", source=path)
    prefs = DatasetVersionFactory(dataset__team=team, dataset__name="p", dataset__kind="feedback", source=path)

    def errors(gate: dict, *, input="sft", dataset=data.dataset_id, retention=None) -> dict:
        spec = {
            "stages": [
                {"name": "sft", "method": "sft", "dataset_id": data.dataset_id, "config": {"max_steps": 1}},
                {
                    "name": "gate",
                    "method": "gate",
                    "dataset_id": dataset,
                    "input": input,
                    "config": {"registered_model": "bot", **gate},
                },
            ]
        }
        if retention:
            spec["retention_dataset_id"] = retention
        try:
            pipeline_spec_normalize(team=team, spec=spec)
        except SpecError as exc:
            return exc.errors
        return {}

    assert errors({}) == {}
    assert "name a stage" in errors({}, input="base")["stages.1.input"]
    assert "use lowercase letters" in errors({"registered_model": "Support Bot"})["stages.1.config.registered_model"]
    assert "reserved by MLflow" in errors({"alias": "latest"})["stages.1.config.alias"]
    assert "needs the pipeline's retention set" in errors({"max_forgetting": "0.1"})["stages.1.config.max_forgetting"]
    assert errors({"max_forgetting": "0.1"}, retention=data.dataset_id) == {}
    assert "accuracy" in errors({"metric": "accuracy"})["stages.1.config.metric"]
    assert "gate cannot read 'feedback'" in errors({}, dataset=prefs.dataset_id)["stages.1.dataset_kind"]
    assert "choose a held-out dataset" in errors({}, dataset=None)["stages.1.dataset_id"]
