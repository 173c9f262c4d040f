"""Issue 11, hole 1: a team brings a private model by uploading an archive into its own model root.

Good archives (.zip, .tar, .tar.gz of the demo kit's tiny model) register a usable local model; every
bad kind (pickle weights, other files, traversal, absolute names, links, devices, too many members,
too many bytes once extracted, damaged) is refused with a clear message and leaves nothing on disk.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from refinery.basemodels.models import BaseModel
from refinery.basemodels.paths import model_path_check, team_upload_root
from refinery.basemodels.services import BaseModelError, base_model_upload, inspect_local_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def kit_files(demo_kit) -> dict[str, bytes]:
    """The demo kit's tiny model folder: {file name: content}."""
    folder = Path(demo_kit["model"])
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def make_zip(files: dict[str, bytes], *, prefix: str = "", symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(prefix + name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(prefix + name)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def make_tar(
    files: dict[str, bytes], *, gz: bool = False, prefix: str = "", extra: list[tarfile.TarInfo] | None = None
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra or []:
            archive.addfile(info)
    return buffer.getvalue()


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def upload(team, user, data: bytes, filename: str, name: str = "private"):
    return base_model_upload(team=team, user=user, name=name, filename=filename, fileobj=io.BytesIO(data))


def leftovers(team) -> list[str]:
    root = team_upload_root(team.pk)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "zip-in-folder"])
def test_a_good_archive_registers_a_usable_model_in_the_teams_root(team, alice, kit_files, kind):
    data = {
        "zip": lambda: make_zip(kit_files),
        "tar": lambda: make_tar(kit_files),
        "tar.gz": lambda: make_tar(kit_files, gz=True),
        "zip-in-folder": lambda: make_zip(kit_files, prefix="tiny-llama/"),
    }[kind]()
    model = upload(team, alice, data, f"tiny.{kind.split('-')[0]}")

    folder = Path(model.name_or_path)
    assert model.source == BaseModel.Source.LOCAL and folder.parent == team_upload_root(team.pk)
    assert folder.name.startswith("private-") and len(folder.name) == len("private-") + 8
    assert sorted(p.name for p in folder.iterdir()) == sorted(kit_files)
    assert model_path_check(team_id=team.pk, path=model.name_or_path) == folder
    details = inspect_local_model(model.name_or_path, team_id=team.pk)
    assert details["architecture"] == "LlamaForCausalLM" and details["parameter_count"] > 0
    assert (model.architecture, model.parameter_count) == (details["architecture"], details["parameter_count"])
    assert leftovers(team) == [folder.name]  # no temp folder left


BAD = {
    "pickle weights": (lambda f: make_zip({**f, "pytorch_model.bin": b"\x80\x04pickle"}), "pickle files"),
    "a .pt file": (lambda f: make_tar({**f, "optimizer.pt": b"x"}), "pickle files"),
    "a checkpoint": (lambda f: make_zip({**f, "model.ckpt": b"x"}), "pickle files"),
    "code": (lambda f: make_zip({**f, "modeling_evil.py": b"import os"}), "not a file a model folder holds"),
    "traversal": (lambda f: make_zip({**f, "../../escape.json": b"{}"}), "'..'"),
    "traversal in tar": (lambda f: make_tar({**f, "a/../../escape.json": b"{}"}), "'..'"),
    "absolute name": (lambda f: make_tar({**f, "/etc/cron.d/x.txt": b"x"}), "absolute names"),
    "zip symlink": (lambda f: make_zip(f, symlinks={"tokenizer.model": "/etc/passwd"}), "links"),
    "tar symlink": (lambda f: make_tar(f, extra=[tar_entry("vocab.txt", tarfile.SYMTYPE, "/etc/passwd")]), "links"),
    "tar hardlink": (lambda f: make_tar(f, extra=[tar_entry("vocab.txt", tarfile.LNKTYPE, "config.json")]), "links"),
    "device": (lambda f: make_tar(f, extra=[tar_entry("null.txt", tarfile.CHRTYPE)]), "devices"),
    "fifo": (lambda f: make_tar(f, extra=[tar_entry("pipe.txt", tarfile.FIFOTYPE)]), "devices"),
    "sub-folder": (lambda f: make_zip({**f, "original/params.json": b"{}"}), "files and folders"),
    "nested folder": (lambda f: make_zip(f, prefix="a/b/"), "no sub-folders"),
    "no config": (lambda f: make_zip({k: v for k, v in f.items() if k != "config.json"}), "no config.json"),
    "no weights": (
        lambda f: make_zip({k: v for k, v in f.items() if not k.endswith(".safetensors")}),
        "no .safetensors",
    ),
    "broken config": (lambda f: make_zip({**f, "config.json": b"{not json"}), "not valid JSON"),
    "damaged zip": (lambda f: make_zip(f)[:200], "not a readable .zip"),
    "damaged tar.gz": (lambda f: make_tar(f, gz=True)[:300], "damaged"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_archive_is_refused_clearly_and_leaves_nothing(team, alice, kit_files, case):
    build, expected = BAD[case]
    filename = (
        "model.tar.gz"
        if "tar.gz" in case
        else (
            "model.tar" if "tar" in case or case in ("a .pt file", "absolute name", "device", "fifo") else "model.zip"
        )
    )
    with pytest.raises(BaseModelError) as caught:
        upload(team, alice, build(kit_files), filename)
    message = caught.value.errors.get("file") or caught.value.errors.get("name_or_path")
    assert expected in message, message
    assert not BaseModel.objects.filter(team=team).exists()
    assert leftovers(team) == []


def test_size_and_member_limits_are_counted_while_extracting(team, alice, kit_files, settings):
    # A highly compressible member: the archive is small, its content is not. Its header is honest; the
    # limit is enforced on the bytes written, so a lying header would not help either.
    settings.REFINERY_MAX_MODEL_UPLOAD_BYTES = sum(len(v) for v in kit_files.values()) + 1000
    bomb = make_zip({**kit_files, "zeros.txt": bytes(10 * 1024 * 1024)})
    assert len(bomb) < len(make_zip(kit_files)) + 100_000
    with pytest.raises(BaseModelError) as caught:
        upload(team, alice, bomb, "bomb.zip")
    assert caught.value.too_large and "REFINERY_MAX_MODEL_UPLOAD_BYTES" in caught.value.errors["file"]
    assert leftovers(team) == []

    settings.REFINERY_MAX_MODEL_UPLOAD_MEMBERS = len(kit_files) + 2
    many = make_tar({**kit_files, **{f"extra-{i}.txt": b"x" for i in range(5)}})
    with pytest.raises(BaseModelError) as caught:
        upload(team, alice, many, "many.tar")
    assert caught.value.too_large and "more than" in caught.value.errors["file"]
    assert leftovers(team) == [] and not BaseModel.objects.filter(team=team).exists()


def test_a_lying_zip_header_does_not_get_past_the_byte_count(team, alice, kit_files, settings):
    """A member whose header claims 10 bytes but whose stream inflates to 5 MiB."""
    settings.REFINERY_MAX_MODEL_UPLOAD_BYTES = sum(len(v) for v in kit_files.values()) + 1000
    data = bytearray(make_zip({**kit_files, "big.txt": bytes(5 * 1024 * 1024)}))
    # The uncompressed size of big.txt, in its local header (offset 22) and central entry (offset 24): 10 bytes.
    for signature, size_at, name_len_at, header_len in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            name_len = int.from_bytes(data[start + name_len_at : start + name_len_at + 2], "little")
            if data[start + header_len : start + header_len + name_len] == b"big.txt":
                data[start + size_at : start + size_at + 4] = (10).to_bytes(4, "little")
            start += 4
    with pytest.raises(BaseModelError) as caught:
        upload(team, alice, bytes(data), "liar.zip")
    assert "REFINERY_MAX_MODEL_UPLOAD_BYTES" in caught.value.errors["file"] or "damaged" in caught.value.errors["file"]
    assert leftovers(team) == []


def test_a_name_already_taken_is_refused_before_extracting(team, alice, kit_files):
    upload(team, alice, make_zip(kit_files), "a.zip", name="same")
    with pytest.raises(BaseModelError, match="already has a model called"):
        upload(team, alice, make_zip(kit_files), "b.zip", name="same")
    assert len(leftovers(team)) == 1


def test_not_an_archive_is_refused(team, alice, kit_files):
    with pytest.raises(BaseModelError, match=r"upload a \.zip, \.tar or \.tar\.gz"):
        upload(team, alice, kit_files["config.json"], "config.json")
    assert leftovers(team) == []


# --- the page and the API ----------------------------------------------------------------------


def test_upload_page_registers_the_model_and_shows_errors(browser_client, team, kit_files):
    page = browser_client.get("/models/upload/")
    assert page.status_code == 200 and b'enctype="multipart/form-data"' in page.content
    assert b"/models/upload/" in browser_client.get("/models/").content

    bad = io.BytesIO(make_zip({**kit_files, "pytorch_model.bin": b"x"}))
    bad.name = "bad.zip"
    response = browser_client.post("/models/upload/", {"name": "mine", "file": bad})
    assert response.status_code == 400
    assert "pickle files (.bin, .pt, .pth, .pkl, .ckpt) can run code" in response.content.decode()
    assert leftovers(team) == []

    good = io.BytesIO(make_zip(kit_files))
    good.name = "tiny.zip"
    response = browser_client.post("/models/upload/", {"name": "mine", "file": good, "description": "ours"})
    model = BaseModel.objects.get(team=team, name="mine")
    assert response.status_code == 302 and response["Location"] == f"/models/{model.pk}/"
    assert model.description == "ours" and model.architecture == "LlamaForCausalLM"


def test_viewers_cannot_upload(viewer, team, kit_files):
    from django.test import Client

    client = Client()
    client.force_login(viewer)
    good = io.BytesIO(make_zip(kit_files))
    good.name = "tiny.zip"
    assert client.post("/models/upload/", {"name": "v", "file": good}).status_code in (403, 404)
    assert leftovers(team) == []


def test_api_upload(api, team, bob_api, kit_files):
    good = io.BytesIO(make_tar(kit_files, gz=True))
    good.name = "tiny.tar.gz"
    response = api.post("/api/v1/base-models/upload", {"name": "mine"}, files={"file": good})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "mine" and body["source"] == "local" and body["architecture"] == "LlamaForCausalLM"
    # Another team does not see it, and cannot register its folder by path.
    assert [m["name"] for m in bob_api.get("/api/v1/base-models").json()] == []
    stolen = bob_api.post("/api/v1/base-models", {"name": "x", "source": "local", "name_or_path": body["name_or_path"]})
    assert stolen.status_code == 400 and "inside this team's model roots" in stolen.json()["detail"]

    bad = io.BytesIO(make_zip({**kit_files, "../x.json": b"{}"}))
    bad.name = "bad.zip"
    response = api.post("/api/v1/base-models/upload", {"name": "bad"}, files={"file": bad})
    assert response.status_code == 400
    assert set(response.json()) == {"detail", "errors"} and "'..'" in response.json()["errors"]["file"]
    assert leftovers(team) == [Path(body["name_or_path"]).name]


def test_api_upload_over_the_limit_is_413(api, team, kit_files, settings):
    settings.REFINERY_MAX_MODEL_UPLOAD_BYTES = 1000
    big = io.BytesIO(make_zip(kit_files))
    big.name = "tiny.zip"
    response = api.post("/api/v1/base-models/upload", {"name": "big"}, files={"file": big})
    assert response.status_code == 413 and "REFINERY_MAX_MODEL_UPLOAD_BYTES" in response.json()["detail"]
    assert leftovers(team) == []


def test_model_archives_get_the_model_upload_limit_not_the_dataset_one(api, team, kit_files, settings):
    """The request-size guard lets a model archive past REFINERY_MAX_UPLOAD_BYTES (datasets) up to
    REFINERY_MAX_MODEL_UPLOAD_BYTES; the same body to the dataset route is refused while it streams."""
    archive = make_zip(kit_files)
    settings.REFINERY_MAX_UPLOAD_BYTES = len(archive) // 2
    settings.REFINERY_MAX_MODEL_UPLOAD_BYTES = len(archive) * 100
    model_file = io.BytesIO(archive)
    model_file.name = "tiny.zip"
    response = api.post("/api/v1/base-models/upload", {"name": "roomy"}, files={"file": model_file})
    assert response.status_code == 201, response.content
    data_file = io.BytesIO(archive)
    data_file.name = "rows.jsonl"
    response = api.post("/api/v1/datasets", {"name": "big", "kind": "prompt_completion"}, files={"file": data_file})
    assert response.status_code == 413 and "nothing was stored" in response.json()["detail"]
