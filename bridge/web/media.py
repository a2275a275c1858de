"""The media proxy: serves a Matrix file to whoever holds a signed link from bridge.media.

IRC users cannot authenticate to the homeserver, so the signature and its expiry are the
only check here. The file is streamed from the homeserver's authenticated media API with the
as_token (in the Authorization header, never a URL) and passed through with a size cap.

A link whose message was redacted answers 410 (bridge.core.media_revocations). A download holds
one of a few slots while it streams; a reader that does not take the next chunk within
`[media] read_timeout` seconds is cut off (a send timeout on the client's socket), so slow
readers cannot keep every slot. Request threads run this.

The files are chosen by Matrix users and served from the bridge's own origin, so only types
a browser cannot run as a page are shown inline (the list Synapse uses); HTML, SVG, XML and
anything unknown come as attachments, with `nosniff` and a sandboxing CSP on every answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from urllib.parse import quote

import requests
from flask import Blueprint, Response, request

from ..core.media import MediaLinks
from ..matrix import HomeserverUnavailable, MatrixError, NotFound
from .context import current_media
from .errors import matrix_error

log = logging.getLogger(__name__)

bp = Blueprint("media", __name__)

CHUNK = 64 * 1024
# Synapse's INLINE_CONTENT_TYPES (synapse/media/_base.py): nothing here runs script.
INLINE_TYPES = frozenset({
    "text/css", "text/plain", "text/csv", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave",
    "audio/wav", "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})
CSP = ("sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
       "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';")


def _error(status: int, errcode: str, text: str) -> Response:
    response = matrix_error(status, errcode, text)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/_ircbridge/media/<server>/<media_id>/<path:filename>", methods=["GET"])
def download(server: str, media_id: str, filename: str) -> Response:
    media = current_media()
    if not media.verify(server, media_id, filename, request.args.get("exp"),
                        request.args.get("sig")):
        log.info("media %s/%s: missing, bad or expired signature", server, media_id)
        return _error(403, "M_FORBIDDEN", "This link is invalid or has expired")
    if media.is_revoked(server, media_id):
        log.info("media %s/%s: its message was redacted", server, media_id)
        return _error(410, "M_NOT_FOUND", "The message with this file was removed")

    if not media.try_acquire():
        log.warning("media %s/%s: all %d download slots busy", server, media_id,
                    media.max_concurrent)
        response = _error(503, "M_LIMIT_EXCEEDED", "Too many downloads at once; try again")
        response.headers["Retry-After"] = "5"
        return response
    try:
        response = _fetch(media, server, media_id, filename)
    except BaseException:
        media.release()
        raise
    response.call_on_close(media.release)
    _limit_slow_readers(response, media.read_timeout)
    return response


def _limit_slow_readers(response: Response, seconds: float) -> None:
    """Give each send to the client `seconds` at most (gunicorn's or Werkzeug's socket):
    a stalled reader then fails the send, the answer is closed and its slot comes back."""
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    if sock is None:
        return
    try:
        before = sock.gettimeout()
        sock.settimeout(seconds)
    except OSError:
        return

    def restore() -> None:
        try:
            sock.settimeout(before)
        except OSError:
            pass

    response.call_on_close(restore)


def _fetch(media: MediaLinks, server: str, media_id: str, filename: str) -> Response:
    deadline = time.monotonic() + media.fetch_timeout
    try:
        upstream = media.client.download(server, media_id, deadline=deadline)
    except NotFound:
        return _error(404, "M_NOT_FOUND", "The homeserver has no such file")
    except HomeserverUnavailable as e:
        log.warning("media %s/%s: homeserver unreachable (%s)", server, media_id, e)
        return _error(502, "M_UNKNOWN", "The homeserver could not be reached")
    except MatrixError as e:
        log.warning("media %s/%s: homeserver refused (%s)", server, media_id, e)
        if e.status == 404:
            return _error(404, "M_NOT_FOUND", "The homeserver has no such file")
        return _error(502, "M_UNKNOWN", f"The homeserver refused the download ({e.errcode})")

    try:
        return _relay(upstream, filename, media.max_bytes, f"{server}/{media_id}")
    except BaseException:
        upstream.close()
        raise


def _relay(upstream: requests.Response, filename: str, max_bytes: int, what: str) -> Response:
    content_type = upstream.headers.get("Content-Type") or "application/octet-stream"
    mime = content_type.split(";", 1)[0].strip().lower()
    encoded = upstream.headers.get("Content-Encoding", "identity").strip().lower()
    length: int | None = None
    declared = upstream.headers.get("Content-Length", "")
    if declared.strip().isdigit():
        length = int(declared)
        if length > max_bytes:
            upstream.close()
            log.info("media %s: %d bytes is over max_bytes", what, length)
            return _error(413, "M_TOO_LARGE", f"The file is larger than {max_bytes} bytes")
    if encoded not in ("", "identity"):
        length = None  # requests decodes the body, so the declared length is not ours

    # Not direct_passthrough: Werkzeug then returns the bare generator and never runs the
    # response's close callbacks (upstream.close here, the download slot in the view).
    response = Response(_body(upstream, max_bytes, length, what), status=200,
                        content_type=content_type)
    response.call_on_close(upstream.close)
    if length is not None:
        response.headers["Content-Length"] = str(length)
    inline = mime in INLINE_TYPES
    response.headers["Content-Disposition"] = content_disposition(
        "inline" if inline else "attachment", filename
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


def _body(upstream: requests.Response, max_bytes: int, length: int | None,
          what: str) -> Iterator[bytes]:
    """The file's bytes; never more than `length` (when declared) or `max_bytes`."""
    limit = max_bytes if length is None else min(length, max_bytes)
    sent = 0
    try:
        for chunk in upstream.iter_content(CHUNK):
            if not chunk:
                continue
            if sent + len(chunk) > limit:
                if length is None:
                    # No length was promised, so the client can only see a cut-off answer.
                    log.warning("media %s: over max_bytes while streaming; cut off", what)
                    raise OSError("media file over max_bytes")
                chunk = chunk[: limit - sent]
            sent += len(chunk)
            yield chunk
            if sent >= limit and length is not None:
                break
    except requests.RequestException as e:
        log.warning("media %s: the homeserver stopped sending (%s)", what, type(e).__name__)
        raise OSError("media download interrupted") from e
    finally:
        upstream.close()


def content_disposition(kind: str, filename: str) -> str:
    """`inline; filename="ascii"; filename*=UTF-8''...` (RFC 6266), safe for any name."""
    ascii_name = "".join(
        c if 0x20 <= ord(c) < 0x7F and c not in '"\\;%' else "_" for c in filename
    ) or "file"
    value = f'{kind}; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value
