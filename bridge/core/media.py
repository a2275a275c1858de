"""Signed, expiring links that let IRC users open Matrix media.

Since authenticated media (spec v1.11, Synapse 1.120) a homeserver serves files only to a
logged-in client, and IRC users cannot log in (reference/spec.md 3.9, checklist 66). So the
bridge hands IRC a URL on its own origin, `{public_url}/_ircbridge/media/{server}/{id}/{name}
?exp=..&sig=..`, and the web layer (bridge/web/media.py) streams the file from the homeserver
with the as_token when the signature and expiry check out. The signing key lives in the
database (meta `media_secret`), so links survive restarts and every bridge sharing the
database agrees on them. Long Matrix messages use the same path: `paste()` uploads the text
to the media repository and returns such a link.

Thread: any. `MediaLinks` holds immutable state and a semaphore; the homeserver client is
thread-safe.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
import unicodedata
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

if TYPE_CHECKING:
    from ..matrix import HomeserverClient
    from ..matrix.wire import JsonObject
    from ..store.models import Store

log = logging.getLogger(__name__)

SECRET_KEY = "media_secret"  # the key of the signing secret in the meta table
LINK_PREFIX = "/_ircbridge/media"
# Bytes of the quoted file name in a link: a link must fit in one IRC line (~400 bytes).
MAX_QUOTED_NAME = 100
DEFAULT_TTL_SECONDS = 30 * 86400
DEFAULT_MAX_BYTES = 50 * 1024 * 1024

# Spec appendix "server name" (hostname, IPv4, [IPv6], optional port) and media id grammar.
SERVER_NAME_RE = re.compile(r"^(?:[A-Za-z0-9.\-]{1,255}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")
MEDIA_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,255}$")
MXC_RE = re.compile(r"^mxc://([^/]+)/([^/?#]+)$")
_UNSAFE_NAME_CHARS = re.compile(r"[/\\\x00-\x1f\x7f]")


def parse_mxc(mxc: str) -> tuple[str, str]:
    """`mxc://server/mediaid` -> (server, media_id); ValueError when it is not one."""
    m = MXC_RE.match(mxc) if isinstance(mxc, str) else None
    if m is None or not valid_media(m.group(1), m.group(2)):
        raise ValueError(f"not an mxc:// URI: {mxc!r}")
    return m.group(1), m.group(2)


def valid_media(server: str, media_id: str) -> bool:
    return bool(SERVER_NAME_RE.match(server) and MEDIA_ID_RE.match(media_id))


def clean_filename(filename: str | None, fallback: str) -> str:
    """A file name safe as one URL path segment: no slashes or control characters, not
    `.`/`..`, at most MAX_QUOTED_NAME bytes once quoted (keeping a short extension);
    `fallback` (the media id) when nothing is left.

    A caption-like body ("look at this!\\nsecond line") becomes a usable, short name too.
    """
    name = filename or ""
    if len(name) > 1024:  # a long caption: keep its start and its (extension) end
        name = name[:960] + name[-64:]
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE_NAME_CHARS.sub("_", name).strip()
    # Bidi overrides and other format characters could disguise the extension; lone
    # surrogates (from a badly decoded body) cannot be put in a URL.
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cf", "Cs"))
    if len(quote(name, safe="")) > MAX_QUOTED_NAME:
        stem, dot, ext = name.rpartition(".")
        if not (dot and stem and 0 < len(quote(ext, safe="")) <= 10):
            stem, ext = name, ""
        room = MAX_QUOTED_NAME - (len(quote(ext, safe="")) + 1 if ext else 0)
        stem = stem[:room]  # every character quotes to at least one byte
        while stem and len(quote(stem, safe="")) > room:
            stem = stem[:-1]
        name = stem.rstrip() + ("." + ext if ext else "")
    if name.strip(".").strip() == "":
        return fallback
    return name


def load_secret(store: Store) -> bytes:
    """The signing secret from the database, made (once, race-free) when missing."""
    from ..store.models import Meta

    value = store.meta(SECRET_KEY)
    if not value:
        Meta.insert(key=SECRET_KEY, value=secrets.token_hex(32)).on_conflict_ignore().execute()
        value = store.meta(SECRET_KEY)
        if not value:
            raise RuntimeError("could not store the media signing secret in the database")
        log.info("made a new media signing secret")
    return value.encode("utf-8")


class Revocations(Protocol):
    """The links of redacted messages (`media_revocations.MediaRevocations` is one; a
    Protocol, since that module imports this one)."""

    def observe(self, event: JsonObject) -> None: ...
    def is_revoked(self, server: str, media_id: str) -> bool: ...


class MediaLinks:
    """Makes and checks signed media links; uploads long messages as text files."""

    def __init__(self, client: HomeserverClient, public_url: str, secret: bytes,
                 ttl_seconds: int = DEFAULT_TTL_SECONDS,
                 max_bytes: int = DEFAULT_MAX_BYTES, *, max_concurrent: int = 4,
                 read_timeout: float = 30.0,
                 revocations: Revocations | None = None) -> None:
        if not secret:
            raise ValueError("a media signing secret is required")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.client = client
        self.public_url = public_url.rstrip("/")
        self._secret = bytes(secret)
        self.ttl_seconds = int(ttl_seconds)
        self.max_bytes = int(max_bytes)
        # How long one download from the homeserver may keep retrying (seconds).
        self.fetch_timeout = 20.0
        # Injectable clock (unix seconds) for tests.
        self.clock = time.time
        # Downloads share gunicorn's request threads with the homeserver's transactions, so
        # only this many may stream at once (a slow reader holds its thread throughout).
        self.max_concurrent = max(1, int(max_concurrent))
        self._slots = threading.BoundedSemaphore(self.max_concurrent)
        # Seconds a download waits for its reader to take the next chunk before the proxy
        # gives up on it, so that slow readers cannot keep every slot.
        self.read_timeout = float(read_timeout)
        # The links of redacted messages (media_revocations.MediaRevocations), or None.
        self.revocations = revocations

    def is_revoked(self, server: str, media_id: str) -> bool:
        """Whether the message that carried this file was redacted."""
        return self.revocations is not None and self.revocations.is_revoked(server, media_id)

    def __repr__(self) -> str:  # never shows the secret
        return f"<MediaLinks {self.public_url} ttl={self.ttl_seconds}s>"

    # ------------------------------------------------------------------ signing
    def _sign(self, server: str, media_id: str, filename: str, exp: int) -> str:
        message = f"{server}/{media_id}/{filename}/{exp}".encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def link(self, mxc: str, filename: str | None = None) -> str:
        """A URL on the bridge that serves `mxc` for ttl_seconds; ValueError for a bad mxc."""
        server, media_id = parse_mxc(mxc)
        name = clean_filename(filename, media_id)
        exp = int(self.clock()) + self.ttl_seconds
        sig = self._sign(server, media_id, name, exp)
        path = "/".join(quote(part, safe="") for part in (server, media_id, name))
        return f"{self.public_url}{LINK_PREFIX}/{path}?exp={exp}&sig={sig}"

    def verify(self, server: str, media_id: str, filename: str, exp: str | int | None,
               sig: str | None) -> bool:
        """True when `sig` signs exactly these parts and `exp` has not passed."""
        if not isinstance(sig, str) or not isinstance(filename, str):
            return False
        if isinstance(exp, bool):
            return False
        if isinstance(exp, str):
            if not exp.isascii() or not exp.isdigit() or len(exp) > 12:
                return False
            exp = int(exp)
        if not isinstance(exp, int):
            return False
        if not valid_media(server, media_id):
            return False
        expected = self._sign(server, media_id, filename, exp)
        # Compare first, in constant time, then look at the clock.
        good = hmac.compare_digest(expected.encode(), sig.lower().encode("utf-8", "replace"))
        return good and exp >= self.clock()

    # ------------------------------------------------------------------ downloads
    def try_acquire(self) -> bool:
        """Take a download slot without waiting; False when all are busy."""
        return self._slots.acquire(blocking=False)

    def release(self) -> None:
        """Give back a slot taken by try_acquire (once the answer is finished)."""
        self._slots.release()

    # ------------------------------------------------------------------ pastes
    def paste(self, text: str, filename: str = "message.txt") -> str:
        """Upload `text` as a UTF-8 text file to the media repository; return its link.

        Raises the homeserver client's errors (e.g. TooLarge, HomeserverUnavailable)."""
        data = text.encode("utf-8")
        mxc = self.client.upload(data, "text/plain; charset=utf-8", filename)
        log.debug("pasted %d bytes as %s", len(data), mxc)
        return self.link(mxc, filename)
