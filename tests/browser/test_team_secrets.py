"""Issue 11 in a real browser: an owner sets the team's hub token from the sidebar, sees only its metadata,
replaces it and deletes it (with a confirmation); the value never comes back into the page."""

from __future__ import annotations

import pytest

from refinery.teams.models import AuditEvent, TeamSecret
from refinery.teams.services import user_create
from refinery.teams.team_secrets import team_secret_reveal

from .test_golden_path import login

pytestmark = [pytest.mark.browser, pytest.mark.integration]

TOKEN = "hf_BrowserSetToken0123456789abcd"


def test_owner_sets_replaces_and_deletes_the_hub_token(page, screenshot, live_server, transactional_db):
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    login(page, live_server)

    page.click("nav >> text=Team")
    page.click("nav.tabs >> text=Secrets")
    page.wait_for_url("**/teams/secrets/")
    assert "not set" in page.inner_text("[data-testid=secret-hf_token]")
    page.fill("#secret-hf_token-value", TOKEN)
    page.click("[data-testid=secret-hf_token] button[type=submit] >> text=Save")
    page.wait_for_selector("[data-testid=secret-hf_token-meta]")
    meta = page.inner_text("[data-testid=secret-hf_token-meta]")
    assert "by ada" in meta and "ends with …abcd" in meta
    assert TOKEN not in page.content() and page.input_value("#secret-hf_token-value") == ""
    assert team_secret_reveal(team=team, name="hf_token") == TOKEN
    screenshot("90-team-secrets")

    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm
    page.click("[data-testid=secret-hf_token] >> text=Delete")
    page.wait_for_function("!document.querySelector('[data-testid=secret-hf_token-meta]')")
    assert "not set" in page.inner_text("[data-testid=secret-hf_token]")
    assert not TeamSecret.objects.exists()
    events = AuditEvent.objects.filter(team=team, action__startswith="secret.").order_by("created_at")
    assert list(events.values_list("action", flat=True)) == ["secret.set", "secret.deleted"]
