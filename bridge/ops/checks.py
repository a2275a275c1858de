"""The startup checks, once, for `ircbridge check-config --online`.

Why a module of its own: an admin wants to know before (or without) starting the bridge
whether the homeserver, the registration, the database and the IRC networks are right, with
one line each and the fix. Every check is a plain function of the config and a client, so a
test can call it against a real homeserver; none raises. The messages are the ones the
running bridge logs for the same failure (docs/operations.md lists them with their fixes).

The AS ping needs something answering at [appservice] url: when the bridge is not running,
`ping_responder` listens on [appservice] bind for the time of the check and answers the ping
only with the right hs_token, so the check proves the hs_token too.

Thread: the main thread of the CLI (`ircbridge check-config --online`); `ping_responder`
answers on a thread of its own for the time of the check.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import requests

from ..config.ini import Config, NetworkConfig
from ..irc import tls as irc_tls
from ..matrix import (
    HomeserverClient,
    HomeserverUnavailable,
    MatrixError,
    RetryPolicy,
    UnknownToken,
)
from ..rules import tokens

log = logging.getLogger(__name__)

# `ircbridge check` reports what it finds: one try per call, answered within 10 s.
CHECK = RetryPolicy(attempts=1, backoff_cap=0.0, timeout=10.0)


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict. `code`: a short state for the bridge's health report (an
    errcode, `unreachable`...), empty when the check passed."""

    name: str
    ok: bool
    message: str
    code: str = ""

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.message}"


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _reason(e: BaseException) -> str:
    if isinstance(e, MatrixError):
        return str(e)
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}".rstrip(": ")


def check_homeserver(config: Config, session: requests.Session | None = None,
                     timeout: float = 10.0) -> CheckResult:
    """GET /_matrix/client/versions without a token (a bad token must not hide this step)."""
    session = session or requests.Session()
    session.trust_env = False
    url = f"{config.homeserver.url}/_matrix/client/versions"
    try:
        response = session.get(url, timeout=timeout)
        response.raise_for_status()
        versions = response.json()
        if not isinstance(versions, dict):
            raise ValueError("the answer is not a JSON object")
    except Exception as e:  # noqa: BLE001 - every failure is a line for the admin
        return CheckResult("homeserver", False,
                           f"homeserver {config.homeserver.url} unreachable ({_reason(e)}); "
                           "check [homeserver] url and that the homeserver runs")
    spec = versions.get("versions") or []
    latest = spec[-1] if isinstance(spec, list) and spec else "?"
    return CheckResult("homeserver", True,
                       f"{config.homeserver.url} answers (Matrix {latest})")


def check_as_token(config: Config, client: HomeserverClient,
                   policy: RetryPolicy | None = None) -> CheckResult:
    """GET /account/whoami with the as_token: the homeserver loaded our registration.

    Also the bridge's own startup check (bridge.core.startup), with `policy` ONCE: it
    retries by itself, with its own pauses."""
    try:
        whoami = client.whoami(policy=policy)
    except UnknownToken:
        return CheckResult("as_token", False,
                           "the homeserver refused the as_token: is "
                           f"{config.appservice.registration} listed in its "
                           "app_service_config_files, and was it restarted after that?",
                           "as_token refused")
    except HomeserverUnavailable as e:
        return CheckResult("as_token", False,
                           f"homeserver {safe_url(config.homeserver.url)} unreachable "
                           f"({_reason(e)})", "unreachable")
    except MatrixError as e:
        return CheckResult("as_token", False, f"whoami failed: {_reason(e)}",
                           f"error {e.errcode}")
    except Exception as e:  # noqa: BLE001 - e.g. connection refused with retry off
        return CheckResult("as_token", False,
                           f"homeserver {safe_url(config.homeserver.url)} unreachable "
                           f"({_reason(e)})", "unreachable")
    user_id = whoami.get("user_id")
    if user_id != config.bot_user_id:
        return CheckResult("as_token", False,
                           f"the homeserver says the as_token belongs to {user_id}, expected "
                           f"{config.bot_user_id}: check sender_localpart and [homeserver] "
                           "domain, then regenerate the registration", "wrong user")
    return CheckResult("as_token", True, f"accepted for {user_id}")


PING_FIXES: dict[str, Callable[[Config, MatrixError], str]] = {
    "M_BAD_STATUS": lambda c, e: (
        f"the homeserver reached the bridge but got HTTP {e.body.get('status')}: check "
        "hs_token in config.ini and the registration file"),
    "M_CONNECTION_FAILED": lambda c, e: (
        f"the homeserver cannot reach the bridge at {c.appservice.url} (M_CONNECTION_FAILED): "
        "check [appservice] url and bind"),
    "M_CONNECTION_TIMEOUT": lambda c, e: (
        f"the homeserver cannot reach the bridge at {c.appservice.url} "
        "(M_CONNECTION_TIMEOUT): check [appservice] url and bind"),
    "M_FORBIDDEN": lambda c, e: (
        f"the homeserver refused the ping: wrong as_token or [appservice] id "
        f"{c.appservice.id!r}"),
    "M_URL_NOT_SET": lambda c, e: (
        "the registration file has no url: the homeserver will not push events; set "
        "[appservice] url and regenerate it"),
}


def check_ping(config: Config, client: HomeserverClient) -> CheckResult:
    """POST /appservice/{id}/ping: the homeserver can push to [appservice] url."""
    try:
        result = client.ping(config.appservice.id, f"check-{time.time():.0f}")
    except MatrixError as e:
        if e.errcode == "M_UNRECOGNIZED":
            return CheckResult("ping", True, "the homeserver has no AS ping (Matrix < v1.7); "
                                             "skipped")
        fix = PING_FIXES.get(e.errcode)
        return CheckResult("ping", False, fix(config, e) if fix else f"AS ping failed: {e}",
                           e.errcode or str(e.status))
    except Exception as e:  # noqa: BLE001
        return CheckResult("ping", False, f"AS ping failed: {_reason(e)}", type(e).__name__)
    return CheckResult("ping", True, f"the homeserver reached {config.appservice.url} "
                                     f"({result.get('duration_ms')} ms)")


class SchemaStore(Protocol):
    """What the database check uses of a store (`store.models.Store` is one)."""

    def schema_version(self) -> int | None: ...
    def close(self) -> None: ...


def check_database(config: Config, store_factory: Callable[[str], SchemaStore] | None = None,
                   ) -> CheckResult:
    """The database answers and its schema is the one this bridge needs."""
    from ..store.models import SCHEMA_VERSION, Store

    url = config.database.url
    shown = safe_url(url)
    if url.startswith("sqlite:///") and store_factory is None:
        path = Path(url[len("sqlite:///"):])
        if not path.exists():
            return CheckResult("database", True,
                               f"{shown}: no file yet; the schema is created at first start")
    try:
        store = (store_factory or Store)(url)
    except Exception as e:  # noqa: BLE001
        return CheckResult("database", False, f"cannot open {shown}: {_reason(e)}")
    try:
        version = store.schema_version()
    except Exception as e:  # noqa: BLE001
        return CheckResult("database", False, f"cannot open {shown}: {_reason(e)}")
    finally:
        try:
            store.close()
        except Exception:  # noqa: BLE001
            log.debug("closing the store failed", exc_info=True)
    if version is None:
        return CheckResult("database", True,
                           f"{shown}: empty; the schema is created at first start")
    if version < SCHEMA_VERSION:
        return CheckResult("database", False,
                           f"the database schema is at version {version} and this bridge "
                           f"needs {SCHEMA_VERSION}: run `ircbridge -c {config.path.name} "
                           "migrate` first")
    if version > SCHEMA_VERSION:
        return CheckResult("database", False,
                           f"the database schema is at version {version}, newer than this "
                           f"bridge ({SCHEMA_VERSION}): upgrade ircbridge")
    return CheckResult("database", True, f"{shown}: schema current (version {version})")


def check_network(network: NetworkConfig, timeout: float | None = None) -> CheckResult:
    """A TCP connect to the network's server (and the TLS handshake when tls = true)."""
    name = f"irc:{network.name}"
    where = f"{network.host}:{network.port}"
    wait = timeout if timeout is not None else network.connect_timeout
    try:
        sock = socket.create_connection((network.host, network.port), timeout=wait)
    except OSError as e:
        return CheckResult(name, False, f"cannot connect to {where}: {_reason(e)}; check host "
                                        "and port, and the firewall")
    try:
        if network.tls:
            context = irc_tls.client_context(verify=network.tls_verify)
            try:
                with context.wrap_socket(sock, server_hostname=network.host) as tls:
                    version = tls.version()
            except (OSError, ssl.SSLError) as e:
                return CheckResult(name, False,
                                   f"{where}: TLS handshake failed ({_reason(e)}); is the port "
                                   "a TLS port? set tls = false for a plain one, or "
                                   "tls_verify = false for a self-signed certificate")
            return CheckResult(name, True, f"{where} reachable ({version})")
        return CheckResult(name, True, f"{where} reachable (TCP)")
    finally:
        sock.close()


@contextmanager
def ping_responder(config: Config) -> Iterator[bool]:
    """Answer the homeserver's AS ping on [appservice] bind while the bridge is not running.

    Yields True when it listens, False when the port is taken (the bridge itself answers).
    """
    expected = config.appservice.hs_token

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            parts = urlsplit(self.path)
            token = tokens.bearer(self.headers.get("Authorization"))
            if token is None:
                token = (parse_qs(parts.query).get("access_token") or [""])[0]
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(min(length, 65536))
            if parts.path != "/_matrix/app/v1/ping":
                self._answer(404, b'{"errcode":"M_UNRECOGNIZED","error":"Unrecognized"}')
            elif not tokens.same_secret(token, expected):
                self._answer(403, b'{"errcode":"M_FORBIDDEN","error":"bad hs_token"}')
            else:
                self._answer(200, b"{}")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # the request line may carry ?access_token=

    try:
        server = ThreadingHTTPServer((config.appservice.bind_host, config.appservice.bind_port),
                                     Handler)
    except OSError:
        yield False
        return
    thread = threading.Thread(target=server.serve_forever, name="ping-responder", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run_online(config: Config, client: HomeserverClient | None = None,
               *, answer_ping: bool = True) -> list[CheckResult]:
    """Every startup check once, in the order the bridge depends on them.

    A check that cannot mean anything after an earlier failure is reported as failed and
    "not checked", so the output always has one line per check.
    """
    results = [check_homeserver(config)]
    own_client = client is None and bool(config.appservice.as_token)
    if own_client:
        client = HomeserverClient(config.homeserver.url, config.appservice.as_token,
                                  server_name=config.homeserver.domain,
                                  policy=CHECK)
    try:
        if client is None:
            results.append(CheckResult("as_token", False, "empty: run `ircbridge -c "
                                       f"{config.path.name} generate-registration`"))
        elif not results[0].ok:
            results.append(CheckResult("as_token", False,
                                       "not checked: the homeserver is unreachable"))
        else:
            results.append(check_as_token(config, client))
        if client is None or not results[-1].ok:
            results.append(CheckResult("ping", False, f"not checked: {results[-1].name} failed"))
        elif answer_ping:
            with ping_responder(config):
                results.append(check_ping(config, client))
        else:
            results.append(check_ping(config, client))
    finally:
        if own_client and client is not None:
            client.close()
    results.append(check_database(config))
    results.extend(check_network(network) for network in config.networks)
    return results
