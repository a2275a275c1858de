"""The provisioning API's off switch, on the Flask test client (no homeserver needed); the
API itself runs against a real stack in tests/e2e/test_provisioning.py."""

from __future__ import annotations

from flask.testing import FlaskClient

PREFIX = "/_ircbridge/provisioning/v1"


def test_an_empty_secret_turns_the_api_off(client: FlaskClient) -> None:
    answer = client.get(PREFIX + "/networks", headers={"Authorization": "Bearer anything"})
    assert answer.status_code == 403
    assert answer.json["errcode"] == "M_FORBIDDEN"
    assert "[provisioning] secret" in answer.json["error"]
