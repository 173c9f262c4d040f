"""Uploading a private model in a real browser: a bad archive shows why, a good one is registered."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from refinery.basemodels.models import BaseModel
from refinery.teams.services import user_create
from tests.browser.test_golden_path import login

pytestmark = [pytest.mark.browser]


def zip_folder(folder: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"{folder.name}/{file.name}")
        for name, data in (extra or {}).items():
            archive.writestr(f"{folder.name}/{name}", data)
    return out


def test_upload_a_model_archive(page, screenshot, live_server, demo_kit, transactional_db, tmp_path):
    user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    login(page, live_server)
    model = Path(demo_kit["model"])

    page.goto(f"{live_server.url}/models/")
    page.click("a:has-text('Upload model')")
    page.wait_for_url(f"{live_server.url}/models/upload/")
    screenshot("model-upload-form")

    page.fill("input[name=name]", "private-llama")
    page.set_input_files(
        "input[name=file]", str(zip_folder(model, tmp_path / "bad.zip", {"pytorch_model.bin": b"pickle"}))
    )
    page.click("button:has-text('Upload and register')")
    error = page.inner_text("[data-testid=field-error]")
    assert "pickle files (.bin, .pt, .pth, .pkl, .ckpt) can run code when loaded" in error
    screenshot("model-upload-error")

    page.set_input_files("input[name=file]", str(zip_folder(model, tmp_path / "good.zip")))
    page.click("button:has-text('Upload and register')")
    registered = BaseModel.objects.get(name="private-llama")
    page.wait_for_url(f"{live_server.url}/models/{registered.pk}/")
    assert "LlamaForCausalLM" in page.content()
    screenshot("model-upload-done")
