"""Ephemeral events (MSC2409) in a pushed transaction: handed to the core once (the stable
`ephemeral` list, else the unstable one), never stored, never a reason to fail the 200.

Served by the real Flask app on the real database; the core's handler is replaced.
"""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.testing import FlaskClient

AUTH = {"Authorization": "Bearer hs-token-for-tests-9876543210"}
TYPING = {"type": "m.typing", "room_id": "!r", "content": {"user_ids": ["@alice:localhost"]}}


def _put(client: FlaskClient, txn: str, body: dict) -> int:
    return client.put(f"/_matrix/app/v1/transactions/{txn}", headers=AUTH,
                      data=json.dumps(body)).status_code


def test_ephemeral_events_reach_the_core_once(
        client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[dict]] = []
    monkeypatch.setattr(app.extensions["bridge"], "handle_ephemeral", seen.append)
    both = {"events": [], "ephemeral": [TYPING], "de.sorunome.msc2409.ephemeral": [TYPING]}
    assert _put(client, "e1", both) == 200
    assert _put(client, "e2", {"events": [], "de.sorunome.msc2409.ephemeral": [TYPING, 3]}) \
        == 200
    assert _put(client, "e3", {"events": [], "ephemeral": []}) == 200
    assert seen == [[TYPING], [TYPING]]
    assert app.extensions["bridge"].store.pending_inbox() == []


def test_a_failing_ephemeral_handler_keeps_the_transactions_200(
        client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(events: list[dict]) -> None:
        raise RuntimeError("typing broke")

    monkeypatch.setattr(app.extensions["bridge"], "handle_ephemeral", broken)
    event = {"event_id": "$x1", "room_id": "!r", "type": "m.room.message",
             "sender": "@alice:localhost", "content": {"msgtype": "m.text", "body": "hi"}}
    assert _put(client, "e4", {"events": [event], "ephemeral": [TYPING]}) == 200
    assert [e["event_id"] for _, e in app.extensions["bridge"].store.pending_inbox()] == ["$x1"]
