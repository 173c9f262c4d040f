"""Issue 5 in a real browser: start from the "3 LoRA SFTs -> soup -> evaluate" template, pick the merge's
inputs in the editor, see the graph, run it through a real worker while the graph's stage colours follow the
run, read the evaluation on the run page, then the team's learning-vs-forgetting scatter."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from refinery.basemodels.services import base_model_create
from refinery.data.services import dataset_version_create
from refinery.teams.services import user_create

from .test_golden_path import login

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _upload(team, user, name, kind, path):
    data = Path(path).read_bytes()
    return dataset_version_create(
        team=team, user=user, name=name, kind=kind, filename=Path(path).name, chunks=iter([data])
    ).version.dataset


def test_template_graph_run_evaluation_and_forgetting(
    page, screenshot, live_server, celery_worker_process, demo_kit, transactional_db
):
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    _upload(team, user, "sums-eval", "prompt_completion", demo_kit["data"]["eval"])  # retention set
    _upload(team, user, "sums", "prompt_completion", demo_kit["data"]["train"])
    _upload(team, user, "sums-reference", "reference", demo_kit["data"]["reference"])
    base_model_create(team=team, user=user, name="tiny", source="local", name_or_path=demo_kit["model"])
    login(page, live_server)

    page.goto(f"{live_server.url}/pipelines/new/")
    page.click("[data-testid=presets] >> text=3 LoRA SFTs → soup → evaluate")
    page.wait_for_url("**/pipelines/new/?template=lora-soup")
    page.fill("input[name=name]", "soup-demo")
    page.select_option("select[name=base_model_id]", label="tiny · " + demo_kit["model"])
    page.select_option("select[name=retention_dataset_id]", label="sums-eval (prompt / completion)")
    for i in range(3):  # short branches for the test
        page.fill(f"input[name=stages-{i}-config-max_steps]", "12")
    # The merge stage's inputs are a multi-select pre-filled with the three branches; keep the first two.
    assert page.eval_on_selector("select[name=stages-3-inputs]", "s => [...s.selectedOptions].map(o => o.value)") == [
        "@0",
        "@1",
        "@2",
    ]
    page.select_option("select[name=stages-3-inputs]", ["@0", "@1"])
    page.click("#stage-4 summary:has-text('Generation')")  # a folded settings group
    page.fill("input[name=stages-4-config-max_new_tokens]", "4")
    screenshot("20-pipeline-template")
    page.click("button:has-text('Create pipeline')")
    page.wait_for_url(f"{live_server.url}/pipelines/*/")
    graph = page.locator("[data-testid=pipeline-graph]")
    for name in ("base", "lora-a", "lora-b", "lora-c", "soup", "evaluate", "evaluate-lora-c"):
        assert graph.locator(f"[data-stage='{name}']").count() == 1, name
    assert graph.locator("[data-edge='lora-b->soup']").count() == 1
    assert graph.locator("[data-edge='lora-c->soup']").count() == 0
    screenshot("21-pipeline-graph")

    page.click("[data-testid=start-run]")
    page.wait_for_url(f"{live_server.url}/runs/*/")
    seen: set[tuple[str, str]] = set()
    deadline, status = time.monotonic() + 360, ""
    while time.monotonic() < deadline:
        status = page.get_attribute("#run-live", "data-status")
        for node in page.locator("[data-testid=pipeline-graph] [data-stage]").all():
            seen.add((node.get_attribute("data-stage"), node.get_attribute("data-status")))
        if ("lora-a", "running") in seen and len([s for s in seen if s[1] == "running"]) == 1:
            screenshot("22-run-graph-live")
        if status in ("succeeded", "failed", "canceled"):
            break
        page.wait_for_timeout(700)
    assert status == "succeeded", page.inner_text("#run-live")[:3000]
    # The live graph showed the stages move: pending stages, then each one running, then succeeded.
    assert {("soup", "pending"), ("soup", "succeeded"), ("evaluate", "succeeded")} <= seen, sorted(seen)
    assert any(s == ("lora-a", "running") or s == ("lora-b", "running") for s in seen), sorted(seen)
    card = page.locator("[data-testid=evaluation-evaluate]")
    assert "accuracy" in card.inner_text() or "exact_match" in card.inner_text()
    assert page.locator("[data-testid=evaluation-evaluate] [data-testid=eval-retention]").count() == 1
    assert page.locator("[data-testid=evaluation-evaluate-lora-c]").count() == 1  # the automatic one
    screenshot("23-run-evaluation")

    page.goto(f"{live_server.url}/runs/forgetting/")
    assert page.locator("[data-testid=forgetting-scatter] circle").count() == 1
    screenshot("24-learning-vs-forgetting")
