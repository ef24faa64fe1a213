"""Shared fixtures and the skip policy of the suite.

Test images are committed under ``tests/data/`` (see its README for what each
file is and where it came from), so the suite runs from a clone alone.

A skipped test is a test that did not prove anything, so every skip is listed at
the end of the run, and a skip whose reason is not one of :data:`PLATFORM_LIMITS`
fails the run (exit status 1) even when every test that ran passed. A service
that does not start, a missing package or missing data is a failure, not a skip.
"""
from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"

# Skip reasons that are limits of a platform, not of a setup: reason prefix -> why it is allowed.
PLATFORM_LIMITS = {
    "a generic backend writes in place":
        "an fsspec backend other than local, memory and S3 has no atomic publish to test (docs/store.md)",
    "needs /proc/self/fd":
        "counting open files needs Linux's /proc",
    "needs a private mount namespace":
        ("read-only mounts that hold for root need `unshare -m` as root; as another user the store's "
         "file modes make it read-only, which the same commands meet"),
    "Chromium is not installed":
        ("the browser is an explicit install (`make browser`); .ci/run installs it and sets "
         "IMGDEDUP_REQUIRE_BROWSER=1, which turns a missing Chromium into a failure"),
}


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The committed test images, ``tests/data/``."""
    return DATA


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    message = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return message.removeprefix("Skipped: ")


def _allowed(reason: str) -> bool:
    return reason.startswith(tuple(PLATFORM_LIMITS))


class SkipPolicy:
    """Collects every skip, lists them after the run, and fails a passing run on a skip not allowed."""

    def __init__(self) -> None:
        self.skips: list[tuple[str, str]] = []  # (test id, reason)

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.append((report.nodeid, _reason(report)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def refused(self) -> list[tuple[str, str]]:
        return [(nodeid, reason) for nodeid, reason in self.skips if not _allowed(reason)]

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.refused() and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.section("skips")
        if not self.skips:
            terminalreporter.line("no test skipped")
        for nodeid, reason in self.skips:
            verdict = "platform limit" if _allowed(reason) else "NOT ALLOWED"
            terminalreporter.line(f"{verdict}: {nodeid}: {reason}", red=not _allowed(reason))
        if self.refused():
            terminalreporter.line(f"{len(self.refused())} skip(s) outside the platform limits listed in "
                                  "tests/conftest.py: the run fails", red=True, bold=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(), "imgdedup-skip-policy")
