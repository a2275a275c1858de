"""The one TLS client setup of the bridge: context, optional client certificate, handshake.

Used by the IRC connections (bridge/irc/connection.py), the startup reachability check
(bridge/ops/checks.py) and the dev stack's test clients, so that `tls_verify = false` and
CertFP mean the same everywhere.

Threads: whichever thread opens the socket (the IRC connect pool, the checks, test code);
nothing here is shared.
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile


def client_context(*, verify: bool, client_cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    """A client context; `verify=False` skips the certificate and host name checks.

    `client_cert` is (certificate PEM, key PEM) for SASL EXTERNAL / CertFP.
    """
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        _load_client_cert(context, *client_cert)
    return context


def connect(host: str, port: int, *, tls: bool, verify: bool, timeout: float,
            client_cert: tuple[str, str] | None = None) -> socket.socket:
    """A blocking TCP connection with TCP_NODELAY, TLS-wrapped when `tls`; closed on failure."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            context = client_context(verify=verify, client_cert=client_cert)
            sock = context.wrap_socket(sock, server_hostname=host)
        return sock
    except BaseException:
        sock.close()
        raise


def _load_client_cert(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """ssl wants files: write the pair to a private temp file just long enough to load it."""
    fd, path = tempfile.mkstemp(prefix="ircbridge-cert-", suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(cert_pem.strip() + "\n" + key_pem.strip() + "\n")
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
