"""The AS API's shape (spec.md checklist A, B, E, F): auth, errors, transactions, routing.

Served by the real Flask app on the real database; the parts that need a homeserver are in
the end-to-end suite.
"""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.testing import FlaskClient

HS = "hs-token-for-tests-9876543210"
AUTH = {"Authorization": f"Bearer {HS}"}


def txn(events: list[dict]) -> str:
    return json.dumps({"events": events})


def ev(n: int) -> dict:
    return {"event_id": f"$ev{n}", "room_id": "!nowhere", "type": "m.room.message",
            "sender": "@alice:localhost", "content": {"msgtype": "m.text", "body": "hi"}}


# A: authentication
def test_missing_token_is_401_with_json(client: FlaskClient) -> None:
    r = client.put("/_matrix/app/v1/transactions/1", data=txn([]))
    assert r.status_code == 401
    assert r.json["errcode"] == "M_MISSING_TOKEN"


def test_wrong_token_is_403_forbidden(client: FlaskClient) -> None:
    r = client.put("/_matrix/app/v1/transactions/1", data=txn([]),
                   headers={"Authorization": "Bearer nope"})
    assert (r.status_code, r.json["errcode"]) == (403, "M_FORBIDDEN")


def test_non_bearer_header_is_401(client: FlaskClient) -> None:
    r = client.put("/_matrix/app/v1/transactions/1", data=txn([]),
                   headers={"Authorization": f"Basic {HS}"})
    assert r.status_code == 401


def test_legacy_query_token_is_accepted_and_must_match_the_header(client: FlaskClient) -> None:
    assert client.put(f"/_matrix/app/v1/transactions/1?access_token={HS}",
                      data=txn([])).status_code == 200
    r = client.put("/_matrix/app/v1/transactions/2?access_token=other", data=txn([]),
                   headers=AUTH)
    assert (r.status_code, r.json["errcode"]) == (403, "M_FORBIDDEN")


# B: transactions
def test_transaction_answers_empty_json_and_is_stored_before(
    client: FlaskClient, app: Flask
) -> None:
    r = client.put("/_matrix/app/v1/transactions/5", data=txn([ev(1), ev(2)]), headers=AUTH)
    assert r.status_code == 200 and r.json == {}
    store = app.extensions["bridge"].store
    assert [e["event_id"] for _, e in store.pending_inbox()] == ["$ev1", "$ev2"]


def test_retried_transaction_and_repeated_events_are_not_queued_twice(
    client: FlaskClient, app: Flask
) -> None:
    for _ in range(3):
        assert client.put("/_matrix/app/v1/transactions/7", data=txn([ev(1)]),
                          headers=AUTH).status_code == 200
    client.put("/_matrix/app/v1/transactions/8", data=txn([ev(1), ev(3)]), headers=AUTH)
    store = app.extensions["bridge"].store
    assert [e["event_id"] for _, e in store.pending_inbox()] == ["$ev1", "$ev3"]


def test_legacy_unprefixed_paths_answer_the_same(client: FlaskClient, app: Flask) -> None:
    assert client.put("/transactions/9", data=txn([ev(4)]), headers=AUTH).status_code == 200
    assert client.get("/users/@nobody:elsewhere", headers=AUTH).status_code == 404
    assert client.get("/rooms/%23nothing:elsewhere", headers=AUTH).json["errcode"] == "M_NOT_FOUND"
    assert [e["event_id"] for _, e in app.extensions["bridge"].store.pending_inbox()] == ["$ev4"]


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b"not json", "M_NOT_JSON"),
        (b"", "M_NOT_JSON"),
        (b"\xff\xfe", "M_NOT_JSON"),
        (b"[]", "M_BAD_JSON"),
        (b'{"events": {}}', "M_BAD_JSON"),
        (b'{"no_events": []}', "M_BAD_JSON"),
        pytest.param(b"[" * 100000 + b"]" * 100000, "M_NOT_JSON", id="deep"),
    ],
)
def test_malformed_bodies_get_400_and_nothing_is_stored(
    client: FlaskClient, app: Flask, body: bytes, errcode: str
) -> None:
    r = client.put("/_matrix/app/v1/transactions/3", data=body, headers=AUTH)
    assert (r.status_code, r.json["errcode"]) == (400, errcode)
    assert app.extensions["bridge"].store.pending_inbox() == []


def test_events_that_are_not_objects_are_skipped_not_fatal(client: FlaskClient, app: Flask) -> None:
    r = client.put("/_matrix/app/v1/transactions/4", headers=AUTH,
                   data=json.dumps({"events": [1, "x", {"no": "id"}, ev(5)], "ephemeral": []}))
    assert r.status_code == 200
    assert [e["event_id"] for _, e in app.extensions["bridge"].store.pending_inbox()] == ["$ev5"]


def test_huge_bodies_get_413(client: FlaskClient) -> None:
    r = client.put("/_matrix/app/v1/transactions/6", headers=AUTH,
                   data=b'{"events": ["' + b"x" * 11_000_000 + b'"]}')
    assert (r.status_code, r.json["errcode"]) == (413, "M_TOO_LARGE")


# C / D: queries outside the namespace (no homeserver call is made)
def test_user_outside_the_namespace_is_404_json(client: FlaskClient) -> None:
    r = client.get("/_matrix/app/v1/users/%40alice%3Alocalhost", headers=AUTH)
    assert (r.status_code, r.json["errcode"]) == (404, "M_NOT_FOUND")


def test_user_ids_with_a_slash_are_routed(client: FlaskClient) -> None:
    r = client.get("/_matrix/app/v1/users/@irc.freenode.net/bob:elsewhere", headers=AUTH)
    assert (r.status_code, r.json["errcode"]) == (404, "M_NOT_FOUND")


def test_alias_for_an_invalid_channel_is_404(client: FlaskClient) -> None:
    for alias in ("%23irc_local_nochan%3Alocalhost", "%23irc_local_%23a%2Cb%3Alocalhost",
                  "%23irc_local_%23x%3Aotherserver"):
        r = client.get(f"/_matrix/app/v1/rooms/{alias}", headers=AUTH)
        assert (r.status_code, r.json["errcode"]) == (404, "M_NOT_FOUND"), alias


# E: ping
@pytest.mark.parametrize("body", [b'{"transaction_id": "x"}', b'{"transaction_id": null}', b"{}"])
def test_ping_answers_empty_json(client: FlaskClient, body: bytes) -> None:
    r = client.post("/_matrix/app/v1/ping", data=body, headers=AUTH)
    assert (r.status_code, r.json) == (200, {})


def test_ping_with_a_wrong_token_is_403(client: FlaskClient) -> None:
    r = client.post("/_matrix/app/v1/ping", data=b"{}", headers={"Authorization": "Bearer x"})
    assert (r.status_code, r.json["errcode"]) == (403, "M_FORBIDDEN")


# unknown routes
def test_unknown_routes_and_methods_are_m_unrecognized(client: FlaskClient) -> None:
    r = client.get("/_matrix/app/v1/nonsense", headers=AUTH)
    assert (r.status_code, r.json["errcode"]) == (404, "M_UNRECOGNIZED")
    r = client.post("/_matrix/app/unstable/org.matrix.msc3983/keys/claim", headers=AUTH)
    assert (r.status_code, r.json["errcode"]) == (404, "M_UNRECOGNIZED")
    r = client.get("/_matrix/app/v1/transactions/1", headers=AUTH)
    assert (r.status_code, r.json["errcode"]) == (405, "M_UNRECOGNIZED")


# F: third-party lookups
def test_protocol_lists_every_network_as_an_instance(client: FlaskClient) -> None:
    r = client.get("/_matrix/app/v1/thirdparty/protocol/irc", headers=AUTH)
    body = r.json
    assert r.status_code == 200
    assert body["location_fields"] == ["network", "channel"]
    assert [i["network_id"] for i in body["instances"]] == ["local"]
    assert all("regexp" in f and "placeholder" in f for f in body["field_types"].values())
    assert client.get("/_matrix/app/v1/thirdparty/protocol/xmpp", headers=AUTH).status_code == 404


def test_location_and_user_lookups_return_lists(client: FlaskClient) -> None:
    r = client.get("/_matrix/app/v1/thirdparty/location/irc?network=local&channel=%23matrix",
                   headers=AUTH)
    assert r.json == [{"alias": "#irc_local_#matrix:localhost", "protocol": "irc",
                       "fields": {"network": "local", "channel": "#matrix"}}]
    r = client.get("/_matrix/app/v1/thirdparty/user/irc?network=local&nickname=Bob", headers=AUTH)
    assert r.json[0]["userid"] == "@irc_local__bob:localhost"
    assert client.get("/_matrix/app/v1/thirdparty/location/irc?network=nope&channel=%23x",
                      headers=AUTH).status_code == 404
    r = client.get("/_matrix/app/v1/thirdparty/user?userid=@irc_local__bob:localhost", headers=AUTH)
    assert r.json[0]["fields"]["nickname"] == "Bob"
    r = client.get("/_matrix/app/v1/thirdparty/location?alias=%23irc_local_%23matrix:localhost",
                   headers=AUTH)
    assert r.json[0]["fields"]["channel"] == "#matrix"


def test_authentication_comes_before_any_side_effect(client: FlaskClient, app: Flask) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        client.put("/_matrix/app/v1/transactions/11", data=txn([ev(11)]), headers=headers)
    assert app.extensions["bridge"].store.pending_inbox() == []
    r = client.put("/_matrix/app/v1/transactions/11", data=txn([ev(11)]), headers=AUTH)
    assert r.status_code == 200  # the txnId was not marked processed by the refused tries
    assert len(app.extensions["bridge"].store.pending_inbox()) == 1


def test_an_empty_transaction_is_fine(client: FlaskClient) -> None:
    r = client.put("/_matrix/app/v1/transactions/12", data=txn([]), headers=AUTH)
    assert (r.status_code, r.json) == (200, {})


def test_a_retry_racing_the_first_attempt_queues_each_event_once(app: Flask) -> None:
    import concurrent.futures

    events = [ev(100 + i) for i in range(50)]

    def put(_: int) -> int:
        return app.test_client().put("/_matrix/app/v1/transactions/13", data=txn(events),
                                     headers=AUTH).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert set(pool.map(put, range(8))) == {200}
    ids = [e["event_id"] for _, e in app.extensions["bridge"].store.pending_inbox()]
    assert ids == [e["event_id"] for e in events]  # once each, in the order given


def test_every_answer_is_a_json_object(client: FlaskClient) -> None:
    for method, path in (("GET", "/_matrix/app/v1/users/"), ("DELETE", "/users/x"),
                         ("PUT", "/_matrix/app/v1/transactions/"), ("GET", "/health/x")):
        r = client.open(path, method=method, headers=AUTH)
        assert r.is_json and isinstance(r.json, dict), (method, path, r.status_code)
