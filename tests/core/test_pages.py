"""Server-rendered pages: login, team scoping, the pipeline editor generated from method configs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from refinery.basemodels.services import base_model_create
from refinery.data.services import dataset_version_create
from refinery.pipelines.models import Pipeline
from refinery.runs.models import Run
from tests.fixtures import ROWS


@pytest.fixture
def seeded(team, alice, dataset_dir, tiny_model_dir):
    import json

    data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    version = dataset_version_create(
        team=team, user=alice, name="sums", kind="prompt_completion", filename="sums.jsonl", chunks=iter([data])
    ).version
    model = base_model_create(team=team, user=alice, name="tiny", source="local", name_or_path=str(tiny_model_dir))
    return {"dataset": version.dataset, "model": model}


def test_pages_need_login(client, db):
    for url in ["/runs/", "/datasets/", "/pipelines/", "/models/", "/pipelines/new/"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_every_page_renders(browser_client, seeded):
    pages = [
        "/runs/",
        "/datasets/",
        "/datasets/upload/",
        f"/datasets/{seeded['dataset'].pk}/",
        "/models/",
        "/models/new/",
        "/pipelines/",
        "/pipelines/new/",
    ]
    for url in pages:
        response = browser_client.get(url)
        assert response.status_code == 200, url


def test_local_model_is_inspected(seeded):
    model = seeded["model"]
    assert model.architecture == "LlamaForCausalLM" and "messages" in model.chat_template


def test_bad_model_path_is_refused(browser_client, team):
    response = browser_client.post("/models/new/", {"name": "x", "source": "local", "name_or_path": "/nope/model"})
    assert response.status_code == 400
    assert "not a model folder (with a config.json) inside this team&#x27;s model roots" in response.content.decode()


def test_other_teams_objects_are_404(seeded, bob, client):
    client.login(username="bob", password="pw-bob-123")
    assert client.get(f"/datasets/{seeded['dataset'].pk}/").status_code == 404
    assert "sums" not in client.get("/datasets/").content.decode()


def test_editor_fields_come_from_the_method_config(browser_client, seeded):
    html = browser_client.get("/pipelines/new/").content.decode()
    assert 'name="stages-0-config-learning_rate"' in html
    assert 'name="stages-0-adapter-r"' in html
    assert "Peak learning rate" in html  # help text from the dataclass metadata
    fragment = browser_client.get("/pipelines/stage-form/?index=1&method=sft").content.decode()
    assert 'name="stages-1-config-learning_rate"' in fragment
    assert 'value="@0" selected' in fragment  # a new stage defaults to the previous stage's output


def _form(seeded, **overrides):
    data = {
        "name": "web-pipeline",
        "base_model_id": seeded["model"].pk,
        "seed": "3",
        "description": "",
        "stages-0-name": "first",
        "stages-0-method": "sft",
        "stages-0-input": "base",
        "stages-0-dataset_id": seeded["dataset"].pk,
        "stages-0-config-learning_rate": "0.002",
        "stages-0-config-packing": ["false", "true"],
        "stages-0-adapter-type": "none",
        "stages-1-name": "second",
        "stages-1-method": "sft",
        "stages-1-input": "@0",
        "stages-1-dataset_id": seeded["dataset"].pk,
        "stages-1-adapter-type": "lora",
        "stages-1-adapter-r": "4",
    }
    data.update(overrides)
    return data


def test_editor_creates_a_two_stage_pipeline(browser_client, seeded):
    response = browser_client.post("/pipelines/new/", _form(seeded))
    assert response.status_code == 302, response.content.decode()[:2000]
    pipeline = Pipeline.objects.get(name="web-pipeline")
    first, second = pipeline.stages
    assert first["config"]["learning_rate"] == 0.002 and first["config"]["packing"] is True
    assert second["input"] == "first" and second["adapter"]["type"] == "lora" and second["adapter"]["r"] == 4
    assert pipeline.spec["seed"] == 3


def test_editor_shows_field_errors_and_keeps_values(browser_client, seeded):
    response = browser_client.post("/pipelines/new/", _form(seeded, **{"stages-0-config-learning_rate": "7"}))
    assert response.status_code == 400
    html = response.content.decode()
    assert "stage 1 (first): learning_rate" in html
    assert 'value="7"' in html  # the user's input is kept for correction
    assert not Pipeline.objects.exists()


def test_start_run_from_the_pipeline_page(browser_client, seeded, django_capture_on_commit_callbacks):
    browser_client.post("/pipelines/new/", _form(seeded))
    pipeline = Pipeline.objects.get()
    with django_capture_on_commit_callbacks(execute=False):
        response = browser_client.post(f"/pipelines/{pipeline.pk}/run/")
    run = Run.objects.get()
    assert response["Location"] == f"/runs/{run.number}/"
    page = browser_client.get(f"/runs/{run.number}/").content.decode()
    assert "first" in page and "second" in page and 'hx-trigger="every 2s"' in page
    # htmx polling gets the fragment; a finished run answers 286 so the client stops polling.
    fragment = browser_client.get(f"/runs/{run.number}/", headers={"HX-Request": "true", "HX-Target": "run-live"})
    assert fragment.status_code == 200 and b"<html" not in fragment.content
    browser_client.post(f"/runs/{run.number}/cancel/")
    final = browser_client.get(f"/runs/{run.number}/", headers={"HX-Request": "true", "HX-Target": "run-live"})
    assert final.status_code == 286 and b"canceled" in final.content.lower()


def test_importing_the_web_app_does_not_import_torch():
    code = (
        "import sys, django, os; sys.path.insert(0, 'platform');"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'refinery.settings.test'; django.setup();"
        "from django.urls import get_resolver; get_resolver().url_patterns;"
        "import refinery.api.views, refinery.pipelines.views, refinery.runs.urls, refinery.data.views;"
        "import refinery.wsgi;"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'accelerate') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_failed_stage_shows_its_error_and_log_tail(browser_client, seeded, django_capture_on_commit_callbacks):
    from refinery.runs.models import Status
    from refinery.runs.services import stage_claim, stage_finish

    browser_client.post("/pipelines/new/", _form(seeded))
    with django_capture_on_commit_callbacks(execute=False):
        browser_client.post(f"/pipelines/{Pipeline.objects.get().pk}/run/")
    run = Run.objects.get()
    first = run.stages.get(index=0)
    stage_claim(stage_run_id=first.pk, worker="w1")
    stage_finish(
        stage_run_id=first.pk,
        status=Status.FAILED,
        error="CUDA out of memory at step 12",
        log_tail="step 11 loss 0.4\nRuntimeError: CUDA out of memory",
    )
    html = browser_client.get(f"/runs/{run.number}/").content.decode()
    assert "CUDA out of memory at step 12" in html
    assert "Last lines of the trainer log" in html and "RuntimeError: CUDA out of memory" in html
    run.refresh_from_db()
    assert run.status == Status.FAILED and run.stages.get(index=1).status == Status.CANCELED


def test_run_page_charts_every_method_metric_with_the_important_ones_first(
    browser_client, seeded, django_capture_on_commit_callbacks
):
    from refinery.runs.services import stage_metrics_record

    browser_client.post("/pipelines/new/", _form(seeded))
    with django_capture_on_commit_callbacks(execute=False):
        browser_client.post(f"/pipelines/{Pipeline.objects.get().pk}/run/")
    run = Run.objects.get()
    first, second = run.stages.order_by("index")
    first.total_steps = 3
    first.save()
    stage_metrics_record(
        stage_run_id=first.pk,
        points=[
            (key, step, value, 0.0)
            for step in (1, 2, 3)
            for key, value in (
                ("train/loss", 1.0 / step),
                ("train/learning_rate", 1e-3),
                ("train/epoch", step),
                ("train/rewards/margins", 0.1 * step),
                ("train/kl", 0.01 * step),
            )
        ],
    )
    stage_metrics_record(stage_run_id=second.pk, points=[("train/rewards/margins", 1, 0.5, 0.0)])
    html = browser_client.get(f"/runs/{run.number}/").content.decode()
    charts = html.split('data-testid="metric-charts"')[1]
    main, routine = charts.split('id="routine-metrics"')
    order = [main.index(k) for k in ("train/rewards/margins", "train/kl")]
    assert order == sorted(order)  # rewards, then KL
    assert "train/learning_rate" in routine and "train/epoch" in routine and "train/learning_rate" not in main
    assert "train/loss</div>" not in charts
    # Stage 2's point sits after stage 1's three steps on the shared axis.
    assert '"x": [1, 2, 3, 4]' in charts and '"label": "second"' in charts


def test_choosing_a_method_swaps_in_its_fields_and_keeps_the_stage(browser_client, seeded):
    """What the method select sends with htmx: its own prefixed field plus the hx-included ones."""
    url = (
        f"/pipelines/stage-form/?index=0&stages-0-method=grpo&stages-0-name=rl"
        f"&stages-0-dataset_id={seeded['dataset'].pk}"
    )
    html = browser_client.get(url).content.decode()
    assert 'name="stages-0-config-reward_exact_match_weight"' in html
    assert '<option value="grpo" selected>' in html and 'value="rl"' in html
    assert "stages-0-config-packing" not in html  # SFT's fields are gone


def test_runs_list_shows_each_runs_last_loss_and_the_metrics_json_has_the_series(
    browser_client, seeded, django_capture_on_commit_callbacks
):
    from refinery.runs.services import stage_metrics_record

    browser_client.post("/pipelines/new/", _form(seeded))
    with django_capture_on_commit_callbacks(execute=False):
        browser_client.post(f"/pipelines/{Pipeline.objects.get().pk}/run/")
        browser_client.post(f"/pipelines/{Pipeline.objects.get().pk}/run/")
    first_run, second_run = Run.objects.order_by("number")
    a, b = first_run.stages.order_by("index")
    stage_metrics_record(stage_run_id=a.pk, points=[("train/loss", s, 2.0 / s, 0.0) for s in (1, 2)])
    stage_metrics_record(stage_run_id=b.pk, points=[("train/loss", 1, 0.5, 0.0), ("train/loss", 2, 0.25, 0.0)])
    rows = browser_client.get("/runs/").content.decode().split('id="run-rows"')[1]
    assert "0.25" in rows  # the last stage's last step, not stage 1's 1.0
    assert rows.count("—") >= 1  # the run with no metrics shows a dash
    data = browser_client.get(f"/runs/{first_run.number}/metrics.json?key=train/loss").json()
    assert data["x"] == [1, 2, 3, 4]  # stage 2 follows stage 1 on the shared step axis
    assert {s["label"] for s in data["series"]} == {"first train/loss", "second train/loss"}
