"""Scheduled retraining with a promotion gate, in a real browser, through a real worker and MLflow: compose
"SFT -> promotion gate" from its template (approval required), schedule it, fire it with "Run now", read the
gate's decision on the run page, approve the candidate, and see production move in the registry, with the
gate's reasons in the alias history (screenshots: test-results/screenshots/gate-*.png)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from refinery.basemodels.services import base_model_create
from refinery.data.services import dataset_version_create
from refinery.registry.models import GateDecision
from refinery.runs.models import Run
from refinery.schedules.models import Schedule
from refinery.teams.services import user_create
from refinery.tracking.client import tracking_client

from .test_golden_path import login

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _upload(team, user, name, kind, path):
    data = Path(path).read_bytes()
    return dataset_version_create(
        team=team, user=user, name=name, kind=kind, filename=Path(path).name, chunks=iter([data])
    ).version.dataset


def test_schedule_fires_a_gated_run_and_an_owner_approves_its_candidate(
    page, screenshot, live_server, celery_worker_process, mlflow_server, demo_kit, transactional_db
):
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    _upload(team, user, "sums-held-out", "prompt_completion", demo_kit["data"]["eval"])
    _upload(team, user, "sums", "prompt_completion", demo_kit["data"]["train"])  # the newest: the template's pick
    base_model_create(team=team, user=user, name="tiny", source="local", name_or_path=demo_kit["model"])
    login(page, live_server)

    page.goto(f"{live_server.url}/pipelines/new/")
    page.click("[data-testid=presets] >> text=SFT → promotion gate")
    page.wait_for_url("**/pipelines/new/?template=sft-gate")
    page.fill("input[name=name]", "nightly-adder")
    page.select_option("select[name=base_model_id]", label="tiny · " + demo_kit["model"])
    page.select_option("select[name=retention_dataset_id]", label="sums (prompt / completion)")
    page.fill("input[name=stages-0-config-max_steps]", "16")
    page.select_option("select[name=stages-1-dataset_id]", label="sums-held-out (prompt / completion)")
    page.fill("input[name=stages-1-config-registered_model]", "adder")
    page.fill("input[name=stages-1-config-max_forgetting]", "0.5")
    page.check("input[type=checkbox][name=stages-1-config-require_approval]")
    screenshot("gate-1-pipeline-form")
    page.click("button:has-text('Create pipeline')")
    page.wait_for_url(f"{live_server.url}/pipelines/*/")
    graph = page.locator("[data-testid=pipeline-graph]")
    assert graph.locator("[data-stage='gate']").count() == 1 and graph.locator("[data-edge='sft->gate']").count() == 1
    screenshot("gate-2-pipeline-graph")

    page.goto(f"{live_server.url}/schedules/new/")
    page.select_option("#id_pipeline", label="nightly-adder (v1)")
    page.click("text=Continue")
    page.fill("#id_name", "nightly-adder")
    page.select_option("#id_trigger", "cron")
    page.fill("#id_cron", "0 2 * * *")
    page.fill("#id_timezone", "Europe/Paris")
    page.click("[data-testid=schedule-save]")
    schedule = Schedule.objects.get()
    page.wait_for_url(f"{live_server.url}/schedules/{schedule.pk}/")
    page.click("[data-testid=schedule-run-now]")
    page.wait_for_selector("[data-testid=schedule-ticks]")
    assert "fired" in page.locator("[data-testid=schedule-ticks]").inner_text().lower()
    run = Run.objects.get()
    page.click(f"[data-testid=schedule-ticks] >> text=#{run.number}")
    page.wait_for_url(f"{live_server.url}/runs/{run.number}/")
    assert "nightly-adder" in page.locator("[data-testid=run-schedule]").inner_text()

    deadline, status = time.monotonic() + 300, ""
    while time.monotonic() < deadline:
        status = page.get_attribute("#run-live", "data-status")
        if status in ("succeeded", "failed", "canceled"):
            break
        page.wait_for_timeout(700)
    assert status == "succeeded", page.inner_text("#run-live")[:3000]
    card = page.locator("[data-testid=gate-gate]")
    assert card.get_attribute("data-outcome") == "awaiting_approval"
    verdict = card.locator("[data-testid=gate-decision]").inner_text()
    assert "Awaiting approval" in verdict and "v1 awaits approval for production (holder: none)" in verdict
    assert card.locator("[data-testid=gate-checks] tr.check-pass").count() >= 1
    screenshot("gate-3-awaiting-approval")
    page.goto(f"{live_server.url}/registry/adder/")
    assert "v1 awaits approval" in page.locator("[data-testid=awaiting-approval]").inner_text()
    screenshot("gate-3b-registry-awaiting")
    page.click("[data-testid=awaiting-approval] >> text=run #1, gate gate")
    page.wait_for_url(f"{live_server.url}/runs/{run.number}/#gate-gate")

    page.click("[data-testid=gate-approve]")
    page.wait_for_selector("[data-testid=gate-gate][data-outcome=approved]")
    assert "approved by ada: promoted v1 to production" in card.locator("[data-testid=gate-decision]").inner_text()
    screenshot("gate-4-approved")
    decision = GateDecision.objects.get()
    assert decision.outcome == "approved" and decision.reviewed_by == user
    found = tracking_client().get_registered_model(decision.registered_model.mlflow_name)
    assert found.aliases == {"production": "1"}

    page.goto(f"{live_server.url}/registry/adder/")
    assert page.get_attribute("[data-testid=alias-production]", "data-version") == "1"
    assert "approved by ada" in page.locator("[data-testid=event-note]").first.inner_text()
    screenshot("gate-5-registry-history")
