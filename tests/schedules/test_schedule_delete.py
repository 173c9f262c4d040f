"""Deleting a schedule: the service (its ticks go, the runs it started stay and keep saying which schedule and
window started them), the Delete button on the schedule page and DELETE /api/v1/schedules/{id}."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from refinery.runs.models import Run, Status
from refinery.schedules.models import Schedule, ScheduleTick, TickOutcome
from refinery.schedules.services import schedule_create, schedule_delete, schedule_run_now, schedule_tick_all
from refinery.teams.models import AuditEvent
from refinery.teams.services import api_token_create
from tests.factories import DatasetVersionFactory, PipelineFactory
from tests.fixtures import ApiClient

T0 = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)  # 02:00 in Paris


@pytest.fixture
def pipeline(team, alice):
    version = DatasetVersionFactory(dataset__team=team, dataset__name="sums")
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
                "dataset_id": version.dataset_id,
                "input": "base",
            }
        ],
    )


@pytest.fixture
def schedule(pipeline, alice):
    schedule = schedule_create(
        team=pipeline.team,
        user=alice,
        name="nightly-sft",
        pipeline_id=pipeline.pk,
        trigger="cron",
        cron="0 2 * * *",
        timezone="Europe/Paris",
        overlap="queue",
    )
    Schedule.objects.filter(pk=schedule.pk).update(created_at=T0 - timedelta(hours=1))
    schedule.refresh_from_db()
    return schedule


@pytest.fixture
def history(schedule, alice, sent_stages) -> dict:
    """Three windows: 02:00 fired (run A, still running), the next night queued behind it, and a "run now"
    (run B, which fired whatever the policy)."""
    fired = schedule_tick_all(T0 + timedelta(seconds=5))[0]
    queued = schedule_tick_all(T0 + timedelta(days=1, seconds=5))[0]
    manual = schedule_run_now(schedule=schedule, user=alice)
    assert (fired.outcome, queued.outcome, manual.outcome) == (TickOutcome.FIRED, TickOutcome.QUEUED, TickOutcome.FIRED)
    return {"fired": fired.run, "manual": manual.run, "manual_label": manual.window_label}


def api_for(user, team, **kwargs) -> ApiClient:
    _, key = api_token_create(user=user, team=team, **kwargs)
    client = ApiClient(key)
    client.delete = lambda url: client.client.delete(url, headers=client.headers)
    return client


@pytest.mark.django_db
class TestService:
    def test_ticks_go_runs_stay_and_keep_their_schedule_label(self, schedule, history, alice, team):
        fired, manual = history["fired"], history["manual"]
        assert fired.status == Status.QUEUED  # still going: deleting the schedule does not touch it

        assert schedule_delete(schedule=schedule, user=alice) == 2
        assert not Schedule.objects.filter(pk=schedule.pk).exists()
        assert not ScheduleTick.objects.exists()  # the queued window went too: it never starts
        fired.refresh_from_db()
        manual.refresh_from_db()
        assert fired.status == Status.QUEUED and fired.stages.exists()
        assert fired.schedule_label == "schedule nightly-sft, window 2026-12-05 02:00 Europe/Paris"
        assert manual.schedule_label == f"schedule nightly-sft, window {history['manual_label']} (run now)"
        assert Run.objects.filter(team=team).count() == 2
        event = AuditEvent.objects.get(team=team, action="schedule.deleted")
        assert (event.target, event.detail, event.user) == ("schedule nightly-sft", {"ticks": 3, "runs": 2}, alice)

        # Nothing fires any more for it, and a new schedule may take its name.
        assert schedule_tick_all(T0 + timedelta(days=3)) == []
        schedule_create(
            team=team,
            user=alice,
            name="nightly-sft",
            pipeline_id=schedule.pipeline_id,
            trigger="interval",
            interval_seconds=60,
            paused=True,
        )

    def test_a_schedule_that_never_fired_goes_without_touching_any_run(self, schedule, alice, team, sent_stages):
        other = schedule_create(
            team=team,
            user=alice,
            name="other",
            pipeline_id=schedule.pipeline_id,
            trigger="interval",
            interval_seconds=60,
        )
        kept = schedule_run_now(schedule=other, user=alice).run
        assert schedule_delete(schedule=schedule, user=alice) == 0
        kept.refresh_from_db()
        assert kept.schedule_label == "" and kept.schedule_tick.schedule == other
        assert AuditEvent.objects.get(action="schedule.deleted").detail == {"ticks": 0, "runs": 0}


@pytest.mark.django_db
class TestPage:
    def test_delete_button_confirms_then_the_runs_pages_keep_the_label(self, browser_client, schedule, history):
        page = browser_client.get(f"/schedules/{schedule.pk}/").content.decode()
        assert 'data-testid="schedule-delete"' in page
        assert 'data-confirm="Delete schedule nightly-sft and its tick history? The runs it started stay' in page
        assert browser_client.get(f"/schedules/{schedule.pk}/delete/").status_code == 405

        response = browser_client.post(f"/schedules/{schedule.pk}/delete/", follow=True)
        assert response.redirect_chain == [("/schedules/", 302)]
        body = response.content.decode()
        assert "Deleted schedule &#x27;nightly-sft&#x27;. The 2 runs it started stay." in body
        assert 'href="/schedules/' + str(schedule.pk) not in body
        assert browser_client.get(f"/schedules/{schedule.pk}/").status_code == 404

        fired = history["fired"]
        run_page = browser_client.get(f"/runs/{fired.number}/").content.decode()
        assert (
            "Started by schedule nightly-sft, window 2026-12-05 02:00 Europe/Paris (the schedule has since "
            "been deleted)."
        ) in run_page
        manual_page = browser_client.get(f"/runs/{history['manual'].number}/").content.decode()
        assert f"window {history['manual_label']} (run now) (the schedule has since been deleted)" in manual_page
        listing = browser_client.get("/runs/").content.decode()
        assert listing.count('data-testid="run-schedule"') == 2
        assert "schedule nightly-sft, window 2026-12-05 02:00 Europe/Paris</span>" in listing
        assert f'href="/schedules/{schedule.pk}/"' not in listing  # no link to a schedule that is gone

    def test_viewers_cannot_delete_and_other_teams_get_404(self, schedule, viewer, bob):
        client = Client()
        client.force_login(viewer)
        assert 'data-testid="schedule-delete"' not in client.get(f"/schedules/{schedule.pk}/").content.decode()
        assert client.post(f"/schedules/{schedule.pk}/delete/").status_code == 403
        other = Client()
        other.force_login(bob)
        assert other.post(f"/schedules/{schedule.pk}/delete/").status_code == 404
        assert Schedule.objects.filter(pk=schedule.pk).exists()
        assert not AuditEvent.objects.filter(action="schedule.deleted").exists()

    def test_a_member_may_delete(self, schedule, team):
        from refinery.teams.models import Membership
        from refinery.teams.services import membership_add, user_create

        member = user_create(username="mia", password="pw-mia-12345")
        membership_add(team=team, user=member, role=Membership.Role.MEMBER)
        client = Client()
        client.force_login(member)
        assert client.post(f"/schedules/{schedule.pk}/delete/").status_code == 302
        assert not Schedule.objects.filter(pk=schedule.pk).exists()


@pytest.mark.django_db
class TestApi:
    def test_delete_is_204_then_404_and_the_runs_stay(self, alice, team, schedule, history):
        api = api_for(alice, team)
        response = api.delete(f"/api/v1/schedules/{schedule.pk}")
        assert response.status_code == 204 and response.content == b""
        assert not Schedule.objects.filter(pk=schedule.pk).exists()
        assert api.delete(f"/api/v1/schedules/{schedule.pk}").status_code == 404
        assert api.get(f"/api/v1/schedules/{schedule.pk}").status_code == 404
        numbers = {history["fired"].number, history["manual"].number}
        runs = {r["number"] for r in api.get("/api/v1/runs").json()}
        assert numbers <= runs
        labels = list(Run.objects.filter(team=team, number__in=numbers).values_list("schedule_label", flat=True))
        assert len(labels) == 2 and all(label.startswith("schedule nightly-sft, window ") for label in labels)
        assert api.delete(f"/api/v1/schedules/{2**70}").status_code == 404

    def test_other_teams_404_viewers_and_read_tokens_403(self, alice, bob, team, schedule, viewer):
        assert api_for(bob, bob.teams.get()).delete(f"/api/v1/schedules/{schedule.pk}").status_code == 404
        response = api_for(viewer, team).delete(f"/api/v1/schedules/{schedule.pk}")
        assert response.status_code == 403 and "viewers cannot change" in response.json()["detail"]
        response = api_for(alice, team, scope="read").delete(f"/api/v1/schedules/{schedule.pk}")
        assert response.status_code == 403 and "read-only" in response.json()["detail"]
        assert Schedule.objects.filter(pk=schedule.pk).exists()
        assert not AuditEvent.objects.filter(action="schedule.deleted").exists()
