"""The pipeline pages for graphs: a merge in the editor, templates, editing into versions, the drawn graph
with live status, re-runs from the run page, and evaluation/export results."""

from __future__ import annotations

import json
import re

import pytest

from refinery.basemodels.services import base_model_create
from refinery.data.services import dataset_version_create
from refinery.pipelines.models import Pipeline
from refinery.pipelines.presets import PRESETS
from refinery.runs.models import Run, Status
from tests.fixtures import ROWS


def _dataset(team, user, name, kind, rows):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return dataset_version_create(
        team=team, user=user, name=name, kind=kind, filename=f"{name}.jsonl", chunks=iter([data])
    ).version.dataset


@pytest.fixture
def seeded(team, alice, dataset_dir, tiny_model_dir):
    return {
        "sums": _dataset(team, alice, "sums", "prompt_completion", ROWS),
        "ref": _dataset(
            team, alice, "sums-ref", "reference", [{"prompt": r["prompt"], "answer": r["completion"]} for r in ROWS]
        ),
        "prefs": _dataset(team, alice, "prefs", "preference", [{"prompt": "1+1=", "chosen": "2", "rejected": "3"}]),
        "model": base_model_create(
            team=team, user=alice, name="tiny", source="local", name_or_path=str(tiny_model_dir)
        ),
    }


def _soup_form(seeded, **overrides):
    ds = seeded["sums"].pk
    data = {
        "name": "soup",
        "base_model_id": seeded["model"].pk,
        "seed": "1",
        "description": "",
        "retention_dataset_id": seeded["ref"].pk,
        "auto_evaluate": "on",
        "stages-0-name": "a",
        "stages-0-method": "sft",
        "stages-0-input": "base",
        "stages-0-dataset_id": ds,
        "stages-0-eval_dataset_id": ds,
        "stages-0-adapter-type": "lora",
        "stages-1-name": "b",
        "stages-1-method": "sft",
        "stages-1-input": "base",
        "stages-1-dataset_id": ds,
        "stages-1-adapter-type": "none",
        "stages-2-name": "mix",
        "stages-2-method": "merge",
        "stages-2-inputs": ["@0", "@1"],
        "stages-2-config-merge_method": "ties",
        "stages-2-config-weights": "0.6, 0.4",
    }
    data.update(overrides)
    return data


def test_the_editor_builds_a_merge_with_a_retention_set(browser_client, seeded):
    fragment = browser_client.get("/pipelines/stage-form/?index=2&method=merge").content.decode()
    assert 'name="stages-2-inputs"' in fragment and "multiple" in fragment
    assert 'name="stages-2-dataset_id"' not in fragment  # a merge reads no data

    response = browser_client.post("/pipelines/new/", _soup_form(seeded))
    assert response.status_code == 302, response.content.decode()[:3000]
    pipeline = Pipeline.objects.get(name="soup")
    assert pipeline.stages[2]["inputs"] == ["a", "b"] and pipeline.stages[2]["config"]["weights"] == "0.6, 0.4"
    assert pipeline.spec["retention_dataset_id"] == seeded["ref"].pk

    page = browser_client.get(f"/pipelines/{pipeline.pk}/").content.decode()
    # The graph: base, the three stages and the automatic evaluation of the merge, with the merge's two edges.
    for name in ("base", "a", "b", "mix", "evaluate-mix"):
        assert f'data-stage="{name}"' in page
    assert 'data-edge="a->mix"' in page and 'data-edge="b->mix"' in page and 'data-edge="mix->evaluate-mix"' in page


def test_a_bad_graph_in_the_editor_is_refused_naming_the_stage(browser_client, seeded):
    response = browser_client.post("/pipelines/new/", _soup_form(seeded, **{"stages-2-inputs": ["@0"]}))
    assert response.status_code == 400
    assert "stage 3 (mix): a merge stage needs at least 2 inputs" in response.content.decode()
    assert not Pipeline.objects.exists()


@pytest.mark.parametrize("key", list(PRESETS))
def test_every_template_opens_filled_in_and_saves(browser_client, seeded, key):
    page = browser_client.get(f"/pipelines/new/?template={key}")
    assert page.status_code == 200
    html = page.content.decode()
    # Post back exactly what the editor shows (every input, select and checkbox as a browser would).
    data = {}
    for tag in re.finditer(r"<(input|select)\b([^>]*)>(.*?)(?=<(?:input|select|/select)\b|$)", html, re.S):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(2)))
        name = attrs.get("name")
        if not name or name == "csrfmiddlewaretoken":
            continue
        if tag.group(1) == "select":
            picked = re.findall(r'<option value="([^"]*)"[^>]*\bselected\b', tag.group(3))
            data.setdefault(name, []).extend(picked[: None if " multiple" in tag.group(2) else 1])
        elif attrs.get("type") == "checkbox":
            if " checked" in tag.group(2):
                data.setdefault(name, []).append(attrs.get("value", "on"))
        else:
            data.setdefault(name, []).append(attrs.get("value", ""))
    data["base_model_id"] = [str(seeded["model"].pk)]
    response = browser_client.post("/pipelines/new/", data)
    assert response.status_code == 302, re.findall(r"<li>(.*?)</li>", response.content.decode())
    pipeline = Pipeline.objects.get(name=key)
    assert [s["name"] for s in pipeline.stages] == [s["name"] for s in PRESETS[key]["stages"]]


def test_editing_makes_a_new_version_and_runs_keep_theirs(browser_client, seeded, django_capture_on_commit_callbacks):
    browser_client.post("/pipelines/new/", _soup_form(seeded))
    pipeline = Pipeline.objects.get()
    with django_capture_on_commit_callbacks(execute=False):
        browser_client.post(f"/pipelines/{pipeline.pk}/run/")
    edit = browser_client.get(f"/pipelines/{pipeline.pk}/edit/").content.decode()
    assert 'value="@0" selected' in edit and 'value="@1" selected' in edit  # the merge's inputs round-trip
    response = browser_client.post(
        f"/pipelines/{pipeline.pk}/edit/",
        _soup_form(seeded, **{"stages-2-config-merge_method": "linear", "stages-2-config-weights": ""}),
    )
    assert response.status_code == 302
    pipeline.refresh_from_db()
    assert pipeline.version == 2 and pipeline.stages[2]["config"]["merge_method"] == "linear"
    run = Run.objects.get()
    assert run.pipeline_version.number == 1 and run.snapshot["stages"][2]["config"]["merge_method"] == "ties"
    page = browser_client.get(f"/pipelines/{pipeline.pk}/?version=1").content.decode()
    assert "v1" in page and "ties" in page and "(latest is v2)" in page


def test_the_run_page_draws_the_graph_with_live_status_and_re_runs(
    browser_client, seeded, django_capture_on_commit_callbacks
):
    browser_client.post("/pipelines/new/", _soup_form(seeded))
    pipeline = Pipeline.objects.get()
    with django_capture_on_commit_callbacks(execute=False):
        browser_client.post(f"/pipelines/{pipeline.pk}/run/")
    run = Run.objects.get()
    fragment = browser_client.get(f"/runs/{run.number}/", headers={"HX-Request": "true", "HX-Target": "run-live"})
    html = fragment.content.decode()
    assert re.search(r'data-stage="a" data-status="queued"', html)
    assert re.search(r'data-stage="mix" data-status="pending"', html)

    with django_capture_on_commit_callbacks(execute=False):
        response = browser_client.post(f"/runs/{run.number}/rerun/")
    again = Run.objects.get(rerun_of=run)
    assert response["Location"] == f"/runs/{again.number}/" and again.snapshot == run.snapshot
    with django_capture_on_commit_callbacks(execute=False):
        browser_client.post(f"/runs/{run.number}/rerun/", {"latest_data": "1"})
    assert Run.objects.filter(rerun_of=run).count() == 2


def test_evaluation_and_export_results_show_on_the_run_page(browser_client, seeded, django_capture_on_commit_callbacks):
    form = _soup_form(
        seeded,
        **{
            "stages-3-name": "ship",
            "stages-3-method": "export",
            "stages-3-input": "@2",
            "stages-3-dataset_id": seeded["sums"].pk,
        },
    )
    browser_client.post("/pipelines/new/", form)
    with django_capture_on_commit_callbacks(execute=False):
        browser_client.post(f"/pipelines/{Pipeline.objects.get().pk}/run/")
    run = Run.objects.get()
    evaluate = run.stages.get(method="evaluate")
    assert evaluate.name == "evaluate-ship" and evaluate.spec["retention_data"]["name"] == "sums-ref"
    evaluate.status = Status.SUCCEEDED
    evaluate.summary = {
        "metrics": {
            "eval/loss": 0.5,
            "baseline/loss": 2.0,
            "retention/accuracy": 0.6,
            "retention_baseline/accuracy": 0.8,
        },
        "target": {"metric": "loss", "higher_is_better": False, "model": 0.5, "baseline": 2.0, "gain": 1.5},
        "retention": {"metric": "accuracy", "higher_is_better": True, "model": 0.6, "baseline": 0.8, "forgetting": 0.2},
        "samples": [{"prompt": "2+2=", "model": "4", "baseline": "7"}],
    }
    evaluate.save()
    export = run.stages.get(method="export")
    export.summary = {
        "size_bytes": 4_000_000,
        "quantized_size_bytes": 1_000_000,
        "quantization": "int8_dynamic",
        "parameters": 1_000_000,
        "eval": {"metric": "perplexity", "higher_is_better": False, "before": 3.0, "after": 3.1},
    }
    export.save()
    html = browser_client.get(f"/runs/{run.number}/").content.decode()
    assert 'data-testid="evaluation-evaluate-ship"' in html and "+1.5000" in html and "forgot 0.2000" in html
    assert "2+2=" in html and "retention_baseline" not in html  # shown as the baseline column
    assert "int8_dynamic" in html and "−75%" in html and "3.1000" in html


def test_learning_vs_forgetting_has_one_point_per_evaluated_run_of_the_team(
    browser_client, seeded, bob, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    browser_client.post("/pipelines/new/", _soup_form(seeded))
    pipeline = Pipeline.objects.get()
    with django_capture_on_commit_callbacks(execute=False):
        for _ in range(3):
            browser_client.post(f"/pipelines/{pipeline.pk}/run/")
    assert "No run has been evaluated" in browser_client.get("/runs/forgetting/").content.decode()
    for i, run in enumerate(Run.objects.order_by("number")[:2]):
        stage = run.stages.get(method="evaluate")
        stage.status = Status.SUCCEEDED
        stage.summary = {
            "target": {"metric": "loss", "model": 1.0, "baseline": 2.0, "gain": 1.0 + i},
            "retention": {"metric": "accuracy", "model": 0.5, "baseline": 0.8, "forgetting": 0.3 - i},
        }
        stage.save()
    with django_assert_max_num_queries(8):
        html = browser_client.get("/runs/forgetting/").content.decode()
    assert html.count("scatter-point") == 2 and 'data-testid="forgetting-table"' in html
    assert "#1 soup: gain +1 (loss), forgot +0.3 (accuracy)" in html
    assert "#2 soup: gain +2 (loss), forgot -0.7 (accuracy)" in html

    browser_client.logout()
    browser_client.login(username="bob", password="pw-bob-123")
    assert "scatter-point" not in browser_client.get("/runs/forgetting/").content.decode()


def test_the_pipeline_page_graph_follows_the_latest_run(browser_client, seeded, django_capture_on_commit_callbacks):
    browser_client.post("/pipelines/new/", _soup_form(seeded))
    pipeline = Pipeline.objects.get()
    html = browser_client.get(f"/pipelines/{pipeline.pk}/").content.decode()
    assert 'data-stage="mix" data-status=""' in html and 'hx-trigger="every 2s"' not in html  # never run
    with django_capture_on_commit_callbacks(execute=False):
        browser_client.post(f"/pipelines/{pipeline.pk}/run/")
    html = browser_client.get(f"/pipelines/{pipeline.pk}/").content.decode()
    assert 'data-stage="a" data-status="queued"' in html and 'hx-trigger="every 2s"' in html
    run = Run.objects.get()
    run.stages.filter(name="a").update(status=Status.RUNNING)
    fragment = browser_client.get(
        f"/pipelines/{pipeline.pk}/", headers={"HX-Request": "true", "HX-Target": "pipeline-graph"}
    )
    assert fragment.status_code == 200 and 'data-stage="a" data-status="running"' in fragment.content.decode()
    run.stages.filter(name="a").update(status=Status.QUEUED)
    browser_client.post(f"/runs/{run.number}/cancel/")
    fragment = browser_client.get(
        f"/pipelines/{pipeline.pk}/", headers={"HX-Request": "true", "HX-Target": "pipeline-graph"}
    )
    assert fragment.status_code == 286  # the run ended: one last render, then polling stops
