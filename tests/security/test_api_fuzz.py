"""Schema fuzzing of /api/v1: Schemathesis generates requests from the API's own OpenAPI schema (valid and
invalid bodies, query strings and path parameters) and sends them in-process to the Django WSGI app,
authenticated as the owner of a team that owns a dataset, a base model, a pipeline, runs, a second member
with a token, an invitation and a hub-token secret. No generated
request may answer 5xx.

Each operation is one test item (`test_api_fuzz[POST /api/v1/pipelines]`...), with a bounded, derandomized
number of examples. Every case is sent twice when it has path parameters: once as generated (mostly
unknown ids: the 404 path) and once with the ids of the team's real objects, so that generated bodies
reach the code behind the lookups (spec validation, run creation...).

The database is `transactional_db`: the team's rows are committed and each request commits on its own, as in
production: requests reach the app through its WSGI handler, with Django's own request signals (the test
client would switch off its end-of-request connection handling).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from refinery.api.views import api
from refinery.notifications.kinds import EventKind
from refinery.notifications.services import endpoint_create, notify
from refinery.pipelines.services import pipeline_create
from refinery.runs.services import run_create
from refinery.schedules.services import schedule_create
from refinery.teams.invitations import invitation_create
from refinery.teams.models import Membership
from refinery.teams.services import api_token_create, membership_add
from refinery.teams.team_secrets import team_secret_set
from refinery.wsgi import application
from tests.factories import BaseModelFactory, DatasetVersionFactory, TeamFactory, UserFactory, gate_decision_make

schema = schemathesis.openapi.from_dict(api.get_openapi_schema())
schema.app = application  # calls go in-process through the WSGI handler

# Per operation, the same examples on every run. A deeper hunt with fresh examples:
#   REFINERY_FUZZ_EXAMPLES=500 REFINERY_FUZZ_RANDOM=1 pytest tests/security/test_api_fuzz.py -k test_api_fuzz
MAX_EXAMPLES = int(os.environ.get("REFINERY_FUZZ_EXAMPLES", "25"))
DERANDOMIZE = not os.environ.get("REFINERY_FUZZ_RANDOM")


@dataclass
class FuzzTeam:
    token: str
    path_ids: dict[str, int | str]  # a real object for each path parameter name of the API
    base_model_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _build_team() -> FuzzTeam:
    owner, member = UserFactory(), UserFactory()
    team = TeamFactory(members=[owner])
    membership_add(team=team, user=member, role=Membership.Role.MEMBER)
    version = DatasetVersionFactory(dataset__team=team)
    base_model = BaseModelFactory(team=team)
    spec = {
        "seed": 5,
        "auto_evaluate": False,
        "stages": [
            {
                "name": "sft",
                "method": "sft",
                "dataset_id": version.dataset_id,
                "config": {"max_steps": 2},
                "adapter": {"type": "lora"},
            },
        ],
    }
    pipeline = pipeline_create(team=team, user=owner, name="fuzzed", base_model_id=base_model.pk, spec=spec)
    run = run_create(pipeline=pipeline, user=owner)
    # The owner fuzzes, so that team administration is reached beyond its 403; path ids name objects other
    # than the fuzzing token itself (revoking it would turn the rest of the examples into 401s).
    _, token = api_token_create(user=owner, team=team)
    spare_token, _ = api_token_create(user=member, team=team, name="spare")
    invitation, _ = invitation_create(team=team, actor=owner, role=Membership.Role.VIEWER)
    team_secret_set(team=team, user=owner, name="hf_token", value="hf_FuzzTokenValue0123456")
    endpoint, _ = endpoint_create(team=team, user=owner, url="http://127.0.0.1:9/fuzz-hook")
    delivery = notify(team=team, kind=EventKind.RUN_FAILED, payload={}).deliveries.get()
    schedule = schedule_create(
        team=team,
        user=owner,
        name="fuzzed-nightly",
        pipeline_id=pipeline.pk,
        trigger="interval",
        interval_seconds=86400,
        paused=True,
    )
    gate = gate_decision_make(run)  # awaiting approval, its model gone: approving is refused with a 400
    model = _registered_model(team, owner, run)
    return FuzzTeam(
        token=token,
        path_ids={
            "dataset_id": version.dataset_id,
            "pipeline_id": pipeline.pk,
            "number": run.number,
            "user_id": member.pk,
            "invitation_id": invitation.pk,
            "token_id": spare_token.pk,
            "name": "hf_token",
            "webhook_id": endpoint.pk,
            "delivery_id": delivery.pk,
            "schedule_id": schedule.pk,
            "gate_id": gate.pk,
            "model_name": model.name,
            "alias": "production",
            "version": 1,
        },
        base_model_id=base_model.pk,
    )


def _registered_model(team, owner, run):
    """A registered model with versions 1 and 2 of the run's stage, "production" -> v1 (rows only: MLflow is at a
    dead address in these tests, so an alias change that passes every check is refused with a 400)."""
    from refinery.registry.models import AliasEvent, ModelAlias, ModelVersion, RegisteredModel

    stage = run.stages.get(name="sft")
    model = RegisteredModel.objects.create(
        team=team, name="fuzzed-model", mlflow_name=f"test.team-{team.pk}.fuzzed", created_by=owner
    )
    for number in (1, 2):
        version = ModelVersion.objects.create(
            registered_model=model,
            version=number,
            stage_run=stage,
            run=run,
            mlflow_run_id="0" * 32,
            artifact_path="adapter",
            kind="adapter",
            promoted_by=owner,
            metrics={"headline": []},
            lineage={"stage": "sft"},
        )
        if number == 1:
            ModelAlias.objects.create(registered_model=model, alias="production", version=version)
            AliasEvent.objects.create(
                registered_model=model, alias="production", version=version, action="set", user=owner
            )
    return model


@pytest.fixture
def fuzz_team(transactional_db, sent_stages, sent_notifications, settings, monkeypatch) -> FuzzTeam:
    """The team, committed: each request autocommits, as in production, so one failing request cannot poison
    the next. (A module-scoped team would save the flush per operation, but pytest-django creates the test
    database only for tests that ask for `db`/`transactional_db`.) Run and webhook wake-ups are recorded,
    not sent (no worker may POST a generated webhook URL anywhere). MLflow is at an address where nobody listens
    (registry writes are refused with a 400 at once: no retries), so no generated request reaches a real one."""
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return _build_team()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,
    database=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzz(case, fuzz_team):
    headers = fuzz_team.headers
    case.call_and_validate(headers=headers, checks=[not_a_server_error])
    if case.path_parameters:
        missing = set(case.path_parameters) - set(fuzz_team.path_ids)
        assert not missing, f"fuzz_team has no real object for the path parameters {sorted(missing)}: add one"
        case.path_parameters = {name: fuzz_team.path_ids[name] for name in case.path_parameters}
        case.call_and_validate(headers=headers, checks=[not_a_server_error])


# --- what the fuzzer found, pinned -------------------------------------------------------------------------


def _pipeline_body(team: FuzzTeam, **changes) -> dict:
    body = {
        "name": "renamed",
        "base_model_id": team.base_model_id,
        "spec": {
            "stages": [
                {
                    "name": "sft",
                    "method": "sft",
                    "dataset_id": team.path_ids["dataset_id"],
                    "config": {"max_steps": 2},
                    "adapter": {"type": "none"},
                }
            ]
        },
    }
    body.update(changes)
    return body


NUL_BODIES = {
    "pipeline name": lambda t: (
        "put",
        f"/api/v1/pipelines/{t.path_ids['pipeline_id']}",
        _pipeline_body(t, name="a\x00b"),
        "name",
    ),
    "stage config value": lambda t: (
        "post",
        "/api/v1/pipelines",
        _pipeline_body(t, spec={"stages": [{"name": "sft", "method": "sft", "config": {"learning_rate": "\x00"}}]}),
        "learning_rate",
    ),
    "stage config key": lambda t: (
        "post",
        "/api/v1/pipelines",
        _pipeline_body(t, spec={"stages": [{"name": "sft", "method": "sft", "config": {"a\x00": 1}}]}),
        "a\\u0000",
    ),
    "base model path": lambda t: (
        "post",
        "/api/v1/base-models",
        {"name": "m", "source": "hub", "name_or_path": "org/m\x00"},
        "name_or_path",
    ),
    "run name": lambda t: ("post", f"/api/v1/pipelines/{t.path_ids['pipeline_id']}/runs", {"name": "\x00"}, "name"),
}


@pytest.mark.parametrize("case", NUL_BODIES)
def test_a_nul_character_in_a_json_body_is_refused_by_name_not_a_500(client, fuzz_team, case):
    """Found by the fuzzer: PUT /api/v1/pipelines/{id} with a NUL in the name answered 500 (PostgreSQL stores
    no NUL in text or jsonb). Any NUL in a body now gets 422 naming the field, and nothing is written."""
    method, url, body, where = NUL_BODIES[case](fuzz_team)
    before = _counts()
    response = getattr(client, method)(
        url, json.dumps(body), content_type="application/json", headers=fuzz_team.headers
    )
    assert response.status_code == 422, response.content[:500]
    messages = " ".join(error["msg"] for error in response.json()["detail"])
    assert f"{where}: text must not contain NUL characters" in messages, messages
    assert _counts() == before


def test_a_nul_character_in_a_query_or_form_string_is_refused_not_a_500(client, fuzz_team):
    """Found by the fuzzer with the JSON bodies; the same NUL in the runs filter or an upload's form fields."""
    response = client.get("/api/v1/runs", {"status": "queued\x00"}, headers=fuzz_team.headers)
    assert response.status_code == 422 and "NUL" in response.content.decode(), response.content[:500]
    before = _counts()
    for field in ("name", "kind", "description"):
        upload = io.BytesIO(b'{"prompt": "1+1=", "completion": "2"}\n')
        upload.name = "rows.jsonl"
        fields = {"name": "d", "kind": "prompt_completion", "description": "", field: "x\x00"}
        response = client.post("/api/v1/datasets", {**fields, "file": upload}, headers=fuzz_team.headers)
        assert response.status_code == 400, response.content[:500]
        assert response.json()["detail"] == f"{field}: text must not contain NUL characters (\\u0000)"
    assert _counts() == before


@pytest.mark.parametrize("seed", [-1, 2**31, 2**63, 10**30])
def test_a_run_seed_out_of_range_is_refused_not_a_500(client, fuzz_team, seed):
    """POST /api/v1/pipelines/{id}/runs with {"seed": 10**30} answered 500 ("bigint out of range"): the seed
    now has the bounds of a pipeline's seed (0 <= seed < 2**31), and no run is created."""
    before = _counts()
    response = client.post(
        f"/api/v1/pipelines/{fuzz_team.path_ids['pipeline_id']}/runs",
        json.dumps({"seed": seed}),
        content_type="application/json",
        headers=fuzz_team.headers,
    )
    assert response.status_code == 422, response.content[:500]
    assert response.json()["detail"][0]["loc"][-1] == "seed"
    assert _counts() == before
    ok = client.post(
        f"/api/v1/pipelines/{fuzz_team.path_ids['pipeline_id']}/runs",
        json.dumps({"seed": 2**31 - 1}),
        content_type="application/json",
        headers=fuzz_team.headers,
    )
    assert ok.status_code == 201 and ok.json()["seed"] == 2**31 - 1, ok.content[:500]


def _counts() -> tuple[int, ...]:
    from refinery.basemodels.models import BaseModel
    from refinery.data.models import DatasetVersion
    from refinery.pipelines.models import Pipeline, PipelineVersion
    from refinery.runs.models import Run

    return tuple(m.objects.count() for m in (BaseModel, DatasetVersion, Pipeline, PipelineVersion, Run))
