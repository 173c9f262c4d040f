"""Sweeps: a grid or random sample of a pipeline's settings queued as runs in one go, checked trial by trial
first (all or nothing), and ranked by a metric of the runs' stage summaries."""

from __future__ import annotations

import json
import math
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from refinery.basemodels.services import base_model_create
from refinery.data.services import dataset_version_create
from refinery.pipelines.services import pipeline_create, pipeline_current_version
from refinery.runs.models import Run, StageRun, Status
from refinery.runs.selectors.summaries import run_summary_metrics
from refinery.sweeps.models import Sweep, SweepTrial
from refinery.sweeps.services import SweepError, sweep_create, sweep_plan
from tests.factories import PipelineFactory, TeamFactory
from tests.fixtures import ROWS

LR = "a.config.learning_rate"
RANK = "a.adapter.r"


@pytest.fixture
def pipeline(team, alice, dataset_dir, tiny_model_dir):
    data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    sums = dataset_version_create(
        team=team, user=alice, name="sums", kind="prompt_completion", filename="sums.jsonl", chunks=iter([data])
    ).version.dataset
    model = base_model_create(team=team, user=alice, name="tiny", source="local", name_or_path=str(tiny_model_dir))
    spec = {
        "seed": 5,
        "auto_evaluate": False,
        "stages": [
            {
                "name": "a",
                "method": "sft",
                "dataset_id": sums.pk,
                "config": {"max_steps": 4},
                "adapter": {"type": "lora"},
            },
        ],
    }
    return pipeline_create(team=team, user=alice, name="adder", base_model_id=model.pk, spec=spec)


def _grid(pipeline, alice, *, name="lr-x-rank", lrs=("1e-4", "3e-4"), ranks=("4", "8", "16"), **kw) -> Sweep:
    params = [{"path": LR, "values": list(lrs)}, {"path": RANK, "values": list(ranks)}]
    return sweep_create(
        pipeline=pipeline,
        user=alice,
        name=name,
        mode="grid",
        parameters=params,
        metric="a/train/loss",
        goal="min",
        **kw,
    )


def _form(pipeline, **fields) -> dict:
    data = {
        "pipeline": pipeline.pk,
        "name": "lr-x-rank",
        "mode": "grid",
        "samples": "8",
        "seed": "",
        "metric": "a/train/loss",
        "goal": "min",
        "params-0-path": LR,
        "params-0-values": "1e-4, 3e-4",
        "params-1-path": RANK,
        "params-1-values": "4, 8, 16",
        "params-2-path": "",
    }
    data.update(fields)
    return data


def _rows_in_order(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'data-testid="trial-(\d+)"', html)]


def test_a_2x3_grid_queues_6_runs_with_exactly_those_settings(
    browser_client, pipeline, sent_stages, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = browser_client.post("/sweeps/new/", _form(pipeline))
    assert response.status_code == 302, re.findall(r"<li>(.*?)</li>", response.content.decode())
    sweep = Sweep.objects.get()
    assert response["Location"] == f"/sweeps/{sweep.pk}/"
    assert sweep.pipeline_version == pipeline_current_version(pipeline)
    assert sweep.parameters == [{"path": LR, "values": [1e-4, 3e-4]}, {"path": RANK, "values": [4, 8, 16]}]

    trials = list(SweepTrial.objects.select_related("run").order_by("index"))
    assert [t.index for t in trials] == [1, 2, 3, 4, 5, 6]
    expected = [(lr, r) for lr in (1e-4, 3e-4) for r in (4, 8, 16)]
    assert [(t.params[LR], t.params[RANK]) for t in trials] == expected
    for trial, (lr, r) in zip(trials, expected):
        stage = trial.run.snapshot["stages"][0]
        assert stage["config"]["learning_rate"] == lr and stage["adapter"]["r"] == r
        assert stage["config"]["max_steps"] == 4 and stage["adapter"]["type"] == "lora"  # the rest is the pipeline's
        assert trial.run.snapshot["overrides"] == {LR: lr, RANK: r}
        assert trial.run.name == f"lr-x-rank #{trial.index}" and trial.run.pipeline_version == sweep.pipeline_version
    # Queued together: every run's first stage is queued and woken up by the one transaction's commit.
    assert Run.objects.count() == 6
    first_stages = StageRun.objects.filter(run__sweep_trial__sweep=sweep, index=0)
    assert set(first_stages.values_list("status", flat=True)) == {Status.QUEUED}
    assert sorted(sent_stages) == sorted(first_stages.values_list("pk", flat=True))
    assert len(callbacks) >= 6


def test_random_sweeps_draw_the_same_trials_from_the_same_seed_within_bounds(pipeline, alice):
    version = pipeline_current_version(pipeline)
    params = [
        {"path": LR, "min": "1e-5", "max": "1e-2", "scale": "log"},
        {"path": RANK, "min": 2, "max": 64, "scale": "log"},
        {"path": "a.adapter.dropout", "values": ["0", "0.1"]},
    ]

    def plan(seed, samples=64):
        return sweep_plan(
            pipeline=pipeline,
            version=version,
            name="draw",
            mode="random",
            parameters=params,
            samples=samples,
            seed=seed,
            metric="a/train/loss",
            goal="min",
        ).trials

    first = plan(11)
    assert first == plan(11) and first != plan(12)
    lrs = [t[LR] for t in first]
    assert all(1e-5 <= lr <= 1e-2 for lr in lrs)
    # Log scale: about half below the geometric middle (3.2e-4); a linear draw would put ~3% there.
    assert 0.3 < sum(lr < math.sqrt(1e-5 * 1e-2) for lr in lrs) / len(lrs) < 0.7
    assert all(isinstance(t[RANK], int) and 2 <= t[RANK] <= 64 for t in first)
    assert {t["a.adapter.dropout"] for t in first} == {0.0, 0.1}

    sweep = sweep_create(
        pipeline=pipeline,
        user=alice,
        name="rnd",
        mode="random",
        parameters=params,
        samples=5,
        seed=11,
        metric="a/train/loss",
        goal="min",
    )
    assert sweep.seed == 11 and sweep.samples == 5
    trials = list(sweep.trials.select_related("run").order_by("index"))
    assert [t.params for t in trials] == plan(11, samples=5)
    for trial in trials:
        stage = trial.run.snapshot["stages"][0]
        assert stage["config"]["learning_rate"] == trial.params[LR] and stage["adapter"]["r"] == trial.params[RANK]


def test_a_bad_value_in_one_trial_refuses_the_whole_sweep(
    browser_client, pipeline, sent_stages, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = browser_client.post(
            "/sweeps/new/", _form(pipeline, **{"params-0-values": "1e-4, 7", "params-1-values": "4, 8"})
        )
    assert response.status_code == 400
    html = response.content.decode()
    # Trials run lr-major: (1e-4, 4), (1e-4, 8), (7, 4), (7, 8); the first bad one is trial 3.
    assert "trial 3 (a.config.learning_rate=7): stage 1 (a): learning_rate: must be &gt; 0 and &lt;= 1, got 7" in html
    assert "trial 4 (a.config.learning_rate=7)" in html
    assert 'value="1e-4, 7"' in html and f'value="{LR}"' in html  # the user's input is kept
    assert not Sweep.objects.exists() and not Run.objects.exists() and not SweepTrial.objects.exists()
    assert sent_stages == []


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        (
            {"path": "zz.config.learning_rate", "values": [1e-4]},
            "parameter 1 (zz.config.learning_rate): the pipeline has no stage 'zz' (stages: a)",
        ),
        (
            {"path": "a.config.learning_rat", "values": [1e-4]},
            "parameter 1 (a.config.learning_rat): sft has no config field 'learning_rat' (did you mean learning_rate?)",
        ),
        ({"path": "a.adapter.rank", "values": [4]}, "sft has no adapter field 'rank'"),
        ({"path": "learning_rate", "values": [1e-4]}, "write the path as <stage>.config.<field>"),
        ({"path": LR, "values": ["fast"]}, "parameter 1 (a.config.learning_rate): must be a number, got 'fast'"),
        ({"path": RANK, "values": ["4", "4"]}, "the value 4 is listed twice"),
        ({"path": LR, "min": 1e-5, "max": 1e-3}, "a grid needs a list of values"),
        ({"path": LR}, "give the values to try"),
    ],
)
def test_unknown_settings_and_bad_parameters_are_refused(pipeline, alice, parameter, message):
    with pytest.raises(SweepError) as caught:
        sweep_create(
            pipeline=pipeline,
            user=alice,
            name="bad",
            mode="grid",
            parameters=[parameter],
            metric="a/train/loss",
            goal="min",
        )
    assert message in str(caught.value)
    assert not Sweep.objects.exists() and not Run.objects.exists()


def test_more_than_64_runs_are_refused(pipeline, alice):
    with pytest.raises(SweepError) as caught:
        _grid(pipeline, alice, lrs=[f"{i}e-5" for i in range(1, 6)], ranks=[str(r) for r in range(1, 14)])
    assert "this grid makes 5 x 13 = 65 runs; a sweep makes at most 64" in str(caught.value)
    with pytest.raises(SweepError) as caught:
        sweep_create(
            pipeline=pipeline,
            user=alice,
            name="many",
            mode="random",
            samples=65,
            parameters=[{"path": LR, "min": 1e-5, "max": 1e-3, "scale": "log"}],
            metric="a/train/loss",
            goal="min",
        )
    assert "samples: a random sweep draws 1 to 64 trials, got 65" in str(caught.value)
    assert not Run.objects.exists()


def test_the_metric_must_name_a_stage_of_the_runs(pipeline, alice):
    with pytest.raises(SweepError) as caught:
        sweep_create(
            pipeline=pipeline,
            user=alice,
            name="m",
            mode="grid",
            parameters=[{"path": LR, "values": [1e-4]}],
            metric="b/train/loss",
            goal="min",
        )
    assert "metric: 'b/train/loss' names no stage of this pipeline's runs (stages: a)" in str(caught.value)


def _finish(trial, summary: dict | None, status=Status.SUCCEEDED) -> None:
    StageRun.objects.filter(run=trial.run).update(status=status, summary=summary or {})
    Run.objects.filter(pk=trial.run_id).update(status=status)


def test_results_are_ranked_by_the_metric_for_either_goal(browser_client, pipeline, alice):
    sweep = _grid(pipeline, alice, ranks=("4", "8", "16"))  # 6 trials
    trials = {t.index: t for t in sweep.trials.select_related("run")}
    losses = {1: 0.9, 2: 0.2, 3: 0.5, 4: 0.7, 5: 0.1}  # trial 6 reports nothing
    for index, loss in losses.items():
        _finish(trials[index], {"train/loss": loss, "eval/loss": 1 - loss, "train/runtime": 3})
    _finish(trials[6], None, status=Status.FAILED)

    html = browser_client.get(f"/sweeps/{sweep.pk}/").content.decode()
    assert _rows_in_order(html) == [5, 2, 3, 4, 1, 6]
    best = re.search(r'<tr class="sweep-best" data-testid="trial-(\d+)"', html)
    assert best and best[1] == "5" and html.count('class="sweep-best"') == 1
    assert 'data-active="0"' in html and "hx-trigger" not in html  # nothing left to poll for

    html = browser_client.get(f"/sweeps/{sweep.pk}/?goal=max").content.decode()
    assert _rows_in_order(html) == [1, 4, 3, 2, 5, 6]
    # Another metric from the picker; eval/loss reads "lower is better" by its name.
    html = browser_client.get(f"/sweeps/{sweep.pk}/?metric=a/eval/loss").content.decode()
    assert _rows_in_order(html) == [1, 4, 3, 2, 5, 6]
    assert '<option value="a/eval/loss" selected>' in html and '<option value="a/train/runtime"' in html
    # One scatter per parameter with a point (linked to its run) for each run that has the metric.
    assert 'data-testid="scatter-a.config.learning_rate" data-points="5"' in html
    assert 'data-testid="scatter-a.adapter.r" data-points="5"' in html
    assert f'href="/runs/{trials[5].run.number}/" class="sweep-point"' in html
    assert "log scale" not in html  # 1e-4..3e-4 and 4..16 span less than 10x


def test_scatters_use_a_log_axis_for_values_spanning_over_10x(browser_client, pipeline, alice):
    sweep = _grid(pipeline, alice, lrs=("1e-5", "1e-4", "1e-3"), ranks=("8",))
    for trial in sweep.trials.all():
        _finish(trial, {"train/loss": 1.0 / trial.index})
    html = browser_client.get(f"/sweeps/{sweep.pk}/").content.decode()
    chart = html[html.index('data-testid="scatter-a.config.learning_rate"') :]
    chart = chart[: chart.index("</figure>")]
    assert "log scale" in chart
    xs = sorted(float(x) for x in re.findall(r'<circle cx="([\d.]+)"', chart))
    assert len(xs) == 3 and abs((xs[1] - xs[0]) - (xs[2] - xs[1])) < 0.5  # evenly spaced decades
    assert re.search(r'<a href="/runs/\d+/" class="sweep-point is-best"', chart)


def test_evaluate_summaries_flatten_to_stage_metrics(pipeline, alice):
    sweep = _grid(pipeline, alice, lrs=("1e-4",), ranks=("4",))
    run = sweep.trials.get().run
    StageRun.objects.filter(run=run).update(summary={"train/loss": 0.5, "train/runtime": 2, "ok": True})
    StageRun.objects.create(
        run=run,
        index=1,
        name="evaluate-a",
        method="evaluate",
        status=Status.SUCCEEDED,
        summary={
            "metrics": {"eval/loss": 1.5, "baseline/loss": 2.0, "retention/exact_match": 0.75},
            "target": {"metric": "loss", "higher_is_better": False, "model": 1.5, "baseline": 2.0, "gain": 0.5},
            "retention": {"metric": "exact_match", "model": 0.75, "baseline": 0.8, "forgetting": 0.05},
            "samples": [{"prompt": "1+1=", "model": "2", "baseline": "3"}],
        },
    )
    assert run_summary_metrics(run) == {
        "a/train/loss": 0.5,
        "a/train/runtime": 2.0,
        "evaluate-a/eval/loss": 1.5,
        "evaluate-a/baseline/loss": 2.0,
        "evaluate-a/retention/exact_match": 0.75,
        "evaluate-a/gain": 0.5,
        "evaluate-a/forgetting": 0.05,
    }


def test_the_page_polls_while_runs_are_active(browser_client, pipeline, alice):
    sweep = _grid(pipeline, alice, lrs=("1e-4",), ranks=("4", "8"))
    html = browser_client.get(f"/sweeps/{sweep.pk}/").content.decode()
    assert 'hx-trigger="every 3s' in html and 'data-active="1"' in html
    headers = {"HX-Request": "true", "HX-Target": "sweep-live"}
    fragment = browser_client.get(f"/sweeps/{sweep.pk}/", headers=headers)
    assert fragment.status_code == 200 and "<html" not in fragment.content.decode()
    for trial in sweep.trials.all():
        _finish(trial, {"train/loss": 0.3})
    final = browser_client.get(f"/sweeps/{sweep.pk}/", headers=headers)
    assert final.status_code == 286 and 'data-active="0"' in final.content.decode()  # htmx stops polling


def test_sweeps_are_scoped_to_the_team(browser_client, pipeline, alice):
    ours = _grid(pipeline, alice, lrs=("1e-4",), ranks=("4",), name="ours")
    other = TeamFactory()
    theirs = Sweep.objects.create(team=other, name="theirs", metric="a/train/loss", seed=1)
    assert browser_client.get(f"/sweeps/{theirs.pk}/").status_code == 404
    page = browser_client.get("/sweeps/").content.decode()
    assert f"/sweeps/{ours.pk}/" in page and "theirs" not in page
    foreign = PipelineFactory(team=other)
    assert browser_client.get(f"/sweeps/new/?pipeline={foreign.pk}").status_code == 404
    assert browser_client.post("/sweeps/new/", _form(foreign)).status_code == 404


def test_the_form_suggests_paths_and_a_default_metric(browser_client, pipeline):
    html = browser_client.get(f"/sweeps/new/?pipeline={pipeline.pk}").content.decode()
    assert '<option value="a.config.learning_rate">' in html and '<option value="a.adapter.r">' in html
    assert 'name="metric" class="mono" value="a/train/loss"' in html
    assert '<option value="min" selected>' in html
    assert "adder" in browser_client.get("/sweeps/new/").content.decode()  # choose a pipeline first
    detail = browser_client.get(f"/pipelines/{pipeline.pk}/").content.decode()
    assert f'href="/sweeps/new/?pipeline={pipeline.pk}"' in detail


def test_pages_make_the_same_number_of_queries_for_3_or_12_trials(
    browser_client, pipeline, alice, django_assert_max_num_queries
):
    small = _grid(pipeline, alice, name="small", lrs=("1e-4",), ranks=("4", "8", "16"))
    big = _grid(pipeline, alice, name="big", lrs=("1e-4", "2e-4", "3e-4", "4e-4"), ranks=("4", "8", "16"))
    for sweep in (small, big):
        for trial in sweep.trials.all():
            _finish(trial, {"train/loss": 0.1 * trial.index})
    assert big.trials.count() == 12
    with CaptureQueriesContext(connection) as queries:
        assert browser_client.get(f"/sweeps/{small.pk}/").status_code == 200
    with django_assert_max_num_queries(len(queries)):
        html = browser_client.get(f"/sweeps/{big.pk}/").content.decode()
    assert len(_rows_in_order(html)) == 12
    with CaptureQueriesContext(connection) as list_queries:
        browser_client.get("/sweeps/")
    Sweep.objects.filter(pk=small.pk).delete()
    with django_assert_max_num_queries(len(list_queries)):
        browser_client.get("/sweeps/")
