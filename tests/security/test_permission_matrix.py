"""The permission matrix: every URL pattern and every /api/v1 operation, tried as five principals.

Team A ("alphasecret") owns one of everything: datasets (two versions), a base model, a pipeline, runs with
stages, a note and tags, a sweep, a registered model with versions and aliases. The principals are

    anonymous   no session, no token
    outsider    owner of team B only (team B owns nothing): team A's objects must answer 404, and its own
                (empty) lists must not show anything of team A
    viewer      a viewer of team A: reads answer, writes are refused (403)
    member      a member of team A: reads and writes
    owner       an owner of team A: reads and writes

Each (route, method, principal) is its own test. WEB_ROUTES and API_ROUTES hold one entry per URL pattern
and per API operation; a route that has no entry fails `test_every_url_pattern_has_an_entry` (or the API
twin) with its name. How to add an entry: see the comment above WEB_ROUTES.

Writes are exercised with the method that matters and a body that passes authorization; the database is
rolled back after every test (each test runs in a savepoint inside the module's transaction), so a write
never disturbs the next case. MLflow points at a dead address: pages that need it must still have checked
the team before calling it (an outsider gets 404, never 503).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from refinery.api.views import api
from refinery.notifications.kinds import EventKind
from refinery.notifications.services import endpoint_create, notify
from refinery.pipelines.services import pipeline_create
from refinery.registry.lineage import stage_lineage
from refinery.registry.models import AliasEvent, ModelAlias, ModelVersion, RegisteredModel
from refinery.runs.models import RunNote, RunTag, Status
from refinery.runs.services import run_create
from refinery.schedules.services import schedule_create
from refinery.sweeps.services import sweep_create
from refinery.teams.invitations import invitation_create
from refinery.teams.models import ApiToken, Membership
from refinery.teams.services import api_token_create, membership_add
from refinery.teams.team_secrets import team_secret_set
from tests.factories import BaseModelFactory, DatasetVersionFactory, TeamFactory, UserFactory, gate_decision_make

PRINCIPALS = ("anonymous", "outsider", "viewer", "member", "owner")
MARKER = "alphasecret"  # in the name of every object of team A: an outsider's 200 must never contain it
LOGIN = "login"  # expected "status" of a page for an anonymous user: 302 to the login page
API_PREFIX = "/api/v1"


# --- the world: team A's objects, built once per module -----------------------------------------------


@dataclass
class World:
    team: Any
    other_team: Any
    users: dict[str, Any]
    tokens: dict[str, str]
    dataset: Any
    version: Any  # version 2 of `dataset` (version 1 is before it)
    base_model: Any
    pipeline: Any
    run: Any  # run #1: succeeded, its stage "sft" has an MLflow run id and a promotable output
    run2: Any  # run #2: queued (cancelable)
    stage: Any
    note: Any
    sweep: Any
    model: Any  # a registered model with versions 1 and 2, "production" -> v1, "staging" -> v2
    member_membership: Any  # the member's Membership row in team A
    member_token: Any  # the member's ApiToken in team A (the one `tokens["member"]` holds)
    invitation: Any  # a pending invitation to team A
    invitation_key: str  # its plain key (the link's last part)
    endpoint: Any = None  # a webhook endpoint of team A (owners manage it)
    delivery: Any = None  # a delivery of a run.failed event to `endpoint`
    schedule: Any = None  # an interval schedule of `pipeline` (paused)
    gate: Any = None  # a gate decision on run #1 awaiting approval: `model` v2 over v1


def _build_world() -> World:
    owner, member, viewer, outsider = (
        UserFactory(username=f"pm-{p}") for p in ("owner", "member", "viewer", "outsider")
    )
    team = TeamFactory(name=f"{MARKER}-team", slug=f"{MARKER}-team", members=[owner])
    membership_add(team=team, user=member, role=Membership.Role.MEMBER)
    membership_add(team=team, user=viewer, role=Membership.Role.VIEWER)
    other_team = TeamFactory(name="beta-team", slug="beta-team", members=[outsider])
    users = {"outsider": outsider, "viewer": viewer, "member": member, "owner": owner}
    tokens = {name: api_token_create(user=user, team=user.teams.get())[1] for name, user in users.items()}

    first = DatasetVersionFactory(dataset__team=team, dataset__name=f"{MARKER}-sums")
    version = DatasetVersionFactory(dataset=first.dataset, version=2)
    base_model = BaseModelFactory(team=team, name=f"{MARKER}-base")
    spec = {
        "seed": 5,
        "auto_evaluate": False,
        "stages": [
            {
                "name": "sft",
                "method": "sft",
                "dataset_id": first.dataset_id,
                "config": {"max_steps": 4},
                "adapter": {"type": "lora"},
            },
        ],
    }
    pipeline = pipeline_create(team=team, user=owner, name=f"{MARKER}-pipe", base_model_id=base_model.pk, spec=spec)
    run = run_create(pipeline=pipeline, user=owner)
    run.status = Status.SUCCEEDED
    run.save(update_fields=["status"])
    stage = run.stages.get(name="sft")
    stage.status, stage.mlflow_run_id = Status.SUCCEEDED, "0123456789abcdef0123456789abcdef"
    stage.outputs = {"kind": "adapter", "artifact_path": "adapter", "mlflow_run_id": stage.mlflow_run_id}
    stage.summary = {"train/loss": 0.5}
    stage.save()
    run2 = run_create(pipeline=pipeline, user=owner)
    note = RunNote.objects.create(run=run, author=owner, body=f"{MARKER} note")
    RunTag.objects.create(team=team, run=run, name="keep", created_by=owner)
    sweep = sweep_create(
        pipeline=pipeline,
        user=owner,
        name=f"{MARKER}-sweep",
        mode="grid",
        parameters=[{"path": "sft.config.learning_rate", "values": ["1e-4", "3e-4"]}],
        metric="sft/train/loss",
        goal="min",
    )
    model = RegisteredModel.objects.create(
        team=team, name=f"{MARKER}-model", mlflow_name=f"test.{MARKER}-model", created_by=owner
    )
    for number, alias in ((1, "production"), (2, "staging")):
        mv = ModelVersion.objects.create(
            registered_model=model,
            version=number,
            stage_run=stage,
            run=run,
            mlflow_run_id=stage.mlflow_run_id,
            artifact_path="adapter",
            kind="adapter",
            promoted_by=owner,
            lineage=stage_lineage(stage, run, [stage]),
            metrics={"stage": {"train/loss": 0.5}, "evaluations": [], "pending": [], "headline": []},
        )
        ModelAlias.objects.create(registered_model=model, alias=alias, version=mv)
        AliasEvent.objects.create(registered_model=model, alias=alias, version=mv, action="set", user=owner)
    invitation, invitation_key = invitation_create(
        team=team, actor=owner, role=Membership.Role.MEMBER, email=f"{MARKER}@example.com"
    )
    team_secret_set(team=team, user=owner, name="hf_token", value="hf_" + MARKER + "TokenValue0123")
    endpoint, _ = endpoint_create(team=team, user=owner, url=f"http://127.0.0.1:9/{MARKER}-hook")
    event = notify(team=team, kind=EventKind.RUN_FAILED, payload={"summary": f"{MARKER} run failed"})
    schedule = schedule_create(
        team=team,
        user=owner,
        name=f"{MARKER}-nightly",
        pipeline_id=pipeline.pk,
        trigger="interval",
        interval_seconds=86400,
        paused=True,
    )
    versions = {v.version: v for v in model.versions.all()}
    gate = gate_decision_make(run, model=model, champion=versions[1], candidate=versions[2])
    return World(
        endpoint=endpoint,
        delivery=event.deliveries.get(),
        gate=gate,
        team=team,
        other_team=other_team,
        users=users,
        tokens=tokens,
        dataset=first.dataset,
        version=version,
        base_model=base_model,
        pipeline=pipeline,
        run=run,
        run2=run2,
        stage=stage,
        note=note,
        sweep=sweep,
        model=model,
        member_membership=Membership.objects.get(team=team, user=member),
        member_token=ApiToken.objects.get(team=team, user=member),
        invitation=invitation,
        invitation_key=invitation_key,
        schedule=schedule,
    )


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Team A's objects, in a transaction kept open for the module and rolled back at its end; each test's
    `db` fixture runs inside it (a savepoint) and is rolled back after the test."""
    saved = django_settings.MLFLOW_TRACKING_URI
    # Nobody listens here: a route that talks to MLflow fails fast (and only after checking the team).
    django_settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"
    with django_db_blocker.unblock():
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            yield _build_world()
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)
    django_settings.MLFLOW_TRACKING_URI = saved


@pytest.fixture(autouse=True)
def _no_mlflow_retries(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")


# --- the tables -----------------------------------------------------------------------------------------


def anyone(status: int) -> dict[str, Any]:
    """The same answer for every principal (public pages, redirects, method not allowed)."""
    return dict.fromkeys(PRINCIPALS, status)


def team_read(ok: int = 200) -> dict[str, Any]:
    """A read of the current team (a list, a form without an object): the outsider sees its own team B."""
    return {"anonymous": LOGIN, "outsider": ok, "viewer": ok, "member": ok, "owner": ok}


def object_read(ok: int = 200) -> dict[str, Any]:
    """A read of one of team A's objects."""
    return {"anonymous": LOGIN, "outsider": 404, "viewer": ok, "member": ok, "owner": ok}


def team_write(ok: int = 302) -> dict[str, Any]:
    """A write (or a write form) in the current team: the outsider writes in its own team B."""
    return {"anonymous": LOGIN, "outsider": ok, "viewer": 403, "member": ok, "owner": ok}


def object_write(ok: int = 302) -> dict[str, Any]:
    """A write to one of team A's objects."""
    return {"anonymous": LOGIN, "outsider": 404, "viewer": 403, "member": ok, "owner": ok}


def owner_only(ok: int = 200, *, outsider: int = 404) -> dict[str, Any]:
    """An owner's page or action (team administration): members and viewers are refused (403)."""
    return {"anonymous": LOGIN, "outsider": outsider, "viewer": 403, "member": 403, "owner": ok}


def api_read(ok: int = 200, *, obj: bool = True) -> dict[str, Any]:
    return {"anonymous": 401, "outsider": 404 if obj else ok, "viewer": ok, "member": ok, "owner": ok}


def api_write(ok: int, *, obj: bool = True) -> dict[str, Any]:
    return {"anonymous": 401, "outsider": 404 if obj else ok, "viewer": 403, "member": ok, "owner": ok}


@dataclass(frozen=True)
class Case:
    """One method of one route: the expected status per principal, the query string and the body to send."""

    expect: dict[str, Any]
    query: Callable[[World], dict] = lambda w: {}
    data: Callable[[World], Any] = lambda w: {}
    names_team: bool = False  # the outsider's answer may name team A (only where a secret link was given)


@dataclass(frozen=True)
class Route:
    """How to reach a route (its URL kwargs from the world) and what each method must answer."""

    kwargs: Callable[[World], dict] = lambda w: {}
    methods: dict[str, Case] = field(default_factory=dict)


def run_kw(w: World) -> dict:
    return {"number": w.run.number}


def pk(attr: str) -> Callable[[World], dict]:
    """kwargs {"pk": <the world's object>.pk}, e.g. pk("pipeline")."""
    return lambda w: {"pk": getattr(w, attr).pk}


def stage_q(w: World) -> dict:
    return {"stage": w.stage.name}


def promote_q(w: World) -> dict:
    return {"run": w.run.number, "stage": w.stage.name}


def compare_q(w: World) -> dict:
    return {"run": [w.run.number, w.run2.number]}


GET_ONLY_POST = Case(anyone(405))  # a POST-only view answers GET with 405, before anything else

# One entry per URL pattern, keyed by its name ("namespace:name"), or by its route when it has none.
# To add a route: add `"ns:name": Route(kwargs=<World -> URL kwargs>, methods={"GET": Case(...), ...})`.
# Build kwargs with run_kw / pk("<World attribute>") (add the object to World and _build_world if it is
# new); pick the expectation with team_read / object_read / team_write / object_write / owner_only /
# anyone, or spell out {principal: status}; give `query` for GET parameters and `data` for the POST body.
# Try every method the view accepts (a POST-only view: "GET": GET_ONLY_POST too). For example:
#     "teams:member-remove": Route(lambda w: {"pk": w.member_membership.pk},
#                                  {"GET": GET_ONLY_POST, "POST": Case(owner_only(302))}),
WEB_ROUTES: dict[str, Route] = {
    "/": Route(methods={"GET": Case(anyone(302))}),
    "login": Route(
        methods={
            "GET": Case({"anonymous": 200, "outsider": 302, "viewer": 302, "member": 302, "owner": 302}),
            "POST": Case({"anonymous": 200, "outsider": 302, "viewer": 302, "member": 302, "owner": 302}),
        }
    ),
    "logout": Route(methods={"GET": Case(anyone(405)), "POST": Case(anyone(302))}),
    # Liveness and readiness (refinery.core.health): public, GET/HEAD only. MLflow is down here: not ready.
    "healthz": Route(methods={"GET": Case(anyone(200)), "POST": Case(anyone(405))}),
    "readyz": Route(methods={"GET": Case(anyone(503)), "POST": Case(anyone(405))}),
    "team-switch": Route(
        methods={
            "GET": GET_ONLY_POST,
            "POST": Case(
                {"anonymous": LOGIN, "outsider": 404, "viewer": 302, "member": 302, "owner": 302},
                data=lambda w: {"team": w.team.pk},
            ),
        }
    ),
    # runs
    "runs:list": Route(methods={"GET": Case(team_read())}),
    "runs:forgetting": Route(methods={"GET": Case(team_read())}),
    "runs:detail": Route(run_kw, {"GET": Case(object_read())}),
    "runs:metrics": Route(run_kw, {"GET": Case(object_read())}),
    "runs:cancel": Route(lambda w: {"number": w.run2.number}, {"GET": GET_ONLY_POST, "POST": Case(object_write())}),
    "runs:rerun": Route(run_kw, {"GET": GET_ONLY_POST, "POST": Case(object_write())}),
    "runs:compare": Route(methods={"GET": Case(object_read(), query=compare_q)}),
    "runs:compare-csv": Route(methods={"GET": Case(object_read(), query=compare_q)}),
    "runs:artifacts": Route(run_kw, {"GET": Case(object_read(), query=stage_q)}),
    # MLflow is down: members get 503, and only after the team check (the outsider gets 404).
    "runs:artifact-download": Route(
        run_kw, {"GET": Case(object_read(503), query=lambda w: {"stage": w.stage.name, "path": "adapter/config.json"})}
    ),
    "runs:annotations": Route(run_kw, {"GET": Case(object_read())}),
    "runs:note-add": Route(run_kw, {"GET": GET_ONLY_POST, "POST": Case(object_write(), data=lambda w: {"body": "hi"})}),
    "runs:note-delete": Route(
        lambda w: {"number": w.run.number, "pk": w.note.pk}, {"GET": GET_ONLY_POST, "POST": Case(object_write())}
    ),
    "runs:tag-add": Route(run_kw, {"GET": GET_ONLY_POST, "POST": Case(object_write(), data=lambda w: {"name": "new"})}),
    "runs:tag-remove": Route(
        run_kw, {"GET": GET_ONLY_POST, "POST": Case(object_write(), data=lambda w: {"name": "keep"})}
    ),
    # pipelines
    "pipelines:list": Route(methods={"GET": Case(team_read())}),
    "pipelines:create": Route(methods={"GET": Case(team_write(200)), "POST": Case(team_write(400))}),
    "pipelines:stage-form": Route(methods={"GET": Case(team_read(), query=lambda w: {"method": "sft"})}),
    "pipelines:detail": Route(pk("pipeline"), {"GET": Case(object_read())}),
    "pipelines:edit": Route(pk("pipeline"), {"GET": Case(object_write(200)), "POST": Case(object_write(400))}),
    "pipelines:run": Route(pk("pipeline"), {"GET": GET_ONLY_POST, "POST": Case(object_write())}),
    # sweeps
    "sweeps:list": Route(methods={"GET": Case(team_read())}),
    "sweeps:create": Route(
        methods={
            "GET": Case(object_write(200), query=lambda w: {"pipeline": w.pipeline.pk}),
            "POST": Case(object_write(400), data=lambda w: {"pipeline": w.pipeline.pk}),
        }
    ),
    "sweeps:detail": Route(pk("sweep"), {"GET": Case(object_read())}),
    # schedules: the create form names a pipeline of team A (the outsider's 404); an empty form is a 400
    "schedules:list": Route(methods={"GET": Case(team_read())}),
    "schedules:create": Route(
        methods={
            "GET": Case(object_write(200), query=lambda w: {"pipeline": w.pipeline.pk}),
            "POST": Case(object_write(400), data=lambda w: {"pipeline": w.pipeline.pk}),
        }
    ),
    "schedules:detail": Route(pk("schedule"), {"GET": Case(object_read())}),
    "schedules:edit": Route(pk("schedule"), {"GET": Case(object_write(200)), "POST": Case(object_write(400))}),
    "schedules:pause": Route(pk("schedule"), {"GET": GET_ONLY_POST, "POST": Case(object_write())}),
    "schedules:resume": Route(pk("schedule"), {"GET": GET_ONLY_POST, "POST": Case(object_write())}),
    "schedules:run-now": Route(pk("schedule"), {"GET": GET_ONLY_POST, "POST": Case(object_write())}),
    "schedules:delete": Route(pk("schedule"), {"GET": GET_ONLY_POST, "POST": Case(object_write())}),
    # registry
    "registry:list": Route(methods={"GET": Case(team_read())}),
    # gates: an owner approves or rejects (members 403); MLflow is down here, so approving ends in an error
    # message on the run page (302) after every check passed
    "runs:gate-approve": Route(
        lambda w: {"number": w.run.number, "stage": w.gate.stage_run.name},
        {"GET": GET_ONLY_POST, "POST": Case(owner_only(302))},
    ),
    "runs:gate-reject": Route(
        lambda w: {"number": w.run.number, "stage": w.gate.stage_run.name},
        {"GET": GET_ONLY_POST, "POST": Case(owner_only(302))},
    ),
    "registry:promote": Route(
        methods={
            "GET": Case(object_write(200), query=promote_q),
            "POST": Case(object_write(400), data=lambda w: {**promote_q(w), "model": "__new__", "new_name": ""}),
        }
    ),
    "registry:detail": Route(lambda w: {"name": w.model.name}, {"GET": Case(object_read())}),
    # MLflow is down: the alias services refuse with a message and the page redirects back.
    "registry:alias-set": Route(
        lambda w: {"name": w.model.name},
        {"GET": GET_ONLY_POST, "POST": Case(object_write(), data=lambda w: {"alias": "staging", "version": "1"})},
    ),
    "registry:alias-remove": Route(
        lambda w: {"name": w.model.name},
        {"GET": GET_ONLY_POST, "POST": Case(object_write(), data=lambda w: {"alias": "staging"})},
    ),
    "registry:alias-rollback": Route(
        lambda w: {"name": w.model.name},
        {"GET": GET_ONLY_POST, "POST": Case(object_write(), data=lambda w: {"alias": "staging"})},
    ),
    # datasets
    "data:list": Route(methods={"GET": Case(team_read())}),
    "data:upload": Route(methods={"GET": Case(team_write(200)), "POST": Case(team_write(400))}),
    "data:detail": Route(pk("dataset"), {"GET": Case(object_read())}),
    "data:version-diff": Route(
        lambda w: {"pk": w.dataset.pk, "version": w.version.version}, {"GET": Case(object_read())}
    ),
    # base models
    "basemodels:list": Route(methods={"GET": Case(team_read())}),
    "basemodels:create": Route(
        methods={"GET": Case(team_write(200)), "POST": Case(team_write(400), data=lambda w: {"source": "nowhere"})}
    ),
    "basemodels:detail": Route(pk("base_model"), {"GET": Case(object_read())}),
    "basemodels:upload": Route(methods={"GET": Case(team_write(200)), "POST": Case(team_write(400))}),
    # datasets: team A's dataset is read by its pipeline, so a member's delete is refused back to the page
    "data:delete": Route(pk("dataset"), {"GET": GET_ONLY_POST, "POST": Case(object_write())}),
    # team administration: any signed-in user manages their own teams and tokens; owners manage members
    "teams:list": Route(methods={"GET": Case(team_read())}),
    "teams:create": Route(
        methods={"GET": GET_ONLY_POST, "POST": Case(team_read(302), data=lambda w: {"name": "a new team"})}
    ),
    "teams:tokens": Route(methods={"GET": Case(team_read())}),
    "teams:token-create": Route(
        methods={
            "GET": GET_ONLY_POST,
            "POST": Case(team_read(200), data=lambda w: {"name": "ci", "scope": "read", "expires_days": "30"}),
        }
    ),
    # The member's own token: the member and the team's owner may revoke it, nobody else can name it.
    "teams:token-revoke": Route(
        lambda w: {"token_id": w.member_token.pk},
        {
            "GET": GET_ONLY_POST,
            "POST": Case({"anonymous": LOGIN, "outsider": 404, "viewer": 404, "member": 302, "owner": 302}),
        },
    ),
    # An invitation link answers whoever holds it (signing in or up is part of accepting it), and names the
    # team it invites to: the key is the credential.
    "teams:invitation": Route(lambda w: {"key": w.invitation_key}, {"GET": Case(anyone(200), names_team=True)}),
    "teams:members": Route(lambda w: {"team_id": w.team.pk}, {"GET": Case(object_read())}),
    "teams:member-role": Route(
        lambda w: {"team_id": w.team.pk, "membership_id": w.member_membership.pk},
        {"GET": GET_ONLY_POST, "POST": Case(owner_only(302), data=lambda w: {"role": "viewer"})},
    ),
    "teams:member-remove": Route(
        lambda w: {"team_id": w.team.pk, "membership_id": w.member_membership.pk},
        {"GET": GET_ONLY_POST, "POST": Case(owner_only(302))},
    ),
    # Anyone in the team may leave it, except its last owner (refused back to the members page).
    "teams:leave": Route(
        lambda w: {"team_id": w.team.pk}, {"GET": GET_ONLY_POST, "POST": Case(object_write(302) | {"viewer": 302})}
    ),
    "teams:invitation-create": Route(
        lambda w: {"team_id": w.team.pk},
        {
            "GET": GET_ONLY_POST,
            "POST": Case(owner_only(200), data=lambda w: {"role": "member", "email": "new@example.com"}),
        },
    ),
    "teams:invitation-revoke": Route(
        lambda w: {"team_id": w.team.pk, "invitation_id": w.invitation.pk},
        {"GET": GET_ONLY_POST, "POST": Case(owner_only(302))},
    ),
    # The audit log is the owners' alone: to anyone else it does not exist.
    "teams:audit": Route(
        lambda w: {"team_id": w.team.pk},
        {"GET": Case({"anonymous": LOGIN, "outsider": 404, "viewer": 404, "member": 404, "owner": 200})},
    ),
    # The current team's secrets: owners only (the outsider owns team B and sees B's, which hold nothing).
    "team-secrets": Route(
        methods={"GET": Case({"anonymous": LOGIN, "outsider": 200, "viewer": 404, "member": 404, "owner": 200})}
    ),
    "team-secret-delete": Route(
        lambda w: {"name": "hf_token"},
        {
            "GET": GET_ONLY_POST,
            "POST": Case({"anonymous": LOGIN, "outsider": 302, "viewer": 404, "member": 404, "owner": 302}),
        },
    ),
    "team-quota": Route(methods={"GET": Case(team_read())}),
    # The current team's webhooks: owners only, a 404 to anyone else (the outsider owns team B: its own list).
    "notifications:list": Route(
        methods={
            "GET": Case({"anonymous": LOGIN, "outsider": 200, "viewer": 404, "member": 404, "owner": 200}),
            "POST": Case(
                {"anonymous": LOGIN, "outsider": 200, "viewer": 404, "member": 404, "owner": 200},
                data=lambda w: {"type": "webhook", "url": "http://127.0.0.1:9/new", "kinds": ["run.failed"]},
            ),
        }
    ),
    "notifications:detail": Route(
        pk("endpoint"), {"GET": Case({"anonymous": LOGIN, "outsider": 404, "viewer": 404, "member": 404, "owner": 200})}
    ),
    "notifications:test": Route(
        pk("endpoint"),
        {
            "GET": GET_ONLY_POST,
            "POST": Case({"anonymous": LOGIN, "outsider": 404, "viewer": 404, "member": 404, "owner": 302}),
        },
    ),
    "notifications:active": Route(
        pk("endpoint"),
        {
            "GET": GET_ONLY_POST,
            "POST": Case(
                {"anonymous": LOGIN, "outsider": 404, "viewer": 404, "member": 404, "owner": 302},
                data=lambda w: {"active": "0"},
            ),
        },
    ),
    "notifications:delete": Route(
        pk("endpoint"),
        {
            "GET": GET_ONLY_POST,
            "POST": Case({"anonymous": LOGIN, "outsider": 404, "viewer": 404, "member": 404, "owner": 302}),
        },
    ),
    "notifications:redeliver": Route(
        lambda w: {"pk": w.endpoint.pk, "delivery_id": w.delivery.pk},
        {
            "GET": GET_ONLY_POST,
            "POST": Case({"anonymous": LOGIN, "outsider": 404, "viewer": 404, "member": 404, "owner": 302}),
        },
    ),
    # The API's own pages (its operations are in API_ROUTES): the schema and docs are public, the root is 404.
    "api:openapi-json": Route(methods={"GET": Case(anyone(200))}),
    "api:openapi-view": Route(methods={"GET": Case(anyone(200))}),
    "api:api-root": Route(methods={"GET": Case(anyone(404))}),
}


def upload_body(w: World) -> dict:
    rows = "".join(json.dumps({"prompt": f"{i}+1=", "completion": str(i + 1)}) + "\n" for i in range(5))
    return {"name": "uploaded", "kind": "prompt_completion", "file": _named_file(rows.encode(), "rows.jsonl")}


def _named_file(content: bytes, name: str):
    f = io.BytesIO(content)
    f.name = name
    return f


def pipeline_body(w: World) -> dict:
    return {
        "name": "another-pipe",
        "base_model_id": w.base_model.pk,
        "spec": {
            "stages": [
                {
                    "name": "a",
                    "method": "sft",
                    "dataset_id": w.dataset.pk,
                    "config": {"max_steps": 2},
                    "adapter": {"type": "none"},
                }
            ]
        },
    }


def pipeline_id(w: World) -> dict:
    return {"pipeline_id": w.pipeline.pk}


def webhook_id(w: World) -> dict:
    return {"webhook_id": w.endpoint.pk}


def gate_id(w: World) -> dict:
    return {"gate_id": w.gate.pk}


def schedule_id(w: World) -> dict:
    return {"schedule_id": w.schedule.pk}


def model_kw(w: World) -> dict:
    return {"model_name": w.model.name}


def schedule_body(w: World) -> dict:
    return {
        "name": "another-schedule",
        "pipeline_id": w.pipeline.pk,
        "trigger": "cron",
        "cron": "0 2 * * *",
        "timezone": "Europe/Paris",
    }


# One entry per API operation, keyed "METHOD /api/v1/path{param}" as in the OpenAPI schema, with exactly that
# method. `kwargs` fill the path parameters; `data` is the JSON body (or a dict with a file, sent as multipart):
# send a body that passes validation, so that the answer is about authorization. For example:
#     "DELETE /api/v1/team/tokens/{token_id}": Route(lambda w: {"token_id": w.member_token.pk},
#                                                    {"DELETE": Case(api_write(204))}),
# (a new path parameter of an object also needs an entry in tests/security/test_api_fuzz.py's path_ids).
API_ROUTES: dict[str, Route] = {
    "GET /api/v1/methods": Route(methods={"GET": Case(api_read(obj=False))}),
    "GET /api/v1/datasets": Route(methods={"GET": Case(api_read(obj=False))}),
    "POST /api/v1/datasets": Route(methods={"POST": Case(api_write(201, obj=False), data=upload_body)}),
    "GET /api/v1/datasets/{dataset_id}": Route(lambda w: {"dataset_id": w.dataset.pk}, {"GET": Case(api_read())}),
    "GET /api/v1/base-models": Route(methods={"GET": Case(api_read(obj=False))}),
    "POST /api/v1/base-models": Route(
        methods={
            "POST": Case(
                api_write(201, obj=False),
                data=lambda w: {"name": "from-the-hub", "source": "hub", "name_or_path": "org/model"},
            )
        }
    ),
    "GET /api/v1/pipelines": Route(methods={"GET": Case(api_read(obj=False))}),
    # The outsider names team A's base model and dataset: refused as unknown in its own team (400).
    "POST /api/v1/pipelines": Route(
        methods={
            "POST": Case(
                {"anonymous": 401, "outsider": 400, "viewer": 403, "member": 201, "owner": 201}, data=pipeline_body
            )
        }
    ),
    "GET /api/v1/pipelines/{pipeline_id}": Route(pipeline_id, {"GET": Case(api_read())}),
    "PUT /api/v1/pipelines/{pipeline_id}": Route(pipeline_id, {"PUT": Case(api_write(200), data=pipeline_body)}),
    "GET /api/v1/pipelines/{pipeline_id}/versions": Route(pipeline_id, {"GET": Case(api_read())}),
    "POST /api/v1/pipelines/{pipeline_id}/runs": Route(pipeline_id, {"POST": Case(api_write(201))}),
    "GET /api/v1/runs": Route(methods={"GET": Case(api_read(obj=False))}),
    "GET /api/v1/runs/{number}": Route(run_kw, {"GET": Case(api_read())}),
    "POST /api/v1/runs/{number}/cancel": Route(lambda w: {"number": w.run2.number}, {"POST": Case(api_write(200))}),
    "POST /api/v1/runs/{number}/rerun": Route(run_kw, {"POST": Case(api_write(201))}),
    # team A's dataset is read by its pipeline: a member's delete is refused with 409
    "DELETE /api/v1/datasets/{dataset_id}": Route(
        lambda w: {"dataset_id": w.dataset.pk}, {"DELETE": Case(api_write(409))}
    ),
    "POST /api/v1/base-models/upload": Route(
        methods={
            "POST": Case(
                {"anonymous": 401, "outsider": 400, "viewer": 403, "member": 400, "owner": 400},
                data=lambda w: {"name": "uploaded-model", "file": _named_file(b"not a zip", "model.zip")},
            )
        }
    ),
    # schedules: the outsider names team A's pipeline in a new schedule: unknown in its own team (400)
    "GET /api/v1/schedules": Route(methods={"GET": Case(api_read(obj=False))}),
    # gates: reads for the team; approve/reject for owners (MLflow is down: approving is a 400 naming it)
    "GET /api/v1/gates": Route(methods={"GET": Case(api_read(obj=False))}),
    "GET /api/v1/gates/{gate_id}": Route(gate_id, {"GET": Case(api_read())}),
    "POST /api/v1/gates/{gate_id}/approve": Route(
        gate_id, {"POST": Case({"anonymous": 401, "outsider": 404, "viewer": 403, "member": 403, "owner": 400})}
    ),
    "POST /api/v1/gates/{gate_id}/reject": Route(
        gate_id, {"POST": Case({"anonymous": 401, "outsider": 404, "viewer": 403, "member": 403, "owner": 200})}
    ),
    "POST /api/v1/schedules": Route(
        methods={
            "POST": Case(
                {"anonymous": 401, "outsider": 400, "viewer": 403, "member": 201, "owner": 201}, data=schedule_body
            )
        }
    ),
    "GET /api/v1/schedules/{schedule_id}": Route(schedule_id, {"GET": Case(api_read())}),
    "PUT /api/v1/schedules/{schedule_id}": Route(schedule_id, {"PUT": Case(api_write(200), data=schedule_body)}),
    "POST /api/v1/schedules/{schedule_id}/pause": Route(schedule_id, {"POST": Case(api_write(200))}),
    "POST /api/v1/schedules/{schedule_id}/resume": Route(schedule_id, {"POST": Case(api_write(200))}),
    "POST /api/v1/schedules/{schedule_id}/run-now": Route(schedule_id, {"POST": Case(api_write(201))}),
    "GET /api/v1/schedules/{schedule_id}/ticks": Route(schedule_id, {"GET": Case(api_read())}),
    "DELETE /api/v1/schedules/{schedule_id}": Route(schedule_id, {"DELETE": Case(api_write(204))}),
    # registry: MLflow is down, so a member's or owner's change that passes every check is refused by the
    # service with MLflow's reason (400); production has nothing to roll back to (400 before MLflow). The
    # outsider names team A's run in a promotion: no such run in its own team (400).
    "GET /api/v1/registered-models": Route(methods={"GET": Case(api_read(obj=False))}),
    "POST /api/v1/registered-models/promote": Route(
        methods={
            "POST": Case(
                api_write(400, obj=False),
                data=lambda w: {
                    "run": w.run.number,
                    "stage": w.stage.name,
                    "model": "promoted-again",
                    "alias": "canary",
                },
            )
        }
    ),
    "GET /api/v1/registered-models/{model_name}": Route(model_kw, {"GET": Case(api_read())}),
    "GET /api/v1/registered-models/{model_name}/versions": Route(model_kw, {"GET": Case(api_read())}),
    "GET /api/v1/registered-models/{model_name}/versions/{version}": Route(
        lambda w: {**model_kw(w), "version": 1}, {"GET": Case(api_read())}
    ),
    "GET /api/v1/registered-models/{model_name}/aliases": Route(model_kw, {"GET": Case(api_read())}),
    "PUT /api/v1/registered-models/{model_name}/aliases/{alias}": Route(
        lambda w: {**model_kw(w), "alias": "staging"}, {"PUT": Case(api_write(400), data=lambda w: {"version": 1})}
    ),
    "DELETE /api/v1/registered-models/{model_name}/aliases/{alias}": Route(
        lambda w: {**model_kw(w), "alias": "staging"}, {"DELETE": Case(api_write(400))}
    ),
    "POST /api/v1/registered-models/{model_name}/aliases/{alias}/rollback": Route(
        lambda w: {**model_kw(w), "alias": "production"}, {"POST": Case(api_write(400))}
    ),
    # team administration (/api/v1/team is the token's team: the outsider's is team B)
    "GET /api/v1/team/members": Route(methods={"GET": Case(api_read(obj=False))}),
    "PATCH /api/v1/team/members/{user_id}": Route(
        lambda w: {"user_id": w.users["member"].pk},
        {
            "PATCH": Case(
                {"anonymous": 401, "outsider": 404, "viewer": 403, "member": 403, "owner": 200},
                data=lambda w: {"role": "viewer"},
            )
        },
    ),
    "DELETE /api/v1/team/members/{user_id}": Route(
        lambda w: {"user_id": w.users["member"].pk},
        {"DELETE": Case({"anonymous": 401, "outsider": 404, "viewer": 403, "member": 403, "owner": 204})},
    ),
    # Each leaves its own team; the last owner of a team may not (the owner of A, and the outsider of B).
    "POST /api/v1/team/leave": Route(
        methods={"POST": Case({"anonymous": 401, "outsider": 400, "viewer": 204, "member": 204, "owner": 400})}
    ),
    "GET /api/v1/team/invitations": Route(
        methods={"GET": Case({"anonymous": 401, "outsider": 200, "viewer": 403, "member": 403, "owner": 200})}
    ),
    "POST /api/v1/team/invitations": Route(
        methods={
            "POST": Case(
                {"anonymous": 401, "outsider": 201, "viewer": 403, "member": 403, "owner": 201},
                data=lambda w: {"role": "member", "email": "new@example.com"},
            )
        }
    ),
    "DELETE /api/v1/team/invitations/{invitation_id}": Route(
        lambda w: {"invitation_id": w.invitation.pk},
        {"DELETE": Case({"anonymous": 401, "outsider": 404, "viewer": 403, "member": 403, "owner": 200})},
    ),
    "GET /api/v1/team/tokens": Route(methods={"GET": Case(api_read(obj=False))}),
    "POST /api/v1/team/tokens": Route(
        methods={
            "POST": Case(
                {"anonymous": 401, "outsider": 201, "viewer": 201, "member": 201, "owner": 201},
                data=lambda w: {"name": "ci", "scope": "read"},
            )
        }
    ),
    "DELETE /api/v1/team/tokens/{token_id}": Route(
        lambda w: {"token_id": w.member_token.pk},
        {"DELETE": Case({"anonymous": 401, "outsider": 404, "viewer": 404, "member": 200, "owner": 200})},
    ),
    "GET /api/v1/team/audit": Route(
        methods={"GET": Case({"anonymous": 401, "outsider": 200, "viewer": 403, "member": 403, "owner": 200})}
    ),
    "GET /api/v1/team/secrets": Route(
        methods={"GET": Case({"anonymous": 401, "outsider": 200, "viewer": 403, "member": 403, "owner": 200})}
    ),
    "PUT /api/v1/team/secrets/{name}": Route(
        lambda w: {"name": "hf_token"},
        {
            "PUT": Case(
                {"anonymous": 401, "outsider": 200, "viewer": 403, "member": 403, "owner": 200},
                data=lambda w: {"value": "hf_AnotherTokenValue0123"},
            )
        },
    ),
    "DELETE /api/v1/team/secrets/{name}": Route(
        lambda w: {"name": "hf_token"},
        {"DELETE": Case({"anonymous": 401, "outsider": 404, "viewer": 403, "member": 403, "owner": 204})},
    ),
    # webhooks: the token's team's, owners only (403 for members and viewers, 404 for team A's to the outsider)
    "GET /api/v1/webhooks": Route(
        methods={"GET": Case({"anonymous": 401, "outsider": 200, "viewer": 403, "member": 403, "owner": 200})}
    ),
    "POST /api/v1/webhooks": Route(
        methods={
            "POST": Case(
                {"anonymous": 401, "outsider": 201, "viewer": 403, "member": 403, "owner": 201},
                data=lambda w: {"url": "http://127.0.0.1:9/new", "kinds": ["run.failed"]},
            )
        }
    ),
    "DELETE /api/v1/webhooks/{webhook_id}": Route(
        webhook_id, {"DELETE": Case({"anonymous": 401, "outsider": 404, "viewer": 403, "member": 403, "owner": 204})}
    ),
    "POST /api/v1/webhooks/{webhook_id}/test": Route(
        webhook_id, {"POST": Case({"anonymous": 401, "outsider": 404, "viewer": 403, "member": 403, "owner": 202})}
    ),
    "GET /api/v1/webhooks/{webhook_id}/deliveries": Route(
        webhook_id, {"GET": Case({"anonymous": 401, "outsider": 404, "viewer": 403, "member": 403, "owner": 200})}
    ),
    "POST /api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver": Route(
        lambda w: {"webhook_id": w.endpoint.pk, "delivery_id": w.delivery.pk},
        {"POST": Case({"anonymous": 401, "outsider": 404, "viewer": 403, "member": 403, "owner": 202})},
    ),
}


# --- enumerating what exists ----------------------------------------------------------------------------


def _api_schema_paths() -> set[str]:
    return set(api.get_openapi_schema()["paths"])


def _as_schema_path(route: str) -> str:
    """'api/v1/runs/<int:number>' -> '/api/v1/runs/{number}' (the OpenAPI spelling)."""
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def web_patterns() -> dict[str, str]:
    """{key: route} for every URL pattern of the project, recursively through includes.

    Skipped: Django admin's own patterns (admin/: staff-only, Django's code and tests; the test below checks
    that a team owner who is not staff is sent to the admin login), static files (served by WhiteNoise
    middleware, not URL patterns, so none appear), and /api/v1 operations (API_ROUTES has them per method).
    """
    api_paths = _api_schema_paths()
    found: dict[str, str] = {}

    def walk(patterns, prefix: str, namespace: str | None) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                if p.app_name == "admin":
                    continue
                ns = ":".join(filter(None, [namespace, p.namespace])) or None
                walk(p.url_patterns, prefix + str(p.pattern), ns)
            elif isinstance(p, URLPattern):
                route = prefix + str(p.pattern)
                if _as_schema_path(route) in api_paths:
                    continue
                key = f"{namespace}:{p.name}" if namespace and p.name else (p.name or "/" + route)
                assert key not in found, f"two URL patterns share the key {key!r}: {found[key]!r} and {route!r}"
                found[key] = route

    walk(get_resolver().url_patterns, "", None)
    return found


def api_operations() -> set[str]:
    return {f"{method.upper()} {path}" for path, ops in api.get_openapi_schema()["paths"].items() for method in ops}


def test_every_url_pattern_has_an_entry():
    patterns = web_patterns()
    missing = sorted(f"{key} ({patterns[key]})" for key in set(patterns) - set(WEB_ROUTES))
    stale = sorted(set(WEB_ROUTES) - set(patterns))
    assert not missing, f"URL patterns without an entry in WEB_ROUTES (add one): {missing}"
    assert not stale, f"WEB_ROUTES entries for URL patterns that no longer exist: {stale}"


def test_every_api_operation_has_an_entry():
    operations = api_operations()
    missing, stale = sorted(operations - set(API_ROUTES)), sorted(set(API_ROUTES) - operations)
    assert not missing, f"API operations without an entry in API_ROUTES (add one): {missing}"
    assert not stale, f"API_ROUTES entries for operations that no longer exist: {stale}"
    for key, route in API_ROUTES.items():
        assert list(route.methods) == [key.split()[0]], f"{key}: exactly its own method"


def test_every_api_url_pattern_is_an_operation_in_the_schema():
    """An operation hidden from the schema (include_in_schema=False) would escape API_ROUTES: there is none."""
    api_patterns = {route for key, route in web_patterns().items() if route.startswith("api/")}
    assert api_patterns == {"api/v1/openapi.json", "api/v1/docs", "api/v1/"}


# --- the matrix -----------------------------------------------------------------------------------------


def _cases(table: dict[str, Route]) -> list:
    return [
        pytest.param(key, method, who, id=f"{key} {method} {who}")
        for key, route in table.items()
        for method in route.methods
        for who in PRINCIPALS
    ]


def _web_url(key: str, route: Route, w: World) -> str:
    if key.startswith("/"):
        return key
    return reverse(key, kwargs=route.kwargs(w))


def _client(w: World, who: str) -> Client:
    client = Client()
    if who != "anonymous":
        client.force_login(w.users[who])
    return client


def _check(response, expected, *, who: str, label: str, names_team: bool = False) -> None:
    body = b"" if getattr(response, "streaming", False) else response.content
    detail = f"{label} as {who}: got {response.status_code}, expected {expected}\n{body[:400]!r}"
    if expected == LOGIN:
        assert response.status_code == 302, detail
        assert response["Location"].startswith(reverse(django_settings.LOGIN_URL)), detail
        return
    assert response.status_code == expected, detail
    if response.status_code == 302 and who != "anonymous" and not label.startswith("POST /logout/"):
        assert not response["Location"].startswith(reverse(django_settings.LOGIN_URL)), detail
    if who == "outsider" and not names_team:
        assert MARKER.encode() not in body, f"{label}: the outsider's answer shows team A's objects\n{body[:400]!r}"


@pytest.mark.parametrize(("key", "method", "who"), _cases(WEB_ROUTES))
def test_web_route(world, db, key, method, who):
    route = WEB_ROUTES[key]
    case = route.methods[method]
    url = _web_url(key, route, world)
    client = _client(world, who)
    if method == "GET":
        response = client.get(url, case.query(world))
    else:
        response = client.generic(method, url) if not case.data(world) else client.post(url, case.data(world))
    _check(response, case.expect[who], who=who, label=f"{method} {url}", names_team=case.names_team)


@pytest.mark.parametrize(("key", "method", "who"), _cases(API_ROUTES))
def test_api_route(world, db, key, method, who):
    route = API_ROUTES[key]
    case = route.methods[method]
    url = key.split(" ", 1)[1].format(**route.kwargs(world))
    headers = {} if who == "anonymous" else {"Authorization": f"Bearer {world.tokens[who]}"}
    client = Client()
    data = case.data(world)
    if method == "GET":
        response = client.get(url, case.query(world), headers=headers)
    elif any(hasattr(v, "read") for v in data.values()):
        response = client.post(url, data, headers=headers)  # multipart
    else:
        response = client.generic(method, url, json.dumps(data), content_type="application/json", headers=headers)
    _check(response, case.expect[who], who=who, label=f"{method} {url}", names_team=case.names_team)
    if response["Content-Type"].startswith("application/json") and response.status_code >= 400:
        assert "detail" in response.json(), f"{method} {url} as {who}: errors have the API's shape"


def test_admin_is_for_staff_only(world, db):
    """Django admin is not in the matrix (its own patterns): a team owner who is not staff gets its login."""
    response = _client(world, "owner").get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


# The API validates a body against its schema before the operation runs, so a malformed body gets 422 before
# the object lookup. That must not tell an outsider whether team A's object exists: the answer for team A's
# id and for an id that exists nowhere is the same. An anonymous caller gets 401 before any validation.
MALFORMED = {"name": 5, "seed": "not a number", "latest_data": "maybe", "spec": "nope", "version": []}
UNKNOWN_IDS = {
    "pipeline_id": 987654,
    "number": 987654,
    "dataset_id": 987654,
    "user_id": 987654,
    "invitation_id": 987654,
    "token_id": 987654,
    "name": "hf_token",
    "webhook_id": 987654,
    "delivery_id": 987654,
    "schedule_id": 987654,
    "gate_id": 987654,
    "model_name": "no-such-model",
    "alias": "staging",
    "version": 987654,
}


@pytest.mark.parametrize("key", [key for key in API_ROUTES if "{" in key and not key.startswith("GET ")])
def test_api_validation_does_not_reveal_other_teams_objects(world, db, key):
    route = API_ROUTES[key]
    method, template = key.split(" ", 1)
    client = Client()
    headers = {"Authorization": f"Bearer {world.tokens['outsider']}"}

    def send(url: str, **extra):
        return client.generic(method, url, json.dumps(MALFORMED), content_type="application/json", **extra)

    def answer(response, ids) -> tuple[int, str]:
        body = response.content.decode()
        for value in ids:  # a 404 names the id it was asked for ("pipeline #12 not found in this team")
            body = body.replace(f"#{value}", "#<id>")
        return response.status_code, body

    ours = route.kwargs(world)
    unknown = {name: UNKNOWN_IDS[name] for name in ours}
    theirs = answer(send(template.format(**ours), headers=headers), ours.values())
    nowhere = answer(send(template.format(**unknown), headers=headers), unknown.values())
    assert theirs[0] in (404, 422), f"{key}: {theirs}"
    assert theirs == nowhere, f"{key}: team A's object and no object answer differently: {theirs} vs {nowhere}"
    assert send(template.format(**ours)).status_code == 401, f"{key}: authentication comes first"


LISTS = [
    "runs:list",
    "pipelines:list",
    "sweeps:list",
    "registry:list",
    "data:list",
    "basemodels:list",
    "pipelines:stage-form",
    "GET /api/v1/datasets",
    "GET /api/v1/base-models",
    "GET /api/v1/pipelines",
    "GET /api/v1/runs",
    "schedules:list",
    "GET /api/v1/schedules",
    "GET /api/v1/registered-models",
]


@pytest.mark.parametrize("key", LISTS)
def test_lists_show_team_a_to_its_member_and_nothing_of_it_to_the_outsider(world, db, key):
    """The outsider check of the matrix (no MARKER in its answers) is not vacuous: the same lists show team A's
    objects to a member."""

    def body(who: str) -> bytes:
        if key.startswith("GET "):
            response = Client().get(key[4:], headers={"Authorization": f"Bearer {world.tokens[who]}"})
        else:
            response = _client(world, who).get(reverse(key), WEB_ROUTES[key].methods["GET"].query(world))
        assert response.status_code == 200, (key, who, response.status_code)
        return response.content

    assert MARKER.encode() in body("member")
    assert MARKER.encode() not in body("outsider")
