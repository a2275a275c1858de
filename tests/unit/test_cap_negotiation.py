"""The CAP negotiation state machine (bridge.irc.cap.CapNegotiation), fed what servers say.

Pure: no sockets, no clock. Each test feeds CAP replies as jaraco hands them to
connection.py (the arguments after the target) and checks the lines the machine returns.
"""

from __future__ import annotations

from bridge.irc.cap import CAP_DEADLINE, MAX_LINE, WANTED, CapNegotiation, req_lines

ERGO_LS = [
    ["LS", "*", "account-notify account-tag away-notify batch cap-notify chghost "
                "draft/chathistory draft/event-playback draft/languages=1,en "
                "draft/multiline=max-bytes=4096,max-lines=100"],
    ["LS", "draft/relaymsg=/ echo-message extended-join invite-notify labeled-response "
           "message-tags multi-prefix sasl=PLAIN,EXTERNAL server-time setname "
           "userhost-in-names znc.in/self-message"],
]


def requested(lines: list[str]) -> list[str]:
    """The caps named in the `CAP REQ` lines among `lines`, in order."""
    caps: list[str] = []
    for line in lines:
        if line.startswith("CAP REQ :"):
            caps.extend(line[len("CAP REQ :"):].split())
    return caps


def ack_all(neg: CapNegotiation, lines: list[str]) -> list[str]:
    """Answer every REQ in `lines` with an ACK; the lines the machine sent in reply."""
    out: list[str] = []
    for line in lines:
        if line.startswith("CAP REQ :"):
            out += neg.feed(["ACK", line[len("CAP REQ :"):]]).lines
    return out


def test_begin_asks_for_version_302() -> None:
    assert CapNegotiation().begin().lines == ["CAP LS 302"]


def test_a_multiline_ls_is_collected_before_anything_is_requested() -> None:
    neg = CapNegotiation()
    neg.begin()
    assert neg.feed(ERGO_LS[0]).lines == []  # `*`: more follows
    step = neg.feed(ERGO_LS[1])
    assert set(requested(step.lines)) == set(WANTED)  # Ergo offers all we want
    assert "draft/languages" not in requested(step.lines)  # offered, not wanted
    assert "CAP END" not in step.lines  # not before the ACK
    assert neg.offered["draft/multiline"] == "max-bytes=4096,max-lines=100"
    assert neg.offered["sasl"] == "PLAIN,EXTERNAL"
    assert ack_all(neg, step.lines) == ["CAP END"]
    assert neg.ended
    assert neg.enabled["draft/multiline"] == "max-bytes=4096,max-lines=100"
    assert set(neg.enabled) == set(WANTED)


def test_only_the_intersection_is_requested_and_nothing_offered_ends_at_once() -> None:
    neg = CapNegotiation()
    neg.begin()
    step = neg.feed(["LS", "multi-prefix foo bar=1"])
    assert step.lines == ["CAP REQ :multi-prefix"]
    assert neg.feed(["ACK", "multi-prefix "]).lines == ["CAP END"]  # trailing space, as sent
    assert dict(neg.enabled) == {"multi-prefix": ""}

    none = CapNegotiation()
    none.begin()
    assert none.feed(["LS", "foo"]).lines == ["CAP END"]
    assert none.ended and none.enabled == {}


def test_a_nak_of_a_line_asks_for_each_cap_alone_once() -> None:
    neg = CapNegotiation()
    neg.begin()
    step = neg.feed(["LS", "server-time batch multi-prefix"])
    assert step.lines == ["CAP REQ :server-time batch multi-prefix"]
    retry = neg.feed(["NAK", "server-time batch multi-prefix"])
    assert retry.lines == ["CAP REQ :server-time", "CAP REQ :batch", "CAP REQ :multi-prefix"]
    assert neg.feed(["ACK", "server-time"]).lines == []
    assert neg.feed(["NAK", "batch"]).lines == []  # a single cap refused: given up
    assert neg.feed(["ACK", "multi-prefix"]).lines == ["CAP END"]
    assert set(neg.enabled) == {"server-time", "multi-prefix"}


def test_req_lines_stay_under_the_line_limit_and_keep_every_cap() -> None:
    caps = [f"vendor.example/cap-number-{i:03d}" for i in range(60)]
    groups = req_lines(caps)
    assert len(groups) > 1
    assert [c for g in groups for c in g] == caps
    for group in groups:
        assert len(("CAP REQ :" + " ".join(group)).encode()) <= MAX_LINE < 510
    # A machine told a small limit splits its REQ; each line is answered on its own.
    neg = CapNegotiation(line_limit=60)
    neg.begin()
    step = neg.feed(ERGO_LS[0])
    step = neg.feed(ERGO_LS[1])
    reqs = [line for line in step.lines if line.startswith("CAP REQ")]
    assert len(reqs) > 3 and all(len(line) <= 60 for line in reqs)
    assert set(requested(reqs)) == set(WANTED)
    out: list[str] = []
    for line in reqs:
        assert "CAP END" not in out  # not before the last ACK
        out += neg.feed(["ACK", line[len("CAP REQ :"):]]).lines
    assert out == ["CAP END"]


def test_sasl_runs_between_the_acks_and_cap_end() -> None:
    neg = CapNegotiation(sasl_mechanism="PLAIN", sasl_response=b"acct\0acct\0pw")
    neg.begin()
    step = neg.feed(["LS", "sasl=PLAIN,EXTERNAL server-time"])
    assert ack_all(neg, step.lines) == ["AUTHENTICATE PLAIN"]
    assert not neg.ended
    assert neg.challenge("+").lines == ["AUTHENTICATE YWNjdABhY2N0AHB3"]
    assert neg.challenge("+").lines == []  # the response goes once
    done = neg.sasl_result(True, "")
    assert done.lines == ["CAP END"] and done.sasl_failed is None


def test_sasl_not_offered_or_refused_or_failed_still_ends_and_says_why() -> None:
    neg = CapNegotiation(sasl_mechanism="EXTERNAL")
    neg.begin()
    step = neg.feed(["LS", "sasl=PLAIN server-time"])
    end = ack_all(neg, step.lines)
    assert requested(step.lines) == ["server-time", "sasl"]
    assert end == ["CAP END"]

    refused = CapNegotiation(sasl_mechanism="PLAIN")
    refused.begin()
    step = refused.feed(["LS", "sasl"])
    reply = refused.feed(["NAK", "sasl"])
    assert reply.lines == ["CAP END"] and "refused" in (reply.sasl_failed or "")

    failed = CapNegotiation(sasl_mechanism="PLAIN", sasl_response=b"a\0a\0b")
    failed.begin()
    ack_all(failed, failed.feed(["LS", "sasl"]).lines)
    failed.challenge("+")
    result = failed.sasl_result(False, "SASL authentication failed")
    assert result.lines == ["CAP END"] and result.sasl_failed == "SASL authentication failed"


def test_sasl_offered_without_mechanisms_is_tried() -> None:
    neg = CapNegotiation(sasl_mechanism="PLAIN", sasl_response=b"x")
    neg.begin()
    assert ack_all(neg, neg.feed(["LS", "sasl"]).lines) == ["AUTHENTICATE PLAIN"]


def test_the_deadline_ends_a_negotiation_the_server_never_answered() -> None:
    assert CAP_DEADLINE < 10  # InspIRCd's default registration timeout
    silent = CapNegotiation()
    silent.begin()
    assert silent.deadline().lines == ["CAP END"]
    assert silent.ended
    assert silent.deadline().lines == []  # once

    half = CapNegotiation()
    half.begin()
    half.feed(["LS", "*", "server-time"])  # the last LS line never comes
    assert half.deadline().lines == ["CAP END"]

    no_ack = CapNegotiation(sasl_mechanism="PLAIN")
    no_ack.begin()
    no_ack.feed(["LS", "sasl server-time"])
    step = no_ack.deadline()
    assert step.lines == ["CAP END"] and step.sasl_failed

    stuck_sasl = CapNegotiation(sasl_mechanism="PLAIN", sasl_response=b"x")
    stuck_sasl.begin()
    ack_all(stuck_sasl, stuck_sasl.feed(["LS", "sasl"]).lines)
    step = stuck_sasl.deadline()
    assert step.lines == ["CAP END"] and "SASL" in (step.sasl_failed or "")
    assert stuck_sasl.sasl_result(True, "").lines == []  # too late: already ended


def test_a_late_ack_still_enables_its_caps() -> None:
    neg = CapNegotiation()
    neg.begin()
    neg.feed(["LS", "server-time"])
    neg.deadline()
    assert neg.feed(["ACK", "server-time"]).lines == []
    assert "server-time" in neg.enabled


def test_a_server_without_cap_registers_us_and_nothing_more_is_sent() -> None:
    neg = CapNegotiation()
    neg.begin()
    neg.registered()  # 001 without any CAP reply
    assert neg.ended and neg.deadline().lines == []


def test_new_and_del_while_connected() -> None:
    neg = CapNegotiation()
    neg.begin()
    ack_all(neg, neg.feed(["LS", "cap-notify server-time"]).lines)
    assert set(neg.enabled) == {"cap-notify", "server-time"}
    # A module loaded on the server: only what we want and lack is asked for.
    step = neg.feed(["NEW", "away-notify draft/multiline=max-bytes=2048 unknown-cap server-time"])
    assert step.lines == ["CAP REQ :away-notify draft/multiline"]
    assert "CAP END" not in ack_all(neg, step.lines)  # no second CAP END once registered
    assert neg.enabled["draft/multiline"] == "max-bytes=2048"
    # A new value for an enabled cap is taken without a REQ.
    assert neg.feed(["NEW", "draft/multiline=max-bytes=4096"]).lines == []
    assert neg.enabled["draft/multiline"] == "max-bytes=4096"
    assert neg.feed(["DEL", "server-time away-notify"]).lines == []
    assert set(neg.enabled) == {"cap-notify", "draft/multiline"}
    assert "server-time" not in neg.offered
    # Offered again later: asked for again.
    assert neg.feed(["NEW", "server-time"]).lines == ["CAP REQ :server-time"]


def test_new_during_registration_is_waited_for_and_a_disabling_ack_disables() -> None:
    neg = CapNegotiation()
    neg.begin()
    step = neg.feed(["LS", "server-time"])
    more = neg.feed(["NEW", "batch"])
    assert more.lines == ["CAP REQ :batch"]
    assert neg.feed(["ACK", "server-time"]).lines == []  # batch not answered yet
    assert neg.feed(["ACK", "batch"]).lines == ["CAP END"]
    assert step.lines == ["CAP REQ :server-time"]
    assert neg.feed(["ACK", "-batch"]).lines == []
    assert set(neg.enabled) == {"server-time"}


def test_a_new_connection_starts_over() -> None:
    neg = CapNegotiation()
    neg.begin()
    ack_all(neg, neg.feed(["LS", "server-time"]).lines)
    assert neg.begin().lines == ["CAP LS 302"]
    assert neg.enabled == {} and neg.offered == {} and not neg.ended
    assert neg.feed(["LS", "batch"]).lines == ["CAP REQ :batch"]


def test_the_snapshot_is_immutable_and_detached() -> None:
    neg = CapNegotiation()
    neg.begin()
    ack_all(neg, neg.feed(["LS", "server-time"]).lines)
    snap = neg.snapshot()
    neg.feed(["DEL", "server-time"])
    assert dict(snap) == {"server-time": ""}
    try:
        snap["x"] = "y"  # type: ignore[index]
    except TypeError:
        pass
    else:
        raise AssertionError("the snapshot is writable")
