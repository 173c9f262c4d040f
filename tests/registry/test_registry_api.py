"""/api/v1/registered-models: models, versions and aliases through the REST API.

As in tests/registry/test_registry.py: the main path runs against the real `mlflow_server` (a run whose stages hold
real artifacts in real MLflow runs, and every check of the registry itself asks MLflow directly); reads, team
scoping, permissions and refusals run on rows only, with MLflow at a dead address, so that any route that
reached MLflow where it should not would fail loudly.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from refinery.api.views import api as ninja_api
from refinery.registry.models import AliasEvent, ModelAlias, ModelVersion, RegisteredModel
from refinery.registry.services import model_promote
from refinery.runs.models import StageRun, Status
from refinery.teams.models import ApiToken, AuditEvent
from refinery.teams.services import api_token_create
from refinery.tracking import registry as mlflow_registry
from refinery.tracking.client import tracking_client
from tests.conftest import free_port
from tests.fixtures import ApiClient
from tests.registry.test_registry import _rows, finished_run, mlflow_aliases, stage

integration = pytest.mark.integration
API = "/api/v1/registered-models"


class Api(ApiClient):
    def delete(self, url):
        return self.client.delete(url, headers=self.headers)


def api_for(user, team, **kwargs) -> Api:
    _, key = api_token_create(user=user, team=team, **kwargs)
    return Api(key)


@pytest.fixture
def alice_api(alice, team) -> Api:
    return api_for(alice, team)


@pytest.fixture
def mlflow_down(settings, monkeypatch):
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{free_port()}"  # nobody listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def _state(team) -> tuple:
    """Every registry row of the team, to show that a refused call changed nothing."""
    return (
        list(RegisteredModel.objects.filter(team=team).values_list("name", "description")),
        list(ModelVersion.objects.filter(registered_model__team=team).values_list("pk", "version")),
        list(ModelAlias.objects.filter(registered_model__team=team).values_list("alias", "version_id")),
        AliasEvent.objects.filter(registered_model__team=team).count(),
    )


# --- the main path, against the real MLflow server -----------------------------------------------------


@integration
@pytest.mark.django_db
def test_promote_move_demote_and_roll_back_through_the_api_moves_mlflow(
    alice_api, alice, team, tmp_path, mlflow_server, sent_stages
):
    run = finished_run(team, alice, tmp_path)
    lora = stage(run, "lora")

    response = alice_api.post(
        f"{API}/promote",
        {"run": run.number, "stage": "lora", "model": "adder", "description": "adds small numbers", "alias": "staging"},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["model"], body["version"], body["run"], body["stage"], body["kind"]) == (
        "adder",
        1,
        run.number,
        "lora",
        "adapter",
    )
    assert body["source_uri"] == f"runs:/{lora.outputs['mlflow_run_id']}/adapter"
    assert body["aliases"] == ["staging"] and body["promoted_by"] == "alice"
    assert {h["key"]: h["value"] for h in body["headline"]}["gain"] == pytest.approx(0.5)
    assert body["metrics"]["evaluations"][0]["stage"] == "check"
    assert body["lineage"]["run"]["number"] == run.number and body["lineage"]["seed"] == 11
    assert [s["name"] for s in body["lineage"]["chain"]] == ["sft", "lora"]
    model = RegisteredModel.objects.get(team=team, name="adder")
    assert model.description == "adds small numbers"
    found = tracking_client().get_model_version(model.mlflow_name, "1")
    assert found.source == body["source_uri"] and found.tags["refinery.stage"] == "lora"
    assert mlflow_aliases(model) == {"staging": 1}

    response = alice_api.post(f"{API}/promote", {"run": run.number, "stage": "sft", "model": "adder"})
    assert response.status_code == 201 and response.json()["version"] == 2 and response.json()["aliases"] == []
    assert response.json()["kind"] == "model"

    # production -> v1 (new: nothing to roll back to), then -> v2 (rollback would go to v1)
    response = alice_api.put(f"{API}/adder/aliases/production", {"version": 1})
    assert response.status_code == 200, response.content
    assert response.json() == {
        "event": {
            "alias": "production",
            "action": "set",
            "version": 1,
            "previous": None,
            "user": "alice",
            "at": response.json()["event"]["at"],
        },
        "alias": {"alias": "production", "version": 1, "can_roll_back": False, "rollback_to": None},
    }
    response = alice_api.put(f"{API}/adder/aliases/production", {"version": 2})
    assert response.json()["event"]["previous"] == 1
    assert response.json()["alias"] == {"alias": "production", "version": 2, "can_roll_back": True, "rollback_to": 1}
    assert mlflow_aliases(model) == {"staging": 1, "production": 2}

    response = alice_api.post(f"{API}/adder/aliases/production/rollback")
    assert response.status_code == 200, response.content
    assert (response.json()["event"]["action"], response.json()["event"]["version"]) == ("rolled_back", 1)
    assert mlflow_aliases(model) == {"staging": 1, "production": 1}

    response = alice_api.delete(f"{API}/adder/aliases/staging")
    assert response.status_code == 200, response.content
    assert response.json()["event"] | {"at": None} == {
        "alias": "staging",
        "action": "removed",
        "version": None,
        "previous": 1,
        "user": "alice",
        "at": None,
    }
    assert response.json()["alias"] == {"alias": "staging", "version": None, "can_roll_back": True, "rollback_to": 1}
    assert mlflow_aliases(model) == {"production": 1}

    # The reads: aliases with their history, the model, its versions, the list.
    aliases = alice_api.get(f"{API}/adder/aliases").json()
    assert aliases["aliases"] == [
        {"alias": "staging", "version": None, "can_roll_back": True, "rollback_to": 1},
        {"alias": "production", "version": 1, "can_roll_back": False, "rollback_to": None},  # back where it began
    ]
    assert [(e["alias"], e["action"], e["version"], e["previous"], e["user"]) for e in aliases["history"]] == [
        ("staging", "removed", None, 1, "alice"),
        ("production", "rolled_back", 1, 2, "alice"),
        ("production", "set", 2, 1, "alice"),
        ("production", "set", 1, None, "alice"),
        ("staging", "set", 1, None, "alice"),
    ]
    detail = alice_api.get(f"{API}/adder").json()
    assert (detail["latest_version"], detail["version_count"], detail["aliases"]) == (2, 2, {"production": 1})
    assert [(v["version"], v["stage"], v["aliases"]) for v in detail["versions"]] == [
        (2, "sft", []),
        (1, "lora", ["production"]),
    ]
    versions = alice_api.get(f"{API}/adder/versions").json()
    assert [v["version"] for v in versions] == [2, 1] and versions[1]["source_uri"] == body["source_uri"]
    one = alice_api.get(f"{API}/adder/versions/1").json()
    assert one["aliases"] == ["production"] and one["lineage"] == body["lineage"]
    assert alice_api.get(API).json() == [
        {
            "name": "adder",
            "description": "adds small numbers",
            "created_by": "alice",
            "created_at": detail["created_at"],
            "version_count": 2,
            "latest_version": 2,
            "aliases": {"production": 1},
        }
    ]
    assert list(
        AuditEvent.objects.filter(team=team, action__startswith="registry.")
        .order_by("pk")
        .values_list("action", flat=True)
    ) == [
        "registry.promoted",
        "registry.promoted",
        "registry.alias_set",
        "registry.alias_set",
        "registry.alias_rolled_back",
        "registry.alias_removed",
    ]


@integration
@pytest.mark.django_db
def test_refusals_after_the_checks_are_400_naming_the_field_and_change_nothing(
    alice_api, alice, team, tmp_path, mlflow_server, sent_stages, monkeypatch
):
    run = finished_run(team, alice, tmp_path)
    model_promote(team=team, user=alice, stage_run=stage(run, "lora"), model_name="adder", alias="production")
    before = _state(team)

    # The same stage twice in one model.
    response = alice_api.post(f"{API}/promote", {"run": run.number, "stage": "lora", "model": "adder"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"model": f"run #{run.number} / lora is already version 1 of adder"}
    # Already there; nothing to roll back to.
    response = alice_api.put(f"{API}/adder/aliases/production", {"version": 1})
    assert response.status_code == 400 and response.json()["errors"] == {
        "alias": "production already points at version 1"
    }
    response = alice_api.post(f"{API}/adder/aliases/production/rollback")
    assert response.status_code == 400 and response.json()["errors"] == {
        "alias": "production of adder has no earlier version to roll back to (demote it instead)"
    }

    # MLflow refuses the alias: 400 with MLflow's reason, nothing moved here or there.
    def refused(**kwargs):
        raise mlflow_registry.RegistryBackendError(
            "MLflow refused to set the alias 'staging': permission denied", code="PERMISSION_DENIED"
        )

    monkeypatch.setattr(mlflow_registry, "alias_set", refused)
    response = alice_api.put(f"{API}/adder/aliases/staging", {"version": 1})
    assert response.status_code == 400
    assert response.json()["errors"]["alias"] == "MLflow refused to set the alias 'staging': permission denied"
    assert _state(team) == before
    assert mlflow_aliases(RegisteredModel.objects.get(team=team, name="adder")) == {"production": 1}


# --- reads, on rows (MLflow is never asked) -----------------------------------------------------------


@pytest.mark.django_db
def test_reads_answer_from_rows_without_mlflow(alice_api, alice, team, mlflow_down):
    model, run = _rows(team, alice, versions=3)
    response = alice_api.get(API)
    assert response.status_code == 200
    assert response.json() == [
        {
            "name": model.name,
            "description": "",
            "created_by": "alice",
            "created_at": response.json()[0]["created_at"],
            "version_count": 3,
            "latest_version": 3,
            "aliases": {"production": 1, "staging": 2},
        }
    ]
    detail = alice_api.get(f"{API}/{model.name}").json()
    assert detail["aliases"] == {"production": 1, "staging": 2}
    assert [
        (v["version"], v["run"], v["stage"], v["kind"], v["aliases"], v["promoted_by"]) for v in detail["versions"]
    ] == [
        (3, run.number, "s3", "model", [], "alice"),
        (2, run.number, "s2", "model", ["staging"], "alice"),
        (1, run.number, "s1", "model", ["production"], "alice"),
    ]
    assert detail["versions"][2]["headline"] == [
        {"key": "train/loss", "label": "train/loss", "value": 1.0, "better": "lower", "stage": "s1", "model": None}
    ]
    version = alice_api.get(f"{API}/{model.name}/versions/2").json()
    assert version["source_uri"] == "runs:/r2/model" and version["aliases"] == ["staging"]
    assert version["lineage"]["datasets"][0]["sha256"] == f"{2:064x}" and version["metrics"]["stage"] == {
        "train/loss": 0.5
    }
    assert [v["version"] for v in alice_api.get(f"{API}/{model.name}/versions").json()] == [3, 2, 1]
    aliases = alice_api.get(f"{API}/{model.name}/aliases").json()
    assert aliases["aliases"] == [
        {"alias": "staging", "version": 2, "can_roll_back": False, "rollback_to": None},
        {"alias": "production", "version": 1, "can_roll_back": False, "rollback_to": None},
    ]
    assert {(e["alias"], e["action"], e["version"]) for e in aliases["history"]} == {
        ("production", "set", 1),
        ("staging", "set", 2),
    }

    assert alice_api.get(f"{API}/{model.name}/versions/9").json()["detail"] == f"{model.name} has no version 9"
    assert alice_api.get(f"{API}/{model.name}/versions/{2**40}").status_code == 404
    for url in (
        f"{API}/nope",
        f"{API}/Has%20Space",
        f"{API}/nope/versions",
        f"{API}/nope/versions/1",
        f"{API}/nope/aliases",
        f"{API}/{'x' * 300}",
        f"{API}/a%00b",
    ):
        response = alice_api.get(url)
        assert response.status_code == 404, (url, response.content)
        assert response.json()["detail"] == "no registered model of that name in this team"


@pytest.mark.django_db
def test_the_whole_alias_history_comes_back_and_reads_make_constant_queries(alice_api, alice, team, mlflow_down):
    small, _ = _rows(team, alice, versions=2, tag="small")
    large, _ = _rows(team, alice, versions=12, tag="large")
    first = large.versions.get(version=1)
    AliasEvent.objects.bulk_create(
        [AliasEvent(registered_model=large, alias="canary", version=first, action="set", user=alice) for _ in range(60)]
    )

    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert alice_api.get(url).status_code == 200
        return len(ctx.captured_queries)

    for suffix in ("", "/versions", "/aliases"):
        few, many = queries(f"{API}/{small.name}{suffix}"), queries(f"{API}/{large.name}{suffix}")
        assert few == many, (suffix, few, many)
    assert len(alice_api.get(f"{API}/{large.name}/aliases").json()["history"]) == 62  # not cut at the page's 50


# --- team scoping, roles and token scopes --------------------------------------------------------------


def _writes(model_name: str, run_number: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("post", f"{API}/promote", {"run": run_number, "stage": "s1", "model": "another"}),
        ("put", f"{API}/{model_name}/aliases/staging", {"version": 1}),
        ("delete", f"{API}/{model_name}/aliases/staging", None),
        ("post", f"{API}/{model_name}/aliases/production/rollback", None),
    ]


def _send(client: Api, method: str, url: str, body):
    return client.delete(url) if method == "delete" else getattr(client, method)(url, body)


@pytest.mark.django_db
def test_another_teams_model_is_404_and_its_runs_cannot_be_promoted(alice, bob, team, mlflow_down):
    model, run = _rows(team, alice, versions=2)
    bob_api = api_for(bob, bob.teams.get())
    before = _state(team)
    for url in (
        f"{API}/{model.name}",
        f"{API}/{model.name}/versions",
        f"{API}/{model.name}/versions/1",
        f"{API}/{model.name}/aliases",
    ):
        response = bob_api.get(url)
        assert response.status_code == 404 and model.name.encode() not in response.content, url
    assert bob_api.get(API).json() == []
    for method, url, body in _writes(model.name, run.number)[1:]:
        response = _send(bob_api, method, url, body)
        assert response.status_code == 404, (method, url, response.content)
    # Naming alice's run in bob's team: there is no such run there.
    response = bob_api.post(f"{API}/promote", {"run": run.number, "stage": "s1", "model": "stolen"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"run": f"run #{run.number} does not exist in this team"}
    assert _state(team) == before and not RegisteredModel.objects.filter(team=bob.teams.get()).exists()


@pytest.mark.django_db
def test_viewers_and_read_tokens_get_403_on_every_write(alice, team, viewer, mlflow_down):
    model, run = _rows(team, alice, versions=2)
    before = _state(team)
    clients = {"viewer": api_for(viewer, team), "read token": api_for(alice, team, scope=ApiToken.Scope.READ)}
    for who, client in clients.items():
        for method, url, body in _writes(model.name, run.number):
            response = _send(client, method, url, body)
            assert response.status_code == 403, (who, method, url, response.content)
        assert client.get(f"{API}/{model.name}/aliases").status_code == 200  # reads stay open
    assert "read-only" in _send(clients["read token"], *_writes(model.name, run.number)[0]).json()["detail"]
    assert "viewers cannot change" in _send(clients["viewer"], *_writes(model.name, run.number)[0]).json()["detail"]
    assert _state(team) == before


# --- bad input: 400 naming the field, before MLflow is asked ---------------------------------------------


@pytest.mark.django_db
def test_bad_promotions_are_400_naming_the_field(alice_api, alice, team, mlflow_down):
    model, run = _rows(team, alice, versions=1)
    StageRun.objects.create(
        run=run,
        index=7,
        name="check",
        method="evaluate",
        status=Status.SUCCEEDED,
        outputs={"kind": "report", "artifact_path": "report", "mlflow_run_id": "x"},
    )
    StageRun.objects.create(run=run, index=8, name="broken", method="sft", status=Status.FAILED)
    before = _state(team)
    cases = [
        ({"model": "Has Space"}, "model", "model name 'Has Space': use lowercase letters"),
        ({"model": "promote"}, "model", "model name 'promote' is reserved"),
        ({"model": ""}, "model", "give the model a name"),
        ({"alias": "latest"}, "alias", "alias 'latest' is reserved by MLflow"),
        ({"alias": "Prod"}, "alias", "alias 'Prod': use lowercase letters"),
        ({"run": 999}, "run", "run #999 does not exist in this team"),
        ({"run": 10**12}, "run", f"run #{10**12} does not exist in this team"),
        ({"run": -1}, "run", "run #-1 does not exist in this team"),
        ({"stage": "nope"}, "stage", f"run #{run.number} has no stage 'nope'"),
        ({"stage": "check"}, "stage", "produced an evaluation report; only a model or an adapter can be promoted"),
        ({"stage": "broken"}, "stage", "has not succeeded (it is failed)"),
    ]
    for change, field, message in cases:
        body = {"run": run.number, "stage": "s1", "model": "fresh", **change}
        response = alice_api.post(f"{API}/promote", body)
        assert response.status_code == 400, (change, response.content)
        assert list(response.json()["errors"]) == [field] and message in response.json()["errors"][field], (
            change,
            response.json(),
        )
        assert message in response.json()["detail"]
    # Several fields wrong at once: each is named.
    response = alice_api.post(f"{API}/promote", {"run": 999, "stage": "s1", "model": "Bad", "alias": "v2"})
    assert set(response.json()["errors"]) == {"run", "model", "alias"}
    # Shape errors come from the schema (422): a missing field, a string for the run number, a NUL.
    for body in (
        {"run": run.number, "stage": "s1"},
        {"run": "one", "stage": "s1", "model": "m"},
        {"run": run.number, "stage": "s\x00", "model": "m"},
    ):
        assert alice_api.post(f"{API}/promote", body).status_code == 422, body
    assert _state(team) == before


@pytest.mark.django_db
def test_bad_alias_changes_are_400_naming_the_field(alice_api, alice, team, mlflow_down):
    model, _ = _rows(team, alice, versions=2)
    before = _state(team)
    url = f"{API}/{model.name}/aliases"
    response = alice_api.put(f"{url}/Production", {"version": 1})
    assert response.status_code == 400 and list(response.json()["errors"]) == ["alias"]
    assert "alias 'Production': use lowercase letters" in response.json()["errors"]["alias"]
    response = alice_api.put(f"{url}/v7", {"version": 99})
    assert response.status_code == 400 and set(response.json()["errors"]) == {"alias", "version"}
    assert response.json()["errors"]["version"] == f"{model.name} has no version 99"
    for version in (0, -3, 2**40):
        response = alice_api.put(f"{url}/canary", {"version": version})
        assert response.status_code == 400 and list(response.json()["errors"]) == ["version"], version
    assert alice_api.put(f"{url}/canary", {"version": "one"}).status_code == 422
    assert alice_api.put(f"{url}/canary", {}).status_code == 422

    response = alice_api.delete(f"{url}/canary")
    assert response.status_code == 400
    assert response.json()["errors"] == {"alias": f"{model.name} has no alias 'canary'"}
    response = alice_api.post(f"{url}/canary/rollback")
    assert response.json()["errors"] == {
        "alias": f"canary of {model.name} has never changed: there is nothing to roll back"
    }
    response = alice_api.post(f"{url}/latest/rollback")
    assert response.status_code == 400 and "reserved by MLflow" in response.json()["errors"]["alias"]
    assert _state(team) == before


@pytest.mark.django_db
def test_mlflow_down_is_a_clear_400_and_saves_nothing(alice_api, alice, team, mlflow_down):
    model, run = _rows(team, alice, versions=2)
    StageRun.objects.create(
        run=run,
        index=9,
        name="fresh",
        method="sft",
        status=Status.SUCCEEDED,
        outputs={"kind": "model", "artifact_path": "model", "mlflow_run_id": "abc"},
    )
    before = _state(team)
    response = alice_api.put(f"{API}/{model.name}/aliases/production", {"version": 2})
    assert response.status_code == 400
    assert response.json()["errors"]["alias"].startswith(
        "could not reach the tracking server (MLflow) to set the alias 'production'"
    )
    assert "127.0.0.1" not in response.content.decode()
    response = alice_api.delete(f"{API}/{model.name}/aliases/staging")
    assert response.status_code == 400 and "could not reach the tracking server" in response.json()["detail"]
    response = alice_api.post(
        f"{API}/promote", {"run": run.number, "stage": "fresh", "model": model.name, "alias": "canary"}
    )
    assert response.status_code == 400 and list(response.json()["errors"]) == ["model"]
    assert "could not reach the tracking server (MLflow)" in response.json()["errors"]["model"]
    assert _state(team) == before


def test_the_openapi_schema_documents_every_registry_operation():
    schema = ninja_api.get_openapi_schema()
    operations = {
        f"{m.upper()} {p}": op for p, ops in schema["paths"].items() for m, op in ops.items() if p.startswith(API)
    }
    assert set(operations) == {
        f"GET {API}",
        f"POST {API}/promote",
        f"GET {API}/{{model_name}}",
        f"GET {API}/{{model_name}}/versions",
        f"GET {API}/{{model_name}}/versions/{{version}}",
        f"GET {API}/{{model_name}}/aliases",
        f"PUT {API}/{{model_name}}/aliases/{{alias}}",
        f"DELETE {API}/{{model_name}}/aliases/{{alias}}",
        f"POST {API}/{{model_name}}/aliases/{{alias}}/rollback",
    }
    for key, operation in operations.items():
        assert operation["tags"] == ["registry"], key
    assert set(operations[f"POST {API}/promote"]["responses"]) == {201, 400}
    assert set(operations[f"PUT {API}/{{model_name}}/aliases/{{alias}}"]["responses"]) == {200, 400, 404}
    version = schema["components"]["schemas"]["VersionOut"]["properties"]
    assert {"run", "stage", "kind", "metrics", "lineage", "source_uri", "promoted_by", "promoted_at", "aliases"} <= set(
        version
    )
    history = schema["components"]["schemas"]["AliasEventOut"]["properties"]
    assert {"action", "version", "previous", "user", "at"} <= set(history)
    assert json.dumps(schema)  # serializable as served at /api/v1/openapi.json
