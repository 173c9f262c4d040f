"""The supervisor, through the task function (no worker, no eager mode), with a real MLflow server
and the real trainer on the demo kit."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from jobs import supervisor as supervisor_module
from jobs.stage_inputs import stage_checkpoint_dir, stage_work_dir
from jobs.supervisor import sinks as supervisor_sinks
from jobs.tasks import run_stage
from refinery.runs.models import Run, StageMetric, StageRun, Status
from refinery.runs.services import run_cancel, run_create
from refinery.tracking.buffer import MetricBuffer
from refinery.tracking.client import artifact_list, metric_history, tracking_client
from tests.conftest import free_port
from tests.helpers import loss_fell, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def launch(sent_stages, mlflow_server):
    """launch(pipeline) -> (run, first stage): a run created, its wake-up recorded, not sent."""

    def make(pipeline):
        run = run_create(pipeline=pipeline, user=pipeline.created_by)
        return run, run.stages.order_by("index").first()

    return make


def db_series(stage: StageRun, key: str) -> list[tuple[int, float]]:
    return list(StageMetric.objects.filter(stage_run=stage, key=key).order_by("step").values_list("step", "value"))


def same_points(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return [s for s, _ in a] == [s for s, _ in b] and [v for _, v in a] == pytest.approx([v for _, v in b])


def test_a_stage_trains_and_lands_in_the_db_and_mlflow(demo_pipeline, launch):
    run, stage = launch(demo_pipeline({"name": "sft", "method": "sft"}))

    started = time.monotonic()
    assert run_stage(stage.pk) == Status.SUCCEEDED
    print(f"\n[measure] one SFT stage (16 steps, demo kit), claim to finish: {time.monotonic() - started:.1f}s")

    stage.refresh_from_db()
    run.refresh_from_db()
    assert stage.status == Status.SUCCEEDED and run.status == Status.SUCCEEDED
    assert stage.error == "" and stage.attempt == 1
    assert stage.trainable_params and stage.trainable_params == stage.total_params  # full fine-tuning
    assert stage.total_steps == 16 and stage.summary["train/loss"] > 0

    # Metrics: the live chart's DB rows and MLflow agree point for point, and the loss fell.
    losses = db_series(stage, "train/loss")
    assert [s for s, _ in losses] == list(range(1, 17))
    assert loss_fell([v for _, v in losses])
    assert same_points(metric_history(stage.mlflow_run_id, "train/loss"), losses)
    assert len(metric_history(stage.mlflow_run_id, "train/learning_rate")) == 16

    # Outputs: the model, the spec and the trainer log are artifacts of the stage's MLflow run.
    assert stage.outputs == {
        "kind": "model",
        "artifact_path": "model",
        "mlflow_run_id": stage.mlflow_run_id,
        "base": None,
    }
    files = set(artifact_list(mlflow_run_id=stage.mlflow_run_id))
    assert {"model", "spec.json", "trainer.log"} <= files
    model_files = {p.rsplit("/", 1)[-1] for p in artifact_list(mlflow_run_id=stage.mlflow_run_id, path="model")}
    assert {"config.json", "model.safetensors"} <= model_files

    client = tracking_client()
    mlrun = client.get_run(stage.mlflow_run_id)
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.tags["mlflow.parentRunId"] == run.mlflow_run_id
    assert mlrun.data.params["config.max_steps"] == "16"
    assert mlrun.data.params["adapter.type"] == "none"
    assert mlrun.data.params["data.train.sha256"] == stage.spec["train_data"]["sha256"]
    assert client.get_run(run.mlflow_run_id).info.status == "FINISHED"  # the pipeline run ended too


def test_a_model_path_outside_the_model_roots_fails_the_stage_before_the_trainer_starts(demo_pipeline, launch):
    """A base model row from before the model roots (or written into the table): the worker refuses it with
    the one message that tells nothing about the path, and leaves nothing behind."""
    run, stage = launch(demo_pipeline({"name": "sft", "method": "sft"}, model_path="/nonexistent/tiny-llama"))

    assert run_stage(stage.pk) == Status.FAILED
    stage.refresh_from_db()
    run.refresh_from_db()
    assert stage.status == Status.FAILED and run.status == Status.FAILED
    assert "\n" not in stage.error and "/nonexistent" not in stage.error
    assert stage.error.startswith(
        "could not start the stage: base model 'tiny-llama': not a model folder (with a "
        "config.json) inside this team's model roots"
    )
    assert not stage_work_dir(stage).exists() and not stage_checkpoint_dir(stage).exists()


def test_a_trainer_that_crashes_without_an_event_fails_the_stage(demo_pipeline, launch, settings, tmp_path):
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\necho 'loading shards' >&2\necho 'Fatal Python error: Segmentation fault' >&2\nexit 139\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    settings.REFINERY_TRAINER_PYTHON = str(fake)
    run, stage = launch(demo_pipeline({"name": "sft", "method": "sft"}))

    assert run_stage(stage.pk) == Status.FAILED
    stage.refresh_from_db()
    assert stage.error == "the trainer exited with status 139: Fatal Python error: Segmentation fault"
    assert stage.log_tail.splitlines() == ["loading shards", "Fatal Python error: Segmentation fault"]


def test_cancel_during_training_stops_within_10s_and_keeps_partial_metrics(demo_pipeline, launch, settings):
    settings.REFINERY_HEARTBEAT_SECONDS = 2
    run, stage = launch(demo_pipeline({"name": "sft", "method": "sft", "config": {"max_steps": 100_000}}))
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault("status", _run_and_close(stage.pk)))
    worker.start()
    try:
        wait_until(
            lambda: StageMetric.objects.filter(stage_run=stage, key="train/loss").count() >= 3,
            timeout=120,
            message="no metrics arrived",
        )
        requested = time.monotonic()
        run_cancel(run=Run.objects.get(pk=run.pk))
        wait_until(
            lambda: StageRun.objects.get(pk=stage.pk).status == Status.CANCELED,
            timeout=15,
            interval=0.05,
            message="the stage was not canceled",
        )
        latency = time.monotonic() - requested
    finally:
        worker.join(timeout=60)
    print(f"\n[measure] cancel request to stage canceled: {latency:.2f}s")
    assert latency < 10
    assert result["status"] == Status.CANCELED

    stage.refresh_from_db()
    run.refresh_from_db()
    assert run.status == Status.CANCELED and stage.outputs == {}
    kept = db_series(stage, "train/loss")
    assert 3 <= len(kept) < 100_000
    assert len(metric_history(stage.mlflow_run_id, "train/loss")) == len(kept)  # MLflow got them too
    assert tracking_client().get_run(stage.mlflow_run_id).info.status == "KILLED"
    # The stage has ended: its work dir and checkpoint area are gone (the log is in MLflow).
    assert not stage_work_dir(stage).exists() and not stage_checkpoint_dir(stage).exists()
    assert "trainer.log" in set(artifact_list(mlflow_run_id=stage.mlflow_run_id))


def test_a_lost_lease_stops_the_trainer_and_the_next_attempt_resumes_from_the_checkpoint(
    demo_pipeline, launch, settings, caplog
):
    """The reaper hands the stage on (as if the worker had died): the old supervisor stops its trainer
    without touching the row, and the next attempt resumes from the newest complete checkpoint."""
    import logging
    from datetime import timedelta

    from django.utils import timezone

    from refinery.runs.services import stage_reap_expired

    caplog.set_level(logging.INFO, logger="jobs.supervisor")
    settings.REFINERY_HEARTBEAT_SECONDS = 1
    run, stage = launch(
        demo_pipeline(
            {"name": "sft", "method": "sft", "config": {"max_steps": 120, "save_steps": 5, "save_total_limit": 1}}
        )
    )
    result: dict = {}
    first = threading.Thread(target=lambda: result.setdefault("status", _run_and_close(stage.pk)))
    first.start()
    try:
        wait_until(
            lambda: StageMetric.objects.filter(stage_run=stage, key="train/loss", step__gte=12).exists(),
            timeout=120,
            message="training did not get past step 12",
        )

        def expire_and_reap() -> bool:
            # The supervisor's heartbeat renews about once a second and may do so between these two
            # statements; then the reaper rightly finds a live lease, and we expire it again.
            StageRun.objects.filter(pk=stage.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
            return stage_reap_expired() == [stage.pk]

        wait_until(expire_and_reap, timeout=20, interval=0.05, message="the reaper never took the stage")
    finally:
        first.join(timeout=60)
    assert result["status"] == "lost"
    stage.refresh_from_db()
    assert stage.status == Status.QUEUED and stage.attempt == 1  # the old supervisor did not finish it

    assert run_stage(stage.pk) == Status.SUCCEEDED
    stage.refresh_from_db()
    assert stage.attempt == 2 and stage.status == Status.SUCCEEDED
    assert any("resumed from" in r.getMessage() and "checkpoint-" in r.getMessage() for r in caplog.records)
    steps = [s for s, _ in db_series(stage, "train/loss")]
    assert steps == list(range(1, 121))  # one point per step in the DB, across both attempts
    # ... and in MLflow: the steps replayed after the resume were not sent again.
    assert [s for s, _ in metric_history(stage.mlflow_run_id, "train/loss")] == list(range(1, 121))


def test_a_trainer_killed_by_sigkill_is_retried_and_resumes_without_losing_or_repeating_a_step(
    demo_pipeline, launch, monkeypatch, sent_stages, django_capture_on_commit_callbacks
):
    """kill -9 of the trainer (a failpoint SIGKILLs it right after step 23; the last complete checkpoint
    is step 20): the stage goes back to the queue, and the next attempt resumes at step 20 and succeeds."""
    monkeypatch.setenv("REFINERY_FAILPOINTS", "step.end@23:kill")
    run, stage = launch(
        demo_pipeline(
            {"name": "sft", "method": "sft", "config": {"max_steps": 40, "save_steps": 10, "save_total_limit": 1}}
        )
    )
    sent_stages.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert run_stage(stage.pk) == "retrying"
    stage.refresh_from_db()
    assert stage.status == Status.QUEUED and stage.attempt == 1 and sent_stages == [stage.pk]
    # The supervisor names the last step it heard of (the failpoint kills before step 23 is logged).
    assert stage.error == "the trainer was killed by SIGKILL at step 22 (by the out-of-memory killer, or kill -9)"
    assert "killed by SIGKILL" in stage.log_tail
    # A retry is queued: the checkpoints it resumes from stay, in the stage's own area (linked from the work dir).
    area = stage_checkpoint_dir(stage)
    assert (area / "checkpoint-20").is_dir() and (stage_work_dir(stage) / "checkpoints").resolve() == area

    assert run_stage(stage.pk) == Status.SUCCEEDED  # the failpoint fires once: this attempt runs clean
    stage.refresh_from_db()
    assert stage.attempt == 2 and stage.status == Status.SUCCEEDED and stage.error == ""
    assert stage.step == 40
    assert [s for s, _ in db_series(stage, "train/loss")] == list(range(1, 41))
    assert [s for s, _ in metric_history(stage.mlflow_run_id, "train/loss")] == list(range(1, 41))
    assert tracking_client().get_run(stage.mlflow_run_id).info.status == "FINISHED"
    assert not area.exists() and not stage_work_dir(stage).exists()  # the stage has ended


def test_a_trainer_killed_on_every_attempt_fails_after_the_last_one(demo_pipeline, launch, settings, tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'allocating 80 GiB' >&2\nkill -9 $$\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    settings.REFINERY_TRAINER_PYTHON = str(fake)
    run, stage = launch(demo_pipeline({"name": "sft", "method": "sft"}))
    StageRun.objects.filter(pk=stage.pk).update(max_attempts=2)

    assert run_stage(stage.pk) == "retrying"
    assert run_stage(stage.pk) == Status.FAILED
    stage.refresh_from_db()
    run.refresh_from_db()
    assert stage.attempt == 2 and run.status == Status.FAILED
    assert stage.error == (
        "the trainer was killed by SIGKILL at step 0 (by the out-of-memory killer, or kill -9); "
        "gave up after 2 attempts"
    )
    assert "allocating 80 GiB" in stage.log_tail
    assert not stage_work_dir(stage).exists() and not stage_checkpoint_dir(stage).exists()  # gave up: ended


def _run_and_close(stage_run_id: int):
    from django.db import connection

    try:
        return run_stage(stage_run_id)
    finally:
        connection.close()


def test_an_mlflow_outage_delays_metrics_but_loses_none(demo_pipeline, launch, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    buffers: list[MetricBuffer] = []

    class OutageBuffer(MetricBuffer):
        """Points at a dead MLflow until two flushes with points have failed, then at the real one."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.real_client, self.client = self.client, tracking_client(dead)
            self.retry_min_seconds = 0.5
            buffers.append(self)

        def flush(self) -> bool:
            ok = super().flush()
            if not ok and self.failures >= 2:
                self.client = self.real_client  # MLflow is back
            return ok

    monkeypatch.setattr(supervisor_sinks, "MetricBuffer", OutageBuffer)
    run, stage = launch(demo_pipeline({"name": "sft", "method": "sft"}))

    assert run_stage(stage.pk) == Status.SUCCEEDED  # training was never disturbed
    (buffer,) = buffers
    assert buffer.failures >= 2 and buffer.pending == 0 and buffer.dropped == 0
    stage.refresh_from_db()
    for key in ("train/loss", "train/grad_norm", "train/learning_rate"):
        assert same_points(metric_history(stage.mlflow_run_id, key), db_series(stage, key)), key
    assert len(db_series(stage, "train/loss")) == 16


def test_the_worker_side_never_imports_torch(tmp_path):
    """Importing the tasks and the supervisor (what a Celery worker loads) must not pull in torch."""
    import subprocess
    import sys

    code = (
        "import django, sys; django.setup()\n"
        "import jobs.tasks, jobs.supervisor, refinery.tracking.runs, refinery.runs.services\n"
        "from jobs.stage_inputs import resolve_configs\n"
        "resolve_configs({'method': 'sft', 'config': {}, 'adapter': {'type': 'lora'},"
        " 'train_data': {'kind': 'prompt_completion'}})\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "refinery.settings.test"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _trainer_pid(stage: StageRun) -> int | None:
    """The pid of this stage's `python -m trainers run <work dir>/spec.json` process."""
    marker = str(stage_work_dir(stage)).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if b"trainers\x00run" in cmdline and marker in cmdline:
            return int(entry)
    return None


def test_a_hung_trainer_is_killed_and_the_stage_fails_as_stalled(demo_pipeline, launch, settings):
    """Fault injection: SIGSTOP the real trainer mid-training; it sends no more events."""
    import signal

    settings.REFINERY_STALL_SECONDS = 4
    run, stage = launch(demo_pipeline({"name": "sft", "method": "sft", "config": {"max_steps": 100_000}}))
    result: dict = {}
    worker = threading.Thread(target=lambda: result.setdefault("status", _run_and_close(stage.pk)))
    worker.start()
    try:
        wait_until(
            lambda: StageMetric.objects.filter(stage_run=stage, key="train/loss").count() >= 3,
            timeout=120,
            message="no metrics arrived",
        )
        pid = wait_until(lambda: _trainer_pid(stage), timeout=10, message="trainer process not found")
        os.kill(pid, signal.SIGSTOP)
        hung_at = time.monotonic()
        wait_until(
            lambda: StageRun.objects.get(pk=stage.pk).is_finished,
            timeout=60,
            interval=0.1,
            message="the hung trainer was not noticed",
        )
        noticed = time.monotonic() - hung_at
    finally:
        worker.join(timeout=60)
    print(f"\n[measure] trainer hung to stage failed: {noticed:.1f}s (stall limit 4s)")
    stage.refresh_from_db()
    run.refresh_from_db()
    assert result["status"] == Status.FAILED and stage.status == Status.FAILED
    assert stage.error.startswith(f"stalled at step {stage.step}: no event from the trainer for")
    assert 4 <= noticed < 4 + 10
    assert run.status == Status.FAILED and "stalled at step" in run.error
    assert "[supervisor] stalled at step" in stage.log_tail
    assert not os.path.exists(f"/proc/{pid}") or b"Z" in open(f"/proc/{pid}/stat", "rb").read().split(b")")[1][:3]
    assert len(db_series(stage, "train/loss")) >= 3  # the points before the hang are kept


def test_a_trainer_stopped_by_a_sigterm_nobody_asked_for_is_retried(demo_pipeline, launch, settings, tmp_path):
    """A host shutting down SIGTERMs everything: the trainer stops gracefully and says `canceled`,
    but no one canceled the run, so the stage is interrupted, not canceled."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho \'{"event": "canceled", "time": 1.0, "step": 5}\'\nexit 3\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    settings.REFINERY_TRAINER_PYTHON = str(fake)
    run, stage = launch(demo_pipeline({"name": "sft", "method": "sft"}))

    assert run_stage(stage.pk) == "retrying"
    stage.refresh_from_db()
    assert stage.status == Status.QUEUED and stage.error.startswith("the trainer was stopped by SIGTERM")


def test_work_dirs_of_stages_that_ended_without_their_supervisor_are_swept(demo_pipeline, launch):
    """A queued retry that was canceled (or given up by the reaper) never meets its supervisor again: the next
    stage a worker on this host takes removes its work dir and checkpoint area, once it has settled."""
    from datetime import timedelta

    from django.utils import timezone

    run, stage = launch(demo_pipeline({"name": "sft", "method": "sft"}))
    work, area = stage_work_dir(stage), stage_checkpoint_dir(stage)
    (work / "checkpoints").mkdir(parents=True)
    (area / "checkpoint-5").mkdir(parents=True)
    assert supervisor_module.sweep_ended_stage_dirs() == 0  # still queued: a retry needs them
    run_cancel(run=Run.objects.get(pk=run.pk))
    assert supervisor_module.sweep_ended_stage_dirs() == 0 and work.exists()  # just ended: left to its supervisor
    StageRun.objects.filter(pk=stage.pk).update(finished_at=timezone.now() - timedelta(hours=1))
    assert supervisor_module.sweep_ended_stage_dirs() == 1
    assert not work.exists() and not area.exists() and not work.parent.exists()
