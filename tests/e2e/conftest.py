"""Fixtures of the end-to-end tests: a real IRC daemon for one test.

`ircd` is the default kind (bridge.devstack.ircd.default_kind, ngircd where installed);
`ngircd` is ngircd itself, and skips the test where ngircd is not installed; a server named
by IRCBRIDGE_TEST_IRCD that is not here skips every test of this folder. The whole
stacks (daemon + Synapse + bridge) are in tests/stacks.py. Runs on the test's own thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devstack.ircd import TEST_KIND_ENV, IrcDaemon, missing, ngircd_path


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
