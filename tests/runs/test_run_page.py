"""The run page: stage timeline, lineage, config, log tails, thinned charts, constant queries, team scoping,
and no MLflow address handed to the browser."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from refinery.runs.models import StageMetric, StageRun, Status
from refinery.runs.selectors import series as downsample
from refinery.runs.selectors.series import MAX_POINTS
from refinery.runs.services import run_create, stage_claim, stage_finish, stage_metrics_record, stage_update
from refinery.tracking.stage_artifacts import ArtifactPathError, artifact_path_clean
from tests.factories import TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    """Diffs and finished stages' series are cached by content; each test starts without them."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


MLFLOW_UI = "http://mlflow.internal.example:5000"


@pytest.fixture
def start(django_capture_on_commit_callbacks, sent_stages):
    def run(pipeline):
        with django_capture_on_commit_callbacks(execute=True):
            return run_create(pipeline=pipeline, user=pipeline.created_by)

    return run


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def stages_of(run) -> dict[str, StageRun]:
    return {s.name: s for s in run.stages.order_by("index")}


def finish(stage: StageRun, status: str, capture, **kwargs) -> StageRun:
    with capture(execute=True):
        return stage_finish(stage_run_id=stage.pk, status=status, **kwargs)


def chart_json(html: str, testid: str) -> dict:
    """The JSON a chart draws, from the inline <script class="chart-data"> in the element with `testid`."""
    match = re.search(
        rf'data-testid="{re.escape(testid)}"[^>]*><script type="application/json" '
        rf'class="chart-data">(.*?)</script>',
        html,
        re.S,
    )
    assert match, f"no chart {testid}"
    return json.loads(match.group(1))


def points_per_series(chart: dict) -> dict[str, list[tuple[int, float]]]:
    return {
        s["label"]: [(x, v) for x, v in zip(chart["x"], s["values"], strict=True) if v is not None]
        for s in chart["series"]
    }


def test_timeline_lineage_config_and_log_tails(make_pipeline, start, django_capture_on_commit_callbacks, settings):
    settings.MLFLOW_UI_URL = MLFLOW_UI
    pipeline = make_pipeline(("a", "base"), ("b", "a"), ("c", "base"))
    run = start(pipeline)
    stages = stages_of(run)
    stage_claim(stage_run_id=stages["a"].pk, worker="w1")
    stage_claim(stage_run_id=stages["c"].pk, worker="w2")  # a parallel branch
    for name in ("a", "c"):
        stage_update(stage_run_id=stages[name].pk, mlflow_run_id=f"{name * 32}")
    finish(
        stages["a"],
        Status.SUCCEEDED,
        django_capture_on_commit_callbacks,
        log_tail="step 1 loss 2.0\nstep 2 loss 1.5\ntraining done",
    )
    run.mlflow_run_id, run.mlflow_experiment_id = "f" * 32, "7"
    run.save()

    html = client_for(pipeline.created_by).get(f"/runs/{run.number}/").content.decode()

    # Timeline: a ran and finished, c is running beside it, b (waiting on a) is queued now.
    timeline = html.split('data-testid="stage-timeline"')[1].split('data-testid="pipeline-graph"')[0]
    assert 'data-testid="timeline-bar-a"' in timeline and "status-succeeded" in timeline
    assert 'data-testid="timeline-bar-c"' in timeline and "status-running" in timeline
    assert 'data-stage="b"' in timeline and "timeline-queued" in timeline
    # Lineage: dataset version with its hash, base model and revision, parents, code and pipeline versions.
    version = pipeline.team.datasets.get().versions.get()
    lineage = html.split('data-testid="run-lineage"')[1].split('data-testid="run-config"')[0]
    assert version.sha256 in lineage and f"?version={version.version}" in lineage
    assert f'href="/models/{pipeline.base_model.pk}/"' in lineage and pipeline.base_model.name in lineage
    assert f'href="/pipelines/{pipeline.pk}/?version=1"' in lineage
    assert run.code_version in lineage
    parents = lineage.split('data-testid="lineage-parents"')[1]
    assert re.search(r'#stage-b">b</a>.*?#stage-a">a</a>', parents, re.S)  # b is built on a
    assert re.search(r'#stage-c">c</a>.*?the base model', parents, re.S)
    # Config: each stage's frozen settings, pretty and folded.
    config = html.split('data-testid="run-config"')[1]
    assert 'data-testid="config-a"' in config and "&quot;max_steps&quot;: 2" in config
    # The log tail of a finished stage is there, folded (a failed stage's is open: test_pages).
    assert re.search(r'<details class="run-log-tail" id="log-tail-\d+" data-testid="log-tail-a" >', html)
    assert "training done" in html
    # Spots for the lead's includes, and the page keeps polling while the run can change.
    assert 'hx-trigger="every 2s"' in html and 'id="run-artifacts"' in html
    # MLflow is never exposed: no link, no address, no "Open in MLflow".
    assert "mlflow.internal" not in html and "Open in MLflow" not in html and "#/experiments" not in html


def test_live_fragment_polls_and_stops_when_the_run_ends(make_pipeline, start, django_capture_on_commit_callbacks):
    pipeline = make_pipeline(("a", "base"))
    run = start(pipeline)
    client = client_for(pipeline.created_by)
    poll = {"HX-Request": "true", "HX-Target": "run-live"}
    fragment = client.get(f"/runs/{run.number}/", headers=poll)
    assert fragment.status_code == 200 and b"<html" not in fragment.content
    assert b'data-testid="stage-timeline"' in fragment.content and b"run-lineage" not in fragment.content
    a = stages_of(run)["a"]
    stage_claim(stage_run_id=a.pk, worker="w1")
    finish(a, Status.SUCCEEDED, django_capture_on_commit_callbacks)
    final = client.get(f"/runs/{run.number}/", headers=poll)
    assert final.status_code == 286 and b'data-finished="1"' in final.content


def test_a_5000_point_stage_is_thinned_to_1000_points_per_series(
    make_pipeline, start, monkeypatch, django_capture_on_commit_callbacks
):
    pipeline = make_pipeline(("a", "base"), ("b", "a"))
    run = start(pipeline)
    a, b = stages_of(run).values()
    StageRun.objects.filter(pk=a.pk).update(total_steps=5000)
    stage_metrics_record(
        stage_run_id=a.pk,
        points=[
            (key, step, value, 0.0)
            for step in range(1, 5001)
            for key, value in (
                ("train/loss", 10.0 / step),
                ("train/learning_rate", step * 1e-7),
                ("train/grad_norm", 1.0 + (step % 7)),
            )
        ]
        + [("eval/loss", step, 5.0 / step, 0.0) for step in range(100, 5001, 100)],
    )
    stage_metrics_record(stage_run_id=b.pk, points=[("train/loss", s, 0.5 / s, 0.0) for s in range(1, 11)])
    client = client_for(pipeline.created_by)

    html = client.get(f"/runs/{run.number}/").content.decode()
    loss = points_per_series(chart_json(html, "loss-chart"))
    assert set(loss) == {"a train/loss", "a eval/loss", "b train/loss"}
    a_loss = loss["a train/loss"]
    assert 500 <= len(a_loss) <= MAX_POINTS
    assert a_loss[0] == (1, 10.0) and a_loss[-1] == (5000, 10.0 / 5000)  # first and latest points exact
    assert all(value == pytest.approx(10.0 / step) for step, value in a_loss)  # every point drawn is real
    assert len(loss["a eval/loss"]) == 50  # sparse series keep every point
    assert loss["b train/loss"][0] == (5001, 0.5)  # stage b follows a on the shared step axis
    assert len(chart_json(html, "loss-chart")["x"]) <= 2 * MAX_POINTS  # train/* share x values
    for testid in ("metric-train-learning-rate", "metric-train-grad-norm"):
        for series in points_per_series(chart_json(html, testid)).values():
            assert len(series) <= MAX_POINTS
    data = client.get(f"/runs/{run.number}/metrics.json?key=train/loss").json()
    assert all(sum(v is not None for v in s["values"]) <= MAX_POINTS for s in data["series"])
    assert {s["label"] for s in data["series"]} == {"a train/loss", "b train/loss"}

    # A finished stage's thinned series are cached: a poll re-reads only the unfinished stages' points.
    stage_claim(stage_run_id=a.pk, worker="w1")
    finish(a, Status.SUCCEEDED, django_capture_on_commit_callbacks)
    client.get(f"/runs/{run.number}/")  # fills the cache
    stage_claim(stage_run_id=b.pk, worker="w1")
    read = []
    query = downsample._query
    monkeypatch.setattr(downsample, "_query", lambda widths, *args: read.append(set(widths)) or query(widths, *args))
    table = StageMetric._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        poll = client.get(f"/runs/{run.number}/", headers={"HX-Request": "true", "HX-Target": "run-live"})
    assert read == [{b.pk}] and sum(table in q["sql"] for q in queries.captured_queries) == 1
    assert points_per_series(chart_json(poll.content.decode(), "loss-chart"))["a train/loss"] == a_loss


def test_index_probes_and_window_functions_pick_the_same_points(make_pipeline, start, monkeypatch):
    """PostgreSQL probes the index; other databases (SQLite) use window functions: the same answer."""
    pipeline = make_pipeline(("a", "base"), ("b", "a"))
    run = start(pipeline)
    a, b = stages_of(run).values()
    StageRun.objects.filter(pk=a.pk).update(total_steps=3000)
    stage_metrics_record(
        stage_run_id=a.pk,
        points=[("train/loss", s, 1.0 / s, 0.0) for s in range(1, 3001)]
        + [("eval/loss", s, 2.0 / s, 0.0) for s in range(7, 3001, 97)],
    )
    stage_metrics_record(stage_run_id=b.pk, points=[("train/loss", s, 0.1 * s, 0.0) for s in range(0, 40, 3)])
    stages = list(run.stages.order_by("index"))
    probed = downsample.stage_series_sampled(stages=stages)
    monkeypatch.setattr(downsample, "_index_probes", lambda: False)
    assert downsample.stage_series_sampled(stages=stages) == probed
    assert len(probed[b.pk]["train/loss"]) == 14 and 500 < len(probed[a.pk]["train/loss"]) <= MAX_POINTS


def test_a_series_logged_far_past_total_steps_stays_under_the_cap(make_pipeline, start):
    pipeline = make_pipeline(("a", "base"))
    run = start(pipeline)
    a = run.stages.get()  # total_steps unknown (0): the grid cannot come from it
    stage_metrics_record(stage_run_id=a.pk, points=[("train/loss", s * 37, 1.0, 0.0) for s in range(5000)])
    series = downsample.stage_series_sampled(stages=[a])[a.pk]["train/loss"]
    assert 500 < len(series) <= MAX_POINTS and series[0][0] == 0 and series[-1][0] == 4999 * 37


def _run_with_stages(make_pipeline, start, n: int, capture):
    names = [f"s{i}" for i in range(n)]
    pipeline = make_pipeline(*[(name, names[i - 1] if i else "base") for i, name in enumerate(names)])
    run = start(pipeline)
    for i, stage in enumerate(run.stages.order_by("index")):
        stage_metrics_record(
            stage_run_id=stage.pk,
            points=[
                (key, step, 1.0 / step, 0.0) for step in range(1, 40) for key in ("train/loss", "train/learning_rate")
            ],
        )
        if i < n - 1:
            stage_claim(stage_run_id=stage.pk, worker="w")
            finish(stage, Status.SUCCEEDED, capture, log_tail=f"log of {stage.name}")
    return pipeline, run


def test_the_page_costs_the_same_queries_for_2_and_8_stages(make_pipeline, start, django_capture_on_commit_callbacks):
    counts = {}
    for n in (2, 8):
        pipeline, run = _run_with_stages(make_pipeline, start, n, django_capture_on_commit_callbacks)
        client = client_for(pipeline.created_by)
        client.get(f"/runs/{run.number}/")  # sessions and caches warm, as for a user who is watching
        for kind, headers in (("page", {}), ("poll", {"HX-Request": "true", "HX-Target": "run-live"})):
            from django.core.cache import cache

            cache.clear()  # nothing cached: the worst case
            with CaptureQueriesContext(connection) as queries:
                response = client.get(f"/runs/{run.number}/", headers=headers)
            assert response.status_code == 200
            assert response.content.decode().count('data-testid="stage-s') == n
            counts[n, kind] = len(queries.captured_queries)
        # Out of the way: a wake-up claims the fairest queued stage, which may be another team's.
        StageRun.objects.filter(run=run, status=Status.QUEUED).update(status=Status.CANCELED)
    assert counts[2, "page"] == counts[8, "page"], counts
    assert counts[2, "poll"] == counts[8, "poll"], counts


def test_other_teams_get_404_everywhere(make_pipeline, start):
    pipeline = make_pipeline(("a", "base"))
    run = start(pipeline)
    stage = run.stages.get()
    stage_update(stage_run_id=stage.pk, mlflow_run_id="a" * 32)
    stranger = UserFactory()
    TeamFactory(members=[stranger])
    client = client_for(stranger)
    for url in (
        f"/runs/{run.number}/",
        f"/runs/{run.number}/metrics.json",
        f"/runs/{run.number}/artifacts/",
        f"/runs/{run.number}/artifacts/?stage=a",
        f"/runs/{run.number}/artifacts/download/?stage=a&path=spec.json",
    ):
        assert client.get(url).status_code == 404, url
    owner = client_for(pipeline.created_by)
    assert owner.get(f"/runs/{run.number}/artifacts/download/?stage=nope&path=x").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "../x",
        "a/../../b",
        "/etc/passwd",
        "~/x",
        "C:/x",
        "a\\..\\b",
        "%2e%2e/x",
        "a/%2E%2E/b",
        "s3://bucket/x",
        "a\x00b",
    ],
)
def test_artifact_paths_that_could_leave_the_stage_are_refused(path):
    with pytest.raises(ArtifactPathError):
        artifact_path_clean(path)


def test_artifact_paths_are_normalised():
    assert artifact_path_clean(None) == "" and artifact_path_clean(" ") == ""
    assert artifact_path_clean("./model//weights/") == "model/weights"
    assert artifact_path_clean("notes v1.txt") == "notes v1.txt"


def test_traversal_is_refused_before_mlflow_is_asked(make_pipeline, start, settings):
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"  # nothing listens: a call would fail, not 400
    pipeline = make_pipeline(("a", "base"))
    run = start(pipeline)
    stage_update(stage_run_id=run.stages.get().pk, mlflow_run_id="a" * 32)
    client = client_for(pipeline.created_by)
    for path in ("../../etc/passwd", "/etc/passwd", "model/../../x"):
        assert client.get(f"/runs/{run.number}/artifacts/download/", {"stage": "a", "path": path}).status_code == 400
        assert client.get(f"/runs/{run.number}/artifacts/", {"stage": "a", "path": path}).status_code == 400


def test_stages_without_an_mlflow_run_have_no_artifacts_yet(make_pipeline, start):
    pipeline = make_pipeline(("a", "base"))
    run = start(pipeline)
    client = client_for(pipeline.created_by)
    html = client.get(f"/runs/{run.number}/").content.decode()
    assert "No files yet" in html and 'hx-trigger="load"' not in html.split('id="run-artifacts"')[1]
    assert "No files yet" in client.get(f"/runs/{run.number}/artifacts/").content.decode()


def test_timeline_spans_wall_time_with_parallel_branches(make_pipeline, start):
    from refinery.runs.views.lifecycle import _timeline

    pipeline = make_pipeline(("a", "base"), ("b", "base"), ("c", "a"))
    run = start(pipeline)
    t0 = timezone.now() - timedelta(minutes=10)
    a, b, c = stages_of(run).values()
    a.queued_at, a.started_at, a.finished_at, a.status = t0, t0, t0 + timedelta(minutes=4), Status.SUCCEEDED
    b.queued_at, b.started_at, b.finished_at, b.status = (
        t0,
        t0 + timedelta(minutes=1),
        t0 + timedelta(minutes=6),
        Status.SUCCEEDED,
    )
    c.queued_at, c.started_at, c.finished_at, c.status = (
        t0 + timedelta(minutes=4),
        t0 + timedelta(minutes=5),
        t0 + timedelta(minutes=10),
        Status.FAILED,
    )
    rows = {r["stage"].name: r for r in _timeline([a, b, c], now=t0 + timedelta(minutes=10))["rows"]}
    assert rows["a"]["running"] == {"left": 0.0, "width": 40.0}
    assert rows["b"]["queued"]["width"] == 10.0 and rows["b"]["running"] == {"left": 10.0, "width": 50.0}
    assert rows["c"]["queued"]["left"] == 40.0 and rows["c"]["running"] == {"left": 50.0, "width": 50.0}
