"""The quota page, the storage line on the datasets list, and a stage waiting for its team's slot, as a
browser shows them (screenshots in test-results/screenshots/quota-*.png)."""

from __future__ import annotations

from refinery.runs.services import run_create, stage_claim
from refinery.teams.quotas import team_quota_set
from refinery.teams.services import user_create
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory

from .test_golden_path import login


def test_quota_page_storage_line_and_a_waiting_stage(page, screenshot, live_server, transactional_db, sent_stages):
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    data = DatasetVersionFactory(dataset__team=team, dataset__name="sums")
    pipeline = PipelineFactory(
        team=team,
        name="adder",
        base_model=BaseModelFactory(team=team, name="tiny"),
        created_by=user,
        seed=5,
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
    team_quota_set(team=team, running_stages=1, queued_runs=10, stage_seconds=7200, storage_bytes=50 * 1024**3)
    first = run_create(pipeline=pipeline, user=user)
    second = run_create(pipeline=pipeline, user=user)
    stage_claim(stage_run_id=first.stages.get().pk, worker="w1")
    assert stage_claim(stage_run_id=second.stages.get().pk, worker="w2") is None  # the team is at its limit
    login(page, live_server)

    page.goto(f"{live_server.url}/teams/quota/")
    rows = page.locator("[data-testid=quota-table] tbody tr")
    assert rows.count() == 4
    assert page.locator("[data-testid=quota-running_stages]").inner_text().split("\t")[1:3] == ["1", "1"]
    assert page.locator("[data-testid=quota-queued_runs]").inner_text().split("\t")[1:3] == ["2", "10"]
    assert "2h" in page.locator("[data-testid=quota-stage_seconds]").inner_text()
    screenshot("quota-page")

    page.goto(f"{live_server.url}/datasets/")
    assert "of 50 GiB" in page.locator("[data-testid=storage-usage]").inner_text()
    page.click("[data-testid=storage-usage]")
    page.wait_for_url(f"{live_server.url}/teams/quota/")
    page.goto(f"{live_server.url}/datasets/")
    screenshot("quota-datasets-list")

    page.goto(f"{live_server.url}/runs/{second.number}/")
    assert page.locator("[data-testid=stage-error]").inner_text() == "waiting: team at its limit of 1 running stage"
    screenshot("quota-waiting-stage")
