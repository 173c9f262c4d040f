"""The runs list: filters (combinable, in the URL), full-text search on names and notes, sorting by any summary
metric (RunMetric, refreshed when a stage finishes), pagination, live polling and a constant number of queries."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.apps import apps
from django.db import connection
from django.db.models import Max
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from refinery.basemodels.services import base_model_create
from refinery.data.services import dataset_version_create
from refinery.pipelines.services import pipeline_create
from refinery.runs.models import Run, RunMetric, RunNote, RunTag, StageRun, Status
from refinery.runs.selectors.listing import RunFilters
from refinery.runs.services import run_create
from refinery.runs.services.listing import run_summary_refresh
from refinery.teams.models import Membership
from refinery.teams.services import membership_add, user_create
from tests.fixtures import ROWS

HX_RESULTS = {"HX-Request": "true", "HX-Target": "run-results"}
HX_ROWS = {"HX-Request": "true", "HX-Target": "run-rows"}


@pytest.fixture
def lab(team, alice, dataset_dir, tiny_model_dir):
    """Two pipelines on two base models and two datasets: "adder" (SFT on sums) and "checker" (SFT on more-sums,
    then an evaluation on it); carol is a member who starts runs too."""
    data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    sums, more = (
        dataset_version_create(
            team=team, user=alice, name=name, kind="prompt_completion", filename=f"{name}.jsonl", chunks=iter([data])
        ).version.dataset
        for name in ("sums", "more-sums")
    )
    tiny, tiny_b = (
        base_model_create(team=team, user=alice, name=name, source="local", name_or_path=str(tiny_model_dir))
        for name in ("tiny", "tiny-b")
    )
    adder = pipeline_create(
        team=team,
        user=alice,
        name="adder",
        base_model_id=tiny.pk,
        spec={
            "seed": 1,
            "auto_evaluate": False,
            "stages": [
                {
                    "name": "a",
                    "method": "sft",
                    "dataset_id": sums.pk,
                    "config": {"max_steps": 2},
                    "adapter": {"type": "lora"},
                }
            ],
        },
    )
    checker = pipeline_create(
        team=team,
        user=alice,
        name="checker",
        base_model_id=tiny_b.pk,
        spec={
            "seed": 2,
            "auto_evaluate": False,
            "stages": [
                {
                    "name": "a",
                    "method": "sft",
                    "dataset_id": more.pk,
                    "config": {"max_steps": 2},
                    "adapter": {"type": "lora"},
                },
                {"name": "check", "method": "evaluate", "input": "a", "dataset_id": more.pk},
            ],
        },
    )
    carol = user_create(username="carol", password="pw-carol-123")
    membership_add(team=team, user=carol, role=Membership.Role.MEMBER)
    return {
        "team": team,
        "alice": alice,
        "carol": carol,
        "sums": sums,
        "more": more,
        "tiny": tiny,
        "tiny_b": tiny_b,
        "adder": adder,
        "checker": checker,
    }


def _run(
    lab,
    pipeline: str,
    *,
    user: str = "alice",
    name: str = "",
    status: str = Status.SUCCEEDED,
    created: dt.datetime | None = None,
) -> Run:
    run = run_create(pipeline=lab[pipeline], user=lab[user], name=name)
    Run.objects.filter(pk=run.pk).update(status=status, **({"created_at": created} if created else {}))
    StageRun.objects.filter(run=run).update(status=status)
    run.refresh_from_db()
    return run


def _finish(run: Run, **summaries: dict) -> None:
    """Give stages their summaries (by stage name) and refresh the run's summary metrics, as stage_finish will."""
    for name, summary in summaries.items():
        StageRun.objects.filter(run=run, name=name).update(summary=summary)
    run_summary_refresh(run_id=run.pk)


def _numbers(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-testid="run-(\d+)"', html)]


def _get(client, url: str, headers: dict | None = None) -> str:
    response = client.get(url, headers=headers or {})
    assert response.status_code in (200, 286), response.status_code
    return response.content.decode()


def _clone(run: Run, count: int, *, status: str = Status.SUCCEEDED, tags: int = 2, notes: int = 1) -> list[Run]:
    """`count` more runs like `run` (same snapshot and stages), each with tags, notes and summary metrics."""
    start = Run.objects.filter(team=run.team).aggregate(n=Max("number"))["n"]
    runs = Run.objects.bulk_create(
        [
            Run(
                team=run.team,
                pipeline=run.pipeline,
                pipeline_version=run.pipeline_version,
                number=start + i + 1,
                name=f"clone {start + i + 1}",
                status=status,
                snapshot=run.snapshot,
                seed=run.seed,
                code_version=run.code_version,
                created_by=run.created_by,
            )
            for i in range(count)
        ]
    )
    stages = list(run.stages.order_by("index"))
    StageRun.objects.bulk_create(
        [
            StageRun(
                run=r,
                index=s.index,
                name=s.name,
                method=s.method,
                spec=s.spec,
                status=status,
                summary={"train/loss": 1.0 / (r.number + 1)},
                total_steps=10,
                step=5,
            )
            for r in runs
            for s in stages
        ]
    )
    RunTag.objects.bulk_create([RunTag(team=run.team, run=r, name=f"t{i}") for r in runs for i in range(tags)])
    RunNote.objects.bulk_create([RunNote(run=r, body=f"note {i} on {r.name}") for r in runs for i in range(notes)])
    RunMetric.objects.bulk_create(
        [RunMetric(team=run.team, run=r, key="a/train/loss", value=1.0 / (r.number + 1)) for r in runs]
    )
    return runs


# --- filters ------------------------------------------------------------------------------------


def test_every_filter_narrows_the_list_and_they_combine(browser_client, lab):
    r1 = _run(lab, "adder")
    r2 = _run(lab, "adder", user="carol", status=Status.FAILED)
    r3 = _run(lab, "checker", status=Status.RUNNING)
    r4 = _run(lab, "checker", user="carol", created=timezone.now() - dt.timedelta(days=10))
    RunTag.objects.create(team=lab["team"], run=r2, name="baseline")
    RunTag.objects.create(team=lab["team"], run=r3, name="baseline")
    RunTag.objects.create(team=lab["team"], run=r3, name="paper")

    def shown(query: str) -> set[int]:
        return set(_numbers(_get(browser_client, f"/runs/?{query}")))

    everything = {r.number for r in (r1, r2, r3, r4)}
    assert shown("") == everything
    assert shown("status=failed") == {r2.number}
    assert shown(f"pipeline={lab['checker'].pk}") == {r3.number, r4.number}
    assert shown("method=evaluate") == {r3.number, r4.number}
    assert shown("method=sft") == everything
    assert shown("method=dpo") == set()
    assert shown(f"dataset={lab['sums'].pk}") == {r1.number, r2.number}
    assert shown(f"dataset={lab['more'].pk}") == {r3.number, r4.number}
    assert shown(f"model={lab['tiny_b'].pk}") == {r3.number, r4.number}
    assert shown(f"user={lab['carol'].pk}") == {r2.number, r4.number}
    assert shown("tag=baseline") == {r2.number, r3.number}
    assert shown("tag=baseline&tag=paper") == {r3.number}
    today = timezone.localdate()
    assert shown(f"from={today - dt.timedelta(days=1)}") == {r1.number, r2.number, r3.number}
    assert shown(f"to={today - dt.timedelta(days=5)}") == {r4.number}
    # Combined: carol's runs of the checker pipeline in the last 20 days on tiny-b.
    assert shown(
        f"user={lab['carol'].pk}&pipeline={lab['checker'].pk}&model={lab['tiny_b'].pk}"
        f"&from={today - dt.timedelta(days=20)}"
    ) == {r4.number}
    assert shown(f"status=running&tag=baseline&method=evaluate&dataset={lab['more'].pk}") == {r3.number}
    # Nonsense is ignored rather than an error.
    assert shown("status=bogus&pipeline=x&from=yesterday&sort=drop+table&page=-3&per_page=7") == everything


def test_the_filters_live_in_the_url_and_htmx_swaps_only_the_results(browser_client, lab):
    run = _run(lab, "adder")
    _run(lab, "checker")
    response = browser_client.get(
        f"/runs/?status=succeeded&q=&pipeline={lab['adder'].pk}&from=&tag=", headers=HX_RESULTS
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="run-filters"' not in html and 'id="run-results"' in html  # the form stays, with the caret
    assert _numbers(html) == [run.number]
    pushed = urlsplit(response["HX-Push-Url"])
    assert pushed.path == "/runs/"
    assert parse_qs(pushed.query) == {"status": ["succeeded"], "pipeline": [str(lab["adder"].pk)]}
    # The full page shows the same filters selected in the form.
    page = _get(browser_client, f"/runs/?status=succeeded&pipeline={lab['adder'].pk}")
    assert '<option value="succeeded" selected>' in page
    assert f'<option value="{lab["adder"].pk}" selected>adder</option>' in page
    assert "HX-Target" in response["Vary"]


def test_another_teams_runs_and_ids_never_show(browser_client, lab, bob, tiny_model_dir):
    mine = _run(lab, "adder")
    bob_team = bob.teams.get()
    model = base_model_create(team=bob_team, user=bob, name="bobs", source="local", name_or_path=str(tiny_model_dir))
    data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    ds = dataset_version_create(
        team=bob_team, user=bob, name="bobdata", kind="prompt_completion", filename="b.jsonl", chunks=iter([data])
    ).version.dataset
    theirs = pipeline_create(
        team=bob_team,
        user=bob,
        name="secret-pipeline",
        base_model_id=model.pk,
        spec={"stages": [{"name": "a", "method": "sft", "dataset_id": ds.pk, "adapter": {"type": "lora"}}]},
    )
    other = run_create(pipeline=theirs, user=bob, name="secret-run")
    RunNote.objects.create(run=other, author=bob, body="adder secret")
    RunTag.objects.create(team=bob_team, run=other, name="bobtag")
    html = _get(browser_client, "/runs/")
    assert _numbers(html) == [mine.number]
    assert "secret-pipeline" not in html and "bobtag" not in html and "bobdata" not in html
    assert _numbers(_get(browser_client, "/runs/?q=secret")) == []
    assert _numbers(_get(browser_client, "/runs/?q=adder")) == [mine.number]  # bob's note says "adder" too
    assert _numbers(_get(browser_client, f"/runs/?pipeline={theirs.pk}")) == []
    assert _numbers(_get(browser_client, "/runs/?tag=bobtag")) == []


# --- search -------------------------------------------------------------------------------------


def test_search_finds_names_and_notes_by_word_prefix_and_numbers(browser_client, lab):
    ablation = _run(lab, "adder", name="lora-rank ablation")
    noisy = _run(lab, "adder", name="baseline")
    _run(lab, "checker", name="checker nightly")
    RunNote.objects.create(
        run=noisy, author=lab["alice"], body="The loss diverged after the warmup; retry with a lower learning rate."
    )
    RunNote.objects.create(run=ablation, author=lab["alice"], body="Rank 16 is enough.")

    def found(q: str) -> set[int]:
        return set(_numbers(_get(browser_client, f"/runs/?q={q}")))

    assert found("ablation") == {ablation.number}
    assert found("abla") == {ablation.number}  # a word prefix, as you type
    assert found("lora rank") == {ablation.number}
    assert found("diverging") == {noisy.number}  # notes are stemmed: diverged ~ diverging
    assert found("learning rates") == {noisy.number}
    assert found("rank") == {ablation.number}  # the name and a note of the same run
    assert found("nightly diverged") == set()  # every word must match (in the name or in one note)
    assert found(f"%23{noisy.number}") == {noisy.number}
    assert found("%27%3B+drop+table") == set()  # punctuation never reaches the query parser
    html = _get(browser_client, "/runs/?q=diverged")
    assert 'value="diverged"' in html and "filtered" in html


# --- sorting by summary metrics -----------------------------------------------------------------


def test_stage_summaries_become_sortable_run_metrics(browser_client, lab):
    runs = [_run(lab, "checker", name=f"c{i}") for i in range(4)]
    losses = [0.5, 0.2, None, 0.9]
    gains = [0.1, 0.3, 0.05, None]
    for run, loss, gain in zip(runs, losses, gains):
        summaries = {}
        if loss is not None:
            summaries["a"] = {"train/loss": loss, "train/runtime": 3, "note": "text is skipped"}
        if gain is not None:
            summaries["check"] = {"metrics": {"eval/loss": 1 - gain}, "target": {"gain": gain, "metric": "eval/loss"}}
        _finish(run, **summaries)
    assert dict(RunMetric.objects.filter(run=runs[0]).values_list("key", "value")) == {
        "a/train/loss": 0.5,
        "a/train/runtime": 3.0,
        "check/eval/loss": 0.9,
        "check/gain": 0.1,
    }

    def order(query: str) -> list[int]:
        return _numbers(_get(browser_client, f"/runs/?{query}"))

    n = [r.number for r in runs]
    assert order("metric=a/train/loss&sort=metric") == [n[1], n[0], n[3], n[2]]  # lowest first, missing last
    assert order("metric=a/train/loss&sort=-metric") == [n[3], n[0], n[1], n[2]]  # missing last both ways
    assert order("metric=check/gain&sort=-metric") == [n[1], n[0], n[2], n[3]]
    html = _get(browser_client, "/runs/?metric=check/gain&sort=-metric")
    assert 'data-testid="metric-header"' in html and "check/gain" in html
    assert re.search(r'<option value="check/gain" data-goal="max" selected>', html)
    assert '<option value="a/train/loss" data-goal="min">' in html
    # The header flips the direction; "metric" without a metric falls back to the newest first.
    assert "sort=metric" in re.search(r'href="([^"]+)" data-sort="metric"', html)[1]
    assert order("sort=metric") == sorted(n, reverse=True)
    # A stage that finishes again (a new summary) rewrites the run's numbers; keys it no longer has go.
    _finish(runs[0], a={"train/loss": 0.1}, check={})
    assert dict(RunMetric.objects.filter(run=runs[0]).values_list("key", "value")) == {"a/train/loss": 0.1}
    assert order("metric=a/train/loss&sort=metric")[0] == n[0]


def test_the_migration_backfills_metrics_of_existing_runs(lab):
    run = _run(lab, "checker")
    StageRun.objects.filter(run=run, name="a").update(summary={"train/loss": 0.25, "flag": True})
    StageRun.objects.filter(run=run, name="check").update(
        summary={"metrics": {"eval/accuracy": 0.75}, "retention": {"forgetting": 0.01}}
    )
    RunMetric.objects.all().delete()
    migration = importlib.import_module("refinery.runs.migrations.0005_notes_tags_metrics")
    migration.backfill_run_metrics(apps, None)
    assert dict(RunMetric.objects.filter(run=run).values_list("key", "value")) == {
        "a/train/loss": 0.25,
        "check/eval/accuracy": 0.75,
        "check/forgetting": 0.01,
    }
    assert RunMetric.objects.get(key="a/train/loss").team_id == lab["team"].pk


# --- pages, polling, queries --------------------------------------------------------------------


def test_pages_are_numbered_and_a_page_past_the_end_shows_the_last(browser_client, lab):
    first = _run(lab, "adder")
    _clone(first, 29)  # 30 runs, numbers 1..30
    page1 = _get(browser_client, "/runs/?per_page=25")
    assert _numbers(page1) == list(range(30, 5, -1))
    assert 'href="?page=2&amp;per_page=25"' in page1 and "30 runs" in page1
    page2 = _get(browser_client, "/runs/?per_page=25&page=2")
    assert _numbers(page2) == list(range(5, 0, -1))
    assert _numbers(_get(browser_client, "/runs/?per_page=25&page=99")) == list(range(5, 0, -1))
    assert _numbers(_get(browser_client, "/runs/?per_page=25&page=2&sort=number")) == list(range(26, 31))
    assert _numbers(_get(browser_client, "/runs/?sort=name&per_page=25"))[:3] == [1, 10, 11]  # adder, clone 10, ...


def test_rows_poll_while_a_run_on_the_page_is_active_with_the_same_filters(browser_client, lab):
    running = _run(lab, "adder", status=Status.RUNNING)
    _run(lab, "checker")
    html = _get(browser_client, f"/runs/?pipeline={lab['adder'].pk}&sort=number")
    tbody = re.search(r'<tbody id="run-rows"[^>]*>', html)[0]
    assert f'hx-get="/runs/?pipeline={lab["adder"].pk}&amp;sort=number"' in tbody and "every 2s" in tbody
    rows = browser_client.get(f"/runs/?pipeline={lab['adder'].pk}&sort=number", headers=HX_ROWS)
    assert rows.status_code == 200 and _numbers(rows.content.decode()) == [running.number]
    assert 'id="run-filters"' not in rows.content.decode() and "<thead>" not in rows.content.decode()
    Run.objects.filter(pk=running.pk).update(status=Status.SUCCEEDED)
    StageRun.objects.filter(run=running).update(status=Status.SUCCEEDED)
    final = browser_client.get(f"/runs/?pipeline={lab['adder'].pk}&sort=number", headers=HX_ROWS)
    assert final.status_code == 286  # one last render, then htmx stops polling
    assert "succeeded" in final.content.decode() and "hx-trigger" not in final.content.decode()


def test_the_live_train_loss_column_still_shows_the_last_logged_point(browser_client, lab):
    from refinery.runs.services import stage_metrics_record

    run = _run(lab, "checker", status=Status.RUNNING)
    a = run.stages.get(name="a")
    stage_metrics_record(stage_run_id=a.pk, points=[("train/loss", 1, 2.0, 0.0), ("train/loss", 2, 0.625, 0.0)])
    row = _get(browser_client, "/runs/").split(f'data-testid="run-{run.number}"')[1].split("</tr>")[0]
    assert "0.625" in row


QUERIES = [
    "",
    "?status=succeeded&tag=t1&q=clone",
    "?metric=a/train/loss&sort=metric",
    "?sort=name&page=2&per_page=25",
    "?method=evaluate&dataset={more}&model={tiny_b}&user={alice}&from=2000-01-01",
]


@pytest.mark.parametrize("headers", [{}, HX_RESULTS, HX_ROWS], ids=["page", "results", "rows"])
def test_a_page_costs_the_same_queries_for_5_or_50_runs(browser_client, lab, headers, django_assert_max_num_queries):
    seed = _run(lab, "checker")
    _clone(seed, 4)
    urls = ["/runs/" + q.format(more=lab["more"].pk, tiny_b=lab["tiny_b"].pk, alice=lab["alice"].pk) for q in QUERIES]
    small = {}
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            _get(browser_client, url, headers)
        small[url] = len(queries)
        assert len(queries) <= 16, [q["sql"][:120] for q in queries]
    _clone(seed, 95, status=Status.RUNNING)  # 100 runs: a page of 50, 25 on page 2, all live
    for url in urls:
        with django_assert_max_num_queries(small[url]):
            html = _get(browser_client, url, headers)
        if "page=2" in url:
            assert len(_numbers(html)) == 25
        elif url.endswith("/runs/"):
            assert len(_numbers(html)) == 50


def test_filters_round_trip_through_the_url():
    from django.http import QueryDict

    query = QueryDict(
        "q=lora++rank&status=running&pipeline=3&tag=Paper&tag=x&from=2026-01-02&metric=a/gain"
        "&sort=-metric&page=2&per_page=100&junk=1"
    )
    filters = RunFilters.from_query(query)
    assert filters.q == "lora rank" and filters.tag == ("paper", "x") and filters.date_from == dt.date(2026, 1, 2)
    assert RunFilters.from_query(QueryDict(filters.url()[1:])) == filters
    assert filters.url(page=1, tag=()) == (
        "?q=lora+rank&status=running&pipeline=3&from=2026-01-02&metric=a%2Fgain&sort=-metric&per_page=100"
    )
    assert RunFilters().url() == "?" and not RunFilters().filtered
