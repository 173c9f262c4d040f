"""Deleting a schedule in a real browser, under the enforced Content Security Policy: dismissing the confirmation
keeps it, accepting it deletes it; the run it started still says which schedule and window started it, on the
run page and in the runs list (screenshots in test-results/screenshots/schedule-delete-*.png)."""

from __future__ import annotations

import pytest

from refinery.runs.models import Run
from refinery.schedules.models import Schedule
from refinery.schedules.services import schedule_create, schedule_run_now
from refinery.teams.services import user_create
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory

from .conftest import SCREENSHOTS
from .test_golden_path import login

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_a_member_deletes_a_schedule_and_its_run_keeps_the_label(csp_page, live_server, transactional_db, sent_stages):
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    data = DatasetVersionFactory(dataset__team=team, dataset__name="support-tickets")
    pipeline = PipelineFactory(
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
    schedule = schedule_create(
        team=team,
        user=user,
        name="nightly-sft",
        pipeline_id=pipeline.pk,
        trigger="cron",
        cron="0 2 * * *",
        timezone="Europe/Paris",
    )
    tick = schedule_run_now(schedule=schedule, user=user)
    label = f"schedule nightly-sft, window {tick.window_label} (run now)"
    page = csp_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def screenshot(name: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    login(page, live_server)
    page.goto(f"{live_server.url}/schedules/{schedule.pk}/")
    button = page.locator("[data-testid=schedule-delete]")
    assert button.is_visible()
    screenshot("schedule-delete-button")

    page.once("dialog", lambda dialog: dialog.dismiss())
    button.click()
    assert page.url.endswith(f"/schedules/{schedule.pk}/")
    assert Schedule.objects.filter(pk=schedule.pk).exists()

    messages: list[str] = []

    def accept(dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    button.click()
    page.wait_for_url(f"{live_server.url}/schedules/")
    assert messages and messages[0].startswith("Delete schedule nightly-sft and its tick history?")
    assert "Deleted schedule 'nightly-sft'. The run it started stays." in page.inner_text("body")
    assert not Schedule.objects.filter(pk=schedule.pk).exists()
    screenshot("schedule-delete-done")

    run = Run.objects.get()
    page.goto(f"{live_server.url}/runs/{run.number}/")
    assert page.inner_text("[data-testid=run-schedule]") == (
        f"Started by {label} (the schedule has since been deleted)."
    )
    screenshot("schedule-delete-run-page")
    page.goto(f"{live_server.url}/runs/")
    assert page.inner_text("[data-testid=run-schedule]") == label
    screenshot("schedule-delete-runs-list")
