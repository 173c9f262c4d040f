"""The API path a script would take, through a real Celery worker over Redis and a real
MLflow server: upload the data, register the model, create a two-stage pipeline (full SFT,
then LoRA on its output), start it, read it until it ends, look at the run page; and cancel a
run mid-training."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from refinery.runs.models import StageMetric
from refinery.teams.services import api_token_create, user_create
from refinery.tracking.client import metric_history
from tests.fixtures import ApiClient
from tests.helpers import loss_fell, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def api(transactional_db):
    user = user_create(username="scripter", password="pw-scripter-1", team_name="Scripts")
    _, key = api_token_create(user=user)
    return ApiClient(key)


def upload(api, path, name, kind):
    with open(path, "rb") as fh:
        response = api.post("/api/v1/datasets", {"name": name, "kind": kind}, files={"file": fh})
    assert response.status_code == 201, response.content
    return response.json()


def create_pipeline(api, demo_kit, name, stages):
    model = api.post(
        "/api/v1/base-models", {"name": f"tiny-{name}", "source": "local", "name_or_path": demo_kit["model"]}
    )
    assert model.status_code == 201, model.content
    response = api.post(
        "/api/v1/pipelines", {"name": name, "base_model_id": model.json()["id"], "spec": {"seed": 11, "stages": stages}}
    )
    assert response.status_code == 201, response.content
    return response.json()


def wait_for_run(api, number, until, timeout):
    def check():
        run = api.get(f"/api/v1/runs/{number}").json()
        return run if until(run) else None

    return wait_until(
        check, timeout=timeout, interval=0.3, message=lambda: str(api.get(f"/api/v1/runs/{number}").json())
    )


def test_api_upload_pipeline_run_and_page(api, demo_kit, celery_worker_process, mlflow_server):
    train = upload(api, demo_kit["data"]["train"], "addition", "prompt_completion")
    chat = upload(api, demo_kit["data"]["chat"], "addition-chat", "chat")
    pipeline = create_pipeline(
        api,
        demo_kit,
        "api-two-stage",
        [
            {
                "name": "full",
                "method": "sft",
                "dataset_id": train["dataset_id"],
                "adapter": {"type": "none"},
                "config": {"num_train_epochs": 4},
            },
            {
                "name": "lora",
                "method": "sft",
                "dataset_id": chat["dataset_id"],
                "input": "full",
                "adapter": {"type": "lora", "r": 8},
                "config": {"num_train_epochs": 4, "learning_rate": 0.01},
            },
        ],
    )
    run = api.post(f"/api/v1/pipelines/{pipeline['id']}/runs", {}).json()
    assert run["snapshot"]["stages"][0]["train_data"]["sha256"] == train["sha256"]

    run = wait_for_run(api, run["number"], lambda r: r["status"] in ("succeeded", "failed", "canceled"), 300)
    assert run["status"] == "succeeded", run
    full, lora = run["stages"]
    assert full["metrics"]["train/loss"]["last"] < full["metrics"]["train/loss"]["first"]
    assert full["summary"]["train/loss"] == pytest.approx(full["metrics"]["train/loss"]["last"])
    assert lora["trainable_params"] < lora["total_params"] == full["total_params"] + lora["trainable_params"]
    for stage in (full, lora):
        history = [v for _, v in metric_history(stage["mlflow_run_id"], "train/loss")]
        assert len(history) == stage["total_steps"] and loss_fell(history), (stage["name"], history)
    assert "mlflow_url" not in run  # MLflow stays private: the API hands out no MLflow address

    # The run page a teammate opens shows the finished run, both stages and the loss data.
    browser = Client()
    browser.force_login(get_user_model().objects.get(username="scripter"))
    page = browser.get(f"/runs/{run['number']}/").content.decode()
    assert 'data-status="succeeded"' in page and "data-finished" in page
    assert "full" in page and "lora" in page and "Open in MLflow" not in page and "#/experiments" not in page
    assert "full train/loss" in page and "lora train/loss" in page  # both series in the chart data


def test_cancel_through_the_api_stops_training_within_10s(api, demo_kit, celery_worker_process, mlflow_server):
    train = upload(api, demo_kit["data"]["train"], "addition", "prompt_completion")
    pipeline = create_pipeline(
        api,
        demo_kit,
        "api-long",
        [
            {
                "name": "long",
                "method": "sft",
                "dataset_id": train["dataset_id"],
                "adapter": {"type": "none"},
                "config": {"max_steps": 100000, "save_steps": 100000},
            },
        ],
    )
    run = api.post(f"/api/v1/pipelines/{pipeline['id']}/runs", {}).json()
    wait_for_run(api, run["number"], lambda r: r["stages"][0]["step"] >= 5, 180)

    asked = time.monotonic()
    assert api.post(f"/api/v1/runs/{run['number']}/cancel").json()["status"] in ("canceling", "canceled")
    run = wait_for_run(api, run["number"], lambda r: r["status"] == "canceled", 30)
    took = time.monotonic() - asked
    print(f"\n[measure] cancel through the API and a real worker: {took:.1f}s")
    assert took < 10
    stage = run["stages"][0]
    assert stage["status"] == "canceled" and 5 <= stage["step"] < 100000
    # Partial metrics are kept, in the database and in MLflow.
    assert StageMetric.objects.filter(stage_run__run__number=run["number"], key="train/loss").count() >= 5
    wait_until(
        lambda: len(metric_history(stage["mlflow_run_id"], "train/loss")) >= 5,
        timeout=30,
        message="partial metrics in MLflow",
    )
