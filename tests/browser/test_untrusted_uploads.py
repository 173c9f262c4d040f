"""Issue 11, holes 2 and 3 in a real browser: an upload over the size limit is refused while it streams
(the upload page says so in place; without JavaScript a plain 413 page), and a Parquet bomb is refused
with the decoded-size message."""

from __future__ import annotations

import pytest

from refinery.data.models import Dataset
from refinery.data.validation import decoded_size_message
from refinery.teams.services import user_create
from tests.security.test_untrusted_input import BOMB_ROWS, BOMB_VALUE_BYTES, parquet_bomb

from .conftest import SCREENSHOTS
from .test_golden_path import login

pytestmark = [pytest.mark.browser]

LIMIT = 256 * 1024
TOO_LARGE = "the upload is larger than the limit of 256 KiB (262,144 bytes); nothing was stored"


def _choose(page, name: str, content: bytes, mime: str) -> None:
    page.fill("input[name=name]", "untrusted")
    page.select_option("select[name=kind]", "prompt_completion")
    page.set_input_files("input[type=file]", files=[{"name": name, "mimeType": mime, "buffer": content}])


def test_oversized_upload_and_parquet_bomb_are_refused_in_the_browser(
    browser, page, screenshot, live_server, transactional_db, settings
):
    settings.REFINERY_MAX_UPLOAD_BYTES = LIMIT
    user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    login(page, live_server)

    big = b'{"prompt": "p", "completion": "c"}\n' * (1024 * 1024 // 35)
    page.goto(f"{live_server.url}/datasets/upload/")
    _choose(page, "big.jsonl", big, "application/json")
    page.click("button:has-text('Validate and upload')")
    page.wait_for_selector("form.upload-form.is-error")
    assert page.inner_text(".upload-status") == TOO_LARGE
    screenshot("i11-upload-too-large")

    page.goto(f"{live_server.url}/datasets/upload/")
    _choose(
        page, "bomb.parquet", parquet_bomb(rows=BOMB_ROWS, value_bytes=BOMB_VALUE_BYTES), "application/octet-stream"
    )
    page.click("button:has-text('Validate and upload')")
    page.wait_for_selector("[data-testid=upload-result] .form-errors")
    assert decoded_size_message(8 * 1024**3) in page.inner_text("[data-testid=upload-result]")
    screenshot("i11-upload-parquet-bomb")

    # Without JavaScript the form posts itself: the answer is a plain page with status 413.
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1400, "height": 900})
    plain = context.new_page()
    try:
        login(plain, live_server)
        plain.goto(f"{live_server.url}/datasets/upload/")
        _choose(plain, "big.jsonl", big, "application/json")
        with plain.expect_response(lambda r: r.url.endswith("/datasets/upload/") and r.request.method == "POST") as r:
            plain.click("button:has-text('Validate and upload')")
        assert r.value.status == 413
        plain.wait_for_selector("h1:has-text('Too large to accept')")
        assert TOO_LARGE in plain.inner_text("main")
        plain.screenshot(path=str(SCREENSHOTS / "i11-413-page.png"), full_page=True)
    finally:
        context.close()
    assert not Dataset.objects.exists()
