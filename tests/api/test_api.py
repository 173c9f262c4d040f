"""The /api/v1 surface: token auth, team scoping, validation errors, OpenAPI."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from refinery.data.models import Dataset
from refinery.pipelines.models import Pipeline
from refinery.teams.models import ApiToken
from tests.fixtures import ROWS


def upload(api, name="sums", kind="prompt_completion", rows=ROWS, filename="sums.jsonl"):
    import json

    f = io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())
    f.name = filename
    return api.post("/api/v1/datasets", {"name": name, "kind": kind}, files={"file": f})


@pytest.fixture
def model_id(api, tiny_model_dir):
    response = api.post("/api/v1/base-models", {"name": "tiny", "source": "local", "name_or_path": str(tiny_model_dir)})
    assert response.status_code == 201, response.content
    return response.json()["id"]


def stage(dataset_id, **overrides):
    return {
        "name": "sft-1",
        "method": "sft",
        "dataset_id": dataset_id,
        "input": "base",
        "config": {"learning_rate": 0.001, "num_train_epochs": 2},
        "adapter": {"type": "lora", "r": 4},
        **overrides,
    }


def test_openapi_schema_lists_the_endpoints(client, db):
    schema = client.get("/api/v1/openapi.json").json()
    paths = schema["paths"]
    for path in [
        "/api/v1/datasets",
        "/api/v1/pipelines",
        "/api/v1/pipelines/{pipeline_id}/runs",
        "/api/v1/runs/{number}",
        "/api/v1/runs/{number}/cancel",
        "/api/v1/methods",
    ]:
        assert path in paths
    assert schema["components"]["securitySchemes"]


def test_requests_without_a_valid_token_are_refused(client, db):
    assert client.get("/api/v1/runs").status_code == 401
    assert client.get("/api/v1/runs", headers={"Authorization": "Bearer rfy_nope"}).status_code == 401


def test_api_token_command_prints_a_working_token(alice, team, capsys):
    call_command("api_token", "alice")
    key = capsys.readouterr().out.strip()
    assert key.startswith("rfy_") and ApiToken.objects.filter(key_hash=ApiToken.hash_key(key)).exists()
    from django.test import Client

    assert Client().get("/api/v1/runs", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_upload_then_create_pipeline_then_start_run(api, model_id, dataset_dir, django_capture_on_commit_callbacks):
    response = upload(api)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["version"] == 1 and body["row_count"] == 100 and len(body["sha256"]) == 64

    spec = {
        "seed": 7,
        "stages": [
            stage(body["dataset_id"]),
            stage(body["dataset_id"], name="sft-2", input="sft-1", adapter={"type": "none"}),
        ],
    }
    response = api.post("/api/v1/pipelines", {"name": "p1", "base_model_id": model_id, "spec": spec})
    assert response.status_code == 201, response.content
    pipeline = response.json()
    # Defaults are filled in from the method's typed config.
    assert pipeline["spec"]["stages"][0]["config"]["max_length"] > 0
    assert pipeline["spec"]["stages"][0]["adapter"]["alpha"] == 16

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api.post(f"/api/v1/pipelines/{pipeline['id']}/runs", {})
    assert response.status_code == 201, response.content
    run = response.json()
    assert len(callbacks) == 1  # only the first stage is queued, after commit
    assert [s["status"] for s in run["stages"]] == ["queued", "pending"]
    snapshot = run["snapshot"]
    assert snapshot["seed"] == 7 and snapshot["code_version"]
    assert snapshot["stages"][0]["train_data"]["sha256"] == body["sha256"]
    assert snapshot["base_model"]["name_or_path"].endswith("tiny-model")

    got = api.get(f"/api/v1/runs/{run['number']}").json()
    assert got["status"] == "queued"
    response = api.post(f"/api/v1/runs/{run['number']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert api.post(f"/api/v1/runs/{run['number']}/cancel").status_code == 409


def test_bad_upload_reports_issues_and_stores_nothing(api, dataset_dir):
    rows = [{"prompt": "a", "chosen": "b"}] * 30
    response = upload(api, name="prefs", kind="preference", rows=rows)
    assert response.status_code == 400
    body = response.json()
    assert body["error_count"] == 30 and len(body["issues"]) == 20
    assert body["issues"][0]["row"] == 1 and "rejected" in body["issues"][0]["message"]
    assert not Dataset.objects.exists()


@pytest.mark.parametrize(
    ("change", "expected_key", "expected_text"),
    [
        ({"config": {"learning_rate": 5}}, "stages.0.config.learning_rate", "learning_rate"),
        ({"config": {"num_train_epochs": "many"}}, "stages.0.config.num_train_epochs", "num_train_epochs"),
        ({"config": {"warp_speed": 9}}, "stages.0.config.warp_speed", "unknown field"),
        ({"adapter": {"type": "qlora-9000"}}, "stages.0.adapter.type", "type"),
        ({"method": "alchemy"}, "stages.0.method", "unknown method"),
        ({"input": "nowhere"}, "stages.0.input", "not a stage of this pipeline"),
        ({"name": "Bad Name!"}, "stages.0.name", "lowercase"),
        ({"dataset_id": 999999}, "stages.0.dataset_id", "does not exist"),
    ],
)
def test_bad_pipeline_specs_get_field_level_errors(api, model_id, dataset_dir, change, expected_key, expected_text):
    dataset_id = upload(api).json()["dataset_id"]
    response = api.post(
        "/api/v1/pipelines",
        {"name": "p", "base_model_id": model_id, "spec": {"stages": [{**stage(dataset_id), **change}]}},
    )
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert expected_key in errors, errors
    assert expected_text in errors[expected_key]
    assert "stage 1" in errors[expected_key]
    assert not Pipeline.objects.exists()


@pytest.mark.parametrize(
    ("stages", "key", "text"),
    [
        ([{"adapter": {"type": "bitfit"}}], "stages.0.adapter.type", "0 bias parameters"),
        ([{"adapter": {"type": "freeze", "freeze_layers": 5}}], "stages.0.adapter.freeze_layers", "only 2"),
        (
            [{"adapter": {"type": "prompt_tuning"}}, {"name": "next", "input": "sft-1", "adapter": {"type": "lora"}}],
            "stages.1.adapter.type",
            "cannot be merged",
        ),
    ],
)
def test_adapters_the_model_cannot_take_are_refused_before_any_worker(api, model_id, dataset_dir, stages, key, text):
    dataset_id = upload(api).json()["dataset_id"]
    spec = {"stages": [{**stage(dataset_id), **overrides} for overrides in stages]}
    response = api.post("/api/v1/pipelines", {"name": "p", "base_model_id": model_id, "spec": spec})
    assert response.status_code == 400, response.content
    assert text in response.json()["errors"][key]


def test_a_method_refuses_a_dataset_kind_it_cannot_use(api, model_id, dataset_dir):
    prefs = [{"prompt": "1+1=", "chosen": "2", "rejected": "3"}] * 5
    dataset_id = upload(api, name="prefs", kind="preference", rows=prefs).json()["dataset_id"]
    response = api.post(
        "/api/v1/pipelines", {"name": "p", "base_model_id": model_id, "spec": {"stages": [stage(dataset_id)]}}
    )
    assert response.status_code == 400
    assert "cannot train on 'preference' data" in response.json()["errors"]["stages.0.dataset_kind"]


def test_teams_never_see_each_other(api, bob_api, model_id, dataset_dir):
    dataset_id = upload(api).json()["dataset_id"]
    assert bob_api.get("/api/v1/datasets").json() == []
    assert bob_api.get(f"/api/v1/datasets/{dataset_id}").status_code == 404
    # Bob cannot build a pipeline on Alice's dataset or model either.
    response = bob_api.post(
        "/api/v1/pipelines", {"name": "steal", "base_model_id": model_id, "spec": {"stages": [stage(dataset_id)]}}
    )
    assert response.status_code == 400
    assert set(response.json()["errors"]) >= {"base_model_id", "stages.0.dataset_id"}


def test_viewers_cannot_write(viewer, team, dataset_dir):
    from refinery.teams.services import api_token_create
    from tests.fixtures import ApiClient

    _, key = api_token_create(user=viewer, team=team)
    response = upload(ApiClient(key))
    assert response.status_code == 403
    assert not Dataset.objects.exists()


def test_methods_endpoint_exposes_the_config_schema(api):
    methods = api.get("/api/v1/methods").json()
    sft = next(m for m in methods["methods"] if m["name"] == "sft")
    lr = next(f for f in sft["config_fields"] if f["name"] == "learning_rate")
    assert lr["type"] == "float" and lr["help"] and lr["max"] == 1
    assert {f["name"] for f in methods["adapter"]["config_fields"]} >= {"type", "r", "alpha", "dropout"}


@pytest.mark.parametrize(
    ("method", "kind", "rows", "config", "key", "text"),
    [
        (
            "dpo",
            "preference",
            [{"prompt": "1+1=", "chosen": "2", "rejected": "3"}] * 3,
            {"loss_type": "no-such-loss"},
            "stages.0.config.loss_type",
            "loss_type",
        ),
        (
            "grpo",
            "reference",
            [{"prompt": "1+1=", "answer": "2"}] * 3,
            {},
            "stages.0.config.__all__",
            "at least one reward",
        ),
        (
            "grpo",
            "reference",
            [{"prompt": "1+1=", "answer": "2"}] * 3,
            {"reward_regex_match_weight": 1.0, "regex_pattern": "(unclosed"},
            "stages.0.config.regex_pattern",
            "regex",
        ),
        (
            "kto",
            "reference",
            [{"prompt": "1+1=", "answer": "2"}] * 3,
            {},
            "stages.0.dataset_kind",
            "cannot train on 'reference' data",
        ),
    ],
)
def test_configs_the_trainer_would_reject_are_refused_at_api_time(
    api, model_id, dataset_dir, method, kind, rows, config, key, text
):
    dataset_id = upload(api, name=f"{method}-data", kind=kind, rows=rows).json()["dataset_id"]
    spec = {
        "stages": [
            {"name": "s1", "method": method, "dataset_id": dataset_id, "config": config, "adapter": {"type": "lora"}}
        ]
    }
    response = api.post("/api/v1/pipelines", {"name": "p", "base_model_id": model_id, "spec": spec})
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    matching = {k: v for k, v in errors.items() if k.startswith(key.rsplit(".", 1)[0])}
    assert any(text in v for v in matching.values()), errors
    assert not Pipeline.objects.exists()


def test_graphs_versions_and_reruns_through_the_api(
    api, bob_api, model_id, dataset_dir, django_capture_on_commit_callbacks
):
    pc = upload(api).json()["dataset_id"]
    spec = {
        "seed": 3,
        "retention_dataset_id": pc,
        "stages": [
            stage(pc, name="a"),
            stage(pc, name="b", adapter={"type": "none"}),
            {"name": "mix", "method": "merge", "inputs": ["a", "b"], "config": {"merge_method": "dare_ties"}},
            {"name": "check", "method": "evaluate", "input": "mix", "dataset_id": pc},
        ],
    }
    response = api.post("/api/v1/pipelines", {"name": "graph", "base_model_id": model_id, "spec": spec})
    assert response.status_code == 201, response.content
    pipeline = response.json()
    assert pipeline["version"] == 1 and pipeline["spec"]["stages"][2]["inputs"] == ["a", "b"]

    cycle = {**spec, "stages": [stage(pc, name="a", input="b"), stage(pc, name="b", input="a")]}
    response = api.put(
        f"/api/v1/pipelines/{pipeline['id']}", {"name": "graph", "base_model_id": model_id, "spec": cycle}
    )
    assert response.status_code == 400 and "cycle (a -> b -> a)" in response.json()["errors"]["stages.0.input"]
    edited = {
        **spec,
        "stages": spec["stages"][:2] + [{**spec["stages"][2], "config": {"merge_method": "linear"}}, spec["stages"][3]],
    }
    response = api.put(
        f"/api/v1/pipelines/{pipeline['id']}", {"name": "graph", "base_model_id": model_id, "spec": edited}
    )
    assert response.status_code == 200 and response.json()["version"] == 2
    versions = api.get(f"/api/v1/pipelines/{pipeline['id']}/versions").json()
    assert [v["number"] for v in versions] == [2, 1]
    assert versions[1]["spec"]["stages"][2]["config"]["merge_method"] == "dare_ties"

    with django_capture_on_commit_callbacks(execute=False):
        old = api.post(f"/api/v1/pipelines/{pipeline['id']}/runs", {"version": 1}).json()
        assert old["pipeline_version"] == 1 and old["snapshot"]["stages"][2]["config"]["merge_method"] == "dare_ties"
        assert [s["status"] for s in old["stages"]] == ["queued", "queued", "pending", "pending"]
        assert old["snapshot"]["stages"][3]["retention_data"]["dataset_id"] == pc
        again = api.post(f"/api/v1/runs/{old['number']}/rerun", {}).json()
        assert again["rerun_of"] == old["number"] and again["snapshot"] == old["snapshot"]
        latest = api.post(f"/api/v1/runs/{old['number']}/rerun", {"latest_data": True}).json()
        assert latest["pipeline_version"] == 1
    assert api.post(f"/api/v1/pipelines/{pipeline['id']}/runs", {"version": 9}).status_code == 404
    assert bob_api.post(f"/api/v1/runs/{old['number']}/rerun", {}).status_code == 404
    assert bob_api.get(f"/api/v1/pipelines/{pipeline['id']}/versions").status_code == 404
