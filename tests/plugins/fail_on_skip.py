"""`--fail-on-skip`: make the session fail when a test that must run was skipped.

CI runs with every service present, so an integration or browser test that
skips there ("no PostgreSQL", "no Chromium") hides a broken setup behind a
green build. With `--fail-on-skip` the session fails (exit 1) when:

- a test marked `integration` or `browser` was skipped, or
- a whole module was skipped while being collected (`pytest.importorskip`,
  `pytest.skip(allow_module_level=True)`): its markers are unknown, so it
  counts too.

Plain unit tests may still skip (for example "needs CUDA" on a CPU machine);
`--fail-on-any-skip` forbids those as well. Expected failures (xfail) are not
skips. Loaded with `-p tests.plugins.fail_on_skip` (make test does this).
"""

from __future__ import annotations

import pytest

MUST_RUN_MARKERS = ("integration", "browser", "chaos")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fail-on-skip")
    group.addoption(
        "--fail-on-skip",
        action="store_true",
        default=False,
        help="fail the session if an integration/browser test (or a whole module) was skipped",
    )
    group.addoption(
        "--fail-on-any-skip",
        action="store_true",
        default=False,
        help="fail the session if any test at all was skipped",
    )


def pytest_configure(config: pytest.Config) -> None:
    any_skip = config.getoption("fail_on_any_skip")
    if any_skip or config.getoption("fail_on_skip"):
        config.pluginmanager.register(FailOnSkip(any_skip=any_skip), "fail-on-skip")


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, lineno, "Skipped: why")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class FailOnSkip:
    def __init__(self, *, any_skip: bool) -> None:
        self.any_skip = any_skip
        self.offenders: list[tuple[str, str]] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report: pytest.TestReport = outcome.get_result()
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        marked = [m for m in MUST_RUN_MARKERS if item.get_closest_marker(m) is not None]
        if self.any_skip or marked:
            label = f"[{','.join(marked)}] " if marked else ""
            self.offenders.append((item.nodeid, label + _reason(report)))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped and report.nodeid:
            self.offenders.append((report.nodeid, "[module skipped at collection] " + _reason(report)))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.offenders and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.offenders:
            return
        terminalreporter.section("fail-on-skip", sep="=", red=True, bold=True)
        terminalreporter.line(f"{len(self.offenders)} skipped test(s) had to run; the session fails:", red=True)
        for nodeid, reason in self.offenders:
            terminalreporter.line(f"  SKIPPED {nodeid}: {reason}")
