"""Dataset pages (version history, diffs between versions, runs per version) and base model pages, team-scoped."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from refinery.data import selectors as data_selectors
from refinery.data.selectors import dataset_version_diff, dataset_version_runs
from refinery.data.services import dataset_version_create
from refinery.runs.models import Run, StageRun, Status
from refinery.runs.services import run_create, stage_metrics_record
from tests.factories import BaseModelFactory, PipelineFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache():
    """Diffs and finished stages' series are cached by content; each test starts without them."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


A = {"prompt": "1+1=", "completion": "2"}
B = {"prompt": "2+2=", "completion": "4"}
C = {"prompt": "3+3=", "completion": "6"}
D = {"prompt": "4+4=", "completion": "8"}


def upload(team, user, rows, name="sums"):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return dataset_version_create(
        team=team, user=user, name=name, kind="prompt_completion", filename=f"{name}.jsonl", chunks=iter([data])
    ).version


@pytest.fixture
def versions(team, alice, dataset_dir):
    """v1: rows A, B, C; v2: rows B, C, D and a new column."""
    v1 = upload(team, alice, [A, B, C])
    v2 = upload(team, alice, [{**row, "source": "web"} for row in (B, C, D)])
    return v1, v2


def test_diff_counts_rows_by_content_and_lists_column_changes(versions):
    v1, v2 = versions
    diff = dataset_version_diff(old=v1, new=v2)
    assert (diff.added, diff.removed, diff.unchanged) == (1, 1, 2)
    assert diff.columns_added == ("source",) and diff.columns_removed == ()
    back = dataset_version_diff(old=v2, new=v1)
    assert (back.added, back.removed, back.unchanged, back.columns_removed) == (1, 1, 2, ("source",))


def test_diff_counts_duplicate_rows_as_often_as_they_occur(team, alice, dataset_dir):
    v1 = upload(team, alice, [A, A, B])
    v2 = upload(team, alice, [A, B, B, C])
    diff = dataset_version_diff(old=v1, new=v2)
    assert (diff.added, diff.removed, diff.unchanged) == (2, 1, 2)


def test_the_history_shows_each_version_and_loads_its_diff_once(browser_client, versions):
    v1, v2 = versions
    url = f"/datasets/{v1.dataset_id}/"
    html = browser_client.get(url).content.decode()
    history = html.split('data-testid="version-history"')[1]
    for v in (v1, v2):
        assert f'data-sha256="{v.sha256}"' in history and f'data-version="{v.version}"' in history
    assert "first version" in history and "alice" in history
    assert f'hx-get="/datasets/{v1.dataset_id}/versions/2/diff/"' in history  # not computed yet: loads lazily
    fragment = browser_client.get(f"/datasets/{v1.dataset_id}/versions/2/diff/").content.decode()
    assert "+1" in fragment and "−1" in fragment and "=2" in fragment and "+source" in fragment
    # Computed once, then cached by the two files' hashes: the page shows it inline.
    again = browser_client.get(url).content.decode().split('data-testid="version-history"')[1]
    assert 'data-testid="diff-v2"' in again and "versions/2/diff/" not in again
    assert browser_client.get(f"/datasets/{v1.dataset_id}/versions/1/diff/").status_code == 404  # no v0


def test_the_diff_is_not_computed_over_the_size_cap(versions, settings):
    v1, v2 = versions
    settings.REFINERY_DATASET_DIFF_MAX_ROWS = 2
    diff = dataset_version_diff(old=v1, new=v2)
    assert not diff.computed and "too large" in diff.skipped and diff.columns_added == ("source",)
    assert dataset_version_diff(old=v1, new=v2, compute=False) is not None  # known without reading a file


def _pipeline(team, user, dataset, *, eval_dataset=None):
    stage = {
        "name": "sft",
        "method": "sft",
        "config": {"max_steps": 2},
        "adapter": {"type": "none"},
        "dataset_id": dataset.pk,
        "input": "base",
    }
    if eval_dataset is not None:
        stage["eval_dataset_id"] = eval_dataset.pk
    return PipelineFactory(team=team, base_model=BaseModelFactory(team=team), created_by=user, stages=[stage])


@pytest.fixture
def runs_on_versions(team, alice, dataset_dir, sent_stages):
    """Run 1 trains on sums v1; run 2 on sums v2; run 3 trains on other data and evaluates on sums v2."""
    v1 = upload(team, alice, [A, B, C])
    run1 = run_create(pipeline=_pipeline(team, alice, v1.dataset), user=alice)
    v2 = upload(team, alice, [B, C, D])
    run2 = run_create(pipeline=_pipeline(team, alice, v1.dataset), user=alice)
    other = upload(team, alice, [D], name="other")
    run3 = run_create(pipeline=_pipeline(team, alice, other.dataset, eval_dataset=v1.dataset), user=alice)
    return v1, v2, (run1, run2, run3)


def test_each_version_lists_the_runs_that_read_it(browser_client, team, runs_on_versions, bob):
    v1, v2, (run1, run2, run3) = runs_on_versions
    # Another team's run whose snapshot names this dataset (it cannot, but if it did) stays out.
    Run.objects.create(
        team=bob.teams.get(),
        number=1,
        name="x",
        seed=1,
        code_version="x",
        snapshot={"stages": [{"train_data": {"dataset_id": v1.dataset_id, "version_id": v1.pk}}]},
    )
    used = dataset_version_runs(team=team, dataset=v1.dataset)
    assert [r.number for r in used[v1.pk]] == [run1.number]
    assert [r.number for r in used[v2.pk]] == [run3.number, run2.number]
    html = browser_client.get(f"/datasets/{v1.dataset_id}/").content.decode()
    assert f'href="/runs/{run1.number}/"' in html.split('data-testid="runs-v1"')[1].split("</td>")[0]
    cell = html.split('data-testid="runs-v2"')[1].split("</td>")[0]
    assert f'href="/runs/{run2.number}/"' in cell and f'href="/runs/{run3.number}/"' in cell


def test_runs_per_version_without_json_containment(team, runs_on_versions, monkeypatch):
    """The SQLite path (no @> operator): the same answer from a scan of the team's runs."""
    v1, v2, (run1, run2, run3) = runs_on_versions
    monkeypatch.setattr(data_selectors, "_json_containment", lambda: False)
    used = dataset_version_runs(team=team, dataset=v1.dataset)
    assert [r.number for r in used[v1.pk]] == [run1.number]
    assert [r.number for r in used[v2.pk]] == [run3.number, run2.number]


def test_dataset_pages_are_team_scoped(versions, bob):
    v1, _ = versions
    client = Client()
    client.force_login(bob)
    assert client.get(f"/datasets/{v1.dataset_id}/").status_code == 404
    assert client.get(f"/datasets/{v1.dataset_id}/versions/2/diff/").status_code == 404


def test_base_model_page_shows_details_and_the_runs_built_on_it(
    browser_client, team, alice, bob, dataset_dir, sent_stages
):
    version = upload(team, alice, [A, B, C])
    pipeline = _pipeline(team, alice, version.dataset)
    model = pipeline.base_model
    model.revision, model.architecture = "abc123", "LlamaForCausalLM"
    model.save()
    run = run_create(pipeline=pipeline, user=alice)
    stage = run.stages.get()
    stage_metrics_record(stage_run_id=stage.pk, points=[("train/loss", 1, 2.5, 0.0), ("train/loss", 2, 0.8125, 0.0)])
    StageRun.objects.filter(pk=stage.pk).update(status=Status.RUNNING)
    unrelated = run_create(pipeline=_pipeline(team, alice, version.dataset), user=alice)  # another base model

    assert f'href="/models/{model.pk}/"' in browser_client.get("/models/").content.decode()
    html = browser_client.get(f"/models/{model.pk}/").content.decode()
    details = html.split('data-testid="model-details"')[1]
    assert model.name_or_path in details and "abc123" in details and "LlamaForCausalLM" in details
    runs = html.split('data-testid="model-runs"')[1]
    assert f'href="/runs/{run.number}/"' in runs and f'href="/runs/{unrelated.number}/"' not in runs
    assert "0.8125" in runs and 'data-status="queued"' in runs  # key metric (last train/loss) and status

    client = Client()
    client.force_login(bob)
    assert client.get(f"/models/{model.pk}/").status_code == 404
    bob_model = BaseModelFactory(team=bob.teams.get())
    assert browser_client.get(f"/models/{bob_model.pk}/").status_code == 404
