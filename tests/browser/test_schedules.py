"""Schedules as a browser shows them: create one in the form, see its next fires, run it now, read the tick
history and the run's "started by schedule" line (screenshots in test-results/screenshots/schedule-*.png)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from refinery.runs.models import Run, Status
from refinery.schedules.models import Schedule, ScheduleTick, TickOutcome
from refinery.schedules.services import schedule_tick_all
from refinery.teams.services import user_create
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory

from .test_csp import watched  # noqa: F401 - the CSP-enforcing page fixture
from .test_golden_path import login


def test_create_a_schedule_run_it_now_and_read_its_history(
    page, screenshot, live_server, transactional_db, sent_stages
):
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    data = DatasetVersionFactory(dataset__team=team, dataset__name="support-tickets")
    DatasetVersionFactory(dataset=data.dataset)
    PipelineFactory(
        team=team,
        name="support-sft",
        base_model=BaseModelFactory(team=team, name="tiny"),
        created_by=user,
        stages=[
            {
                "name": "sft",
                "method": "sft",
                "config": {"max_steps": 4},
                "adapter": {"type": "none"},
                "dataset_id": data.dataset_id,
                "input": "base",
            }
        ],
    )
    login(page, live_server)

    page.goto(f"{live_server.url}/schedules/")
    page.click("text=New schedule")
    page.select_option("#id_pipeline", label="support-sft (v1)")
    page.click("text=Continue")
    page.fill("#id_name", "nightly-sft")
    page.select_option("#id_trigger", "cron")
    page.fill("#id_cron", "0 2 * * *")
    page.fill("#id_timezone", "Europe/Paris")
    page.select_option("#id_overlap", "queue")
    screenshot("schedule-form")
    page.click("[data-testid=schedule-save]")
    schedule = Schedule.objects.get()
    page.wait_for_url(f"{live_server.url}/schedules/{schedule.pk}/")
    fires = page.locator("[data-testid=schedule-next-fires] li").all_inner_texts()
    assert len(fires) == 3 and all(f.endswith("02:00 Europe/Paris") for f in fires)

    page.click("[data-testid=schedule-run-now]")
    page.wait_for_selector("[data-testid=schedule-ticks]")
    run = Run.objects.get()
    # The beat's passes: a window while the run is queued is queued (the policy); another one is skipped.
    Schedule.objects.filter(pk=schedule.pk).update(
        trigger="interval", interval_seconds=3600, created_at=timezone.now() - timedelta(hours=2, minutes=1)
    )
    schedule_tick_all(timezone.now() - timedelta(hours=1))
    schedule_tick_all(timezone.now())
    assert list(schedule.ticks.order_by("window").values_list("outcome", flat=True)) == [
        TickOutcome.QUEUED,
        TickOutcome.SKIPPED,
        TickOutcome.FIRED,
    ]
    page.reload()
    assert page.locator("[data-testid=schedule-ticks] tbody tr").count() == 3
    assert "already waiting" in page.locator("[data-testid=schedule-ticks]").inner_text()
    screenshot("schedule-detail")

    page.goto(f"{live_server.url}/runs/{run.number}/")
    line = page.locator("[data-testid=run-schedule]").inner_text()
    assert line.startswith("Started by schedule nightly-sft, window ") and line.endswith("Europe/Paris (run now).")
    screenshot("schedule-run-page")
    Run.objects.filter(pk=run.pk).update(status=Status.SUCCEEDED)
    page.goto(f"{live_server.url}/runs/")
    assert page.locator("[data-testid=run-schedule]").first.inner_text() == "schedule nightly-sft"
    screenshot("schedule-runs-list")

    page.click("text=Schedules")
    page.wait_for_url(f"{live_server.url}/schedules/")
    assert "nightly-sft" in page.locator("[data-testid=schedule-list]").inner_text()
    screenshot("schedule-list")
    page.goto(f"{live_server.url}/schedules/{schedule.pk}/")
    page.click("[data-testid=schedule-pause]")
    page.wait_for_selector("[data-testid=schedule-resume]")
    assert ScheduleTick.objects.count() == 3


def test_schedule_pages_work_under_the_csp(watched, live_server, transactional_db, sent_stages):
    """The schedule pages and their buttons with the Content Security Policy enforced: no violation, no
    console error, nothing fetched from another host."""
    page = watched
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    data = DatasetVersionFactory(dataset__team=team, dataset__name="sums")
    pipeline = PipelineFactory(
        team=team,
        name="adder",
        base_model=BaseModelFactory(team=team, name="tiny"),
        created_by=user,
        stages=[
            {
                "name": "sft",
                "method": "sft",
                "config": {"max_steps": 4},
                "adapter": {"type": "none"},
                "dataset_id": data.dataset_id,
                "input": "base",
            }
        ],
    )
    login(page, live_server)
    for path in ("/schedules/", "/schedules/new/", f"/schedules/new/?pipeline={pipeline.pk}"):
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200 and "script-src 'self' 'nonce-" in response.headers["content-security-policy"]
        page.check_clean(path)
    page.fill("#id_name", "hourly")
    page.fill("#id_interval_seconds", "3600")
    page.click("[data-testid=schedule-save]")
    schedule = Schedule.objects.get()
    page.wait_for_url(f"{live_server.url}/schedules/{schedule.pk}/")
    page.check_clean("schedule page")
    page.click("[data-testid=schedule-run-now]")
    page.wait_for_selector("[data-testid=schedule-ticks]")
    page.click("[data-testid=schedule-pause]")
    page.wait_for_selector("[data-testid=schedule-resume]")
    page.check_clean("schedule page after its buttons")
    page.goto(f"{live_server.url}/schedules/{schedule.pk}/edit/")
    page.check_clean("edit form")
    assert schedule.ticks.get().run is not None


def test_a_schedule_with_its_own_promotion_gate(page, screenshot, live_server, transactional_db, sent_stages):
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    data = DatasetVersionFactory(dataset__team=team, dataset__name="support-tickets")
    DatasetVersionFactory(dataset__team=team, dataset__name="support-held-out")
    PipelineFactory(
        team=team,
        name="support-sft",
        base_model=BaseModelFactory(team=team, name="tiny"),
        created_by=user,
        stages=[
            {
                "name": "sft",
                "method": "sft",
                "config": {"max_steps": 4},
                "adapter": {"type": "none"},
                "dataset_id": data.dataset_id,
                "input": "base",
            }
        ],
    )
    login(page, live_server)
    page.goto(f"{live_server.url}/schedules/new/")
    page.select_option("#id_pipeline", label="support-sft (v1)")
    page.click("text=Continue")
    page.fill("#id_name", "nightly-gated")
    page.check("[data-testid=gate-enabled]")
    page.select_option("#id_gate_dataset_id", label="support-held-out (prompt / completion)")
    page.fill("#id_gate_registered_model", "Support Bot")  # refused: not a registry name
    page.fill("#id_gate_min_gain", "0.01")
    page.click("[data-testid=schedule-save]")
    errors = page.locator("[data-testid=schedule-errors]").inner_text()
    assert "gate.config.registered_model" in errors and "lowercase letters" in errors
    assert page.locator("[data-testid=gate-enabled]").is_checked()  # what was typed is kept
    page.fill("#id_gate_registered_model", "support-bot")
    screenshot("schedule-gate-form")
    page.click("[data-testid=schedule-save]")
    schedule = Schedule.objects.get()
    page.wait_for_url(f"{live_server.url}/schedules/{schedule.pk}/")
    summary = page.locator("[data-testid=schedule-gate-summary]").inner_text()
    assert "sft → support-bot@production" in summary and "≥ 0.01" in summary
    screenshot("schedule-gate-detail")
    page.click("[data-testid=schedule-run-now]")
    page.wait_for_selector("[data-testid=schedule-ticks]")
    run = Run.objects.get()
    assert [s.name for s in run.stages.order_by("index")] == ["sft", "gate"]
