"""Deleting a dataset in a real browser, under the enforced Content Security Policy: the confirmation comes
from app.js (data-confirm, no inline handler); dismissing it keeps the dataset, accepting it deletes it."""

from __future__ import annotations

import pytest

from refinery.data.models import Dataset
from refinery.teams.services import user_create
from tests.factories import DatasetVersionFactory

from .conftest import SCREENSHOTS
from .test_golden_path import login

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_a_member_deletes_a_dataset_after_confirming(csp_page, live_server, transactional_db):
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    version = DatasetVersionFactory(dataset__team=user.teams.get(), dataset__name="old-sums")
    page = csp_page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def screenshot(name: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    login(page, live_server)
    page.goto(f"{live_server.url}/datasets/{version.dataset_id}/")
    button = page.locator("[data-testid=delete-dataset]")
    assert button.is_visible()
    screenshot("dataset-delete-button")

    page.once("dialog", lambda dialog: dialog.dismiss())
    button.click()
    assert page.url.endswith(f"/datasets/{version.dataset_id}/")
    assert Dataset.objects.filter(pk=version.dataset_id).exists()

    page.once("dialog", lambda dialog: dialog.accept())
    button.click()
    page.wait_for_url(f"{live_server.url}/datasets/")
    assert "Deleted dataset 'old-sums' (1 version)." in page.inner_text("body")
    assert not Dataset.objects.filter(pk=version.dataset_id).exists()
    screenshot("dataset-deleted")
