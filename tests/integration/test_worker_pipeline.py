"""End to end: a two-stage pipeline through a real Celery worker over Redis, a real MLflow server
and the real trainer (full SFT, then LoRA SFT on its output)."""

from __future__ import annotations

import time

import pytest

from refinery.runs.models import Run, Status
from refinery.runs.services import run_create
from refinery.tracking.client import artifact_list, metric_history, tracking_client
from tests.helpers import loss_fell, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_two_stage_pipeline_runs_through_the_worker(celery_worker_process, mlflow_server, demo_pipeline):
    pipeline = demo_pipeline(
        {"name": "sft-full", "method": "sft"},
        # then teach the chat format with a LoRA adapter on top of stage 1's model
        {
            "name": "sft-lora",
            "method": "sft",
            "input": "sft-full",
            "data": "chat",
            "adapter": {"type": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear"},
            "config": {"learning_rate": 1e-2},
        },
        name="addition-two-stages",
    )
    started = time.monotonic()
    run = run_create(pipeline=pipeline, user=pipeline.created_by)  # commits: the wake-up goes to Redis

    def finished():
        return Run.objects.get(pk=run.pk).is_finished

    wait_until(
        finished,
        timeout=300,
        interval=0.5,
        message=lambda: (
            f"run still {Run.objects.get(pk=run.pk).status}; worker log:\n{celery_worker_process.log_tail(60)}"
        ),
    )
    run.refresh_from_db()
    full, lora = run.stages.order_by("index")
    print(
        f"\n[measure] two-stage pipeline through the worker: {time.monotonic() - started:.1f}s "
        f"(stage 1 {full.duration.total_seconds():.1f}s, stage 2 {lora.duration.total_seconds():.1f}s)"
    )
    assert run.status == Status.SUCCEEDED, (run.error, full.error, lora.error, lora.log_tail)
    assert full.status == lora.status == Status.SUCCEEDED
    assert full.worker.startswith("pytest-") and full.attempt == lora.attempt == 1

    # Each stage logged a falling train/loss to its own MLflow run.
    for stage in (full, lora):
        history = metric_history(stage.mlflow_run_id, "train/loss")
        assert [s for s, _ in history] == list(range(1, 17)), stage.name
        assert loss_fell([v for _, v in history]), (stage.name, history)

    # Stage 1 produced a model, stage 2 an adapter on top of it (which it downloaded from MLflow).
    assert full.outputs["kind"] == "model"
    assert {"config.json", "model.safetensors"} <= {
        p.rsplit("/", 1)[-1] for p in artifact_list(mlflow_run_id=full.mlflow_run_id, path="model")
    }
    assert lora.outputs["kind"] == "adapter" and lora.outputs["artifact_path"] == "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.rsplit("/", 1)[-1] for p in artifact_list(mlflow_run_id=lora.mlflow_run_id, path="adapter")
    }
    assert lora.outputs["base"]["source"] == "stage" and lora.outputs["base"]["stage"] == "sft-full"
    assert lora.outputs["base"]["mlflow_run_id"] == full.mlflow_run_id
    assert lora.trainable_params < lora.total_params  # only the adapter trained

    # MLflow layout: one parent run for the pipeline run, a nested run per stage, with tags and params.
    client = tracking_client()
    parent = client.get_run(run.mlflow_run_id)
    assert parent.info.status == "FINISHED" and parent.info.experiment_id == run.mlflow_experiment_id
    assert client.get_experiment(run.mlflow_experiment_id).name.endswith(f"/{run.team.slug}")
    assert parent.data.tags["refinery.run_number"] == str(run.number)
    assert parent.data.params["pipeline"] == "addition-two-stages"
    for stage in (full, lora):
        sha = stage.spec["train_data"]["sha256"]
        nested = client.get_run(stage.mlflow_run_id)
        tags, params = nested.data.tags, nested.data.params
        assert nested.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == run.mlflow_run_id
        assert tags["refinery.team"] == run.team.slug
        assert tags["refinery.user"] == pipeline.created_by.username
        assert tags["refinery.run_number"] == str(run.number)
        assert tags["refinery.stage"] == stage.name
        assert tags["refinery.dataset.train.sha256"] == sha
        assert tags["refinery.base_model"] == run.snapshot["base_model"]["name_or_path"]
        assert tags["refinery.code_version"] == run.code_version
        assert params["data.train.sha256"] == sha
        assert params["config.learning_rate"] == str(stage.spec["config"]["learning_rate"])
        assert {"spec.json", "trainer.log"} <= set(artifact_list(mlflow_run_id=stage.mlflow_run_id))
    assert client.get_run(lora.mlflow_run_id).data.params["adapter.r"] == "8"
    assert client.get_run(lora.mlflow_run_id).data.params["input.stage"] == "sft-full"
    assert client.get_run(full.mlflow_run_id).data.params["adapter.type"] == "none"
