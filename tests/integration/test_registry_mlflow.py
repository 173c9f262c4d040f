"""The model registry end to end: a real run through a real worker trains a LoRA adapter and evaluates it;
its output is promoted into MLflow's Model Registry with an alias, and a consumer downloads the adapter's
files by that alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from refinery.registry.models import RegisteredModel
from refinery.runs.models import Run, Status
from refinery.runs.services import run_create
from refinery.tracking.client import tracking_client
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_a_trained_adapter_is_promoted_to_production_and_downloadable_by_alias(
    celery_worker_process, mlflow_server, demo_pipeline, tmp_path
):
    pipeline = demo_pipeline(
        {
            "name": "sft",
            "adapter": {"type": "lora", "r": 8, "alpha": 16},
            "config": {"learning_rate": 1e-2},
            "eval_data": "eval",
        },
        retention="eval",
        auto_evaluate=True,
        name="registry-e2e",
    )
    user = pipeline.created_by
    run = run_create(pipeline=pipeline, user=user)
    assert [s.name for s in run.stages.order_by("index")] == ["sft", "evaluate-sft"]
    wait_until(
        lambda: Run.objects.get(pk=run.pk).is_finished,
        timeout=300,
        interval=0.5,
        message=lambda: f"run still {Run.objects.get(pk=run.pk).status}:\n{celery_worker_process.log_tail(40)}",
    )
    run.refresh_from_db()
    sft, evaluation = run.stages.order_by("index")
    assert run.status == Status.SUCCEEDED, (sft.error, evaluation.error, evaluation.log_tail[-1500:])
    assert sft.outputs["kind"] == "adapter"

    client = Client()
    client.force_login(user)
    response = client.post(
        "/registry/promote/",
        {"run": run.number, "stage": "sft", "model": "__new__", "new_name": "adder", "alias": "production"},
    )
    assert response.status_code == 302, response.content[-2000:]
    model = RegisteredModel.objects.get(team=pipeline.team, name="adder")
    version = model.versions.get()

    # The evaluation of this output and the stage's training numbers were copied at promotion.
    assert version.metrics["evaluations"][0]["stage"] == "evaluate-sft"
    assert version.metrics["evaluations"][0]["target"]["gain"] == evaluation.summary["target"]["gain"]
    assert version.metrics["stage"]["train/loss"] == pytest.approx(sft.summary["train/loss"])
    # Lineage names the data by hash and the base model the adapter applies to.
    shas = {d["sha256"] for d in version.lineage["datasets"]}
    assert sft.spec["train_data"]["sha256"] in shas and run.snapshot["retention_data"]["sha256"] in shas
    assert version.lineage["adapter_base"]["source"] == "base"
    assert version.lineage["adapter_base"]["name_or_path"] == run.snapshot["base_model"]["name_or_path"]

    # MLflow: the version points at the stage's run, production at the version, the files come by alias.
    found = tracking_client().get_model_version_by_alias(model.mlflow_name, "production")
    assert found.version == "1" and found.run_id == sft.mlflow_run_id
    assert found.source == f"runs:/{sft.mlflow_run_id}/adapter"
    import mlflow.artifacts  # a consumer of the registry, outside the platform

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model.mlflow_name}@production", dst_path=str(tmp_path / "dl")
        )
    )
    files = {p.name for p in local.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files, files
    assert json.loads((local / "adapter_config.json").read_text())["r"] == 8

    page = client.get("/registry/adder/").content.decode()
    assert 'data-testid="alias-production" data-version="1"' in page and sft.spec["train_data"]["sha256"] in page
