from __future__ import annotations

import io

import pytest

from refinery.data.models import Dataset, DatasetVersion
from refinery.data.services import DatasetUploadError, dataset_version_create
from tests.fixtures import ROWS, write_jsonl


def chunks_of(path):
    yield path.read_bytes()


def test_valid_upload_is_stored_by_sha_and_versioned(team, alice, dataset_dir, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    first = dataset_version_create(
        team=team, user=alice, name="sums", kind="prompt_completion", filename="a.jsonl", chunks=chunks_of(path)
    )
    assert first.created and first.version.version == 1 and first.version.row_count == 100
    stored = dataset_dir / first.version.storage_path
    assert stored.read_bytes() == path.read_bytes()
    assert first.version.sha256 in stored.name

    again = dataset_version_create(
        team=team, user=alice, name="sums", kind="prompt_completion", filename="a.jsonl", chunks=chunks_of(path)
    )
    assert not again.created and again.version.pk == first.version.pk

    path2 = write_jsonl(tmp_path / "b.jsonl", ROWS[:50])
    second = dataset_version_create(
        team=team, user=alice, name="sums", kind="prompt_completion", filename="b.jsonl", chunks=chunks_of(path2)
    )
    assert second.created and second.version.version == 2 and second.version.row_count == 50
    assert Dataset.objects.get(name="sums").latest_version.pk == second.version.pk


def test_invalid_upload_stores_nothing(team, alice, dataset_dir, tmp_path):
    rows = ROWS[:30] + [{"prompt": "1+1=", "completion": 2}] + [{"prompt": "x"}] * 25
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DatasetUploadError) as err:
        dataset_version_create(
            team=team, user=alice, name="bad", kind="prompt_completion", filename="bad.jsonl", chunks=chunks_of(path)
        )
    assert err.value.error_count == 26
    assert len(err.value.issues) == 20
    assert err.value.issues[0].row == 31 and err.value.issues[0].field == "completion"
    assert not Dataset.objects.filter(name="bad").exists()
    assert not DatasetVersion.objects.exists()
    assert not any(p.is_file() for p in dataset_dir.rglob("*")) if dataset_dir.exists() else True
    assert not any((dataset_dir.parent / "tmp").glob("*"))


def test_new_version_must_keep_the_kind(team, alice, dataset_dir, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    dataset_version_create(
        team=team, user=alice, name="sums", kind="prompt_completion", filename="a.jsonl", chunks=chunks_of(path)
    )
    with pytest.raises(DatasetUploadError, match="same kind"):
        dataset_version_create(
            team=team, user=alice, name="sums", kind="reference", filename="a.jsonl", chunks=chunks_of(path)
        )


def test_oversized_upload_is_refused(team, alice, dataset_dir, tmp_path, settings):
    settings.REFINERY_MAX_UPLOAD_BYTES = 100
    path = write_jsonl(tmp_path / "a.jsonl", ROWS)
    with pytest.raises(DatasetUploadError, match="larger than"):
        dataset_version_create(
            team=team, user=alice, name="big", kind="prompt_completion", filename="a.jsonl", chunks=chunks_of(path)
        )
    assert not DatasetVersion.objects.exists()


def test_unknown_extension_is_refused(team, alice, dataset_dir):
    with pytest.raises(DatasetUploadError, match="file:"):
        dataset_version_create(
            team=team, user=alice, name="x", kind="prompt_completion", filename="a.xlsx", chunks=iter([b"abc"])
        )


def test_upload_page_shows_each_problem_with_line_and_field(browser_client, dataset_dir):
    content = "".join(['{"prompt": "a", "completion": "b"}\n', '{"prompt": "a", "completion": 5}\n', "not json\n"])
    upload = io.BytesIO(content.encode())
    upload.name = "bad.jsonl"
    response = browser_client.post(
        "/datasets/upload/",
        {"name": "bad", "kind": "prompt_completion", "file": upload},
        headers={"x-requested-with": "XMLHttpRequest"},
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "2 problems found; nothing was stored" in html
    assert "completion" in html and "invalid JSON" in html
    assert not Dataset.objects.exists()


def test_upload_page_redirects_to_the_dataset(browser_client, dataset_dir, tmp_path):
    upload = io.BytesIO("".join(f'{{"prompt": "{i}", "completion": "x"}}\n' for i in range(5)).encode())
    upload.name = "ok.jsonl"
    response = browser_client.post(
        "/datasets/upload/",
        {"name": "ok", "kind": "prompt_completion", "file": upload},
        headers={"x-requested-with": "XMLHttpRequest"},
    )
    assert response.status_code == 200
    dataset = Dataset.objects.get(name="ok")
    assert response.json() == {"redirect": f"/datasets/{dataset.pk}/"}
    page = browser_client.get(f"/datasets/{dataset.pk}/").content.decode()
    assert "Preview" in page and "Column stats" in page and "&lt;|im_start|&gt;user" in page
