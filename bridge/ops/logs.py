"""Logging set up from [logging]: level, per-module levels, text or JSON lines, stderr or a file.

Why the redaction filter: tokens and secrets must never reach a log file, whoever wrote the
line (our code, a library's exception text, a traceback). `protect()` registers the secrets
of the running config; every record that reaches our handler is checked and scrubbed, and
the scrubbing itself is visible (`[redacted]`) so that tests can tell a leak was attempted.

Thread: set up once on the main thread at start; the redaction filter runs on any thread that
logs.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import threading
import time
from collections.abc import Iterable

from ..config.ini import LoggingConfig

REDACTED = "[redacted]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC), level, logger, thread, msg, exc."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            data["exc"] = record.exc_text
        elif record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class RedactFilter(logging.Filter):
    """Replaces every registered secret in a record's message and traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            # Short values would redact ordinary words; real tokens are long.
            fresh = {s for s in secrets if s and len(s) >= 8}
            self._secrets = tuple(sorted(set(self._secrets) | fresh, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's own problem
            return True
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


_redact = RedactFilter()


def protect(secrets: Iterable[str]) -> None:
    """Never let these strings (tokens, passwords) reach the log; safe to call again."""
    _redact.add(secrets)


def scrub(text: str) -> str:
    """`text` with every protected secret replaced (for messages shown outside the log)."""
    return _redact.scrub(text)


def make_handler(config: LoggingConfig) -> logging.Handler:
    handler: logging.Handler
    if config.file:
        # Watched: logrotate may move the file away; the next line reopens the path.
        handler = logging.handlers.WatchedFileHandler(config.file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_redact)
    return handler


_HANDLER_NAME = "ircbridge"  # marks the root handler setup() installed, to replace it


def setup(config: LoggingConfig) -> None:
    handler = make_handler(config)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
            existing.close()
    handler.set_name(_HANDLER_NAME)
    root.addHandler(handler)
    root.setLevel(config.level)
    # Library chatter that would otherwise log every IRC line or HTTP connection.
    logging.getLogger("irc.client").setLevel(max(logging.INFO, root.level))
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("peewee").setLevel(max(logging.INFO, root.level))
    # `levels = bridge.irc=DEBUG, peewee=WARNING` wins over everything above.
    for name, level in config.levels:
        logging.getLogger(name).setLevel(level)
