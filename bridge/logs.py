"""Logging set up from [logging]: level, text or JSON lines, stderr or a file."""

from __future__ import annotations

import json
import logging
import sys
import time

from .config import LoggingConfig


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup(config: LoggingConfig) -> None:
    handler: logging.Handler
    handler = logging.FileHandler(config.file) if config.file else logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_ircbridge", False):
            root.removeHandler(existing)
    handler._ircbridge = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(config.level)
    # Library chatter that would otherwise log every IRC line or HTTP connection.
    logging.getLogger("irc.client").setLevel(max(logging.INFO, root.level))
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("peewee").setLevel(max(logging.INFO, root.level))
