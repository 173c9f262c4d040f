"""Deleting a dataset: members only, refused while a pipeline or an unfinished run reads it, audited,
and the stored file goes only when no dataset version of any team points at it."""

from __future__ import annotations

import pytest

from refinery.data.models import Dataset, DatasetVersion
from refinery.data.services import DatasetInUse, dataset_delete
from refinery.runs.models import Run, Status
from refinery.runs.services import RunError, run_create, run_rerun
from refinery.teams.models import AuditEvent
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory

pytestmark = pytest.mark.django_db


def _stored(version: DatasetVersion, settings):
    return settings.REFINERY_DATASET_DIR / version.storage_path


def _pipeline_on(team, user, dataset_id: int, name: str = "reads-it"):
    stage = {
        "name": "sft",
        "method": "sft",
        "config": {"max_steps": 2},
        "adapter": {"type": "none"},
        "dataset_id": dataset_id,
        "input": "base",
    }
    return PipelineFactory(
        team=team, name=name, created_by=user, base_model=BaseModelFactory(team=team), stages=[stage]
    )


def test_a_member_deletes_an_unused_dataset_its_file_and_it_is_audited(
    browser_client, team, alice, settings, django_capture_on_commit_callbacks
):
    version = DatasetVersionFactory(dataset__team=team, dataset__name="old-sums")
    path = _stored(version, settings)
    assert path.exists()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = browser_client.post(f"/datasets/{version.dataset_id}/delete/")
    assert len(callbacks) == 1
    assert response.status_code == 302 and response["Location"] == "/datasets/"
    assert not Dataset.objects.filter(pk=version.dataset_id).exists() and not path.exists()
    event = AuditEvent.objects.get(team=team, action="dataset.deleted")
    assert event.target == "old-sums" and event.user == alice and event.detail["versions"] == 1


def test_a_file_another_team_still_points_at_stays(team, alice, bob, settings, django_capture_on_commit_callbacks):
    mine = DatasetVersionFactory(dataset__team=team)
    theirs = DatasetVersionFactory(dataset__team=bob.teams.get())  # the same rows: the same stored file
    assert mine.storage_path == theirs.storage_path
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        dataset_delete(dataset=mine.dataset, user=alice)
    assert len(callbacks) == 1
    assert _stored(theirs, settings).exists()
    assert DatasetVersion.objects.filter(pk=theirs.pk).exists()


def test_refused_while_a_pipeline_reads_it_and_nothing_is_deleted(browser_client, team, alice):
    version = DatasetVersionFactory(dataset__team=team, dataset__name="sums")
    _pipeline_on(team, alice, version.dataset_id, name="nightly")
    with pytest.raises(DatasetInUse, match="read by pipeline 'nightly': change it to read another dataset first"):
        dataset_delete(dataset=version.dataset, user=alice)
    response = browser_client.post(f"/datasets/{version.dataset_id}/delete/", follow=True)
    assert "Not deleted: dataset &#x27;sums&#x27; is read by pipeline &#x27;nightly&#x27;" in response.content.decode()
    assert DatasetVersion.objects.filter(pk=version.pk).exists()
    assert not AuditEvent.objects.filter(action="dataset.deleted").exists()


def test_refused_while_an_unfinished_run_reads_it_then_an_exact_rerun_explains(team, alice, sent_stages):
    version = DatasetVersionFactory(dataset__team=team, dataset__name="sums")
    pipeline = _pipeline_on(team, alice, version.dataset_id)
    run = run_create(pipeline=pipeline, user=alice)
    other = DatasetVersionFactory(dataset__team=team, dataset__name="other")
    pipeline.spec["stages"][0]["dataset_id"] = other.dataset_id  # the pipeline moved on; the run did not
    pipeline.save()
    with pytest.raises(DatasetInUse, match=rf"unfinished run #{run.number}: wait for them to end or cancel"):
        dataset_delete(dataset=version.dataset, user=alice)
    Run.objects.filter(pk=run.pk).update(status=Status.SUCCEEDED)
    run.stages.update(status=Status.SUCCEEDED)
    assert dataset_delete(dataset=version.dataset, user=alice) == 1
    run.refresh_from_db()
    assert run.snapshot["stages"][0]["train_data"]["sha256"] == version.sha256  # the record stays
    with pytest.raises(RunError, match="a dataset version this run used was deleted"):
        run_rerun(run=run, user=alice)


def test_viewers_get_403_outsiders_404(client, team, viewer, bob):
    version = DatasetVersionFactory(dataset__team=team)
    client.force_login(viewer)
    assert client.post(f"/datasets/{version.dataset_id}/delete/").status_code == 403
    client.force_login(bob)
    assert client.post(f"/datasets/{version.dataset_id}/delete/").status_code == 404
    assert client.get(f"/datasets/{version.dataset_id}/delete/").status_code == 405
    assert DatasetVersion.objects.filter(pk=version.pk).exists()


def test_api_delete(api, team, alice, bob):
    from refinery.teams.services import api_token_create
    from tests.fixtures import ApiClient

    version = DatasetVersionFactory(dataset__team=team, dataset__name="sums")
    _, key = api_token_create(user=bob)
    outsider = ApiClient(key)
    assert outsider.client.delete(f"/api/v1/datasets/{version.dataset_id}", headers=outsider.headers).status_code == 404
    pipeline = _pipeline_on(team, alice, version.dataset_id)
    response = api.client.delete(f"/api/v1/datasets/{version.dataset_id}", headers=api.headers)
    assert response.status_code == 409 and "read by pipeline" in response.json()["detail"]
    pipeline.delete()
    response = api.client.delete(f"/api/v1/datasets/{version.dataset_id}", headers=api.headers)
    assert response.status_code == 204
    assert api.get(f"/api/v1/datasets/{version.dataset_id}").status_code == 404
