"""The fault-injection suite (issue: crash-safe execution). Real Celery workers, beat, trainers, MLflow,
PostgreSQL and Redis; the faults are real too: SIGKILL, stopped servers, restarted databases.

Every case asserts the final state, that the resumed stage continued from its newest complete
checkpoint, and that each training step has exactly one loss point in the database and in MLflow.
Measurements go to test-results/chaos.json; docs/reliability.md quotes them.

Cases 7 (enqueue inside a rolled-back transaction) and 8 (a hung trainer) live in
tests/runs/test_enqueue_after_commit.py and tests/jobs/test_supervisor.py.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from jobs.stage_inputs import stage_work_dir
from refinery.runs.models import Run, StageMetric, StageRun, Status
from refinery.runs.services import run_create
from refinery.tracking.client import artifact_list, artifacts_download, metric_history, tracking_client
from tests.chaos.conftest import HEARTBEAT_SECONDS, elapsed, trainer_pids, wait_for
from tests.chaos.services import PrivatePostgres, PrivateRedis

pytestmark = [pytest.mark.chaos]

SAVE_STEPS = 50


def sft_pipeline(demo_pipeline, *, steps: int, name: str = "sft", **config):
    return demo_pipeline(
        {
            "name": name,
            "method": "sft",
            "config": {
                "max_steps": steps,
                "save_steps": SAVE_STEPS,
                "save_total_limit": 2,
                "logging_steps": 1,
                **config,
            },
        }
    )


def launch(pipeline) -> tuple[Run, StageRun]:
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    return run, run.stages.order_by("index").first()


def stage_now(stage: StageRun) -> StageRun:
    return StageRun.objects.get(pk=stage.pk)


def stage_now_retrying(stage: StageRun) -> StageRun:
    """stage_now through a PostgreSQL restart (the test's own connection breaks too)."""
    return wait_for(lambda: stage_now(stage), timeout=30, message="the database did not come back")


def wait_training(stage: StageRun, *, past_step: int, timeout: float = 180) -> StageRun:
    return wait_for(
        lambda: (s := stage_now(stage)).status == Status.RUNNING and s.step > past_step and s,
        timeout=timeout,
        interval=0.05,
        message=f"stage {stage.pk} did not train past step {past_step}",
    )


def wait_finished(stage: StageRun, *, timeout: float = 300) -> StageRun:
    return wait_for(
        lambda: (s := stage_now(stage)).is_finished and s,
        timeout=timeout,
        interval=0.2,
        message=f"stage {stage.pk} did not finish",
    )


def assert_each_step_once(stage: StageRun, steps: int) -> None:
    expected = list(range(1, steps + 1))
    db = list(
        StageMetric.objects.filter(stage_run=stage, key="train/loss").order_by("step").values_list("step", flat=True)
    )
    assert db == expected, "database: lost or extra steps"
    # The row says succeeded first; the supervisor drains its metric spool to MLflow right after.
    mlflow = wait_for(
        lambda: (
            ([s for s, _ in metric_history(stage.mlflow_run_id, "train/loss")] or [0])
            if tracking_client().get_run(stage.mlflow_run_id).info.status != "RUNNING"
            else None
        ),
        timeout=120,
        message="the stage's MLflow run was not ended",
    )
    assert mlflow == expected, f"MLflow: lost or duplicated steps ({len(mlflow)} points for {steps} steps)"


def resumed_at(logs: str, stage: StageRun) -> int:
    """The step the last attempt resumed from, from the supervisor's log line."""
    found = re.findall(rf"stage {stage.pk}: resumed from \S+checkpoint-(\d+) \(step (\d+)\)", logs)
    assert found, "no attempt resumed from a checkpoint"
    checkpoint, step = found[-1]
    assert checkpoint == step
    return int(step)


def kill_trainer(stage: StageRun) -> int:
    spec = stage_work_dir(stage) / "spec.json"
    pids = wait_for(lambda: trainer_pids(spec), timeout=30, message="no trainer process found")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


# 1 -----------------------------------------------------------------------------------------------
def test_1_trainer_killed_mid_stage_resumes_and_succeeds_once(cluster, demo_pipeline, record):
    cluster.start_worker("w1")
    steps = 600
    run, stage = launch(sft_pipeline(demo_pipeline, steps=steps))
    at = wait_training(stage, past_step=2 * SAVE_STEPS + 20).step

    killed = time.monotonic()
    assert kill_trainer(stage) == 1
    wait_for(
        lambda: stage_now(stage).attempt == 2 and stage_now(stage).step > 0, timeout=60, message="no second attempt"
    )
    requeued = elapsed(killed)
    back = wait_for(
        lambda: "resumed from" in cluster.logs() and elapsed(killed),
        timeout=60,
        message="the second attempt did not resume",
    )
    done = wait_finished(stage)

    assert done.status == Status.SUCCEEDED and done.attempt == 2 and done.error == ""
    assert Run.objects.get(pk=run.pk).status == Status.SUCCEEDED
    step = resumed_at(cluster.logs(), stage)
    assert step % SAVE_STEPS == 0 and at - SAVE_STEPS <= step <= at + 2 * SAVE_STEPS  # the newest checkpoint
    assert "killed by SIGKILL" in cluster.logs()
    assert_each_step_once(done, steps)
    record(killed_near_step=at, resumed_from_step=step, kill_to_requeued_s=requeued, kill_to_training_s=back)


# 2 -----------------------------------------------------------------------------------------------
def test_2_worker_killed_mid_stage_another_worker_resumes_it(cluster, demo_pipeline, record):
    # The default proportion: a lease of two heartbeats (here 2 s), so detection is measured as it runs.
    first = cluster.start_worker("w1", REFINERY_LEASE_SECONDS=2 * HEARTBEAT_SECONDS)
    cluster.start_beat()
    steps = 600
    run, stage = launch(sft_pipeline(demo_pipeline, steps=steps))
    at = wait_training(stage, past_step=2 * SAVE_STEPS + 20).step
    spec = stage_work_dir(stage) / "spec.json"

    killed = time.monotonic()
    cluster.kill(first)  # the worker and its pool, as if the host were gone
    wait_for(
        lambda: not trainer_pids(spec),
        timeout=15,
        message=lambda: (
            "the orphaned trainer kept running: "
            + str(
                [
                    (p, open(f"/proc/{p}/status").read().split("\n")[2], open(f"/proc/{p}/wchan").read())
                    for p in trainer_pids(spec)
                ]
            )
            + (stage_work_dir(stage) / "trainer.log").read_text()[-1500:]
        ),
    )
    orphan_gone = elapsed(killed)
    cluster.start_worker("w2", REFINERY_LEASE_SECONDS=2 * HEARTBEAT_SECONDS)
    wait_for(
        lambda: stage_now(stage).status == Status.QUEUED or stage_now(stage).attempt == 2,
        timeout=60,
        message="the reaper did not requeue the stage",
    )
    reaped = elapsed(killed)
    wait_for(lambda: "resumed from" in cluster.logs(), timeout=90, message="the second attempt did not resume")
    back = elapsed(killed)
    done = wait_finished(stage)

    assert done.status == Status.SUCCEEDED and done.attempt == 2
    assert done.worker.startswith("w2@")
    assert Run.objects.get(pk=run.pk).status == Status.SUCCEEDED
    step = resumed_at(cluster.logs(), stage)
    assert step % SAVE_STEPS == 0 and at - SAVE_STEPS <= step
    assert_each_step_once(done, steps)
    record(
        killed_near_step=at,
        resumed_from_step=step,
        heartbeat_s=HEARTBEAT_SECONDS,
        lease_s=2 * HEARTBEAT_SECONDS,
        orphan_trainer_gone_s=orphan_gone,
        kill_to_requeued_s=reaped,
        kill_to_training_s=back,
    )


# 3 -----------------------------------------------------------------------------------------------
def test_3_kill_during_a_checkpoint_save_skips_the_partial_checkpoint(cluster, demo_pipeline, record, tmp_path):
    # The trainer stops for 60 s inside the save of checkpoint-100, after writing the files and before the
    # rename: the test kills it there from outside.
    cluster.start_worker("w1", REFINERY_FAILPOINTS="checkpoint.staged@100:sleep=60")
    steps = 300
    run, stage = launch(sft_pipeline(demo_pipeline, steps=steps))
    partial = stage_work_dir(stage) / "checkpoints" / ".tmp-checkpoint-100"
    wait_for(
        lambda: (partial / "checkpoint-100" / "trainer_state.json").exists(),
        timeout=180,
        message="the trainer never reached the save of checkpoint-100",
    )

    killed = time.monotonic()
    kill_trainer(stage)
    done = wait_finished(stage)

    assert done.status == Status.SUCCEEDED and done.attempt == 2
    logs = cluster.logs()
    assert resumed_at(logs, stage) == 50  # checkpoint-100 was not complete: the one before it
    # The work dir is gone once the stage has ended: read the log the supervisor published to MLflow.
    wait_for(
        lambda: "trainer.log" in artifact_list(mlflow_run_id=done.mlflow_run_id),
        timeout=60,
        message="the trainer log never reached MLflow",
    )
    trainer_log = artifacts_download(
        mlflow_run_id=done.mlflow_run_id, artifact_path="trainer.log", dst=tmp_path / "log"
    ).read_text()
    assert "discarded the partial checkpoint .tmp-checkpoint-100" in trainer_log
    assert_each_step_once(done, steps)
    record(kill_to_succeeded_s=elapsed(killed), resumed_from_step=50)


# 4 -----------------------------------------------------------------------------------------------
def test_4_a_stage_longer_than_the_visibility_timeout_runs_once(cluster, demo_pipeline, record):
    # Redis would hand an unacked message to another consumer after 3 s; the stage trains for 30+ s.
    cluster.start_worker("w1", REFINERY_VISIBILITY_TIMEOUT=3)
    cluster.start_worker("w2", REFINERY_VISIBILITY_TIMEOUT=3)
    steps = 4500
    run, stage = launch(sft_pipeline(demo_pipeline, steps=steps, save_steps=1000))
    done = wait_finished(stage, timeout=400)

    duration = (done.finished_at - done.started_at).total_seconds()
    logs = cluster.logs()
    assert done.status == Status.SUCCEEDED and done.attempt == 1
    assert duration > 30
    assert logs.count(f"stage {stage.pk} (run {run.pk}, attempt 1) claimed") == 1
    assert len(re.findall(r"Task jobs\.run_stage\[[^\]]+\] received", logs)) == 1  # delivered once
    assert "nothing to do" not in logs
    assert_each_step_once(done, steps)
    record(stage_seconds=duration, visibility_timeout_s=3, deliveries=1, executions=1)


@pytest.fixture
def rabbitmq(tmp_path, monkeypatch):
    """A private RabbitMQ whose consumer timeout is 3 s (enforced within a second of it); the test
    process's Celery app sends its wake-ups there for the test's duration."""
    from jobs.app import app
    from tests.chaos.services import PrivateRabbitMQ, free_port

    broker = PrivateRabbitMQ(tmp_path / "rabbitmq", free_port(), consumer_timeout_ms=3000)
    broker.start()
    saved = app.conf.broker_transport_options

    def reconnect() -> None:  # new connection and producer pools, on the broker the environment names
        app._pool = None
        app.amqp._producer_pool = None

    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    monkeypatch.setenv("CELERY_BROKER_URL", broker.url)
    app.conf.broker_transport_options = {}
    reconnect()
    yield broker
    monkeypatch.undo()
    app.conf.broker_transport_options = saved
    reconnect()
    broker.stop()


def test_4b_a_stage_longer_than_rabbitmqs_consumer_timeout_is_neither_redelivered_nor_killed(
    cluster, demo_pipeline, rabbitmq, record
):
    # One worker, two runs: the long stage's wake-up was acked when it started; the short one's sits
    # reserved (RabbitMQ cannot turn prefetch off) and trips the 3 s consumer timeout over and over.
    cluster.start_worker("w1", CELERY_BROKER_URL=rabbitmq.url)
    long_run, long_stage = launch(sft_pipeline(demo_pipeline, steps=4500, name="long", save_steps=1000))
    wait_training(long_stage, past_step=10)
    short_run, short_stage = launch(sft_pipeline(demo_pipeline, steps=20, name="short"))
    long_done = wait_finished(long_stage, timeout=400)
    short_done = wait_finished(short_stage, timeout=200)

    logs = cluster.logs()
    duration = (long_done.finished_at - long_done.started_at).total_seconds()
    assert duration > 30
    assert long_done.status == Status.SUCCEEDED and long_done.attempt == 1
    assert short_done.status == Status.SUCCEEDED and short_done.attempt == 1
    assert logs.count(f"stage {long_stage.pk} (run {long_run.pk}, attempt 1) claimed") == 1
    assert logs.count(f"stage {short_stage.pk} (run {short_run.pk}, attempt 1) claimed") == 1
    assert "worker busy: stopped consuming from" in logs  # it held no message while training
    assert "PRECONDITION_FAILED" not in logs and "Unrecoverable error" not in logs
    assert_each_step_once(long_done, 4500)
    # Control: this broker does enforce its 3 s timeout on a consumer that holds a message unacked.
    held = unacked_consumer_closed_after(rabbitmq.url)
    assert 2.5 < held < 6
    record(
        stage_seconds=duration,
        consumer_timeout_s=3,
        control_consumer_closed_after_s=held,
        executions_long=1,
        executions_short=1,
    )


def unacked_consumer_closed_after(url: str) -> float:
    """Seconds until RabbitMQ closes a channel whose consumer keeps one message unacked."""
    from kombu import Connection
    from kombu import Queue as KombuQueue

    with Connection(url) as conn:
        queue = KombuQueue("chaos-control", routing_key="chaos-control", auto_delete=True)
        conn.default_channel.basic_qos(0, 1, False)
        with conn.Producer() as producer:
            producer.publish({"x": 1}, routing_key="chaos-control", declare=[queue])
        got = []
        with conn.Consumer(queue, callbacks=[lambda body, message: got.append(time.monotonic())], accept=["json"]):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    continue
                except Exception as exc:  # noqa: BLE001 - the channel closed with PRECONDITION_FAILED
                    assert "PRECONDITION_FAILED" in str(exc) or "406" in str(exc), exc
                    return time.monotonic() - got[0]
    raise AssertionError("RabbitMQ did not enforce its consumer timeout")


# 5 -----------------------------------------------------------------------------------------------
def test_5_mlflow_down_for_30s_mid_stage_loses_and_duplicates_no_point(cluster, demo_pipeline, chaos_mlflow, record):
    cluster.start_worker("w1")
    steps = 4500
    run, stage = launch(sft_pipeline(demo_pipeline, steps=steps, save_steps=1000))
    wait_training(stage, past_step=300)
    chaos_mlflow.stop()
    down_at_step = stage_now(stage).step
    time.sleep(30)
    up_at_step = stage_now(stage).step
    chaos_mlflow.start()
    restarted = time.monotonic()
    done = wait_finished(stage, timeout=400)

    assert done.status == Status.SUCCEEDED and done.attempt == 1
    assert up_at_step - down_at_step > 100  # training went on while MLflow was away
    wait_for(
        lambda: len(metric_history(done.mlflow_run_id, "train/loss")) >= steps,
        timeout=120,
        message="MLflow did not get every point",
    )
    delivered = elapsed(restarted)
    assert_each_step_once(done, steps)
    assert tracking_client().get_run(done.mlflow_run_id).info.status == "FINISHED"
    record(
        mlflow_down_s=30,
        steps_trained_while_down=up_at_step - down_at_step,
        restart_to_all_points_delivered_s=delivered,
    )


# 6 -----------------------------------------------------------------------------------------------
def test_6_postgresql_and_redis_restarted_mid_run_the_run_completes(cluster, demo_pipeline, record):
    # A lease of 10 s rides out the restart: the same attempt carries on, on fresh connections.
    cluster.start_worker("w1", REFINERY_LEASE_SECONDS=10)
    pipeline = demo_pipeline(
        {"name": "first", "method": "sft", "config": {"max_steps": 1500, "save_steps": 500, "logging_steps": 1}},
        {
            "name": "second",
            "method": "sft",
            "input": "first",
            "config": {"max_steps": 200, "save_steps": 500, "logging_steps": 1},
        },
    )
    run, stage = launch(pipeline)
    wait_training(stage, past_step=200)
    pg_down = PrivatePostgres.from_env().restart()
    at_pg = stage_now_retrying(stage).step
    wait_training(stage, past_step=at_pg + 100)
    redis_down = PrivateRedis.from_env().restart(down_seconds=2)  # no persistence: the broker comes back empty
    done = wait_finished(stage, timeout=300)
    second = wait_finished(StageRun.objects.get(run=run, name="second"), timeout=300)

    assert done.status == Status.SUCCEEDED and done.attempt == 1
    assert second.status == Status.SUCCEEDED
    assert Run.objects.get(pk=run.pk).status == Status.SUCCEEDED
    assert_each_step_once(done, 1500)
    assert_each_step_once(second, 200)
    logs = cluster.logs()
    assert "database unavailable" in logs or "heartbeat failed" in logs or "wait for the database" in logs
    record(postgres_down_s=pg_down, redis_down_s=redis_down, attempts=done.attempt)


# 9 -----------------------------------------------------------------------------------------------
def test_9_forty_stages_on_two_workers_each_run_exactly_once(cluster, demo_pipeline, record):
    cluster.start_worker("w1")
    cluster.start_worker("w2")
    cluster.start_beat()  # the reaper re-sends wake-ups of stages queued for over 5 s: duplicates on purpose
    started = time.monotonic()
    stages = [launch(sft_pipeline(demo_pipeline, steps=2, name=f"s{i}"))[1] for i in range(40)]
    done = [wait_finished(s, timeout=900) for s in stages]
    total = elapsed(started)

    logs = cluster.logs()
    assert all(s.status == Status.SUCCEEDED and s.attempt == 1 for s in done)
    claims = {s.pk: logs.count(f"stage {s.pk} (run {s.run_id}, attempt 1) claimed") for s in done}
    trainers = {s.pk: len(re.findall(rf"stage {s.pk}: trainer pid \d+ started", logs)) for s in done}
    assert set(claims.values()) == {1} and set(trainers.values()) == {1}
    assert {s.worker.split("@")[0] for s in done} == {"w1", "w2"}  # both took work
    duplicates = logs.count("nothing to do")
    record(stages=40, workers=2, wall_s=total, executions=sum(trainers.values()), duplicate_wake_ups_dropped=duplicates)
