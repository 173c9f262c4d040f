"""Issue 12 in a real browser: an owner opens the Webhooks tab, creates a webhook to a receiver on
127.0.0.1, copies the secret (shown once), sends a test event and redelivers it from the delivery log."""
from __future__ import annotations

import pytest

from refinery.notifications.models import Delivery
from refinery.notifications.services import deliveries_send_due
from refinery.teams.services import user_create

from .test_golden_path import login

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_owner_creates_a_webhook_tests_and_redelivers(page, screenshot, live_server, transactional_db,
                                                      webhook_receiver, sent_notifications):
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
        (1, "succeeded"), (2, "succeeded")]
    screenshot("96-webhook-delivery-log")
