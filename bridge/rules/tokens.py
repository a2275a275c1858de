"""Reading secrets out of `Authorization` headers, and comparing them in constant time.

One reading for every door of the bridge: the homeserver's hs_token (bridge/web/auth.py and
the check command's ping responder in bridge/ops/checks.py), the provisioning secret and the
status page's secret. Pure: no I/O, no Flask.

Threads: any (pure functions).
"""

from __future__ import annotations

import base64
import binascii
import hmac


def credential(header: str | None, scheme: str) -> str | None:
    """The credential of `Authorization: <scheme> <credential>`; None when the header is
    absent, of another scheme, or empty. The scheme is compared without case (RFC 9110)."""
    if header is None:
        return None
    given_scheme, _, value = header.partition(" ")
    if given_scheme.lower() != scheme.lower() or not value.strip():
        return None
    return value.strip()


def bearer(header: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None."""
    return credential(header, "bearer")


def basic_password(header: str | None) -> str | None:
    """The password of `Authorization: Basic <base64 user:password>`: None without one, ""
    when it does not decode (a wrong secret, not a missing one)."""
    value = credential(header, "basic")
    if value is None:
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def same_secret(given: str | None, expected: str) -> bool:
    """True when `given` is the (non-empty) `expected` secret; constant time."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))
