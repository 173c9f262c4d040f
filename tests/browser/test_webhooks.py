"""Issue 12 in a real browser: an owner opens the Webhooks tab, creates a webhook to a receiver on
127.0.0.1, copies the secret (shown once), sends a test event, redelivers it from the delivery log,
pauses the endpoint and deletes it (htmx confirmation), all with the Content Security Policy enforced."""

from __future__ import annotations

import pytest

from refinery.notifications.models import Delivery, Endpoint
from refinery.notifications.services import deliveries_send_due
from refinery.teams.services import user_create

from .conftest import SCREENSHOTS
from .test_golden_path import login

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_owner_creates_a_webhook_tests_and_redelivers(
    csp_page, live_server, transactional_db, webhook_receiver, sent_notifications
):
    page = csp_page
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)

    def screenshot(name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    login(page, live_server)
    page.click("nav >> text=Team")
    page.click("nav.tabs >> text=Webhooks")
    page.wait_for_url("**/teams/webhooks/")
    page.fill("input[name=url]", webhook_receiver.url)
    page.check("input[name=kinds][value='run.succeeded']")
    page.click("[data-testid=endpoint-form] button[type=submit]")
    page.wait_for_selector("[data-testid=webhook-secret]")
    secret = page.input_value("[data-testid=webhook-secret]")
    assert secret.startswith("whsec_")
    screenshot("95-webhook-created")

    page.click(f"[data-testid=endpoints] >> text={webhook_receiver.url}")
    page.click("[data-testid=send-test]")
    page.wait_for_selector("text=Test event queued")
    deliveries_send_due()  # what the cpu worker does on its wake-up
    page.reload()
    page.wait_for_selector("[data-testid=deliveries]")
    page.click("[data-testid=deliveries] >> text=Redeliver")
    page.wait_for_selector("text=Redelivery of event")
    deliveries_send_due()
    page.reload()
    rows = page.locator("[data-testid=deliveries] tbody tr")
    assert rows.count() == 2
    assert "Delivered" in rows.nth(0).inner_text() and "200" in rows.nth(0).inner_text()
    assert len(webhook_receiver.requests) == 2
    assert secret not in page.content()
    assert list(Delivery.objects.order_by("attempt").values_list("attempt", "status")) == [
        (1, "succeeded"),
        (2, "succeeded"),
    ]
    screenshot("96-webhook-delivery-log")

    page.click("[data-testid=toggle-active]")
    page.wait_for_selector("[data-testid=paused]")
    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm
    page.click("button >> text=Delete")
    page.wait_for_url("**/teams/webhooks/")
    page.wait_for_selector("[data-testid=no-endpoints]")
    assert not Endpoint.objects.exists()
    assert not console, console  # no CSP violation, no script error
