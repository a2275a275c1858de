"""Shared fixtures: a config.ini in a temp folder, the test database, and the Flask app.

The database is a temp-file SQLite by default; with IRCBRIDGE_TEST_DATABASE_URL set (CI sets
it to the local PostgreSQL) every test runs against that server instead, on clean tables.
`app` and `client` are the Flask tutorial's fixtures: the real app from `create_app` on that
database, without background threads, and its test client (runs on the test's own thread).
A test that needs another part (a fake homeserver client, its own media links) gives it to
`create_app` through `built_app(config, client=..., media=...)` instead of patching the app.

The thread check (bridge.irc.threadcheck) is on in every test and in every bridge process a
test starts: IRCBRIDGE_CHECK_THREADS=1 is set here, before any bridge module is imported
(threadcheck reads it at import), unless the environment already says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Before the bridge's imports below: threadcheck reads this when it is first imported, and the
# bridge processes the end-to-end tests start inherit it.
os.environ.setdefault("IRCBRIDGE_CHECK_THREADS", "1")

import pytest  # noqa: E402
from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402

from bridge import create_app  # noqa: E402
from bridge.config import ini as config_module  # noqa: E402
from bridge.store.models import MODELS, Store  # noqa: E402
from bridge.web.context import bridge_of, metrics_of  # noqa: E402

TEST_DB_ENV = "IRCBRIDGE_TEST_DATABASE_URL"


def pytest_configure(config: pytest.Config) -> None:
    """The tests expect ngircd (README). miniircd has no KICK, no channel operators and no
    CAP: falling back to it silently made those tests time out instead of saying what is
    missing, so without ngircd the daemon refuses to start with the apt-get line to run."""
    from bridge.devstack.ircd import ngircd_path

    if ngircd_path() is None and not (os.environ.get("IRCBRIDGE_IRCD")
                                      or os.environ.get("IRCBRIDGE_TEST_IRCD")):
        os.environ["IRCBRIDGE_IRCD"] = "ngircd"


def pytest_report_header(config: pytest.Config) -> list[str]:
    from bridge.devstack.ircd import default_kind

    url = os.environ.get(TEST_DB_ENV)
    return [f"ircbridge database: {url or 'sqlite (temp files)'}",
            f"ircbridge IRC server (IRCBRIDGE_TEST_IRCD): {default_kind()}"]


def write_config(folder: Path, *, hs_url: str = "http://127.0.0.1:8008", domain: str = "localhost",
                 as_url: str = "http://127.0.0.1:9999", bind: str = "127.0.0.1:9999",
                 db_url: str | None = None, irc_host: str = "127.0.0.1", irc_port: int = 6667,
                 channels: str = "#matrix", extra_network: str = "", tokens: bool = True,
                 user_template: str = "irc_local_{nick}",
                 alias_template: str = "irc_local_{channel}", flood_rate: float = 0.0) -> Path:
    db_url = db_url or f"sqlite:///{folder / 'bridge.db'}"
    as_token = "as-token-for-tests-0123456789" if tokens else ""
    hs_token = "hs-token-for-tests-9876543210" if tokens else ""
    path = folder / "config.ini"
    path.write_text(f"""
[homeserver]
url = {hs_url}
domain = {domain}

[appservice]
id = ircbridge-test
url = {as_url}
bind = {bind}
threads = 8
as_token = {as_token}
hs_token = {hs_token}
sender_localpart = ircbot
registration = registration.yaml

[database]
url = {db_url}

[logging]
level = DEBUG

[network:local]
host = {irc_host}
port = {irc_port}
tls = false
user_template = {user_template}
alias_template = {alias_template}
puppet_nick_template = {{localpart}}[m]
bot_nick = ircbot
channels = {channels}
scrollback_lines = 5
flood_rate = {flood_rate}
flood_burst = 5
{extra_network}

[permissions]
* = user
""", encoding="utf-8")
    return path


def clean_database(url: str) -> None:
    """Drop the bridge's tables so a PostgreSQL test starts from nothing."""
    store = Store(url)
    with store.db.connection_context():
        store.db.drop_tables(MODELS, safe=True)
    store.close()


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    url = os.environ.get(TEST_DB_ENV)
    if url:
        clean_database(url)
        yield url
        clean_database(url)
    else:
        yield f"sqlite:///{tmp_path / 'bridge.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    s.open()
    yield s
    s.close()


@pytest.fixture
def config_path(tmp_path: Path, db_url: str) -> Path:
    return write_config(tmp_path, db_url=db_url)


@pytest.fixture
def config(config_path: Path) -> config_module.Config:
    return config_module.load(config_path)


def close_app(app: Flask) -> None:
    """Close what `create_app` opened: its metrics port and its database connections."""
    metrics = metrics_of(app)
    if metrics is not None:
        metrics.close()
    bridge_of(app).store.close()


@contextmanager
def built_app(config: config_module.Config, **parts: Any) -> Iterator[Flask]:
    """`create_app(config=config, **parts)` without background threads, closed at the end
    (parts: `store`, `client`, `media`, `admin`; a test's fakes stand in for them)."""
    app = create_app(config=config, start_background=False, setup_logging=False, **parts)
    try:
        yield app
    finally:
        close_app(app)


@pytest.fixture
def app(config: config_module.Config) -> Iterator[Flask]:
    with built_app(config) as app:
        yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.figures import FIGURES

    if FIGURES:
        terminalreporter.section("figures measured by the end-to-end tests")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


# Property tests run on slow shared machines too: no per-example deadline.
try:
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ircbridge", deadline=None, max_examples=200)
    _hypothesis_settings.load_profile("ircbridge")
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass
