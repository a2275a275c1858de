"""Media links end to end (spec.md 3.9, checklist 66-67): the real bridge (gunicorn) beside a
real Synapse with authenticated media on; the signed links are fetched with a plain
`requests.get`, as an IRC user's browser would. Signing and the proxy's answers against a fake
homeserver client are in tests/http/test_media.py.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import requests
import yaml

from bridge.core.media import MediaLinks, parse_mxc
from bridge.devstack.clients import MatrixClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.matrix import HomeserverClient
from bridge.store.models import Store
from tests.http.test_media import PNG, parts
from tests.stacks import add_to_config, running_stack

READ_TIMEOUT = 5


class E2E:
    stack: Stack
    alice: MatrixClient
    media: MediaLinks


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    e = E2E()

    def slow_readers_are_cut(s: Stack) -> None:  # a short read timeout for the slot test
        add_to_config(s, f"\n[media]\nread_timeout = {READ_TIMEOUT}\n")

    with running_stack(tmp_path_factory.mktemp("media"), before_bridge=slow_readers_are_cut,
                       log_lines=200) as e.stack:
        e.alice = e.stack.matrix_user("alice")
        store = Store(e.stack.database_url)
        try:
            secret = store.meta("media_secret")
        finally:
            store.close()
        assert secret, "the bridge made no media secret at start"
        as_token = yaml.safe_load(e.stack.registration.read_text())["as_token"]
        client = HomeserverClient(e.stack.synapse.url, as_token, server_name="localhost")
        e.media = MediaLinks(client, e.stack.bridge.url, secret.encode(), 3600, 50 << 20)
        yield e
        client.close()


def upload(alice: MatrixClient, data: bytes, content_type: str, filename: str) -> str:
    r = alice.session.post(f"{alice.base_url}/_matrix/media/v3/upload",
                           params={"filename": filename}, data=data,
                           headers={"Content-Type": content_type}, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["content_uri"])


def test_e2e_signed_link_serves_the_exact_bytes(e2e: E2E) -> None:
    mxc = upload(e2e.alice, PNG, "image/png", "cat.png")
    # Authenticated media: the legacy unauthenticated path no longer serves it.
    server, media_id = parse_mxc(mxc)
    legacy = requests.get(f"{e2e.stack.synapse.url}/_matrix/media/v3/download/{server}/{media_id}",
                          timeout=10)
    assert legacy.status_code == 404
    url = e2e.media.link(mxc, "cat.png")
    assert url.startswith(e2e.stack.bridge.url + "/_ircbridge/media/localhost/")
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.content == PNG
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["Content-Length"] == str(len(PNG))
    assert r.headers["Content-Disposition"] == 'inline; filename="cat.png"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_e2e_html_comes_as_an_attachment(e2e: E2E) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    mxc = upload(e2e.alice, page, "text/html", "page.html")
    r = requests.get(e2e.media.link(mxc, "page.html"), timeout=30)
    assert r.status_code == 200 and r.content == page
    assert r.headers["Content-Disposition"].startswith("attachment;")


def test_e2e_tampered_and_expired_links_are_403(e2e: E2E) -> None:
    mxc = upload(e2e.alice, PNG[:100], "image/png", "tiny.png")
    url = e2e.media.link(mxc, "tiny.png")
    assert requests.get(url, timeout=30).status_code == 200
    tampered = [url.replace("tiny.png", "huge.png"), url.split("&sig=")[0],
                url.replace("&sig=", "&sig=f")[:-1],
                url.replace("?exp=", "?exp=1")]
    expired_links = MediaLinks(e2e.media.client, e2e.media.public_url, e2e.media._secret, 60, 1)
    expired_links.clock = lambda: time.time() - 3600
    other = MediaLinks(e2e.media.client, e2e.media.public_url, b"not the bridge's secret", 60, 1)
    for bad in (*tampered, expired_links.link(mxc, "tiny.png"), other.link(mxc, "tiny.png")):
        r = requests.get(bad, timeout=30)
        assert r.status_code == 403, bad
        assert r.json()["errcode"] == "M_FORBIDDEN"


def test_e2e_unknown_media_is_404(e2e: E2E) -> None:
    r = requests.get(e2e.media.link("mxc://localhost/NoSuchMediaId123", "x.png"), timeout=30)
    assert r.status_code == 404
    assert r.json()["errcode"] == "M_NOT_FOUND"


def test_e2e_paste_returns_a_link_to_the_text(e2e: E2E) -> None:
    text = "first line of a long message\nsecond line, ünïcödé\nthird line 🐍"
    url = e2e.media.paste(text)
    assert parts(url)[2] == "message.txt"
    r = requests.get(url, timeout=30)
    assert r.status_code == 200
    assert r.content.decode("utf-8") == text
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.headers["Content-Disposition"] == 'inline; filename="message.txt"'


def test_e2e_any_file_name_survives_the_round_trip(e2e: E2E) -> None:
    mxc = upload(e2e.alice, PNG[:500], "image/png", "x.png")
    name = "ünï cödé #1?&x=%2F;.png"
    url = e2e.media.link(mxc, name)
    r = requests.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.content == PNG[:500]
    assert "filename*=UTF-8''%C3%BCn%C3%AF%20c%C3%B6d%C3%A9%20%231%3F%26x%3D%252F%3B.png" \
        in r.headers["Content-Disposition"]
    head = requests.head(url, timeout=30)
    assert head.status_code == 200 and head.headers["Content-Length"] == "500"


def test_e2e_signatures_and_tokens_stay_out_of_the_log(e2e: E2E) -> None:
    url = e2e.media.link(upload(e2e.alice, b"x", "text/plain", "x.txt"), "x.txt")
    assert requests.get(url, timeout=30).status_code == 200
    flipped = url[:-1] + ("1" if url.endswith("0") else "0")
    assert requests.get(flipped, timeout=30).status_code == 403
    log_text = e2e.stack.bridge.log(100000)
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    assert sig not in log_text and sig[:-1] not in log_text
    assert e2e.media.client._as_token not in log_text


def test_e2e_download_slots_come_back_under_gunicorn(e2e: E2E) -> None:
    big = os.urandom(3 << 20)
    url = e2e.media.link(upload(e2e.alice, big, "image/png", "big.png"), "big.png")
    missing = e2e.media.link("mxc://localhost/NoSuchMediaId456", "x.png")
    for _ in range(3 * 8):
        with requests.get(url, stream=True, timeout=30) as r:  # read a bit, then hang up
            assert r.status_code == 200
            assert len(next(r.iter_content(1024))) > 0
        assert requests.head(url, timeout=30).status_code == 200
        assert requests.get(missing, timeout=30).status_code == 404
    assert requests.get(url, timeout=30).content == big


def _stalled_download(url: str) -> socket.socket:
    """A client that asks for `url` and then reads nothing, with a tiny receive window."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 "Connection: close\r\n\r\n".encode())
    return sock


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    chunks = []
    try:
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    except OSError:  # a reset after the server gave up on us
        pass
    return b"".join(chunks)


def test_e2e_slow_readers_cannot_hold_every_download_slot(e2e: E2E) -> None:
    big = os.urandom(12 << 20)  # far more than the socket buffers hold
    url = e2e.media.link(upload(e2e.alice, big, "image/png", "slow.png"), "slow.png")
    small = e2e.media.link(upload(e2e.alice, b"small", "text/plain", "s.txt"), "s.txt")
    slots = 4  # [appservice] threads = 8 in the devstack: half of them serve media
    stalled = [_stalled_download(url) for _ in range(slots)]
    try:
        firsts = []
        for sock in stalled:  # each is being answered (holds a slot), then reads no more
            sock.settimeout(30)
            firsts.append(sock.recv(1024))
            assert firsts[-1].startswith(b"HTTP/1.1 200")
        # Slow readers hold their slot for READ_TIMEOUT at most, then others get theirs.
        wait_until(lambda: requests.get(small, timeout=30).status_code == 200, 60, 0.2,
                   what="a download slot while four readers stall")
        for sock, first in zip(stalled, firsts, strict=True):  # the server gave up on each:
            assert len(first) + len(_read_all(sock)) < len(big)  # none got the whole file
    finally:
        for sock in stalled:
            sock.close()


def test_e2e_a_redaction_revokes_the_media_link(e2e: E2E) -> None:
    room = e2e.alice.join(e2e.stack.alias("#matrix"))
    bob = e2e.stack.irc_user("mediabob")
    try:
        bob.join("#matrix")
        mxc = upload(e2e.alice, PNG, "image/png", "secret.png")
        event_id = e2e.alice.send_event(room, "m.room.message", {
            "msgtype": "m.image", "body": "secret.png", "url": mxc,
            "info": {"mimetype": "image/png", "size": len(PNG)}})
        line = bob.wait_for_privmsg(lambda t: "/_ircbridge/media/" in t, timeout=30)
        url = next(w for w in line.text.split() if "/_ircbridge/media/" in w)
        assert requests.get(url, timeout=30).status_code == 200
        e2e.alice.request("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/redact/"
                                 f"{quote(event_id)}/revoke-{time.time_ns()}", json={})
        wait_until(lambda: requests.get(url, timeout=30).status_code == 410, 30, 0.2,
                   what="the link to stop working after the redaction")
        r = requests.get(url, timeout=30)
        assert r.json()["errcode"] == "M_NOT_FOUND"
        # Another file's link keeps working.
        other = e2e.media.link(upload(e2e.alice, PNG[:200], "image/png", "o.png"), "o.png")
        assert requests.get(other, timeout=30).status_code == 200
    finally:
        bob.close()
