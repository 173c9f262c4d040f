"""Issue 6 in a real browser: filter and search the runs list, tick runs and compare them, and promote a
stage output into the model registry (real MLflow Model Registry), then move and roll back an alias."""

from __future__ import annotations

import pytest

from refinery.runs.services.annotations import run_note_add, run_tag_add
from refinery.teams.services import user_create
from tests.registry.test_registry import finished_run

from .test_golden_path import login

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def test_filter_compare_and_promote(
    page, screenshot, live_server, mlflow_server, transactional_db, sent_stages, tmp_path
):
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    first = finished_run(team, user, tmp_path / "a")
    second = finished_run(team, user, tmp_path / "b", pipeline=first.pipeline)
    third = finished_run(team, user, tmp_path / "c", pipeline=first.pipeline)
    run_tag_add(run=second, user=user, name="candidate")
    run_tag_add(run=third, user=user, name="candidate")
    run_note_add(run=third, user=user, body="Lower learning rate looks steadier on held-out sums.")
    login(page, live_server)

    # Filter by tag, then search the notes: the table narrows without a full reload and the URL follows.
    page.goto(f"{live_server.url}/runs/")
    assert page.get_attribute("[data-testid=run-results]", "data-count") == "3"
    page.select_option("[data-testid=filter-tag]", "candidate")
    page.wait_for_function("document.querySelector('[data-testid=run-results]').dataset.count === '2'")
    assert "tag=candidate" in page.url
    page.fill("[data-testid=run-search]", "steadier")
    page.wait_for_function("document.querySelector('[data-testid=run-results]').dataset.count === '1'")
    assert page.locator(f"[data-testid=run-{third.number}]").count() == 1
    screenshot("40-runs-filtered")

    # Compare the two candidates: tick them and open the comparison.
    page.goto(f"{live_server.url}/runs/?tag=candidate")
    page.check(f"[data-testid=pick-{second.number}]")
    page.check(f"[data-testid=pick-{third.number}]")
    page.click("[data-testid=compare-selected]")
    page.wait_for_url("**/runs/compare/?run=*")
    assert sorted(page.url.split("?", 1)[1].split("&")) == sorted([f"run={second.number}", f"run={third.number}"])
    assert f"#{second.number}" in page.content() and f"#{third.number}" in page.content()
    screenshot("41-compare-from-list")

    # Promote the LoRA stage of the third run with the staging alias, from its run page.
    page.goto(f"{live_server.url}/runs/{third.number}/")
    page.click("[data-testid=promote-lora]")
    page.wait_for_selector("[data-testid=promote-form]")
    page.fill("input[name=new_name]", "adder")
    page.fill("input[name=alias]", "staging")
    screenshot("42-promote")
    page.click("[data-testid=promote-submit]")
    page.wait_for_url("**/registry/adder/")
    assert "staging" in page.inner_text("[data-testid=aliases]")

    # A second version from the second run, then move production onto it and roll back in one click each.
    page.goto(f"{live_server.url}/registry/promote/?run={second.number}&stage=lora")
    page.select_option("select[name=model]", label="adder")
    page.click("[data-testid=promote-submit]")
    page.wait_for_url("**/registry/adder/")
    page.on("dialog", lambda dialog: dialog.accept())

    def after(click: str, event: str) -> None:
        """One click, then wait until the swapped-in page shows its event (the next click needs the new page)."""
        page.click(click)
        page.wait_for_function(
            "text => document.querySelector('[data-testid=alias-history]').innerText.includes(text)", arg=event
        )

    after("[data-testid=set-production-v1]", "pointed production at v1")
    after("[data-testid=set-production-v2]", "pointed production at v2 (was v1)")
    assert "v2" in page.inner_text("[data-testid=alias-production]")
    after("[data-testid=rollback-production]", "rolled production back to v1 (from v2)")
    assert "v1" in page.inner_text("[data-testid=alias-production]")
    history = page.inner_text("[data-testid=alias-history]")
    assert "rolled production back to v1 (from v2)" in history, history
    screenshot("43-registry")
