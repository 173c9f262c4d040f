"""The run page's artifacts browser against a real `mlflow server`: listing, folders, streamed downloads
through Django, refused traversal, other teams, and no MLflow address anywhere in the HTML."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
from django.http import StreamingHttpResponse
from django.test import Client

from refinery.runs.services import run_create, stage_update
from refinery.tracking.client import artifacts_upload, experiment_ensure, tracking_client
from tests.factories import TeamFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

WEIGHTS = os.urandom(3 * 1024 * 1024 + 123)  # several chunks of the stream


@pytest.fixture(autouse=True)
def _empty_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def stage_with_artifacts(mlflow_server, make_pipeline, sent_stages, tmp_path, django_capture_on_commit_callbacks):
    """A run whose stage has a real MLflow run holding: spec.json, notes v1.txt, model/config.json and
    model/weights/adapter.bin (3 MB of random bytes)."""
    pipeline = make_pipeline(("sft", "base"))
    with django_capture_on_commit_callbacks(execute=True):
        run = run_create(pipeline=pipeline, user=pipeline.created_by)
    client = tracking_client()
    experiment_id = experiment_ensure(team=pipeline.team, client=client)
    mlflow_run_id = client.create_run(experiment_id, run_name="sft").info.run_id
    files = tmp_path / "out"
    (files / "model" / "weights").mkdir(parents=True)
    (files / "spec.json").write_text('{"method": "sft"}\n')
    (files / "notes v1.txt").write_text("größer als gestern\n")
    (files / "model" / "config.json").write_text('{"hidden_size": 8}\n')
    (files / "model" / "weights" / "adapter.bin").write_bytes(WEIGHTS)
    artifacts_upload(mlflow_run_id=mlflow_run_id, local_path=files, client=client)
    stage = run.stages.get()
    stage_update(stage_run_id=stage.pk, mlflow_run_id=mlflow_run_id)
    run.mlflow_run_id, run.mlflow_experiment_id = mlflow_run_id, experiment_id
    run.save()
    user_client = Client()
    user_client.force_login(pipeline.created_by)
    return {"run": run, "client": user_client, "mlflow_run_id": mlflow_run_id, "server": mlflow_server}


def assert_no_mlflow_address(html: str, server) -> None:
    netloc = urlsplit(server.url).netloc
    for needle in (server.url, netloc, "mlflow-artifacts", "/api/2.0/", "#/experiments", "Open in MLflow"):
        assert needle not in html, needle


def test_listing_folders_and_sizes(stage_with_artifacts):
    run, client, server = stage_with_artifacts["run"], stage_with_artifacts["client"], stage_with_artifacts["server"]
    page = client.get(f"/runs/{run.number}/").content.decode()
    assert f'hx-get="/runs/{run.number}/artifacts/"' in page  # the card loads lazily, through Django
    root = client.get(f"/runs/{run.number}/artifacts/", headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in root and 'data-testid="artifact-tab-sft"' in root
    assert 'data-artifact="model" data-kind="folder"' in root
    assert 'data-artifact="spec.json" data-kind="file"' in root and 'data-size="18"' in root
    assert 'data-artifact="notes v1.txt"' in root
    assert root.index('data-artifact="model"') < root.index('data-artifact="notes v1.txt"')  # folders first
    nested = client.get(f"/runs/{run.number}/artifacts/", {"stage": "sft", "path": "model/weights"}).content.decode()
    assert 'data-artifact="model/weights/adapter.bin" data-kind="file"' in nested
    assert f'data-size="{len(WEIGHTS)}"' in nested and "3.0 MB" in nested
    assert 'data-testid="artifact-crumbs"' in nested and ">weights</span>" in nested
    assert "path=model/weights/adapter.bin" in nested.replace("%2F", "/")
    for html in (page, root, nested):
        assert_no_mlflow_address(html, server)
    empty = client.get(f"/runs/{run.number}/artifacts/", {"stage": "sft", "path": "nothing/here"}).content.decode()
    assert "This folder is empty." in empty


def test_download_streams_the_file_byte_for_byte(stage_with_artifacts):
    run, client = stage_with_artifacts["run"], stage_with_artifacts["client"]
    response = client.get(
        f"/runs/{run.number}/artifacts/download/", {"stage": "sft", "path": "model/weights/adapter.bin"}
    )
    assert response.status_code == 200 and isinstance(response, StreamingHttpResponse)
    assert response["Content-Disposition"] == 'attachment; filename="adapter.bin"'
    assert response["Content-Length"] == str(len(WEIGHTS))
    chunks = list(response.streaming_content)  # the test client closes the response at the end
    assert len(chunks) > 1 and max(len(c) for c in chunks) < len(WEIGHTS)  # passed on in pieces
    assert b"".join(chunks) == WEIGHTS

    named = client.get(f"/runs/{run.number}/artifacts/download/", {"stage": "sft", "path": "notes v1.txt"})
    assert named["Content-Disposition"] == 'attachment; filename="notes v1.txt"'
    assert b"".join(named.streaming_content).decode() == "größer als gestern\n"


def test_traversal_folders_and_missing_files_are_refused(stage_with_artifacts):
    run, client = stage_with_artifacts["run"], stage_with_artifacts["client"]
    url = f"/runs/{run.number}/artifacts/download/"
    for path in ("../../../etc/passwd", "/etc/passwd", "model/../../x", "..", "%2e%2e/%2e%2e/etc/passwd"):
        assert client.get(url, {"stage": "sft", "path": path}).status_code == 400, path
        assert client.get(f"/runs/{run.number}/artifacts/", {"stage": "sft", "path": path}).status_code == 400
    assert client.get(url, {"stage": "sft", "path": "model"}).status_code == 404  # a folder
    assert client.get(url, {"stage": "sft", "path": "model/nope.bin"}).status_code == 404
    assert client.get(url, {"stage": "nope", "path": "spec.json"}).status_code == 404


def test_other_teams_get_404(stage_with_artifacts):
    run = stage_with_artifacts["run"]
    stranger = UserFactory()
    TeamFactory(members=[stranger])
    client = Client()
    client.force_login(stranger)
    assert client.get(f"/runs/{run.number}/").status_code == 404
    assert client.get(f"/runs/{run.number}/artifacts/", {"stage": "sft"}).status_code == 404
    assert (
        client.get(f"/runs/{run.number}/artifacts/download/", {"stage": "sft", "path": "spec.json"}).status_code == 404
    )


def test_an_unreachable_store_is_explained_without_its_address(
    stage_with_artifacts, settings, make_pipeline, sent_stages
):
    run, client, server = stage_with_artifacts["run"], stage_with_artifacts["client"], stage_with_artifacts["server"]
    stage = run.stages.get()
    stage_update(stage_run_id=stage.pk, mlflow_run_id="0" * 32)  # a run this process never looked up
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:9"
    html = client.get(f"/runs/{run.number}/artifacts/", {"stage": "sft"}).content.decode()
    assert "not reachable right now" in html and "127.0.0.1:9" not in html
    assert_no_mlflow_address(html, server)
    response = client.get(f"/runs/{run.number}/artifacts/download/", {"stage": "sft", "path": "spec.json"})
    assert response.status_code == 503 and b"127.0.0.1" not in response.content
