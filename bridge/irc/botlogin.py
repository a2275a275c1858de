"""The bot's own login from its [network] keys: SASL PLAIN or EXTERNAL, and autocmds.

Why a module: puppets get their login from what their users stored (`apply_settings` in
network.py); the bot's comes from config.ini, and the certificate is read from its PEM
file(s) here, when the bot connection is made. Runs on the IRC thread (a small local read).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .connection import IrcConnection, Sasl

if TYPE_CHECKING:
    from ..config.ini import NetworkConfig

log = logging.getLogger(__name__)


def apply_bot_login(conn: IrcConnection, config: NetworkConfig) -> None:
    """Give the (not yet started) bot connection its SASL login and autocmds."""
    if config.client_cert is not None and config.tls:
        try:
            cert_pem = config.client_cert.read_text()
            key_pem = config.client_key.read_text() if config.client_key else cert_pem
        except OSError as e:
            log.error("%s: cannot read the bot's client certificate: %s", config.name, e)
        else:
            conn.client_cert = (cert_pem, key_pem)
            conn.sasl = Sasl("EXTERNAL")
    if config.sasl_password and conn.sasl is None:
        conn.sasl = Sasl("PLAIN", config.sasl_username or conn.wanted_nick,
                         config.sasl_password)
    conn.autocmds = list(config.autocmds)
