"""The Content Security Policy in a real browser: the main pages load and work with no CSP
violation and no console error, the behaviour moved out of inline handlers and htmx
expressions still works, and the API docs render from the vendored Swagger UI with every
other host blocked."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest

from refinery.runs.models import Run, Status
from refinery.runs.services import run_create
from refinery.runs.services.listing import run_summary_refresh
from refinery.sweeps.services import sweep_create
from refinery.teams.services import user_create
from tests.registry.test_registry import finished_run

from .conftest import SCREENSHOTS
from .test_golden_path import login

pytestmark = [pytest.mark.browser, pytest.mark.integration]

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber);
});
"""


@pytest.fixture
def watched(csp_page):
    """A page under the CSP, with every violation, console error, page error and request to another host
    recorded."""
    page = csp_page
    problems: list[str] = []
    outside: list[str] = []

    def route(route):
        if urlparse(route.request.url).hostname in LOCAL_HOSTS or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.context.route("**/*", route)
    page.context.add_init_script(WATCH)
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))

    def check(where: str, allow: str | None = None) -> None:
        page.wait_for_load_state("networkidle")
        violations = page.evaluate("window.__csp || []")
        assert not violations, f"{where}: CSP violations {violations}"
        unexpected = [p for p in problems if not (allow and allow in p)]
        assert not unexpected, f"{where}: {unexpected}"
        problems.clear()
        assert not outside, f"{where}: requests to other hosts {outside}"

    def shot(name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def wait_js(expression: str, timeout: float = 20) -> None:
        """wait_for_function without eval: poll through Playwright's evaluate (not subject to the CSP)."""
        deadline = time.monotonic() + timeout
        while not page.evaluate(f"() => Boolean({expression})"):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.1)

    page.check_clean = check
    page.shot = shot
    page.wait_js = wait_js
    return page


def test_main_pages_work_under_the_csp(watched, live_server, mlflow_server, transactional_db, sent_stages, tmp_path):
    page = watched
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    run = finished_run(team, user, tmp_path / "a")
    run_summary_refresh(run_id=run.pk)  # as stage_finish does: the runs list's metric columns
    pipeline = run.pipeline
    queued = run_create(pipeline=pipeline, user=user)

    page.goto(f"{live_server.url}/login/")
    page.check_clean("login")
    page.shot("csp-01-login")
    login(page, live_server)
    page.check_clean("runs list")
    page.shot("csp-02-runs")

    # Runs list: picking a metric column sorts by it, better end first (was an inline onchange).
    options = page.eval_on_selector_all(
        "[data-testid=filter-metric] option", "os => os.map(o => [o.value, o.dataset.goal || ''])"
    )
    goals = dict(options)
    assert goals.get("lora/eval/loss") == "min", options
    page.select_option("[data-testid=filter-metric]", "lora/eval/loss")
    page.wait_for_url("**metric=lora%2Feval%2Floss**")
    assert page.input_value("[data-testid=filter-sort]") == "metric"  # a loss: lower first
    assert "sort=metric" in page.url
    page.select_option("[data-testid=filter-metric]", "")
    page.wait_js("!location.search.includes('metric')")
    assert page.input_value("[data-testid=filter-sort]") == "-created"
    page.fill("[data-testid=run-search]", "no such run anywhere")
    page.wait_js("document.querySelector('[data-testid=run-results]').dataset.count === '0'")
    page.check_clean("runs list filters")

    # The finished run's page (charts, artifacts, timeline).
    page.goto(f"{live_server.url}/runs/{run.number}/")
    page.wait_for_selector("[data-testid=run-artifacts] table, [data-testid=run-artifacts] a", timeout=30_000)
    page.check_clean("run page")
    page.shot("csp-03-run")

    # A queued run's page polls, and its cancel button asks first (was an inline onclick confirm).
    page.goto(f"{live_server.url}/runs/{queued.number}/")
    messages: list[str] = []

    def dismiss(dialog):
        messages.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.click("[data-testid=cancel-run]")
    page.wait_for_timeout(500)
    assert messages == [f"Cancel run #{queued.number}?"]
    assert Run.objects.get(pk=queued.pk).status == Status.QUEUED
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=cancel-run]")
    page.wait_for_load_state("networkidle")
    queued.refresh_from_db()
    assert queued.status in (Status.CANCELED, Status.CANCELING), queued.status
    page.check_clean("queued run page")

    # The pipeline editor: "+ Add stage" sends the next index (was hx-vals js:).
    page.goto(f"{live_server.url}/pipelines/{pipeline.pk}/edit/")
    before = page.locator("#stages > .stage").count()
    page.click("[data-testid=add-stage]")
    page.wait_js(f"document.querySelectorAll('#stages > .stage').length === {before + 1}")
    names = page.eval_on_selector_all("#stages > .stage:last-child [name]", "els => els.map(e => e.name)")
    assert f"stages-{before}-name" in names, names
    page.check_clean("pipeline editor")
    page.shot("csp-04-pipeline-editor")

    # An active sweep's page polls every 3 s, but not while the focus is in its metric picker
    # (was an htmx trigger filter, evaluated code).
    sweep = sweep_create(
        pipeline=pipeline,
        user=user,
        name="lr",
        mode="grid",
        metric="lora/train/loss",
        goal="min",
        parameters=[{"path": "sft.config.learning_rate", "values": ["1e-4", "3e-4"]}],
    )
    polls: list[str] = []
    page.on(
        "request",
        lambda r: polls.append(r.url) if f"/sweeps/{sweep.pk}/" in r.url and r.headers.get("hx-request") else None,
    )
    page.goto(f"{live_server.url}/sweeps/{sweep.pk}/")
    page.wait_for_timeout(7_000)
    assert len(polls) >= 2, polls
    page.focus("[data-testid=metric-picker]")
    polls.clear()
    page.wait_for_timeout(7_000)
    assert polls == [], polls
    page.check_clean("sweep page")

    for path, name in [
        ("/pipelines/", "pipelines"),
        (f"/pipelines/{pipeline.pk}/", "pipeline"),
        ("/datasets/", "datasets"),
        ("/models/", "models"),
        (f"/models/{pipeline.base_model_id}/", "model"),
        ("/registry/", "registry"),
        ("/sweeps/", "sweeps"),
        (f"/runs/compare/?run={run.number}&run={queued.number}", "compare"),
    ]:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, (path, response.status)
        assert "script-src 'self' 'nonce-" in response.headers["content-security-policy"]
        page.check_clean(name)
    page.shot("csp-05-datasets")

    # The friendly 404 in the app's look, under the same policy.
    response = page.goto(f"{live_server.url}/runs/999999/")
    assert response.status == 404
    assert "Page not found" in page.inner_text("[data-testid=error-page]")
    page.check_clean("404", allow="the server responded with a status of 404")
    page.shot("csp-06-404")


def test_api_docs_render_offline_from_the_vendored_swagger_ui(watched, live_server, transactional_db):
    page = watched
    response = page.goto(f"{live_server.url}/api/v1/docs")
    assert response.status == 200
    page.wait_for_selector(".opblock-tag-section", timeout=30_000)
    operations = page.locator(".opblock").count()
    assert operations >= 10, operations
    assert "/api/v1/runs" in page.inner_text("#swagger-ui")
    page.check_clean("api docs")
    page.shot("csp-07-api-docs")


def test_lockout_page_after_ten_wrong_passwords(watched, live_server, transactional_db):
    page = watched
    user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    for attempt in range(10):
        page.goto(f"{live_server.url}/login/")
        page.fill("input[name=username]", "ada")
        page.fill("input[name=password]", f"wrong-{attempt}")
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", "pw-ada-12345")
    with page.expect_response(lambda r: r.url.endswith("/login/") and r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 429
    assert "Too many failed sign-ins" in page.inner_text("[data-testid=error-page]")
    assert "/login/" in page.url
    page.check_clean("lockout", allow="the server responded with a status of 429")
    page.shot("csp-08-lockout")
