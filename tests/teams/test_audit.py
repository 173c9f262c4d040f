"""Every administrative and team action of the team-administration list leaves one audit row in the right team:
performed here through its service (or, for sign-ins, through the login page)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import pytest
from django.test import Client

from refinery.data.services import dataset_delete, dataset_version_create
from refinery.pipelines.services import pipeline_create, pipeline_update
from refinery.registry.services import alias_remove, alias_rollback, alias_set, model_promote
from refinery.runs.models import Status
from refinery.runs.services import run_cancel, run_create, run_rerun
from refinery.teams.audit_log import ACTION_LABELS, action_label, detail_text
from refinery.teams.invitations import invitation_accept, invitation_create, invitation_revoke
from refinery.teams.memberships import membership_leave, membership_remove, membership_role_change
from refinery.teams.models import AuditEvent, Membership, Team
from refinery.teams.services import api_token_create, membership_add, team_create, user_create
from refinery.teams.tokens import api_token_revoke
from refinery.tracking import registry as mlflow_registry
from tests.factories import BaseModelFactory, DatasetVersionFactory, UserFactory

Role = Membership.Role


@dataclass
class World:
    owner: object
    team: Team
    member: Membership
    other_team: Team
    pipeline: object = None


@pytest.fixture
def world(db):
    owner = user_create(username="olga", password="pw-olga-12345", team_name="Lab")
    team = owner.teams.get()
    member = membership_add(team=team, user=user_create(username="mia", password="pw-mia-12345"))
    other = team_create(name="Elsewhere", owner=UserFactory(username="eve"))
    return World(owner=owner, team=team, member=member, other_team=other)


def _spec(team):
    version = DatasetVersionFactory(dataset__team=team)
    return {
        "seed": 3,
        "auto_evaluate": False,
        "stages": [
            {
                "name": "sft",
                "method": "sft",
                "config": {"max_steps": 2},
                "adapter": {"type": "none"},
                "dataset_id": version.dataset_id,
                "input": "base",
            }
        ],
    }


def _pipeline(w: World, name="adder"):
    base = BaseModelFactory(team=w.team)
    return pipeline_create(team=w.team, user=w.owner, name=name, base_model_id=base.pk, spec=_spec(w.team))


@pytest.fixture
def fake_mlflow_registry(monkeypatch):
    """The registry's MLflow calls, replaced at the module boundary (their real behaviour is tested in
    tests/registry/test_registry.py against a real server): here only the audit rows matter."""
    numbers = itertools.count(1)
    monkeypatch.setattr(mlflow_registry, "registered_model_ensure", lambda **kw: None)
    monkeypatch.setattr(mlflow_registry, "model_version_create", lambda **kw: next(numbers))
    for name in ("alias_set", "alias_delete", "alias_restore", "model_version_delete"):
        monkeypatch.setattr(mlflow_registry, name, lambda **kw: None)


def _promotable_stage(w: World):
    run = run_create(pipeline=_pipeline(w, name=f"adder-{w.team.runs.count()}"), user=w.owner)
    stage = run.stages.get()
    stage.status = Status.SUCCEEDED
    stage.outputs = {"kind": "model", "mlflow_run_id": "abc123", "artifact_path": "model"}
    stage.save()
    return stage


def _promote(w, alias=None):
    return model_promote(team=w.team, user=w.owner, stage_run=_promotable_stage(w), model_name="adder", alias=alias)


def _alias_moves(w, final):
    v1 = _promote(w, alias="production")
    v2 = _promote(w)
    alias_set(team=w.team, user=w.owner, registered_model=v2.registered_model, alias="production", version=v2)
    if final == "rolled_back":
        alias_rollback(team=w.team, user=w.owner, registered_model=v1.registered_model, alias="production")
    elif final == "removed":
        alias_remove(team=w.team, user=w.owner, registered_model=v1.registered_model, alias="production")


def _upload(w):
    body = "".join(json.dumps({"prompt": f"{i}+1=", "completion": str(i + 1)}) + "\n" for i in range(5)).encode()
    dataset_version_create(
        team=w.team,
        user=w.owner,
        name="sums",
        kind="prompt_completion",
        filename="sums.jsonl",
        chunks=iter([body]),
        description="",
    )


def _failed_sign_in(w):
    response = Client(REMOTE_ADDR="203.0.113.9").post("/login/", {"username": "olga", "password": "wrong"})
    assert response.status_code == 200  # the form again, with the error


def _new_token(w):
    return api_token_create(user=w.owner, team=w.team, name="ci", scope="read")[0]


def _invite(w, role=Role.VIEWER):
    return invitation_create(team=w.team, actor=w.owner, role=role, email="new@example.com")[0]


def _rerun(w):
    run = run_create(pipeline=_pipeline(w), user=w.owner)
    run_cancel(run=run, user=w.owner)
    run_rerun(run=run, user=w.owner)


# (action, how, expected target, expected detail subset)
CASES = [
    (
        "auth.login",
        lambda w: Client(REMOTE_ADDR="203.0.113.7").login(username="olga", password="pw-olga-12345"),
        "olga",
        {},
    ),
    ("auth.login_failed", _failed_sign_in, "olga", {"ip": "203.0.113.9"}),
    ("team.created", lambda w: team_create(name="Lab 2", owner=w.owner), "Lab 2", {}),
    ("token.created", _new_token, "ci (", {"scope": "read", "expires": "never"}),
    ("token.revoked", lambda w: api_token_revoke(token=_new_token(w), actor=w.owner), "ci (", {"owner": "olga"}),
    ("invitation.created", _invite, "new@example.com", {"role": "viewer"}),
    (
        "invitation.accepted",
        lambda w: invitation_accept(invitation=_invite(w), user=UserFactory(username="nia")),
        "nia",
        {"role": "viewer"},
    ),
    (
        "invitation.revoked",
        lambda w: invitation_revoke(team=w.team, actor=w.owner, invitation=_invite(w)),
        "new@example.com",
        {"role": "viewer"},
    ),
    (
        "member.role_changed",
        lambda w: membership_role_change(team=w.team, actor=w.owner, membership=w.member, role=Role.VIEWER),
        "mia",
        {"role": "viewer", "previous": "member"},
    ),
    (
        "member.removed",
        lambda w: membership_remove(team=w.team, actor=w.owner, membership=w.member),
        "mia",
        {"role": "member"},
    ),
    ("member.left", lambda w: membership_leave(team=w.team, user=w.member.user), "mia", {"role": "member"}),
    ("dataset.version_created", _upload, "sums v1", {}),
    (
        "dataset.deleted",
        lambda w: dataset_delete(
            dataset=DatasetVersionFactory(dataset__team=w.team, dataset__name="old").dataset, user=w.owner
        ),
        "old",
        {"versions": 1},
    ),
    ("pipeline.created", _pipeline, "adder", {}),
    (
        "pipeline.updated",
        lambda w: pipeline_update(
            pipeline=(p := _pipeline(w)), user=w.owner, name="adder", base_model_id=p.base_model_id, spec=_spec(w.team)
        ),
        "adder",
        {},
    ),
    ("run.started", lambda w: run_create(pipeline=_pipeline(w), user=w.owner), "run #1", {"pipeline": "adder"}),
    (
        "run.canceled",
        lambda w: run_cancel(run=run_create(pipeline=_pipeline(w), user=w.owner), user=w.owner),
        "run #1",
        {},
    ),
    ("run.rerun", _rerun, "run #2", {"rerun_of": "#1"}),
    ("registry.promoted", lambda w: _promote(w, alias="staging"), "adder v1", {"alias": "staging"}),
    ("registry.alias_set", lambda w: _alias_moves(w, "set"), "adder@production", {"version": 2, "previous": 1}),
    (
        "registry.alias_rolled_back",
        lambda w: _alias_moves(w, "rolled_back"),
        "adder@production",
        {"version": 1, "previous": 2},
    ),
    ("registry.alias_removed", lambda w: _alias_moves(w, "removed"), "adder@production", {"previous": 2}),
]


@pytest.mark.parametrize(("action", "how", "target", "detail"), CASES, ids=[c[0] for c in CASES])
def test_each_action_is_audited_in_its_team(world, fake_mlflow_registry, action, how, target, detail):
    AuditEvent.objects.all().delete()  # the fixture's own sign-ups and team creations
    how(world)
    events = AuditEvent.objects.filter(action=action)
    assert events.count() == 1, list(AuditEvent.objects.values_list("action", "target"))
    event = events.get()
    expected_team = world.team if action != "team.created" else Team.objects.get(name="Lab 2")
    assert event.team == expected_team
    assert event.target.startswith(target)
    assert detail.items() <= event.detail.items()
    assert not AuditEvent.objects.filter(team=world.other_team).exists()
    assert action in ACTION_LABELS and action_label(action) != action


def test_sign_ins_are_recorded_with_the_address_in_each_of_the_users_teams(world):
    membership_add(team=world.other_team, user=world.owner, role=Role.VIEWER)
    Client(REMOTE_ADDR="198.51.100.4").post("/login/", {"username": "olga", "password": "pw-olga-12345"})
    rows = AuditEvent.objects.filter(action="auth.login")
    assert {e.team for e in rows} == {world.team, world.other_team}
    assert {e.detail["ip"] for e in rows} == {"198.51.100.4"} and {e.user for e in rows} == {world.owner}


def test_a_failed_sign_in_for_an_unknown_username_is_recorded_nowhere(world):
    before = AuditEvent.objects.count()
    Client().post("/login/", {"username": "nobody-here", "password": "x"})
    assert AuditEvent.objects.count() == before


def test_detail_text_reads_as_text():
    assert detail_text({"role": "viewer", "previous": "member", "alias": ""}) == "role: viewer · previous: member"
    assert detail_text({"rerun_of": "#1", "stages": ["a", "b"]}) == "rerun of: #1 · stages: a, b"
