"""A new user's first session, in a real browser against real services:
log in, upload a dataset, register the model, compose a two-stage pipeline, start it,
watch the loss chart grow while a real Celery worker trains, and see it succeed."""

from __future__ import annotations

import time

import pytest

from refinery.teams.services import user_create

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def login(page, live_server, username="ada", password="pw-ada-12345"):
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/runs/")


def test_upload_compose_run_and_watch(page, screenshot, live_server, celery_worker_process, demo_kit, transactional_db):
    user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    page.goto(f"{live_server.url}/runs/")
    assert "/login/" in page.url
    screenshot("01-login")
    login(page, live_server)
    screenshot("02-runs-empty")

    # Upload a dataset with the progress bar form.
    page.goto(f"{live_server.url}/datasets/upload/")
    page.fill("input[name=name]", "addition")
    page.select_option("select[name=kind]", "prompt_completion")
    page.set_input_files("input[name=file]", demo_kit["data"]["train"])
    page.click("button:has-text('Validate and upload')")
    page.wait_for_url(f"{live_server.url}/datasets/*/")
    assert page.inner_text("[data-testid=row-count]").strip() == "80"
    assert "prompt" in page.inner_text("[data-testid=preview-table]")
    screenshot("03-dataset")

    # A bad upload shows its problems by line and stores nothing.
    bad = demo_kit["dir"] + "/bad.jsonl"
    with open(bad, "w") as fh:
        fh.write('{"prompt": "1+1=", "completion": "2"}\n{"prompt": "1+2="}\nnot json\n')
    page.goto(f"{live_server.url}/datasets/upload/")
    page.fill("input[name=name]", "broken")
    page.set_input_files("input[name=file]", bad)
    page.click("button:has-text('Validate and upload')")
    page.wait_for_selector("[data-testid=upload-result] .form-errors")
    errors = page.inner_text("[data-testid=upload-result]")
    assert "2 problems found; nothing was stored" in errors and "completion" in errors and "invalid JSON" in errors
    screenshot("04-upload-errors")

    # Register the demo model.
    page.goto(f"{live_server.url}/models/new/")
    page.fill("input[name=name]", "tiny")
    page.select_option("select[name=source]", "local")
    page.fill("input[name=name_or_path]", demo_kit["model"])
    page.click("button:has-text('Register')")
    page.wait_for_url(f"{live_server.url}/models/")
    assert "LlamaForCausalLM" in page.content()

    # Compose: full SFT, then LoRA on its output (the second stage added with htmx).
    page.goto(f"{live_server.url}/pipelines/new/")
    page.fill("input[name=name]", "addition-two-stage")
    page.select_option("select[name=base_model_id]", label="tiny · " + demo_kit["model"])
    page.fill("input[name=stages-0-name]", "full")
    page.select_option("select[name=stages-0-dataset_id]", label="addition (prompt / completion)")
    page.select_option("select[name=stages-0-adapter-type]", "none")
    page.fill("input[name=stages-0-config-num_train_epochs]", "60")
    page.click("[data-testid=add-stage]")
    page.wait_for_selector("#stage-1")
    # Choosing another method swaps in that method's fields (htmx), and back.
    page.select_option("select[name=stages-1-method]", "dpo")
    page.wait_for_selector("select[name=stages-1-config-loss_type]", state="attached")
    assert page.locator("input[name=stages-1-config-packing]").count() == 0
    page.select_option("select[name=stages-1-method]", "sft")
    page.wait_for_selector("input[name=stages-1-config-packing]", state="attached")
    page.fill("input[name=stages-1-name]", "lora")
    page.select_option("select[name=stages-1-dataset_id]", label="addition (prompt / completion)")
    assert page.input_value("select[name=stages-1-input]") == "@0"
    page.fill("input[name=stages-1-config-num_train_epochs]", "10")
    screenshot("05-pipeline-editor")
    page.click("button:has-text('Create pipeline')")
    page.wait_for_url(f"{live_server.url}/pipelines/*/")
    screenshot("06-pipeline")

    # Start it and watch the chart grow while it trains.
    page.click("[data-testid=start-run]")
    page.wait_for_url(f"{live_server.url}/runs/*/")
    seen_points: list[int] = []
    deadline = time.monotonic() + 240
    status = ""
    while time.monotonic() < deadline:
        status = page.get_attribute("#run-live", "data-status")
        points = int(page.get_attribute("[data-testid=loss-chart]", "data-points") or 0)
        if not seen_points or points != seen_points[-1]:
            seen_points.append(points)
            if len(seen_points) == 3:
                screenshot("07-run-live")
        if status in ("succeeded", "failed", "canceled"):
            break
        page.wait_for_timeout(500)
    assert status == "succeeded", page.inner_text("#run-live")
    growing = [p for p in seen_points if p > 0]
    assert len(growing) >= 2 and growing == sorted(growing), seen_points  # it grew while training
    # The chart is drawn by uPlot (a canvas), not just data in the page.
    page.wait_for_selector("[data-testid=loss-chart] canvas")
    assert page.get_attribute("#run-live", "data-finished") == "1"  # polling stopped
    assert page.locator("[data-testid=cancel-run]").count() == 0  # the header followed the run's end
    assert "Open in MLflow" not in page.content()  # MLflow stays private; artifacts are proxied
    assert "300/300" in page.inner_text("[data-testid=stage-full]")
    screenshot("08-run-succeeded")

    page.goto(f"{live_server.url}/runs/")
    assert "succeeded" in page.inner_text("#run-rows").lower()
    screenshot("09-runs-list")
