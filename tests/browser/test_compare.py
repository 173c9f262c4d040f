"""Issue 6 in a real browser: three finished runs (rows and metrics written straight to the database, no
worker) side by side: overlaid uPlot charts, the wall-time axis, a config diff that shows only what differs,
the final numbers with the best highlighted, and the CSV download."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from refinery.teams.services import user_create
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory
from tests.runs.test_compare import make_run

from .test_golden_path import login

pytestmark = [pytest.mark.browser]


def _legend(page, chart_id: str) -> list[str]:
    return page.eval_on_selector(
        f"#{chart_id}", "el => [...el.querySelectorAll('.u-legend .u-series th')].map(t => t.textContent)"
    )


def test_compare_three_runs(page, screenshot, live_server, transactional_db, sent_stages, tmp_path):
    user = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = user.teams.get()
    data = DatasetVersionFactory(dataset__team=team, dataset__name="sums")
    stage = {"method": "sft", "config": {"max_steps": 40}, "adapter": {"type": "none"}, "dataset_id": data.dataset_id}
    pipeline = PipelineFactory(
        team=team,
        name="adder",
        base_model=BaseModelFactory(team=team, name="tiny"),
        created_by=user,
        seed=5,
        stages=[{**stage, "name": "sft", "input": "base"}, {**stage, "name": "polish", "input": "sft"}],
    )
    runs = [
        make_run(pipeline, user, lr=1e-4, loss=0.9, steps=40),
        make_run(pipeline, user, lr=3e-4, loss=0.6, steps=40),
        make_run(pipeline, user, lr=1e-4, loss=0.75, steps=40, seed=9),
    ]
    numbers = [r.number for r in runs]
    login(page, live_server)

    page.goto(f"{live_server.url}/runs/compare/?" + "&".join(f"run={n}" for n in numbers))
    # Every metric is one uPlot chart with one line per run, in the run's colour.
    page.wait_for_selector("#cmp-step-train-loss canvas")
    assert page.locator("[data-testid=metric-charts] .chart canvas").count() >= 1
    assert _legend(page, "cmp-step-train-loss") == ["step"] + [f"#{n} adder" for n in numbers]
    plotted = page.evaluate(
        "() => { const u = Refinery.plotOf(document.getElementById('cmp-step-train-loss'));"
        " return [u.data.length, u.data[0].length, u.data[0][0], u.data[0].at(-1)]; }"
    )
    assert plotted == [4, 80, 1, 80]  # x + 3 runs; two 40-step stages end to end
    page.click("#compare-charts details summary")  # the learning rate sits under "More metrics"
    page.wait_for_selector("#cmp-step-train-learning-rate canvas")

    # The config diff lists what differs (seed, learning rate), and everything with "Show all".
    diff = page.locator("[data-testid=config-diff]")
    visible = [row.get_attribute("data-key") for row in diff.locator("tbody tr").all() if row.is_visible()]
    assert visible == ["seed", "stages.sft.config.learning_rate"]
    assert "2 of" in diff.locator("[data-testid=diff-count]").inner_text()
    table = page.locator("[data-testid=metric-table]")
    best = table.locator("tr[data-key='polish/train/loss'] td.is-best")
    assert best.count() == 1 and best.inner_text() == "0.3"  # run 2's: lower is better
    screenshot("30-compare")

    diff.locator("[data-testid=diff-show-all]").check()
    assert diff.locator("tr.is-same[data-key='stages.polish.config.max_steps']").is_visible()
    diff.scroll_into_view_if_needed()
    screenshot("31-compare-config-all")
    diff.locator("[data-testid=diff-show-all]").uncheck()
    assert not diff.locator("tr.is-same").first.is_visible()

    # Wall time: the charts come back (htmx) with minutes since each run started on x.
    page.click("[data-testid=x-time]")
    page.wait_for_selector("#compare-charts[data-x=time] #cmp-time-train-loss canvas")
    assert "x=time" in page.url
    assert _legend(page, "cmp-time-train-loss")[0] == "wall time (min)"
    xs = page.evaluate("() => Refinery.plotOf(document.getElementById('cmp-time-train-loss')).data[0]")
    assert xs[0] == 1 and xs[-1] == 80  # one point a minute, the second stage right after the first
    page.locator("#compare-charts").scroll_into_view_if_needed()
    screenshot("32-compare-wall-time")
    page.click("[data-testid=x-step]")
    page.wait_for_selector("#compare-charts[data-x=step] #cmp-step-train-loss canvas")

    # CSV: the metric table, one column per run.
    with page.expect_download() as download:
        page.click("[data-testid=csv-metrics]")
    path = Path(tmp_path) / "metrics.csv"
    download.value.save_as(path)
    assert download.value.suggested_filename == "compare-metrics-" + "-".join(map(str, numbers)) + ".csv"
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows[0] == ["metric", "better"] + [f"#{n} adder" for n in numbers]
    assert ["polish/train/loss", "lower", "0.45", "0.3", "0.375"] in rows

    # Bad picks get a readable 400 page.
    response = page.goto(f"{live_server.url}/runs/compare/?run={numbers[0]}")
    assert response.status == 400 and "Pick at least 2" in page.inner_text("[data-testid=compare-error]")
    screenshot("33-compare-bad-picks")
