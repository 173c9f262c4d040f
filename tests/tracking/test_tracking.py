"""refinery.tracking against a real MLflow server: the metric buffer, parent runs, links."""

from __future__ import annotations

import threading
import time

import pytest

from refinery.tracking.buffer import MetricBuffer
from refinery.tracking.client import experiment_ensure, metric_history, tracking_client
from refinery.tracking.runs import flatten, pipeline_run_ensure
from tests.conftest import free_port
from tests.factories import TeamFactory


@pytest.fixture
def mlflow_run(mlflow_server):
    client = tracking_client()
    experiment_id = client.create_experiment(f"buffer-{time.time_ns()}")
    return client.create_run(experiment_id).info.run_id


def test_the_buffer_keeps_points_through_an_outage_and_sends_them_all_after(mlflow_run):
    buffer = MetricBuffer(run_id=mlflow_run, tracking_uri=f"http://127.0.0.1:{free_port()}")  # nobody listens
    for step in range(2500):
        buffer.add("train/loss", 10.0 / (step + 1), step, timestamp=1_700_000_000 + step)
    buffer.add("train/loss", float("nan"), 2500)  # non-finite points are not metrics
    buffer.add("train/loss", None, 2501)

    assert buffer.flush() is False and buffer.failures == 1
    assert buffer.pending == 2500  # nothing lost

    buffer.client = tracking_client()  # MLflow is back
    assert buffer.close(timeout=30) == 0
    history = metric_history(mlflow_run, "train/loss")
    assert [s for s, _ in history] == list(range(2500))
    assert buffer.sent == 2500 and buffer.dropped == 0


def test_the_buffer_flushes_in_the_background_and_bounds_its_memory(mlflow_run):
    buffer = MetricBuffer(run_id=mlflow_run, flush_seconds=0.2, max_points=1000).start()
    for step in range(10):
        buffer.add("eval/loss", 1.0 - step / 10, step)
    deadline = time.monotonic() + 20
    while buffer.sent < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert buffer.sent == 10  # flushed by the thread, before close
    assert buffer.close(timeout=10) == 0

    small = MetricBuffer(run_id=mlflow_run, max_points=5, client=object())  # never sent
    for step in range(8):
        small.add("x", step, step)
    assert small.pending == 5 and small.dropped == 3


@pytest.mark.django_db(transaction=True)
def test_the_parent_run_is_created_once_even_when_two_stages_race(make_pipeline, sent_stages, mlflow_server):
    from django.db import connection

    from refinery.runs.models import Run
    from refinery.runs.services import run_create

    pipeline = make_pipeline(("a", "base"), ("b", "base"))
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    barrier = threading.Barrier(3)
    ids: list[tuple[str, str]] = []

    def ensure() -> None:
        try:
            barrier.wait(timeout=30)
            ids.append(pipeline_run_ensure(run=Run.objects.get(pk=run.pk)))
        finally:
            connection.close()

    threads = [threading.Thread(target=ensure) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    run.refresh_from_db()
    assert len(ids) == 3 and set(ids) == {(run.mlflow_experiment_id, run.mlflow_run_id)}
    live = tracking_client().search_runs([run.mlflow_experiment_id])
    assert [r.info.run_id for r in live] == [run.mlflow_run_id]
    parent = live[0]
    assert parent.data.tags["refinery.team"] == pipeline.team.slug
    assert parent.data.tags["refinery.run_number"] == str(run.number)
    assert parent.data.tags["refinery.user"] == pipeline.created_by.username
    assert parent.data.params["seed"] == str(run.seed)


@pytest.mark.django_db
def test_experiment_per_team(mlflow_server, settings):
    team = TeamFactory(slug="links-team")
    experiment_id = experiment_ensure(team=team)
    assert experiment_ensure(team=team) == experiment_id
    assert tracking_client().get_experiment(experiment_id).name == f"{settings.MLFLOW_EXPERIMENT_PREFIX}/links-team"


def test_flatten_names_params_by_path():
    assert flatten(
        {
            "config": {"learning_rate": 0.1, "nested": {"x": 1}},
            "adapter": {"r": 8},
            "data": {"train": {"sha256": "ab"}},
            "tags": ["a", "b"],
            "empty": {},
        }
    ) == {
        "config.learning_rate": "0.1",
        "config.nested.x": "1",
        "adapter.r": "8",
        "data.train.sha256": "ab",
        "tags": "a,b",
        "empty": "{}",
    }


def test_the_spool_on_disk_outlives_its_buffer_and_the_next_one_delivers_it(mlflow_run, tmp_path):
    """A worker killed while MLflow is down leaves its points on disk; the next attempt sends them once."""
    spool = tmp_path / "metrics.ndjson"
    dead = MetricBuffer(run_id=mlflow_run, tracking_uri=f"http://127.0.0.1:{free_port()}", spool_path=spool)
    for step in range(1, 301):
        dead.add("train/loss", 1.0 / step, step, timestamp=1_700_000_000 + step)
    dead.add("eval/loss", 0.5, 300, timestamp=1_700_000_300)
    assert dead.flush() is False
    with open(spool, "ab") as fh:
        fh.write(b'["train/loss", 0.1, 3')  # the process died mid-write: a torn last line
    del dead  # no close(): the process is gone

    nxt = MetricBuffer(run_id=mlflow_run, spool_path=spool)
    assert nxt.recovered == 301 and nxt.pending == 301
    assert nxt.prior_steps == {"train/loss": 300, "eval/loss": 300}
    nxt.add("train/loss", 0.001, 301, timestamp=1_700_000_301)
    assert nxt.close(timeout=30) == 0
    history = metric_history(mlflow_run, "train/loss")
    assert [s for s, _ in history] == list(range(1, 302))  # each step once, none lost
    assert spool.stat().st_size == 0  # all delivered: the file starts over
    # What was accepted stays known after the spool is emptied (for a later resume).
    assert MetricBuffer(run_id=mlflow_run, spool_path=spool, client=object()).prior_steps == {
        "train/loss": 301,
        "eval/loss": 300,
    }


def test_a_full_spool_drops_its_oldest_points(tmp_path):
    small = MetricBuffer(run_id="r", max_points=5, client=object(), spool_path=tmp_path / "s.ndjson")
    for step in range(8):
        small.add("x", step, step)
    assert small.pending == 5 and small.dropped == 3
    again = MetricBuffer(run_id="r", max_points=5, client=object(), spool_path=tmp_path / "s.ndjson")
    assert again.pending == 5  # the cursor on disk skips the dropped ones


@pytest.mark.django_db(transaction=True)
def test_the_reaper_closes_the_mlflow_run_of_a_run_canceled_between_stages(make_pipeline, sent_stages, mlflow_server):
    """No supervisor is left to close the parent run when a run is canceled with its next stage queued."""
    from jobs.tasks import reap_stages
    from refinery.runs.models import Run
    from refinery.runs.services import run_cancel, run_create

    pipeline = make_pipeline(("a", "base"), ("b", "a"))
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    pipeline_run_ensure(run=Run.objects.get(pk=run.pk))  # as the first stage's supervisor did
    run_cancel(run=Run.objects.get(pk=run.pk))
    run.refresh_from_db()
    assert run.status == "canceled" and run.mlflow_ended_at is None
    assert tracking_client().get_run(run.mlflow_run_id).info.status == "RUNNING"

    reap_stages()
    run.refresh_from_db()
    assert tracking_client().get_run(run.mlflow_run_id).info.status == "KILLED"
    assert run.mlflow_ended_at is not None
    reap_stages()  # closed once: nothing left to do
