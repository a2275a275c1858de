"""Media links for IRC users (spec.md 3.9, checklist 66-67): signing, the proxy, and pastes.

Signing and the proxy's answers are checked against a fake homeserver client; the end-to-end
part runs the real bridge (gunicorn) beside a real Synapse with authenticated media on, and
fetches the signed links with a plain `requests.get`, as an IRC user's browser would.
"""

from __future__ import annotations

import io
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import requests
import yaml
from flask import Flask
from requests.structures import CaseInsensitiveDict

from bridge.config.ini import ConfigError, MediaConfig, load
from bridge.core.media import MediaLinks, clean_filename, load_secret, parse_mxc
from bridge.devstack.clients import MatrixClient
from bridge.devstack.ports import wait_until
from bridge.devstack.stack import Stack
from bridge.matrix import HomeserverClient, HomeserverUnavailable, NotFound
from bridge.matrix.errors import Forbidden
from bridge.store.models import Store
from bridge.web.media import content_disposition
from tests.conftest import TEST_DB_ENV, clean_database, write_config

SECRET = b"0123456789abcdef" * 4
PUBLIC = "https://bridge.example.org"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40 + b"IEND\xaeB`\x82"


class FakeClient:
    """Stands in for HomeserverClient: records uploads, answers downloads from a table."""

    def __init__(self) -> None:
        self.uploads: list[tuple[bytes, str, str | None]] = []
        self.files: dict[tuple[str, str], tuple[bytes, dict[str, str]]] = {}
        self.fail: Exception | None = None
        self.downloads: list[tuple[str, str]] = []

    def upload(self, data: bytes, content_type: str, filename: str | None) -> str:
        self.uploads.append((data, content_type, filename))
        return f"mxc://example.org/paste{len(self.uploads)}"

    def download(self, server: str, media_id: str, *, deadline: float | None = None
                 ) -> requests.Response:
        self.downloads.append((server, media_id))
        if self.fail is not None:
            raise self.fail
        if (server, media_id) not in self.files:
            raise NotFound(404, "M_NOT_FOUND", "Not found")
        data, headers = self.files[(server, media_id)]
        response = requests.Response()
        response.status_code = 200
        response.headers = CaseInsensitiveDict(headers)
        response.raw = io.BytesIO(data)
        return response


def links(client: Any = None, *, secret: bytes = SECRET, ttl: int = 3600,
          max_bytes: int = 1 << 20, public: str = PUBLIC) -> MediaLinks:
    return MediaLinks(client or FakeClient(), public, secret, ttl, max_bytes)


def parts(url: str) -> tuple[str, str, str, str, str]:
    """(server, media_id, filename, exp, sig) of a link, decoded as the web layer sees them."""
    u = urlsplit(url)
    prefix = "/_ircbridge/media/"
    assert u.path.startswith(prefix)
    server, media_id, filename = (unquote(p) for p in u.path[len(prefix):].split("/", 2))
    query = parse_qs(u.query)
    return server, media_id, filename, query["exp"][0], query["sig"][0]


# --- signing ---------------------------------------------------------------------------


def test_link_shape() -> None:
    media = links(ttl=600)
    before = int(time.time())
    url = media.link("mxc://example.org/AbC_12-x", "cat picture.png")
    u = urlsplit(url)
    assert f"{u.scheme}://{u.netloc}" == PUBLIC
    assert u.path == "/_ircbridge/media/example.org/AbC_12-x/cat%20picture.png"
    server, media_id, filename, exp, sig = parts(url)
    assert (server, media_id, filename) == ("example.org", "AbC_12-x", "cat picture.png")
    assert before + 600 <= int(exp) <= int(time.time()) + 600
    assert len(sig) == 64 and int(sig, 16) >= 0
    assert media.verify(server, media_id, filename, exp, sig)
    assert media.verify(server, media_id, filename, int(exp), sig.upper())


def test_public_url_trailing_slash_and_port_in_server_name() -> None:
    media = links(public="http://127.0.0.1:9999/")
    url = media.link("mxc://localhost:8448/xyz", "a.txt")
    assert url.startswith("http://127.0.0.1:9999/_ircbridge/media/localhost%3A8448/xyz/a.txt?")
    assert media.verify(*parts(url))


@pytest.mark.parametrize("bad", [
    "", "http://example.org/abc", "mxc://example.org", "mxc://example.org/",
    "mxc:///abc", "mxc://example.org/abc/def", "mxc://exa mple.org/abc",
    "mxc://example.org/ab%2Fc", "mxc://example.org/abc?x=1", "mxc://example.org/../abc",
])
def test_invalid_mxc_is_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        links().link(bad, "x")
    with pytest.raises(ValueError):
        parse_mxc(bad)


def test_filenames_are_made_safe_path_segments() -> None:
    media = links()
    for name, expected in [
        (None, "abc"), ("", "abc"), (".", "abc"), ("..", "abc"), ("  ", "abc"),
        ("a/b\\c.png", "a_b_c.png"), ("line1\nline2", "line1_line2"),
        ("réunion 2024 — plan.pdf", "réunion 2024 — plan.pdf"),
        ("evil\u202egnp.exe", "evilgnp.exe"), ("100%?#&.txt", "100%?#&.txt"),
        ("bad\udcff.png", "bad.png"),
    ]:
        assert clean_filename(name, "abc") == expected
        server, media_id, filename, exp, sig = parts(media.link("mxc://example.org/abc", name))
        assert filename == expected
        assert media.verify(server, media_id, filename, exp, sig)
    long = clean_filename("x" * 500 + ".jpeg", "abc")
    assert len(long) == 100 and long.endswith(".jpeg")
    wide = clean_filename("日本語" * 100 + ".png", "abc")
    assert wide.endswith(".png") and len(quote(wide, safe="")) <= 100
    assert len(clean_filename("ü" * 200, "abc")) == 16  # 16 * 6 quoted bytes
    # Even with a long name and a long public URL, a link fits in one IRC line.
    url = links(public="https://irc-bridge.example.org:8443/some/prefix").link(
        "mxc://matrix.example.org/AbCdEfGhIjKlMnOpQrStUvWx", "é" * 300 + ".jpeg")
    assert len(url.encode()) < 330


def test_expired_links_fail() -> None:
    media = links(ttl=60)
    args = parts(media.link("mxc://example.org/abc", "a.png"))
    assert media.verify(*args)
    media.clock = lambda: time.time() + 61
    assert not media.verify(*args)


@pytest.mark.parametrize("index,value", [
    (0, "example.com"), (1, "abd"), (2, "b.png"), (3, None), (4, None),
])
def test_tampering_with_any_part_fails(index: int, value: str | None) -> None:
    media = links()
    args = list(parts(media.link("mxc://example.org/abc", "a.png")))
    if index == 3:
        value = str(int(args[3]) + 3600)  # a longer life
    if index == 4:
        value = args[4][:-1] + ("0" if args[4][-1] != "0" else "1")
    args[index] = value
    assert not media.verify(*args)


@pytest.mark.parametrize("exp,sig", [
    (None, None), ("", ""), ("abc", "x"), ("-1", "0" * 64), ("1e9", "0" * 64),
    ("١٢٣", "0" * 64), (True, "0" * 64), ("9" * 40, "0" * 64),
])
def test_malformed_exp_or_sig_fails(exp: Any, sig: Any) -> None:
    assert not links().verify("example.org", "abc", "a.png", exp, sig)


def test_missing_signature_or_non_ascii_signature_fails() -> None:
    media = links()
    server, media_id, filename, exp, sig = parts(media.link("mxc://example.org/abc", "a.png"))
    assert not media.verify(server, media_id, filename, exp, None)
    assert not media.verify(server, media_id, filename, exp, "")
    assert not media.verify(server, media_id, filename, exp, "é" * 64)
    assert not media.verify(server, media_id, "a\udcff.png", exp, sig)


def test_another_secret_does_not_verify() -> None:
    url = links(secret=b"one secret").link("mxc://example.org/abc", "a.png")
    assert links(secret=b"one secret").verify(*parts(url))
    assert not links(secret=b"another secret").verify(*parts(url))


def test_secret_and_tokens_stay_out_of_repr_and_links() -> None:
    client = HomeserverClient("http://127.0.0.1:1", "as-token-secret", server_name="localhost")
    media = MediaLinks(client, PUBLIC, SECRET, 60, 1000)
    url = media.link("mxc://localhost/abc", "a.png")
    assert "as-token-secret" not in url and SECRET.decode() not in url
    assert SECRET.decode() not in repr(media)


def test_paste_uploads_utf8_text_and_links_it() -> None:
    client = FakeClient()
    media = links(client)
    text = "first line\nsecond — line\nthird 🐍"
    url = media.paste(text)
    assert client.uploads == [(text.encode("utf-8"), "text/plain; charset=utf-8", "message.txt")]
    server, media_id, filename, exp, sig = parts(url)
    assert (server, media_id, filename) == ("example.org", "paste1", "message.txt")
    assert media.verify(server, media_id, filename, exp, sig)
    assert parts(media.paste("x", "long.txt"))[2] == "long.txt"


def test_secret_is_made_once_and_survives_a_new_store(db_url: str) -> None:
    first = Store(db_url)
    first.open()
    secret = load_secret(first)
    assert len(secret) == 64
    assert load_secret(first) == secret
    first.close()
    second = Store(db_url)
    assert load_secret(second) == secret
    second.close()


# --- config ----------------------------------------------------------------------------


def test_media_config_defaults_and_overrides(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    config = load(path)
    assert config.media == MediaConfig("http://127.0.0.1:9999", 30, 50 * 1024 * 1024)
    path.write_text(path.read_text() + "\n[media]\npublic_url = https://irc.example.org/\n"
                    "link_ttl_days = 7\nmax_bytes = 1048576\n")
    config = load(path)
    assert config.media == MediaConfig("https://irc.example.org", 7, 1048576)
    assert not config.warnings


def test_media_config_problems_name_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + "\n[media]\npublic_url = ftp://x\nlink_ttl_days = 0\n"
                    "max_bytes = lots\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    text = str(info.value)
    for key in ("[media] public_url", "[media] link_ttl_days", "[media] max_bytes"):
        assert key in text


# --- the proxy, against a fake homeserver ------------------------------------------------


@pytest.fixture
def fake(app: Flask) -> FakeClient:
    client = FakeClient()
    app.extensions["bridge"].media = MediaLinks(client, "http://localhost", SECRET, 3600, 4096)
    return client


def local(url: str) -> str:
    u = urlsplit(url)
    return f"{u.path}?{u.query}"


def test_create_app_builds_media_links_from_the_database_secret(app: Flask) -> None:
    bridge = app.extensions["bridge"]
    media = bridge.media
    assert media.public_url == bridge.config.appservice.url
    assert media.client is bridge.client
    assert media.ttl_seconds == 30 * 86400 and media.max_bytes == 50 * 1024 * 1024
    again = MediaLinks(bridge.client, media.public_url, load_secret(bridge.store), 60, 1)
    assert again.verify(*parts(media.link("mxc://localhost/abc", "a.png")))


def test_proxy_serves_the_file_with_its_type(app: Flask, fake: FakeClient) -> None:
    fake.files[("example.org", "img")] = (PNG[:4000], {"Content-Type": "image/png",
                                                        "Content-Length": "4000"})
    url = app.extensions["bridge"].media.link("mxc://example.org/img", "cat ü.png")
    r = app.test_client().get(local(url))
    assert r.status_code == 200
    assert r.data == PNG[:4000]
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["Content-Length"] == "4000"
    assert r.headers["Content-Disposition"] == (
        "inline; filename=\"cat _.png\"; filename*=UTF-8''cat%20%C3%BC.png")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in r.headers["Content-Security-Policy"]
    assert fake.downloads == [("example.org", "img")]


@pytest.mark.parametrize("content_type", [
    "text/html", "text/html; charset=utf-8", "image/svg+xml", "application/xhtml+xml",
    "text/xml", "application/javascript", "application/octet-stream", "TEXT/HTML",
])
def test_active_content_is_an_attachment(app: Flask, fake: FakeClient, content_type: str) -> None:
    body = b"<script>alert(1)</script>"
    fake.files[("example.org", "page")] = (body, {"Content-Type": content_type})
    url = app.extensions["bridge"].media.link("mxc://example.org/page", "x.html")
    r = app.test_client().get(local(url))
    assert r.status_code == 200 and r.data == body
    assert r.headers["Content-Disposition"] == 'attachment; filename="x.html"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_bad_links_are_403_and_never_reach_the_homeserver(app: Flask, fake: FakeClient) -> None:
    media = app.extensions["bridge"].media
    fake.files[("example.org", "img")] = (b"x", {"Content-Type": "image/png"})
    url = local(media.link("mxc://example.org/img", "a.png"))
    path, query = url.split("?")
    client = app.test_client()
    for bad in (path, f"{path}?{query.replace('sig=', 'sig=0')}",
                url.replace("/img/", "/imh/"), url.replace("a.png", "b.png"),
                f"{path}?exp=99999999999&{query.split('&')[1]}"):
        r = client.get(bad)
        assert (r.status_code, r.json["errcode"]) == (403, "M_FORBIDDEN"), bad
    media.clock = lambda: time.time() + 7200
    r = client.get(url)
    assert (r.status_code, r.json["errcode"]) == (403, "M_FORBIDDEN")
    assert fake.downloads == []


def test_homeserver_errors_map_to_404_and_502(app: Flask, fake: FakeClient) -> None:
    media = app.extensions["bridge"].media
    client = app.test_client()
    r = client.get(local(media.link("mxc://example.org/gone", "a.png")))
    assert (r.status_code, r.json["errcode"]) == (404, "M_NOT_FOUND")
    fake.fail = HomeserverUnavailable(0, "M_UNKNOWN", "ConnectionError")
    r = client.get(local(media.link("mxc://example.org/gone", "a.png")))
    assert (r.status_code, r.json["errcode"]) == (502, "M_UNKNOWN")
    fake.fail = Forbidden(403, "M_FORBIDDEN", "quarantined")
    r = client.get(local(media.link("mxc://example.org/gone", "a.png")))
    assert r.status_code == 502


def test_files_over_max_bytes_are_413(app: Flask, fake: FakeClient) -> None:
    media = app.extensions["bridge"].media
    fake.files[("example.org", "big")] = (b"x" * 5000, {"Content-Type": "image/png",
                                                         "Content-Length": "5000"})
    r = app.test_client().get(local(media.link("mxc://example.org/big", "a.png")))
    assert (r.status_code, r.json["errcode"]) == (413, "M_TOO_LARGE")


def test_files_without_length_are_cut_off_past_max_bytes(app: Flask, fake: FakeClient) -> None:
    media = app.extensions["bridge"].media
    fake.files[("example.org", "small")] = (b"y" * 4096, {"Content-Type": "image/png"})
    fake.files[("example.org", "big")] = (b"x" * 5000, {"Content-Type": "image/png"})
    client = app.test_client()
    assert client.get(local(media.link("mxc://example.org/small", "a.png"))).data == b"y" * 4096
    with pytest.raises(OSError, match="max_bytes"):
        client.get(local(media.link("mxc://example.org/big", "a.png"))).get_data()


@pytest.mark.parametrize("name,expected", [
    ("a.png", 'inline; filename="a.png"'),
    ('say "hi";x.png', "inline; filename=\"say _hi__x.png\"; "
                       "filename*=UTF-8''say%20%22hi%22%3Bx.png"),
    ("100%.txt", "inline; filename=\"100_.txt\"; filename*=UTF-8''100%25.txt"),
    ("日本.txt", "inline; filename=\"__.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"),
])
def test_content_disposition_quoting(name: str, expected: str) -> None:
    assert content_disposition("inline", name) == expected


def test_a_redaction_revokes_only_its_own_messages_files(store: Store) -> None:
    from bridge.core.media_revocations import MediaRevocations

    revocations = MediaRevocations(store.db, 3600)
    revocations.create_tables()
    tag = secrets.token_hex(4)  # rows of earlier runs may stay in a PostgreSQL database
    image = {"type": "m.room.message", "room_id": "!a:x", "event_id": f"$img{tag}",
             "content": {"msgtype": "m.image", "url": f"mxc://x/full{tag}",
                         "info": {"thumbnail_url": f"mxc://x/thumb{tag}"}}}
    other = {**image, "event_id": f"$other{tag}", "content": {"msgtype": "m.file",
                                                          "url": f"mxc://x/other{tag}"}}
    for event in (image, other):
        revocations.observe(event)
    # A redaction naming the event from another room revokes nothing.
    revocations.observe({"type": "m.room.redaction", "room_id": "!b:x", "event_id": "$r1",
                         "redacts": f"$img{tag}"})
    assert not revocations.is_revoked("x", f"full{tag}")
    # Room v11 puts `redacts` in the content.
    revocations.observe({"type": "m.room.redaction", "room_id": "!a:x", "event_id": "$r2",
                         "content": {"redacts": f"$img{tag}"}})
    assert revocations.is_revoked("x", f"full{tag}") and revocations.is_revoked("x", f"thumb{tag}")
    assert not revocations.is_revoked("x", f"other{tag}")


def test_downloads_at_once_are_capped_and_slots_come_back(app: Flask, fake: FakeClient) -> None:
    media = app.extensions["bridge"].media
    fake.files[("example.org", "img")] = (b"z" * 100, {"Content-Type": "image/png"})
    url = local(media.link("mxc://example.org/img", "a.png"))
    client = app.test_client()
    for _ in range(3 * media.max_concurrent):  # finished answers give their slot back
        r = client.get(url)
        assert r.status_code == 200 and r.data == b"z" * 100
        r.close()
        r = client.get(local(media.link("mxc://example.org/gone", "a.png")))
        assert r.status_code == 404
        r.close()
    held = [media.try_acquire() for _ in range(media.max_concurrent)]
    assert all(held)
    r = client.get(url)
    assert (r.status_code, r.json["errcode"]) == (503, "M_LIMIT_EXCEEDED")
    assert r.headers["Retry-After"] == "5"
    media.release()
    assert client.get(url).status_code == 200


# --- end to end: Synapse with authenticated media + the bridge under gunicorn -----------


READ_TIMEOUT = 5


class E2E:
    stack: Stack
    alice: MatrixClient
    media: MediaLinks


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    url = os.environ.get(TEST_DB_ENV)
    if url:
        clean_database(url)
    e = E2E()
    e.stack = Stack(tmp_path_factory.mktemp("media"), database_url=url)

    def slow_readers_are_cut(s: Stack) -> None:  # a short read timeout for the slot test
        s.config_path.write_text(s.config_path.read_text(encoding="utf-8")
                                 + f"\n[media]\nread_timeout = {READ_TIMEOUT}\n",
                                 encoding="utf-8")

    try:
        e.stack.start(before_bridge=slow_readers_are_cut)
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
    finally:
        log_text = e.stack.bridge.log(200)
        e.stack.stop()
        if os.environ.get("IRCBRIDGE_SHOW_LOG"):
            print(log_text)


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
