"""A schedule that carries its own promotion gate: validated as the stage it adds, stored with its config
filled in, added to every run it starts (page, API and service)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from refinery.schedules.models import Schedule
from refinery.schedules.services import ScheduleError, schedule_create, schedule_run_now
from refinery.teams.services import api_token_create
from tests.factories import DatasetVersionFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def pipeline(make_pipeline):
    return make_pipeline(("sft", "base"))


def _gate(pipeline, **config):
    held_out = DatasetVersionFactory(dataset__team=pipeline.team, dataset__name="held-out")
    return {
        "candidate": "sft",
        "dataset_id": held_out.dataset_id,
        "config": {"registered_model": "support-bot", "alias": "production", **config},
    }


def test_a_schedule_gate_is_added_to_every_run(pipeline, sent_stages):
    gate = _gate(pipeline, min_gain=0.01, require_approval=True)
    schedule = schedule_create(
        team=pipeline.team,
        user=pipeline.created_by,
        name="nightly",
        pipeline_id=pipeline.pk,
        trigger="interval",
        interval_seconds=3600,
        gate=gate,
    )
    assert schedule.gate["candidate"] == "sft" and schedule.gate["dataset_id"] == gate["dataset_id"]
    config = schedule.gate["config"]
    assert config["min_gain"] == 0.01 and config["require_approval"] is True and config["max_rows"] == 200
    assert str(gate["dataset_id"]) in schedule.bindings  # the gate's held-out set can be pinned like the rest

    run = schedule_run_now(schedule=schedule, user=pipeline.created_by).run
    stages = {s.name: s for s in run.stages.all()}
    assert set(stages) == {"sft", "gate"}
    spec = stages["gate"].spec
    assert (spec["method"], spec["input"], spec["config"]["registered_model"]) == ("gate", "sft", "support-bot")
    assert spec["train_data"]["dataset_id"] == gate["dataset_id"]
    assert [s["name"] for s in schedule.pipeline_version.spec["stages"]] == ["sft"]  # the pipeline is unchanged


def test_a_schedule_gate_next_to_a_pipeline_gate_gets_its_own_name(make_pipeline, sent_stages):
    pipeline = make_pipeline(("sft", "base"))
    stages = pipeline.spec["stages"] + [
        {
            "name": "gate",
            "method": "gate",
            "input": "sft",
            "dataset_id": pipeline.spec["stages"][0]["dataset_id"],
            "config": {"registered_model": "a"},
        }
    ]
    from refinery.pipelines.services import pipeline_update

    pipeline_update(
        pipeline=pipeline,
        user=pipeline.created_by,
        name=pipeline.name,
        base_model_id=pipeline.base_model_id,
        spec={**pipeline.spec, "stages": stages},
    )
    schedule = schedule_create(
        team=pipeline.team,
        user=pipeline.created_by,
        name="n",
        pipeline_id=pipeline.pk,
        trigger="interval",
        interval_seconds=3600,
        gate=_gate(pipeline),
    )
    assert schedule.pipeline_version.gate_stages == ["gate"]
    run = schedule_run_now(schedule=schedule, user=pipeline.created_by).run
    assert [s.name for s in run.stages.order_by("index")] == ["sft", "gate", "schedule-gate"]


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"candidate": "base"}, "gate.candidate", "name a stage"),
        ({"candidate": "nope"}, "gate.candidate", "is not a stage of this pipeline"),
        ({"config": {"registered_model": "Support Bot"}}, "gate.config.registered_model", "lowercase letters"),
        ({"config": {"registered_model": "bot", "alias": "v3"}}, "gate.config.alias", "reserved by MLflow"),
        (
            {"config": {"registered_model": "bot", "max_forgetting": "0.2"}},
            "gate.config.max_forgetting",
            "retention set",
        ),
        ({"config": {"registered_model": "bot", "min_gain": -1}}, "gate.config.min_gain", "min_gain"),
        ({"dataset_id": None}, "gate.dataset_id", "held-out dataset"),
        ({"extra": 1}, "gate", '"candidate"'),
    ],
)
def test_bad_gates_are_refused_naming_the_field(pipeline, change, key, words):
    gate = {**_gate(pipeline), **change}
    with pytest.raises(ScheduleError) as caught:
        schedule_create(
            team=pipeline.team,
            user=pipeline.created_by,
            name="n",
            pipeline_id=pipeline.pk,
            trigger="interval",
            interval_seconds=3600,
            gate=gate,
        )
    assert key in caught.value.errors, caught.value.errors
    assert words in caught.value.errors[key], caught.value.errors
    assert not Schedule.objects.exists()


def test_the_form_and_the_api_take_a_gate(pipeline, sent_stages):
    user = pipeline.created_by
    held_out = DatasetVersionFactory(dataset__team=pipeline.team, dataset__name="held-out")
    client = Client()
    client.force_login(user)
    form = client.get(f"/schedules/new/?pipeline={pipeline.pk}").content.decode()
    assert 'data-testid="schedule-gate"' in form and '<option value="sft"' in form
    response = client.post(
        "/schedules/new/",
        {
            "pipeline": pipeline.pk,
            "name": "nightly",
            "trigger": "interval",
            "interval_seconds": "3600",
            "timezone": "UTC",
            "overlap": "skip",
            "catch_up": "latest",
            "catch_up_limit": "10",
            "failure_limit": "3",
            "gate_enabled": "on",
            "gate_candidate": "sft",
            "gate_dataset_id": held_out.dataset_id,
            "gate_registered_model": "support-bot",
            "gate_alias": "production",
            "gate_metric": "",
            "gate_min_gain": "0.05",
            "gate_gain_mode": "relative",
            "gate_max_forgetting": "",
            "gate_require_approval": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[-3000:]
    schedule = Schedule.objects.get()
    assert schedule.gate["config"]["gain_mode"] == "relative" and schedule.gate["config"]["require_approval"]
    page = client.get(f"/schedules/{schedule.pk}/").content.decode()
    assert "support-bot@production" in page and "an owner approves" in page
    assert 'held-out: <span class="mono">latest version' in page  # the gate's data is bound like the rest
    edit = client.get(f"/schedules/{schedule.pk}/edit/").content.decode()
    assert 'name="gate_enabled" data-testid="gate-enabled" checked' in edit and 'value="support-bot"' in edit

    _, key = api_token_create(user=user, team=pipeline.team)
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "name": "api-nightly",
        "pipeline_id": pipeline.pk,
        "trigger": "interval",
        "interval_seconds": 3600,
        "gate": {"candidate": "sft", "dataset_id": held_out.dataset_id, "config": {"registered_model": "bot"}},
    }
    created = client.post("/api/v1/schedules", json.dumps(body), content_type="application/json", headers=headers)
    assert created.status_code == 201, created.content
    assert created.json()["gate"]["config"]["alias"] == "production"
    body["name"], body["gate"]["config"] = "bad", {"registered_model": "bot", "alias": "latest"}
    refused = client.post("/api/v1/schedules", json.dumps(body), content_type="application/json", headers=headers)
    assert refused.status_code == 400 and "reserved by MLflow" in refused.json()["errors"]["gate.config.alias"]
