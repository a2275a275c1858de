"""server-time: the `time` tag becomes the Matrix `ts` of a relayed line, within bounds.

Pure functions of bridge.irc.events (tag_map, parse_server_time, line_ts), and the typed
events network.py builds from a jaraco Event carrying the tag.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import irc.client
import pytest

from bridge.irc.events import (
    MAX_FUTURE_SKEW_MS,
    MAX_PAST_SKEW_MS,
    line_ts,
    parse_server_time,
    tag_map,
)
from bridge.irc.network import _line_times, event_time_ms

NOW_MS = 1_796_290_045_123  # 2026-12-03T09:27:25.123Z


def test_the_tag_is_parsed_to_the_exact_millisecond() -> None:
    assert parse_server_time("2026-12-03T09:27:25.123Z") == NOW_MS
    # Every ms of a second survives (a float timestamp would turn .123 into .122 for some).
    for ms in range(1000):
        value = f"2026-12-03T09:27:25.{ms:03d}Z"
        assert parse_server_time(value) == NOW_MS - 123 + ms, value
    assert parse_server_time("2026-12-03T09:27:25Z") == NOW_MS - 123  # no fraction
    assert parse_server_time("2026-12-03T09:27:25.123456Z") == NOW_MS  # µs: cut to ms
    assert parse_server_time("2026-12-03T10:27:25.123+01:00") == NOW_MS
    assert parse_server_time("2026-12-03T09:27:25.123") == NOW_MS  # no zone: UTC


@pytest.mark.parametrize("value", [None, "", "yesterday", "1796290045", "2026-13-03T00:00Z"])
def test_a_missing_or_broken_tag_is_no_time(value: str | None) -> None:
    assert parse_server_time(value) is None


def test_the_skew_bounds_fall_back_to_the_receive_time() -> None:
    received = NOW_MS
    assert MAX_FUTURE_SKEW_MS == 5 * 60 * 1000 and MAX_PAST_SKEW_MS == 24 * 3600 * 1000
    assert line_ts(None, received) == received
    assert line_ts(received - 1500, received) == received - 1500  # lag: the server's time
    assert line_ts(received + 2000, received) == received + 2000  # a little ahead: kept
    assert line_ts(received + MAX_FUTURE_SKEW_MS, received) == received + MAX_FUTURE_SKEW_MS
    assert line_ts(received + MAX_FUTURE_SKEW_MS + 1, received) == received
    assert line_ts(received - MAX_PAST_SKEW_MS, received) == received - MAX_PAST_SKEW_MS
    assert line_ts(received - MAX_PAST_SKEW_MS - 1, received) == received
    # History (backfill) may be old, never from the future.
    week_ago = received - 7 * MAX_PAST_SKEW_MS
    assert line_ts(week_ago, received, history=True) == week_ago
    assert line_ts(received + MAX_FUTURE_SKEW_MS + 1, received, history=True) == received


def test_tags_from_jaraco_become_an_immutable_mapping() -> None:
    tags = tag_map([{"key": "time", "value": "2026-12-03T09:27:25.123Z"},
                    {"key": "+draft/typing", "value": None}, {"key": "msgid", "value": "abc"}])
    assert dict(tags) == {"time": "2026-12-03T09:27:25.123Z", "+draft/typing": "",
                          "msgid": "abc"}
    with pytest.raises(TypeError):
        tags["x"] = "y"  # type: ignore[index]
    assert dict(tag_map(None)) == {}


def _event(tag_time: str | None) -> irc.client.Event:
    tags = [{"key": "time", "value": tag_time}] if tag_time is not None else None
    return irc.client.Event("pubmsg", irc.client.NickMask("bob!b@h"), "#c", ["hi"], tags)


def test_a_relayed_line_takes_the_tag_time_and_keeps_its_tags() -> None:
    recent = datetime.now(UTC).replace(microsecond=456000)
    value = recent.strftime("%Y-%m-%dT%H:%M:%S.") + "456Z"
    expected = int(recent.timestamp()) * 1000 + 456
    ts, tags, server_time = _line_times(_event(value))
    assert ts == expected and tags["time"] == value
    assert server_time == expected / 1000
    assert event_time_ms(_event(value)) == expected


def test_a_line_without_the_tag_or_with_a_skewed_one_takes_the_receive_time() -> None:
    before = int(time.time() * 1000)
    ts, tags, server_time = _line_times(_event(None))
    assert before <= ts <= int(time.time() * 1000) and server_time is None and not tags
    far_future = "2099-01-01T00:00:00.000Z"
    ts, tags, server_time = _line_times(_event(far_future))
    assert before <= ts <= int(time.time() * 1000)
    assert server_time == parse_server_time(far_future) / 1000  # type: ignore[operator]
    ts = event_time_ms(_event("2001-01-01T00:00:00.000Z"))
    assert before <= ts <= int(time.time() * 1000)
