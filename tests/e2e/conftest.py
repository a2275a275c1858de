"""Fixtures of the end-to-end tests: a real IRC daemon for one test.

`ircd` is the default kind (bridge.devstack.ircd.default_kind, ngircd where installed);
`ngircd` is ngircd itself, and skips the test where ngircd is not installed. The whole
stacks (daemon + Synapse + bridge) are in tests/stacks.py. Runs on the test's own thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.devstack.ircd import IrcDaemon, ngircd_path


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
