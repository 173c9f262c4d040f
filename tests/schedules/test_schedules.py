"""Schedule pages and /api/v1/schedules: create, edit, buttons, tick history, team scoping."""

from __future__ import annotations

import pytest
from django.test import Client

from refinery.runs.models import Run
from refinery.schedules.models import Schedule, TickOutcome
from refinery.schedules.services import schedule_create
from refinery.teams.services import api_token_create
from tests.factories import DatasetVersionFactory, PipelineFactory
from tests.fixtures import ApiClient


@pytest.fixture
def pipeline(team, alice):
    first = DatasetVersionFactory(dataset__team=team, dataset__name="sums")
    DatasetVersionFactory(dataset=first.dataset)
    return PipelineFactory(
        team=team,
        name="sft-pipe",
        created_by=alice,
        stages=[
            {
                "name": "sft",
                "method": "sft",
                "config": {"max_steps": 2},
                "adapter": {"type": "none"},
                "dataset_id": first.dataset_id,
                "input": "base",
            }
        ],
    )


@pytest.fixture
def schedule(pipeline, alice):
    return schedule_create(
        team=pipeline.team,
        user=alice,
        name="nightly-sft",
        pipeline_id=pipeline.pk,
        trigger="cron",
        cron="0 2 * * *",
        timezone="Europe/Paris",
    )


def form(pipeline, **changes) -> dict:
    dataset = pipeline.team.datasets.get()
    data = {
        "pipeline": pipeline.pk,
        "name": "nightly-sft",
        "version": "1",
        "trigger": "cron",
        "cron": "0 2 * * *",
        "timezone": "Europe/Paris",
        "interval_seconds": "",
        "debounce_seconds": "60",
        "start_at": "",
        "end_at": "",
        "max_runs": "",
        "overlap": "queue",
        "catch_up": "latest",
        "catch_up_limit": "10",
        "failure_limit": "3",
        f"binding_{dataset.pk}": str(dataset.versions.get(version=1).pk),
    }
    data.update(changes)
    return data


@pytest.mark.django_db
class TestPages:
    def test_create_a_schedule_in_the_browser(self, browser_client, pipeline, sent_stages):
        picker = browser_client.get("/schedules/new/")
        assert picker.status_code == 200 and b"sft-pipe" in picker.content
        page = browser_client.get("/schedules/new/", {"pipeline": pipeline.pk})
        assert page.status_code == 200 and b'name="binding_' in page.content and b"Latest version" in page.content
        response = browser_client.post("/schedules/new/", form(pipeline))
        schedule = Schedule.objects.get()
        assert response.status_code == 302 and response["Location"] == f"/schedules/{schedule.pk}/"
        v1 = pipeline.team.datasets.get().versions.get(version=1)
        assert schedule.bindings == {str(v1.dataset_id): v1.pk} and schedule.overlap == "queue"
        detail = browser_client.get(response["Location"]).content.decode()
        assert "cron 0 2 * * * (Europe/Paris)" in detail
        assert detail.count("02:00 Europe/Paris") == 3  # the next three fire times, in the schedule's zone
        assert "v1 (pinned)" in detail
        listing = browser_client.get("/schedules/").content.decode()
        assert "nightly-sft" in listing and "none yet" in listing

    def test_bad_input_is_refused_with_the_reason(self, browser_client, pipeline):
        response = browser_client.post("/schedules/new/", form(pipeline, cron="0 25 * * *", timezone="Nowhere/City"))
        assert response.status_code == 400
        body = response.content.decode()
        assert "five-field cron expression" in body and "unknown time zone" in body
        assert not Schedule.objects.exists()

    def test_buttons_run_now_pause_resume_and_the_run_says_its_schedule(self, browser_client, schedule, sent_stages):
        response = browser_client.post(f"/schedules/{schedule.pk}/run-now/")
        assert response.status_code == 302
        tick = schedule.ticks.get()
        assert tick.outcome == TickOutcome.FIRED and tick.manual
        run_page = browser_client.get(f"/runs/{tick.run.number}/").content.decode()
        assert "schedule nightly-sft</a>, window " in run_page and "Europe/Paris (run now)" in run_page
        runs_list = browser_client.get("/runs/").content.decode()
        assert "schedule nightly-sft" in runs_list
        detail = browser_client.get(f"/schedules/{schedule.pk}/").content.decode()
        assert f"#{tick.run.number}</a>" in detail and 'data-outcome="fired"' in detail

        browser_client.post(f"/schedules/{schedule.pk}/pause/")
        schedule.refresh_from_db()
        assert schedule.paused and schedule.paused_reason == "paused by alice"
        assert "Resume" in browser_client.get(f"/schedules/{schedule.pk}/").content.decode()
        browser_client.post(f"/schedules/{schedule.pk}/resume/")
        schedule.refresh_from_db()
        assert not schedule.paused and schedule.resumed_at is not None
        actions = set(schedule.team.audit_events.values_list("action", flat=True))
        assert {"schedule.created", "schedule.run_now", "schedule.paused", "schedule.resumed"} <= actions

    def test_start_and_end_are_read_and_shown_in_the_schedules_time_zone(self, browser_client, pipeline):
        from datetime import UTC, datetime

        response = browser_client.post(
            "/schedules/new/", form(pipeline, start_at="2026-12-05T02:00", end_at="2027-01-01T00:00")
        )
        assert response.status_code == 302  # version "1" of a pipeline whose version row was never written yet
        schedule = Schedule.objects.get()
        assert schedule.start_at == datetime(2026, 12, 5, 1, 0, tzinfo=UTC)  # 02:00 in Paris is 01:00 UTC
        page = browser_client.get(f"/schedules/{schedule.pk}/edit/").content.decode()
        assert 'value="2026-12-05T02:00"' in page and 'value="2027-01-01T00:00"' in page
        browser_client.post(
            f"/schedules/{schedule.pk}/edit/", form(pipeline, start_at="2026-12-05T02:00", end_at="2027-01-01T00:00")
        )
        schedule.refresh_from_db()
        assert schedule.start_at == datetime(2026, 12, 5, 1, 0, tzinfo=UTC)  # saving it again moves nothing

    def test_edit(self, browser_client, schedule, pipeline):
        page = browser_client.get(f"/schedules/{schedule.pk}/edit/").content.decode()
        assert 'value="0 2 * * *"' in page and 'value="Europe/Paris"' in page
        response = browser_client.post(
            f"/schedules/{schedule.pk}/edit/",
            form(pipeline, name="hourly", trigger="interval", interval_seconds="3600"),
        )
        assert response.status_code == 302
        schedule.refresh_from_db()
        assert (schedule.name, schedule.trigger, schedule.interval_seconds) == ("hourly", "interval", 3600)

    def test_viewers_read_only_and_other_teams_see_nothing(self, schedule, viewer, bob):
        client = Client()
        client.force_login(viewer)
        page = client.get(f"/schedules/{schedule.pk}/").content.decode()
        assert "nightly-sft" in page and "Run now" not in page and "Pause" not in page
        for action in ("run-now", "pause", "resume"):
            assert client.post(f"/schedules/{schedule.pk}/{action}/").status_code == 403
        assert client.get(f"/schedules/{schedule.pk}/edit/").status_code == 403
        assert not schedule.ticks.exists()
        other = Client()
        other.force_login(bob)
        assert other.get(f"/schedules/{schedule.pk}/").status_code == 404
        assert other.post(f"/schedules/{schedule.pk}/run-now/").status_code == 404
        assert b"nightly-sft" not in other.get("/schedules/").content


@pytest.mark.django_db
class TestApi:
    def test_create_get_edit_pause_resume_run_now_ticks(self, api, pipeline, sent_stages):
        dataset = pipeline.team.datasets.get()
        body = {
            "name": "nightly",
            "pipeline_id": pipeline.pk,
            "trigger": "cron",
            "cron": "30 2 * * *",
            "timezone": "Europe/Paris",
            "overlap": "replace",
            "bindings": {str(dataset.pk): "latest"},
        }
        created = api.post("/api/v1/schedules", body)
        assert created.status_code == 201, created.content
        out = created.json()
        assert out["version"] == 1 and out["bindings"] == {str(dataset.pk): "latest"} and len(out["next_fires"]) == 3
        sid = out["id"]
        assert api.get(f"/api/v1/schedules/{sid}").json()["cron"] == "30 2 * * *"
        assert [s["name"] for s in api.get("/api/v1/schedules").json()] == ["nightly"]
        edited = api.put(f"/api/v1/schedules/{sid}", {**body, "trigger": "interval", "interval_seconds": 600})
        assert edited.status_code == 200 and edited.json()["interval_seconds"] == 600
        assert api.post(f"/api/v1/schedules/{sid}/pause").json()["paused"] is True
        assert api.post(f"/api/v1/schedules/{sid}/resume").json()["paused"] is False
        fired = api.post(f"/api/v1/schedules/{sid}/run-now")
        assert fired.status_code == 201 and fired.json()["outcome"] == "fired"
        run = Run.objects.get(number=fired.json()["run"])
        ticks = api.get(f"/api/v1/schedules/{sid}/ticks").json()
        assert [(t["outcome"], t["run"], t["manual"]) for t in ticks] == [("fired", run.number, True)]
        assert ticks[0]["window_local"].endswith("Europe/Paris")

    def test_bad_input_names_the_field(self, api, pipeline):
        response = api.post(
            "/api/v1/schedules", {"name": "x", "pipeline_id": pipeline.pk, "trigger": "cron", "cron": "every night"}
        )
        assert response.status_code == 400 and "cron" in response.json()["errors"]
        response = api.post("/api/v1/schedules", {"name": "x", "pipeline_id": pipeline.pk, "trigger": "interval"})
        assert response.json()["errors"] == {"interval_seconds": "required"}
        assert not Schedule.objects.exists()

    def test_other_teams_404_and_read_only_tokens_403(self, schedule, bob_api, alice, team):
        for method, path in (("get", ""), ("get", "/ticks"), ("post", "/pause"), ("post", "/run-now")):
            assert getattr(bob_api, method)(f"/api/v1/schedules/{schedule.pk}{path}").status_code == 404
        assert bob_api.get("/api/v1/schedules").json() == []
        _, key = api_token_create(user=alice, team=team, scope="read")
        reader = ApiClient(key)
        assert reader.get(f"/api/v1/schedules/{schedule.pk}").status_code == 200
        assert reader.post(f"/api/v1/schedules/{schedule.pk}/run-now").status_code == 403
        assert not schedule.ticks.exists()
