"""Operations an admin expects: /health, /metrics and the status page.

These drive the real Flask app on the real database (no homeserver needed); everything that
needs the homeserver and IRC shares one real stack in tests/e2e/test_ops_e2e.py.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from bridge import create_app
from bridge.config.ini import load
from bridge.devstack.ports import free_port, port_open
from bridge.ops import metrics
from bridge.store.models import IrcLine
from bridge.web.context import bridge_of
from tests.conftest import close_app, write_config

ROOT = Path(__file__).resolve().parents[2]
HS = "hs-token-for-tests-9876543210"
AUTH = {"Authorization": f"Bearer {HS}"}
SECRET = "status-" + secrets.token_hex(12)
STATUS_AUTH = {"Authorization": f"Bearer {SECRET}"}


# ---------------------------------------------------------------- helpers
def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, keyed by (name, labels)."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


def exposed_names(text: str) -> set[str]:
    """Names a PromQL expression may use: every sample name, and for each declared family
    (even one without samples yet) the names its type implies."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update({f"{name}_bucket", f"{name}_count", f"{name}_sum"})
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def make_app(folder: Path, db_url: str | None = None, extra: str = "") -> Flask:
    path = write_config(folder, db_url=db_url)
    if extra:
        path.write_text(path.read_text().replace("[permissions]", extra + "\n[permissions]"))
    return create_app(config=load(path), start_background=False, setup_logging=False)


@pytest.fixture
def app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    app = make_app(tmp_path, db_url, f"[status]\nsecret = {SECRET}\n")
    yield app
    close_app(app)


# ---------------------------------------------------------------- /health (no stack)
def test_health_is_503_naming_every_failing_part(app: Flask) -> None:
    r = app.test_client().get("/health", headers=STATUS_AUTH)
    assert r.status_code == 503
    body = r.json
    assert body["ok"] is False
    assert {"homeserver", "ping", "database", "networks", "failing"} <= set(body)
    assert body["database"] == "ok"
    # Nothing is started: the homeserver is unchecked and the IRC bot not connected.
    assert set(body["failing"]) == {"homeserver", "ping", "irc:local"}
    assert r.headers["Cache-Control"] == "no-store"


def test_health_reports_a_database_that_does_not_answer(app: Flask) -> None:
    bridge = bridge_of(app)
    bridge.health.update(homeserver="ok", ping="ok")
    db_file = Path(bridge.store.db.database) if bridge.store.is_sqlite else None
    if db_file is None:
        pytest.skip("the broken-database case is made with a SQLite file")
    bridge.store.db.close()
    folder = db_file.parent / "gone"
    folder.mkdir()
    bridge.store.db.database = str(folder / "missing" / "db.sqlite")  # parent does not exist
    try:
        r = app.test_client().get("/health", headers=STATUS_AUTH)
        scrape = app.test_client().get("/metrics")
    finally:
        bridge.store.db.database = str(db_file)
    assert scrape.status_code == 200  # the scrape still answers, and says so
    assert value(scrape.data.decode(), "ircbridge_database_up") == 0
    assert r.status_code == 503
    assert r.json["database"].startswith("OperationalError")
    assert "database" in r.json["failing"]


# ---------------------------------------------------------------- /metrics (no stack)
def test_metrics_are_prometheus_text_with_ircbridge_names(app: Flask) -> None:
    r = app.test_client().get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = r.data.decode()
    families = list(text_string_to_metric_families(text))
    assert families and all(f.name.startswith("ircbridge_") for f in families)
    s = samples(text)
    assert s[("ircbridge_queue_depth", frozenset({("queue", "inbox")}))] == 0
    assert s[("ircbridge_database_up", frozenset())] == 1
    assert s[("ircbridge_irc_bot_connected", frozenset({("network", "local")}))] == 0
    connections = {k: v for k, v in s.items() if k[0] == "ircbridge_irc_connections"}
    assert connections and set(connections.values()) == {0}
    assert ("ircbridge_build_info", frozenset({("version", "0.1.0")})) in s


def test_openmetrics_is_served_when_asked(app: Flask) -> None:
    r = app.test_client().get("/metrics", headers={
        "Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    assert r.data.decode().rstrip().endswith("# EOF")


def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = make_app(tmp_path / "a"), make_app(tmp_path / "b")
    try:
        event = {"event_id": "$e1", "room_id": "!r", "type": "m.room.message",
                 "sender": "@alice:localhost", "content": {"msgtype": "m.text", "body": "x"}}
        body = json.dumps({"events": [event]})
        ca = a.test_client()
        assert ca.put("/_matrix/app/v1/transactions/1", data=body, headers=AUTH).status_code == 200
        assert ca.put("/_matrix/app/v1/transactions/1", data=body, headers=AUTH).status_code == 200
        text_a = ca.get("/metrics").data.decode()
        text_b = b.test_client().get("/metrics").data.decode()
        assert value(text_a, "ircbridge_transactions_received_total") == 2
        assert value(text_a, "ircbridge_transactions_deduplicated_total") == 1
        assert value(text_a, "ircbridge_events_received_total") == 1
        assert value(text_b, "ircbridge_transactions_received_total") == 0
        assert value(text_b, "ircbridge_events_received_total") == 0
    finally:
        for app in (a, b):
            close_app(app)


def test_outbox_depth_and_oldest_age_come_from_the_table(app: Flask) -> None:
    store = bridge_of(app).store
    old = int(time.time() * 1000) - 90_000
    store.queue_lines(
        [IrcLine("local", "#matrix", "#matrix", "bob", "@irc_local_bob:localhost", "m.text",
                 "hello", None, old)],
        {("local", "#matrix"): "!room:localhost"}, {"local": 5},
    )
    from bridge.store.models import OutboxMessage

    store.db.execute(OutboxMessage.update(created_at=old))
    text = app.test_client().get("/metrics").data.decode()
    assert value(text, "ircbridge_queue_depth", queue="outbox") == 1
    assert 89 <= value(text, "ircbridge_queue_oldest_age_seconds", queue="outbox") < 300
    assert value(text, "ircbridge_queue_oldest_age_seconds", queue="inbox") == 0


def test_the_apps_metrics_observe_its_homeserver_client(app: Flask) -> None:
    """The app's metrics are given to its bridge: they are the client's observer."""
    client = bridge_of(app).client
    observe = client.observer
    assert observe is not None

    class Answer:
        def json(self) -> dict[str, Any]:
            return {"errcode": "M_LIMIT_EXCEEDED", "error": "slow down"}

    observe("put", 0.03, 200)
    observe("PUT", 0.2, 429, response=Answer())  # type: ignore[arg-type]
    observe("GET", 1.5, 0, "ConnectionError")
    text = app.test_client().get("/metrics").data.decode()
    assert value(text, "ircbridge_hs_request_seconds_count", method="PUT") == 2
    assert value(text, "ircbridge_hs_request_seconds_bucket", method="PUT", le="0.05") == 1
    assert value(text, "ircbridge_hs_request_seconds_count", method="GET") == 1
    assert value(text, "ircbridge_hs_request_errors_total", errcode="M_LIMIT_EXCEEDED") == 1
    assert value(text, "ircbridge_hs_request_errors_total", errcode="ConnectionError") == 1


def test_homeserver_client_reports_its_attempts_to_its_observer_only() -> None:
    """Each attempt (here a refused connection to a closed port, a real one) reaches the
    metrics the client was given; a client given none counts nowhere."""
    from bridge.matrix import HomeserverClient, HomeserverUnavailable
    from bridge.matrix.retry import RetryPolicy

    url = f"http://127.0.0.1:{free_port()}"
    once = RetryPolicy(attempts=1, backoff_cap=0, timeout=2)
    client = HomeserverClient(url, "as-token", server_name="localhost")
    stranger = HomeserverClient(url, "as-token", server_name="localhost")
    own = metrics.Metrics()
    client.observer = own.hs_request
    try:
        with pytest.raises(HomeserverUnavailable):
            client.versions(policy=once)
        with pytest.raises(HomeserverUnavailable):
            stranger.versions(policy=once)
        sample = own.registry.get_sample_value
        assert sample("ircbridge_hs_request_seconds_count", {"method": "GET"}) == 1
        assert sample("ircbridge_hs_request_errors_total", {"errcode": "ConnectionError"}) == 1
    finally:
        own.close()


def test_metrics_on_their_own_port(tmp_path: Path) -> None:
    port = free_port()
    app = make_app(tmp_path, extra=f"[metrics]\nbind = 127.0.0.1:{port}\n")
    try:
        r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert r.status_code == 200
        assert value(r.text, "ircbridge_database_up") == 1
        # Not on the bridge's own port then, with a hint.
        own = app.test_client().get("/metrics")
        assert own.status_code == 404 and str(port) in own.json["error"]
    finally:
        close_app(app)
    assert not port_open("127.0.0.1", port)


# ---------------------------------------------------------------- status page (no stack)
def test_status_page_is_off_without_a_secret(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    try:
        r = app.test_client().get("/")
        assert r.status_code == 403
        assert "[status] secret" in r.data.decode()
    finally:
        close_app(app)


def test_status_page_asks_for_the_secret(app: Flask) -> None:
    c = app.test_client()
    r = c.get("/")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic ")
    assert c.get("/?secret=wrong").status_code == 401
    assert c.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    basic = base64.b64encode(f"admin:{SECRET}".encode()).decode()
    assert c.get(f"/?secret={SECRET}").status_code == 401  # never in a query string
    for ok in (c.get("/", headers={"Authorization": f"Basic {basic}"}),
               c.get("/", headers={"Authorization": f"Bearer {SECRET}"})):
        assert ok.status_code == 200
        assert ok.headers["Cache-Control"] == "no-store"
        assert ok.headers["Referrer-Policy"] == "no-referrer"


def _room_count(html: str) -> int:
    m = re.search(r'id="room-count">(\d+)<', html)
    assert m, html
    return int(m.group(1))


def test_status_page_shows_live_numbers(app: Flask) -> None:
    c = app.test_client()
    store = bridge_of(app).store
    page = c.get("/", headers=STATUS_AUTH).data.decode()
    assert _room_count(page) == 0
    assert 'data-network="local"' in page and "No room is bridged yet" in page
    store.add_link("local", "#python", "#Python", "!py:localhost", "#irc_local_#python:localhost")
    store.add_link("local", "#<b>x", "#<b>x", "!x:localhost", None)
    store.record_transaction("t1", [{"event_id": "$1", "room_id": "!py:localhost"}])
    page = c.get("/", headers=STATUS_AUTH).data.decode()
    assert _room_count(page) == 2
    assert "!py:localhost" in page and "#Python" in page
    assert "#&lt;b&gt;x" in page and "<b>x" not in page  # escaped
    assert re.search(r'id="inbox-depth">1<', page)


def test_every_metric_is_documented(app: Flask) -> None:
    docs = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    text = app.test_client().get("/metrics").data.decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    undocumented = {
        name for name in families
        if not name.startswith("ircbridge_process_") and not name.endswith("_created")
        and f"`{name}`" not in docs and f"`{name}_total`" not in docs
    }
    assert not undocumented, f"add these to docs/operations.md: {sorted(undocumented)}"


# ---------------------------------------------------------------- who sees what (no stack)
STATUS = "status-" + secrets.token_hex(12)
PROVISIONING = "prov-" + secrets.token_hex(12)


@pytest.fixture
def split_app(tmp_path: Path, db_url: str) -> Iterator[Flask]:
    """An app with a status secret and a different provisioning secret."""
    app = make_app(tmp_path, db_url, f"[status]\nsecret = {STATUS}\n\n"
                                     f"[provisioning]\nsecret = {PROVISIONING}\n")
    yield app
    close_app(app)


def test_health_without_the_status_secret_names_only_the_failing_parts(split_app: Flask) -> None:
    bridge = bridge_of(split_app)
    bridge.store.add_link("local", "#staff", "#staff", "!staff:localhost", None)
    db_file = Path(bridge.store.db.database) if bridge.store.is_sqlite else None
    if db_file is not None:  # a database that does not answer: its error text stays inside
        bridge.store.db.close()
        bridge.store.db.database = str(db_file.parent / "missing" / "db.sqlite")
    c = split_app.test_client()
    try:
        public = c.get("/health")
        detailed = c.get("/health", headers={"Authorization": f"Bearer {STATUS}"})
        wrong = c.get("/health", headers={"Authorization": f"Bearer {PROVISIONING}"})
        query = c.get(f"/health?secret={STATUS}")
    finally:
        if db_file is not None:
            bridge.store.db.database = str(db_file)
    assert public.status_code == 503
    expected = {"homeserver", "ping", "irc:local"} | ({"database"} if db_file else set())
    assert public.json == {"ok": False, "failing": sorted(expected)}
    assert "OperationalError" not in public.data.decode()
    assert wrong.json == public.json and query.json == public.json
    assert detailed.status_code == 503
    assert set(detailed.json["failing"]) == expected
    assert {"homeserver", "ping", "database", "networks", "rooms"} <= set(detailed.json)
    if db_file is not None:
        assert detailed.json["database"].startswith("OperationalError")


def test_status_page_and_provisioning_have_separate_secrets(split_app: Flask) -> None:
    c = split_app.test_client()
    assert c.get("/", headers={"Authorization": f"Bearer {STATUS}"}).status_code == 200
    assert c.get("/", headers={"Authorization": f"Bearer {PROVISIONING}"}).status_code == 401
    networks = "/_ircbridge/provisioning/v1/networks"
    assert c.get(networks, headers={"Authorization": f"Bearer {PROVISIONING}"}).status_code == 200
    assert c.get(networks, headers={"Authorization": f"Bearer {STATUS}"}).status_code == 403


def test_no_secret_is_accepted_in_a_query_string(split_app: Flask) -> None:
    c = split_app.test_client()
    page = c.get(f"/?secret={STATUS}")
    assert page.status_code == 401
    assert "query string" in page.data.decode()
    api = c.get(f"/_ircbridge/provisioning/v1/networks?secret={PROVISIONING}")
    assert api.status_code == 401
    api = c.get(f"/_ircbridge/provisioning/v1/networks?access_token={PROVISIONING}")
    assert api.status_code == 401


def test_the_provisioning_secret_alone_no_longer_opens_the_status_page(tmp_path: Path) -> None:
    app = make_app(tmp_path, None, f"[provisioning]\nsecret = {PROVISIONING}\n")
    try:
        r = app.test_client().get("/", headers={"Authorization": f"Bearer {PROVISIONING}"})
        assert r.status_code == 403
        assert "[status] secret" in r.data.decode()
        config = bridge_of(app).config
        assert any("[status] secret" in w for w in config.warnings)
    finally:
        close_app(app)


def test_the_status_secret_must_differ_from_the_provisioning_secret(tmp_path: Path) -> None:
    from bridge.config.ini import ConfigError
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(
        "[permissions]", f"[status]\nsecret = {STATUS}\n\n[provisioning]\nsecret = {STATUS}\n\n"
                         "[permissions]"))
    with pytest.raises(ConfigError, match=r"\[status\] secret"):
        load(path)
