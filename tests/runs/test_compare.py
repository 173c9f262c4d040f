"""Compare: 2 to 10 runs or stages side by side: overlaid charts thinned in SQL, a config diff of the
frozen snapshots, the final numbers with the best highlighted, CSV; team-scoped, constant queries."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from refinery.runs.models import Run, Status
from refinery.runs.selectors.compare import (
    ABSENT,
    Item,
    config_csv_rows,
    config_diff,
    flatten_snapshot,
    metric_goal,
    metric_table,
    metrics_csv_rows,
    overlay_charts,
    summary_numbers,
)
from refinery.runs.selectors.series import MAX_POINTS, Grid, compare_metric_points, downsample, stage_grid
from refinery.runs.services import run_create, stage_metrics_record
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory

SHA = "3fa9c1e2d4b5" + "0" * 52
T0 = 1_700_000_000.0  # metric timestamps: unix seconds


# --- rows ---------------------------------------------------------------------------------------------------


@pytest.fixture
def pipeline(team, alice):
    """Two full SFT stages, the second on the first's output (rows for the web side; nothing trains)."""
    data = DatasetVersionFactory(dataset__team=team, dataset__name="sums")
    stage = {"method": "sft", "config": {"max_steps": 100}, "adapter": {"type": "none"}, "dataset_id": data.dataset_id}
    return PipelineFactory(
        team=team,
        name="adder",
        base_model=BaseModelFactory(team=team, name="tiny"),
        created_by=alice,
        seed=5,
        stages=[{**stage, "name": "sft", "input": "base"}, {**stage, "name": "polish", "input": "sft"}],
    )


def make_run(
    pipeline,
    user,
    *,
    lr: float = 1e-4,
    seed: int = 5,
    loss: float = 0.5,
    steps: int = 5,
    started=None,
    summaries: bool = True,
) -> Run:
    """A finished run (real snapshot, via run_create) whose stages logged `steps` points each of train/loss
    and train/learning_rate, one a minute, and wrote their summaries."""
    run = run_create(pipeline=pipeline, user=user, seed=seed, overrides={"sft.config.learning_rate": lr})
    started = started or timezone.now() - timedelta(hours=1)
    Run.objects.filter(pk=run.pk).update(
        status=Status.SUCCEEDED, started_at=started, finished_at=started + timedelta(minutes=2 * steps + 1)
    )
    t0 = started.timestamp()
    for stage in run.stages.order_by("index"):
        offset = stage.index * steps
        stage.status, stage.total_steps, stage.step = Status.SUCCEEDED, steps, steps
        stage.started_at = started + timedelta(minutes=offset)
        stage.finished_at = started + timedelta(minutes=offset + steps)
        if summaries:
            stage.summary = {"train/loss": loss / (stage.index + 1), "train/epoch": 1.0, "train/runtime": 60.0 * steps}
        stage.save()
        stage_metrics_record(
            stage_run_id=stage.pk,
            points=[
                (key, s, value, t0 + 60 * (offset + s))
                for s in range(1, steps + 1)
                for key, value in (("train/loss", loss * 2 / s), ("train/learning_rate", lr))
            ],
        )
    run.refresh_from_db()
    return run


def _query(*numbers, **extra) -> str:
    return "&".join([f"run={n}" for n in numbers] + [f"{k}={v}" for k, v in extra.items()])


def _charts(html: str) -> dict[str, dict]:
    """The overlay JSON of every chart on a page: {chart id: {"x_label", "series"}}."""
    found = re.findall(r'<script id="(cmp-[^"]+)-src" type="application/json">(.*?)</script>', html, re.S)
    return {chart_id: json.loads(text) for chart_id, text in found}


def _diff_keys(html: str, cls: str = "is-diff") -> list[str]:
    body = html.split('data-testid="config-diff"')[1]
    return re.findall(rf'<tr class="{cls}" data-key="([^"]+)"', body)


# --- downsampling -------------------------------------------------------------------------------------------


def test_downsample_keeps_short_series_and_caps_long_ones_keeping_ends_and_spikes():
    short = [(i, float(i)) for i in range(MAX_POINTS)]
    assert downsample(short) == short

    points = [(i, 1.0 + (i % 7) * 0.01) for i in range(100_000)]
    points[43_210] = (43_210, 99.0)  # a loss spike
    points[77_777] = (77_777, -5.0)  # and a dip
    out = downsample(points, 1000)
    assert 900 <= len(out) <= 1000
    assert out[0] == points[0] and out[-1] == points[-1]
    assert (43_210, 99.0) in out and (77_777, -5.0) in out
    assert [x for x, _ in out] == sorted({x for x, _ in out})  # x order, no repeats
    assert set(out) <= set(points)  # only real points

    assert downsample([], 1000) == []
    assert len(downsample([(i, 0.0) for i in range(1001)], 1000)) <= 1000


def test_sql_thins_on_the_stage_grid_exactly_as_downsample_does(pipeline, alice, bob, django_assert_num_queries):
    run = make_run(pipeline, alice, steps=2)
    stage = run.stages.get(index=0)
    jagged = [((i * 7919) % 1000) / 100 for i in range(1, 5001)]  # a jagged curve over 5000 steps
    stage_metrics_record(
        stage_run_id=stage.pk,
        points=[
            (key, s, value, T0 + s)
            for s, v in enumerate(jagged, 1)
            for key, value in (("eval/acc", v), ("train/beta", 0.1), ("train/loss", 3.0 if s == 2222 else 1.0))
        ],
    )

    grid = Grid(width=20, buckets=250)  # 5000 steps in 250 buckets
    points = compare_metric_points(team=run.team, grids={stage.pk: grid})[stage.pk]
    for key, values in (("eval/acc", jagged), ("train/beta", [0.1] * 5000)):
        expected = downsample([(s, v, T0 + s) for s, v in enumerate(values, 1)], 1000, width=grid.width)
        assert points[key] == expected, key
        assert len(points[key]) <= 1000
    assert len(points["train/beta"]) == 2 * 250  # a flat line: each bucket's first and last point
    loss = points["train/loss"]  # steps 1 and 2 are make_run's own points (1.0, 0.5)
    assert loss[0][:2] == (1, 1.0) and (2222, 3.0) in [p[:2] for p in loss] and loss[-1][0] == 5000  # the spike

    # A stage that logged past its length: the steps after its grid share the last bucket; still bounded.
    short = stage_grid(stage, 1000)  # total_steps 2
    assert short == Grid(width=1, buckets=250)
    capped = compare_metric_points(team=run.team, grids={stage.pk: short})[stage.pk]["eval/acc"]
    assert capped == downsample([(s, v, T0 + s) for s, v in enumerate(jagged, 1)], 1000, width=1)
    assert len(capped) <= 1000 and capped[-1][0] == 5000

    # Another team's stage reads as empty, and a finished stage comes from the cache the second time.
    assert compare_metric_points(team=bob.teams.get(), grids={stage.pk: grid}) == {stage.pk: {}}
    finished = {stage.pk: stage.finished_at}
    first = compare_metric_points(team=run.team, grids={stage.pk: grid}, finished=finished)
    with django_assert_num_queries(0):
        assert compare_metric_points(team=run.team, grids={stage.pk: grid}, finished=finished) == first


# --- config diff --------------------------------------------------------------------------------------------


def _snapshot(**changes) -> dict:
    snapshot = {
        "pipeline": {"id": 1, "name": "adder", "version": 2, "updated_at": "2025-01-01T00:00:00"},
        "base_model": {"id": 3, "name": "tiny", "source": "local", "name_or_path": "/m/tiny", "revision": None},
        "stages": [
            {
                "name": "sft",
                "method": "sft",
                "config": {"learning_rate": 1e-4, "max_steps": 100},
                "adapter": {"type": "lora", "r": 8, "target_modules": ["q_proj", "v_proj"]},
                "dataset_id": 4,
                "eval_dataset_id": None,
                "input": "base",
                "train_data": {
                    "dataset_id": 4,
                    "name": "sums",
                    "version": 2,
                    "version_id": 9,
                    "sha256": SHA,
                    "rows": 100,
                    "storage_path": "3f/x.jsonl",
                },
                "eval_data": None,
            },
        ],
        "retention_data": None,
        "seed": 5,
        "code_version": "abc123",
        "overrides": {"sft.config.learning_rate": 1e-4},
    }
    for path, value in changes.items():
        target = snapshot
        *parts, last = path.split(".")
        for part in parts:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value
    return snapshot


def test_flatten_snapshot_names_every_input_by_dotted_key():
    flat = flatten_snapshot(_snapshot())
    assert flat == {
        "pipeline.name": "adder",
        "pipeline.version": 2,
        "base_model.name": "tiny",
        "base_model.source": "local",
        "base_model.name_or_path": "/m/tiny",
        "base_model.revision": None,
        "retention_data": None,
        "seed": 5,
        "code_version": "abc123",
        "stages.sft.method": "sft",
        "stages.sft.config.learning_rate": 1e-4,
        "stages.sft.config.max_steps": 100,
        "stages.sft.adapter.type": "lora",
        "stages.sft.adapter.r": 8,
        "stages.sft.adapter.target_modules": ["q_proj", "v_proj"],
        "stages.sft.input": "base",
        "stages.sft.train_data": f"sums v2 sha256:{SHA}",
        "stages.sft.eval_data": None,
    }  # no row ids, timestamps, storage paths or sweep overrides
    stage = flatten_snapshot(_snapshot(), stage="sft")
    assert stage["stage.name"] == "sft" and stage["stage.config.learning_rate"] == 1e-4 and stage["seed"] == 5
    assert not any(key.startswith("stages.") for key in stage)


def test_config_diff_shows_only_what_differs_unless_asked_for_all():
    a = flatten_snapshot(_snapshot())
    b = flatten_snapshot(_snapshot(**{"stages.0.config.learning_rate": 3e-4, "seed": 6}))
    c = flatten_snapshot(
        _snapshot(**{"stages.0.train_data.sha256": "f" * 64, "stages.0.adapter.r": 8, "stages.0.config.new_knob": True})
    )  # a key only one run has
    rows = config_diff([a, b, c])
    assert [r["key"] for r in rows] == [
        "seed",
        "stages.sft.config.learning_rate",
        "stages.sft.config.new_knob",
        "stages.sft.train_data",
    ]  # in snapshot order; the new key by its stage
    knob = rows[2]
    assert knob["values"] == [ABSENT, ABSENT, True] and [c["text"] for c in knob["cells"]] == ["—", "—", "true"]
    data = rows[3]["cells"]
    assert data[0]["text"] == "sums v2 sha256:3fa9c1e2d4b5" and data[0]["full"] == f"sums v2 sha256:{SHA}"
    assert [cell["changed"] for cell in data] == [False, False, True]
    everything = config_diff([a, b, c], show_all=True)
    assert len(everything) == len(set(a) | set(c)) and sum(r["differs"] for r in everything) == 4
    assert config_diff([a, dict(a)]) == []
    # 1 and 1.0 are the same number; True and 1 are not the same setting.
    assert config_diff([{"k": 1}, {"k": 1.0}]) == [] and len(config_diff([{"k": True}, {"k": 1}])) == 1


# --- final numbers ------------------------------------------------------------------------------------------


def test_summary_numbers_read_training_and_evaluate_summaries():
    assert summary_numbers(
        {"train/loss": 0.4, "train/epoch": 2, "nested": {"x": 1.5}, "note": "ok", "flag": True, "bad": float("nan")}
    ) == {"train/loss": 0.4, "train/epoch": 2.0, "nested/x": 1.5}
    evaluation = {
        "metrics": {"eval/accuracy": 0.8, "eval/loss": 1.2},
        "samples": [{"prompt": "1+1="}],
        "target": {"metric": "eval/accuracy", "value": 0.8, "gain": 0.3},
        "retention": {"metric": "retention/loss", "forgetting": 0.05},
    }
    assert summary_numbers(evaluation) == {"eval/accuracy": 0.8, "eval/loss": 1.2, "gain": 0.3, "forgetting": 0.05}
    assert summary_numbers(None) == {}


def test_metric_table_highlights_the_best_of_each_row():
    assert [
        metric_goal(k)
        for k in (
            "sft/train/loss",
            "eval/perplexity",
            "evaluate/forgetting",
            "eval/accuracy",
            "evaluate/gain",
            "train/learning_rate",
            "train/epoch",
        )
    ] == ["min", "min", "min", "max", "max", None, None]
    rows = {
        r["key"]: r
        for r in metric_table(
            [
                {"train/loss": 0.5, "eval/accuracy": 0.7, "train/epoch": 1.0, "forgetting": 0.1},
                {"train/loss": 0.3, "eval/accuracy": 0.9, "train/epoch": 3.0},
                {"train/loss": 0.3, "eval/accuracy": 0.8, "train/epoch": 2.0, "only/here": 1.0},
            ]
        )
    }
    assert rows["train/loss"]["best"] == [1, 2]  # lower is better, ties both win
    assert rows["eval/accuracy"]["best"] == [1]  # higher is better
    assert rows["train/epoch"]["best"] == []  # bookkeeping: nothing is better
    assert rows["forgetting"]["values"] == [0.1, None, None] and rows["forgetting"]["best"] == []  # alone: no winner
    assert rows["only/here"]["best"] == []


class FakeStage:
    def __init__(self, pk, name, method="sft", total_steps=0):
        self.pk, self.name, self.method, self.total_steps, self.step = pk, name, method, total_steps, total_steps


class FakeRun:
    def __init__(self, number, name="r"):
        self.number, self.name, self.started_at = number, name, None


def test_csv_rows_name_the_runs_and_defuse_spreadsheet_formulas():
    items = [
        Item(run=FakeRun(1, "adder"), stage=None, color="#000"),
        Item(run=FakeRun(2, "adder"), stage=FakeStage(5, "sft"), color="#111"),
    ]
    rows = metrics_csv_rows(items, metric_table([{"train/loss": 0.5, "=1+1": 2.0}, {"train/loss": 0.125}]))
    assert rows[0] == ["metric", "better", "#1 adder", "#2 adder · sft"]
    assert rows[1:] == [["train/loss", "lower", "0.5", "0.125"], ["'=1+1", "higher", "2.0", ""]]
    config = config_csv_rows(items, config_diff([{"cmd": '=HYPERLINK("x")', "n": -1}, {"cmd": "ok", "n": -2}]))
    assert config[1:] == [["cmd", "yes", '\'=HYPERLINK("x")', "ok"], ["n", "yes", "-1", "-2"]]


# --- the page -----------------------------------------------------------------------------------------------


def test_compare_page_overlays_diffs_and_tabulates_three_runs(browser_client, pipeline, alice):
    a = make_run(pipeline, alice, lr=1e-4, loss=0.5)
    b = make_run(pipeline, alice, lr=3e-4, loss=0.25)
    c = make_run(pipeline, alice, lr=1e-4, loss=0.75, seed=9)
    response = browser_client.get(f"/runs/compare/?{_query(a.number, b.number, c.number)}")
    assert response.status_code == 200
    html = response.content.decode()

    charts = _charts(html)
    loss = charts["cmp-step-train-loss"]
    assert loss["x_label"] == "step"
    assert [s["label"] for s in loss["series"]] == [f"#{r.number} adder" for r in (a, b, c)]
    assert len({s["color"] for s in loss["series"]}) == 3
    # Each run's two stages follow each other on one step axis: polish's steps 1..5 are 6..10.
    assert loss["series"][0]["x"] == list(range(1, 11))
    assert loss["series"][0]["y"][:2] == [1.0, 0.5]
    assert "cmp-step-train-learning-rate" in charts  # charted too, under "More metrics"
    assert html.index("cmp-step-train-loss") < html.index("More metrics") < html.index("cmp-step-train-learning-rate")

    assert _diff_keys(html) == ["seed", "stages.sft.config.learning_rate"]
    assert "stages.polish.config.max_steps" in _diff_keys(html, "is-same")  # there for "show all", hidden
    assert 'data-testid="diff-count">2 of' in html

    table = html.split('data-testid="metric-table"')[1].split('data-testid="config-diff"')[0]
    loss_row = re.search(r'<tr data-key="polish/train/loss">(.*?)</tr>', table, re.S).group(1)
    assert loss_row.count("is-best") == 1 and re.search(r'is-best"[^>]*>0.125<', loss_row)  # run b, polish
    assert "is-best" not in re.search(r'<tr data-key="sft/train/epoch">(.*?)</tr>', table, re.S).group(1)


def test_wall_time_toggle_renders_the_charts_alone_in_minutes(browser_client, pipeline, alice):
    a, b = make_run(pipeline, alice, steps=5), make_run(pipeline, alice, steps=5)
    response = browser_client.get(
        f"/runs/compare/?{_query(a.number, b.number, x='time')}",
        headers={"HX-Request": "true", "HX-Target": "compare-charts"},
    )
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html and 'data-testid="config-diff"' not in html
    loss = _charts(html)["cmp-time-train-loss"]
    assert loss["x_label"] == "wall time (min)"
    # One point a minute from the run's start; the second stage started 5 minutes in.
    assert loss["series"][0]["x"] == [float(m) for m in range(1, 6)] + [float(m) for m in range(6, 11)]
    full = browser_client.get(f"/runs/compare/?{_query(a.number, b.number, x='time')}").content.decode()
    assert 'aria-pressed="true" data-testid="x-time"' in full and 'data-testid="config-diff"' in full


def test_a_long_run_sends_at_most_max_points_per_series(browser_client, pipeline, alice):
    a, b = make_run(pipeline, alice, steps=2), make_run(pipeline, alice, steps=2)
    a.stages.update(total_steps=4000, step=4000)
    for stage in a.stages.all():
        stage_metrics_record(
            stage_run_id=stage.pk, points=[("train/reward", s, (s % 13) / 13, T0 + s) for s in range(1, 4001)]
        )
    html = browser_client.get(f"/runs/compare/?{_query(a.number, b.number)}").content.decode()
    series = _charts(html)["cmp-step-train-reward"]["series"]
    assert len(series) == 1 and 500 < len(series[0]["x"]) <= MAX_POINTS
    assert series[0]["x"][0] == 1 and series[0]["x"][-1] == 8000  # two stages of 4000 steps end to end


def test_stages_compare_by_name_and_line_up_on_their_own_steps(browser_client, pipeline, alice):
    a, b = make_run(pipeline, alice, lr=1e-4), make_run(pipeline, alice, lr=3e-4)
    html = browser_client.get(f"/runs/compare/?stage={a.number}:polish&stage={b.number}:sft").content.decode()
    loss = _charts(html)["cmp-step-train-loss"]
    assert [s["label"] for s in loss["series"]] == [f"#{a.number} adder · polish", f"#{b.number} adder · sft"]
    assert loss["series"][0]["x"] == [1, 2, 3, 4, 5]  # the stage's own steps
    assert _diff_keys(html) == ["stage.name", "stage.input", "stage.config.learning_rate"]
    assert '<tr data-key="train/loss">' in html  # a stage's numbers without the stage prefix


def test_bad_picks_get_a_400_page(browser_client, pipeline, alice):
    a, b = make_run(pipeline, alice), make_run(pipeline, alice, steps=1)
    cases = {
        "": "at least 2",
        f"run={a.number}": "at least 2",
        f"run={a.number}&run={a.number}": "at least 2",  # duplicates count once
        "&".join(f"run={n}" for n in range(1, 12)): "at most 10",
        "run=abc&run=2": "not a run number",
        f"run={a.number}&run=99999999999999999999": "not a run number",
        f"run={a.number}&stage={b.number}:sft": "not both",
        f"stage={a.number}&stage={b.number}:sft": "stage name",
    }
    for query, message in cases.items():
        for url in (f"/runs/compare/?{query}", f"/runs/compare.csv?{query}"):
            response = browser_client.get(url)
            assert response.status_code == 400, url
            assert message in response.content.decode(), url
    html = browser_client.get("/runs/compare/?run=1").content.decode()
    assert 'data-testid="compare-error"' in html and "Back to runs" in html
    ok = browser_client.get(f"/runs/compare/?run={a.number}&run={b.number}&run={a.number}")
    assert ok.status_code == 200 and len(_charts(ok.content.decode())["cmp-step-train-loss"]["series"]) == 2


def test_unknown_or_other_teams_runs_are_404(browser_client, client, pipeline, alice, bob):
    a, b = make_run(pipeline, alice), make_run(pipeline, alice)
    bobs_pipeline = PipelineFactory(
        team=bob.teams.get(), base_model=BaseModelFactory(team=bob.teams.get()), stages=pipeline.spec["stages"]
    )
    bobs_pipeline.spec["stages"][0]["dataset_id"] = DatasetVersionFactory(dataset__team=bob.teams.get()).dataset_id
    bobs_pipeline.spec["stages"][1]["dataset_id"] = bobs_pipeline.spec["stages"][0]["dataset_id"]
    bobs_pipeline.save()
    theirs = make_run(bobs_pipeline, bob)
    for query in (_query(a.number, 999), _query(a.number, b.number + 1), f"stage={a.number}:sft&stage={b.number}:nope"):
        for path in ("/runs/compare/", "/runs/compare.csv"):
            assert browser_client.get(f"{path}?{query}").status_code == 404, query
    # Bob's run #1 is Alice's run #1 by number: Alice sees only her own; Bob cannot see Alice's.
    assert theirs.number == a.number
    html = browser_client.get(f"/runs/compare/?{_query(a.number, b.number)}").content.decode()
    assert html.count(f"#{a.number} adder") >= 1 and bobs_pipeline.name not in html
    client.force_login(bob)
    assert client.get(f"/runs/compare/?{_query(a.number, b.number)}").status_code == 404  # bob has only #1
    anonymous = type(client)().get(f"/runs/compare/?{_query(a.number, b.number)}")
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]


def test_csv_exports_the_metric_table_and_the_config_diff(browser_client, pipeline, alice):
    a, b = make_run(pipeline, alice, lr=1e-4, loss=0.5), make_run(pipeline, alice, lr=3e-4, loss=0.25)
    response = browser_client.get(f"/runs/compare.csv?{_query(a.number, b.number)}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == f'attachment; filename="compare-metrics-{a.number}-{b.number}.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["metric", "better", f"#{a.number} adder", f"#{b.number} adder"]
    assert [row[0] for row in rows[1:]] == [
        f"{stage}/train/{key}"
        for stage in ("sft", "polish")  # stage order
        for key in ("epoch", "loss", "runtime")
    ]
    by_key = {row[0]: row[1:] for row in rows[1:]}
    assert by_key["sft/train/loss"] == ["lower", "0.5", "0.25"]
    assert by_key["polish/train/loss"] == ["lower", "0.25", "0.125"]
    assert by_key["sft/train/epoch"] == ["", "1.0", "1.0"]

    config = list(
        csv.reader(
            io.StringIO(
                browser_client.get(f"/runs/compare.csv?{_query(a.number, b.number, part='config')}").content.decode()
            )
        )
    )
    assert config == [
        ["key", "differs", f"#{a.number} adder", f"#{b.number} adder"],
        ["stages.sft.config.learning_rate", "yes", "0.0001", "0.0003"],
    ]
    everything = list(
        csv.reader(
            io.StringIO(
                browser_client.get(
                    f"/runs/compare.csv?{_query(a.number, b.number, part='config', all=1)}"
                ).content.decode()
            )
        )
    )
    assert len(everything) > 10 and {row[1] for row in everything[1:]} == {"yes", "no"}
    data_row = next(row for row in everything if row[0] == "stages.sft.train_data")
    assert data_row[2] == data_row[3] and re.fullmatch(r"sums v1 sha256:[0-9a-f]{64}", data_row[2])


def test_queries_do_not_grow_with_the_number_of_runs(browser_client, pipeline, alice, django_assert_max_num_queries):
    runs = [make_run(pipeline, alice, lr=1e-4 * (i + 1), steps=3) for i in range(10)]
    counts = {}
    for n in (2, 10):
        url = f"/runs/compare/?{_query(*(r.number for r in runs[:n]))}"
        with CaptureQueriesContext(connection) as queries:
            assert browser_client.get(url).status_code == 200
        counts[n] = len(queries)
        with django_assert_max_num_queries(8):
            browser_client.get(url)
        with django_assert_max_num_queries(8):
            browser_client.get(url.replace("/compare/", "/compare.csv"))  # the CSV costs no more than the page
    assert counts[2] == counts[10], counts


def test_overlay_charts_skip_one_off_stages_and_runs_without_the_metric():
    sft, ev = FakeStage(1, "sft", "sft", 3), FakeStage(2, "evaluate", "evaluate")
    items = [
        Item(run=FakeRun(1), stage=None, color="#111", stages=[sft, ev]),
        Item(run=FakeRun(2), stage=None, color="#222", stages=[FakeStage(3, "sft", "sft", 3)]),
    ]
    points = {1: {"train/loss": [(1, 2.0, T0), (3, float("inf"), T0 + 9)]}, 2: {"eval/accuracy": [(0, 0.9, T0)]}, 3: {}}
    charts = overlay_charts(items, points)
    assert [c["key"] for c in charts["main"]] == ["train/loss"]  # evaluate's one-off number: in the table
    (series,) = charts["main"][0]["data"]["series"]
    assert series["color"] == "#111" and series["x"] == [1, 3] and series["y"] == [2.0, None]  # inf -> gap
    timed = overlay_charts(items, points, x="time")["main"][0]
    assert timed["data"]["x_label"] == "wall time (s)" and timed["data"]["series"][0]["x"] == [0.0, 9.0]
