"""Issue 11, hole 1: a stage leaves nothing on the worker's disk when it ends, and what it publishes
names no host path and no global run id. Through a real Celery worker, MLflow and trainer.

- succeeded, failed and canceled stages: the work dir (spec, log, inputs, outputs) and the stage's
  checkpoint area are gone once the row says so; a failed or canceled one keeps its log tail on the row;
- spec.json and trainer.log in MLflow contain neither the var dir nor `run-<global id>`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.conf import settings

from jobs.stage_inputs import stage_checkpoint_dir, stage_work_dir
from refinery.basemodels.paths import model_roots
from refinery.runs.models import Run, StageRun, Status
from refinery.runs.services import run_cancel, run_create
from refinery.tracking.client import artifacts_download
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def wait_stage(stage: StageRun, worker, *, until, timeout: float = 240) -> StageRun:
    wait_until(
        lambda: until(StageRun.objects.get(pk=stage.pk)),
        timeout=timeout,
        interval=0.2,
        message=lambda: f"stage is {StageRun.objects.get(pk=stage.pk).status}; worker log:\n{worker.log_tail(60)}",
    )
    return StageRun.objects.get(pk=stage.pk)


def start(pipeline) -> tuple[Run, StageRun]:
    run = run_create(pipeline=pipeline, user=pipeline.created_by)  # commits: the wake-up goes to Redis
    return run, run.stages.order_by("index").first()


def assert_dirs_gone(stage: StageRun, worker) -> None:
    # The row is written first, then MLflow, then the folders go: give the worker a moment.
    work, area = stage_work_dir(stage), stage_checkpoint_dir(stage)
    wait_until(
        lambda: not work.exists() and not area.exists(),
        timeout=60,
        interval=0.2,
        message=lambda: (
            f"left behind: {[str(p) for p in (work, area) if p.exists()]}; worker log:\n{worker.log_tail(40)}"
        ),
    )
    assert not work.parent.exists()  # the run's folder too (its only stage)


def test_a_succeeded_stage_leaves_nothing_and_publishes_no_host_paths(celery_worker_process, demo_pipeline, tmp_path):
    # Checkpoints every 8 steps: the area is used (and the log names its files) before it goes.
    run, stage = start(demo_pipeline({"name": "sft", "method": "sft", "config": {"save_steps": 8}}))
    seen_area = []
    done = wait_stage(
        stage,
        celery_worker_process,
        until=lambda s: seen_area.append(stage_checkpoint_dir(s).exists()) or s.is_finished,
    )
    assert done.status == Status.SUCCEEDED, (done.error, done.log_tail)
    assert any(seen_area), "the checkpoint area was never created"
    assert_dirs_gone(done, celery_worker_process)

    var = str(Path(settings.VAR_DIR))
    global_ids = (f"run-{run.pk}", f'"run_id": {run.pk}', f'"stage_run_id": {done.pk}')
    spec_text = artifacts_download(
        mlflow_run_id=done.mlflow_run_id, artifact_path="spec.json", dst=tmp_path / "spec"
    ).read_text()
    log_text = artifacts_download(
        mlflow_run_id=done.mlflow_run_id, artifact_path="trainer.log", dst=tmp_path / "log"
    ).read_text()
    for text in (spec_text, log_text):
        assert var not in text and str(Path(var).resolve()) not in text
        assert not any(marker in text for marker in global_ids), text[:2000]
        for root in model_roots(run.team_id):
            assert str(root) not in text
    spec = json.loads(spec_text)
    assert spec["output_dir"] == "./output" and spec["checkpoint_dir"] == "./checkpoints"
    assert spec["model"]["name_or_path"].startswith("<models>/")  # the demo kit, in a model root
    assert spec["data"]["train"]["path"].startswith("<datasets>/")
    assert spec["stage"] == {"name": "sft", "index": 0, "attempt": 1}


def test_a_failed_stage_leaves_nothing(celery_worker_process, demo_pipeline, demo_kit):
    # A model folder in the team's own root whose weights are broken: the trainer fails loading them.
    pipeline = demo_pipeline({"name": "sft", "method": "sft"})
    broken = model_roots(pipeline.team_id)[0] / "broken-llama"
    shutil.copytree(demo_kit["model"], broken)
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    pipeline.base_model.name_or_path = str(broken)
    pipeline.base_model.save()
    run, stage = start(pipeline)
    done = wait_stage(stage, celery_worker_process, until=lambda s: s.is_finished)
    assert done.status == Status.FAILED and done.attempt == 1, done.error
    assert done.log_tail and str(broken) not in done.log_tail  # redacted to <models>/...
    assert_dirs_gone(done, celery_worker_process)


def test_a_canceled_stage_leaves_nothing(celery_worker_process, demo_pipeline):
    run, stage = start(
        demo_pipeline({"name": "sft", "method": "sft", "config": {"max_steps": 100_000, "save_steps": 5}})
    )
    wait_stage(stage, celery_worker_process, until=lambda s: s.status == Status.RUNNING and s.step > 5)
    assert stage_checkpoint_dir(stage).exists() and stage_work_dir(stage).exists()
    run_cancel(run=Run.objects.get(pk=run.pk))
    done = wait_stage(stage, celery_worker_process, until=lambda s: s.is_finished, timeout=60)
    assert done.status == Status.CANCELED
    assert_dirs_gone(done, celery_worker_process)
