"""Fixtures of the end-to-end tests: a real IRC daemon for one test.

`ircd` is the default kind (bridge.devstack.ircd.default_kind, ngircd where installed);
`ngircd` is ngircd itself, and skips the test where ngircd is not installed; a server named
by IRCBRIDGE_TEST_IRCD that is not here skips every test of this folder. The whole
stacks (daemon + Synapse + bridge) are in tests/stacks.py. Runs on the test's own thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devstack.ircd import TEST_KIND_ENV, IrcDaemon, missing, ngircd_path
from bridge.devstack.ports import tail

# The logs a failing end-to-end test shows, with how many of their last lines: enough to
# tell in CI's output why (a failure under load is rarely seen again alone).
FAILURE_LOGS = {"bridge.log": 120, "homeserver.log": 40}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """IRCBRIDGE_TEST_IRCD names a server this machine lacks (Ergo without its build, say):
    every end-to-end test is skipped, saying what to install, instead of erroring."""
    kind = os.environ.get(TEST_KIND_ENV)
    reason = missing(kind) if kind else None
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"{TEST_KIND_ENV}={kind}: {reason}")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test (or its fixture) shows the tails of the bridge and homeserver logs
    written during it, from every stack under the run's temp folder."""
    started = time.time() - (call.duration or 0) - 5
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    base = item.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    for name, lines in FAILURE_LOGS.items():
        for path in sorted(Path(base).rglob(name)):
            try:
                if path.stat().st_mtime < started:
                    continue
            except OSError:
                continue
            report.sections.append((f"{path.relative_to(base)} (last {lines} lines)",
                                    tail(path, lines)))


@pytest.fixture
def ircd(tmp_path: Path) -> Iterator[IrcDaemon]:
    daemon = IrcDaemon(tmp_path / "ircd")
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def ngircd(tmp_path: Path) -> Iterator[IrcDaemon]:
    if not ngircd_path():
        pytest.skip("needs ngircd: apt-get install ngircd")
    daemon = IrcDaemon(tmp_path / "ircd", kind="ngircd")
    daemon.start()
    yield daemon
    daemon.stop()
