"""A pipeline graph through real workers: two SFT branches run at the same time on two Celery workers,
a merge stage combines their outputs (downloaded from MLflow), and an evaluate stage measures the merged
model against the base on held-out data and a retention set, with its report in MLflow."""

from __future__ import annotations

import json
import os
import time

import pytest

from refinery.runs.models import Run, Status
from refinery.runs.services import run_create
from refinery.tracking.client import artifact_list, artifacts_download, tracking_client
from tests.conftest import start_celery_worker
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def second_worker(celery_worker_process, tmp_path_factory):
    worker = start_celery_worker(
        f"pytest-second-{os.getpid()}", env=celery_worker_process.env, root=tmp_path_factory.mktemp("worker2")
    )
    yield worker
    worker.stop(grace=15)


def test_two_branches_merge_and_evaluate_on_two_workers(
    celery_worker_process, second_worker, mlflow_server, demo_pipeline, tmp_path
):
    pipeline = demo_pipeline(
        {
            "name": "lora-a",
            "adapter": {"type": "lora", "r": 8, "alpha": 16},
            "config": {"learning_rate": 1e-2, "max_steps": 40},
        },
        {"name": "full-b", "config": {"max_steps": 40}, "eval_data": "eval"},
        {
            "name": "soup",
            "method": "merge",
            "inputs": ["lora-a", "full-b"],
            "config": {"merge_method": "linear", "weights": "0.5, 0.5"},
        },
        {
            "name": "check",
            "method": "evaluate",
            "input": "soup",
            "data": "reference",
            "config": {"max_new_tokens": 4, "sample_count": 3},
        },
        retention="eval",
        auto_evaluate=True,
        name="two-branch-soup",
    )
    started = time.monotonic()
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    # The evaluate stage measures the soup, so automatic evaluation adds nothing; both branches start at once.
    assert [s.name for s in run.stages.order_by("index")] == ["lora-a", "full-b", "soup", "check"]
    assert [s.status for s in run.stages.order_by("index")] == ["queued", "queued", "pending", "pending"]

    wait_until(
        lambda: Run.objects.get(pk=run.pk).is_finished,
        timeout=480,
        interval=0.5,
        message=lambda: (
            f"run still {Run.objects.get(pk=run.pk).status}; worker logs:\n"
            f"{celery_worker_process.log_tail(40)}\n---\n{second_worker.log_tail(40)}"
        ),
    )
    run.refresh_from_db()
    stages = {s.name: s for s in run.stages.all()}
    assert run.status == Status.SUCCEEDED, {n: (s.status, s.error, s.log_tail[-1500:]) for n, s in stages.items()}
    a, b, soup, check = (stages[n] for n in ("lora-a", "full-b", "soup", "check"))
    overlap = (min(a.finished_at, b.finished_at) - max(a.started_at, b.started_at)).total_seconds()
    print(
        f"\n[measure] graph run {time.monotonic() - started:.1f}s; branches on {a.worker} and {b.worker} "
        f"overlapped {overlap:.1f}s (lora-a {a.duration.total_seconds():.1f}s, full-b "
        f"{b.duration.total_seconds():.1f}s), merge {soup.duration.total_seconds():.1f}s, "
        f"evaluate {check.duration.total_seconds():.1f}s"
    )
    assert a.worker != b.worker and overlap > 0, "the two branches did not run at the same time"
    assert soup.started_at >= max(a.finished_at, b.finished_at) and check.started_at >= soup.finished_at

    # The merge consumed both branches' outputs from MLflow and published a full model.
    assert soup.outputs["kind"] == "model"
    assert {"config.json", "model.safetensors"} <= {
        p.rsplit("/", 1)[-1] for p in artifact_list(mlflow_run_id=soup.mlflow_run_id, path="model")
    }
    params = tracking_client().get_run(soup.mlflow_run_id).data.params
    assert params["inputs.lora-a.kind"] == "adapter" and params["inputs.full-b.kind"] == "model"

    # The evaluation: target (reference data, accuracy of generated answers) and retention (held-out loss),
    # both against the base model, a report in MLflow that agrees with the summary, and sample generations.
    summary = check.summary
    assert summary["target"]["metric"] in ("accuracy", "exact_match") and summary["target"]["higher_is_better"]
    assert summary["retention"]["metric"] == "loss" and summary["retention"]["higher_is_better"] is False
    # The base model is random: the trained soup predicts held-out sums far better than it.
    assert summary["retention"]["forgetting"] < 0, summary["retention"]
    assert len(summary["samples"]) == 3 and all(s["prompt"].endswith("=") for s in summary["samples"])
    report_dir = artifacts_download(mlflow_run_id=check.mlflow_run_id, artifact_path="report", dst=tmp_path)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["target"] == summary["target"] and report["retention"] == summary["retention"]
    assert report["datasets"]["retention"]["sha256"] == run.snapshot["retention_data"]["sha256"]
    generations = json.loads((report_dir / "generations.json").read_text())
    assert generations["columns"][:2] == ["prompt", "model"] and len(generations["data"]) == 3
    metrics = tracking_client().get_run(check.mlflow_run_id).data.metrics
    assert metrics["retention/loss"] == pytest.approx(summary["retention"]["model"])


def test_sft_then_export_publishes_a_model_card_and_an_int8_copy(
    celery_worker_process, mlflow_server, demo_pipeline, tmp_path
):
    pipeline = demo_pipeline(
        {"name": "sft", "adapter": {"type": "lora", "r": 8, "alpha": 16}, "config": {"learning_rate": 1e-2}},
        {
            "name": "ship",
            "method": "export",
            "input": "sft",
            "data": "eval",
            "config": {"quantization": "int8_dynamic", "max_rows": 20},
        },
        name="sft-export",
    )
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    wait_until(
        lambda: Run.objects.get(pk=run.pk).is_finished,
        timeout=300,
        interval=0.5,
        message=lambda: f"run still {Run.objects.get(pk=run.pk).status}:\n{celery_worker_process.log_tail(40)}",
    )
    run.refresh_from_db()
    sft, ship = run.stages.order_by("index")
    assert run.status == Status.SUCCEEDED, (ship.error, ship.log_tail[-2000:])
    # The adapter was merged into a standalone model; the int8 copy went up as a second artifact.
    assert ship.outputs["kind"] == "model" and ship.outputs["extra"] == ["quantized"]
    files = {p.rsplit("/", 1)[-1] for p in artifact_list(mlflow_run_id=ship.mlflow_run_id, path="model")}
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= files
    assert "adapter_config.json" not in files
    assert artifact_list(mlflow_run_id=ship.mlflow_run_id, path="quantized")
    summary = ship.summary
    assert 0 < summary["quantized_size_bytes"] < summary["size_bytes"]
    assert summary["eval"]["metric"] == "loss" and summary["eval"]["before"] > 0 and summary["eval"]["after"] > 0
    # The model card names the run, the data by hash and the stage that trained it, with its metrics.
    card_dir = artifacts_download(mlflow_run_id=ship.mlflow_run_id, artifact_path="model", dst=tmp_path)
    card = (card_dir / "README.md").read_text()
    train = sft.spec["train_data"]
    assert f"#{run.number}" in card and train["sha256"] in card and "sft" in card and "lora" in card
    assert "train/loss" in card or "train_loss" in card
