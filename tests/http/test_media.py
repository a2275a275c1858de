"""Media links for IRC users (spec.md 3.9, checklist 66-67): signing, the proxy, and pastes.

Signing and the proxy's answers are checked against a fake homeserver client, through the
Flask test client; the end-to-end part (real Synapse, the bridge under gunicorn) is
tests/e2e/test_media_e2e.py.
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import requests
from flask import Flask
from requests.structures import CaseInsensitiveDict

from bridge.config.ini import Config, ConfigError, MediaConfig, load
from bridge.core.media import MediaLinks, clean_filename, load_secret, parse_mxc
from bridge.matrix import HomeserverClient, HomeserverUnavailable, NotFound
from bridge.matrix.errors import Forbidden
from bridge.store.models import Store
from bridge.web.context import bridge_of, media_of
from bridge.web.media import content_disposition
from tests.conftest import built_app, write_config

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
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
def app(config: Config, fake: FakeClient) -> Iterator[Flask]:
    """conftest's app with its media links on the fake homeserver, given to create_app."""
    with built_app(config, media=MediaLinks(fake, "http://localhost", SECRET, 3600, 4096)) as app:
        yield app


def local(url: str) -> str:
    u = urlsplit(url)
    return f"{u.path}?{u.query}"


def test_create_app_builds_media_links_from_the_database_secret(config: Config) -> None:
    with built_app(config) as app:
        bridge, media = bridge_of(app), media_of(app)
        assert media is bridge.media
        assert media.public_url == bridge.config.appservice.url
        assert media.client is bridge.client
        assert media.ttl_seconds == 30 * 86400 and media.max_bytes == 50 * 1024 * 1024
        again = MediaLinks(bridge.client, media.public_url, load_secret(bridge.store), 60, 1)
        assert again.verify(*parts(media.link("mxc://localhost/abc", "a.png")))


def test_proxy_serves_the_file_with_its_type(app: Flask, fake: FakeClient) -> None:
    fake.files[("example.org", "img")] = (PNG[:4000], {"Content-Type": "image/png",
                                                        "Content-Length": "4000"})
    url = media_of(app).link("mxc://example.org/img", "cat ü.png")
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
    url = media_of(app).link("mxc://example.org/page", "x.html")
    r = app.test_client().get(local(url))
    assert r.status_code == 200 and r.data == body
    assert r.headers["Content-Disposition"] == 'attachment; filename="x.html"'
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_bad_links_are_403_and_never_reach_the_homeserver(app: Flask, fake: FakeClient) -> None:
    media = media_of(app)
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
    media = media_of(app)
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
    media = media_of(app)
    fake.files[("example.org", "big")] = (b"x" * 5000, {"Content-Type": "image/png",
                                                         "Content-Length": "5000"})
    r = app.test_client().get(local(media.link("mxc://example.org/big", "a.png")))
    assert (r.status_code, r.json["errcode"]) == (413, "M_TOO_LARGE")


def test_files_without_length_are_cut_off_past_max_bytes(app: Flask, fake: FakeClient) -> None:
    media = media_of(app)
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
    media = media_of(app)
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
