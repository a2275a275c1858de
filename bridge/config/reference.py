"""Print the config reference (Markdown) from bridge/config/ini.py and the shipped config.ini.

Why generated: the keys and defaults live in `config.SECTION_KEYS` / `NETWORK_KEYS` and the
explanations in the comments of the shipped config.ini; a hand-written table would drift from
both. `python -m bridge.config.reference -o docs/config-reference.md` rewrites the committed file,
and a test checks that the committed file equals this output.

A key's description is the comment block right above it in config.ini; keys that follow it
without a blank line or another comment share it (as_token and hs_token). Keys the shipped
file does not explain yet take their text from `FALLBACK`.

Thread: the main thread of the CLI (or of the test that compares the committed file); pure
apart from reading the shipped config.ini.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import ini as config_module

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent.parent / "config.ini"
NETWORK_SECTION = "network:NAME"

# Descriptions for keys without a comment in the shipped config.ini (same words as the
# comment lines proposed for it, so adding them there changes nothing here).
FALLBACK: dict[tuple[str, str], str] = {
    ("logging", "levels"): "Per-module levels, e.g. bridge.irc=DEBUG, peewee=WARNING "
                           "(comma-separated logger=LEVEL).",
    ("metrics", "bind"): "Empty: /metrics is served on the bridge's own port. HOST:PORT: on "
                         "a port of its own instead (not on the bridge's).",
    ("provisioning", "secret"): "Secret of the provisioning API (Authorization: Bearer only). "
                                "Empty: the API answers 403.",
    ("status", "secret"): "Secret for the status page and for /health's details. Empty: the "
                          "page answers 403 and /health says only ok / not ok.",
    (NETWORK_SECTION, "host"): "The IRC server's host name or address.",
    (NETWORK_SECTION, "port"): "The IRC server's port.",
    (NETWORK_SECTION, "tls"): "Connect with TLS (true) or in plain text (false).",
    (NETWORK_SECTION, "display_name"): "The network's name as Matrix clients show it.",
}
SECTION_FALLBACK: dict[str, str] = {
    "homeserver": "The Matrix homeserver the bridge is an application service of.",
    "appservice": "The bridge as an application service: its id, address, tokens and threads.",
    "database": "Where the bridge keeps its state and its two durable queues.",
    "logging": "What is logged, how, and where.",
    "metrics": "Prometheus metrics (see docs/operations.md for the list).",
    "status": "The status page at / and the details of /health.",
    "provisioning": "Secrets of the admin-facing HTTP endpoints.",
}
SPECIAL_DEFAULTS: dict[tuple[str, str], str] = {
    (NETWORK_SECTION, "port"): "`6697` (`6667` when tls = false)",
    (NETWORK_SECTION, "display_name"): "*(the network's NAME)*",
    (NETWORK_SECTION, "user_template"): "`irc_<name>_{nick}` (name in lower case)",
    (NETWORK_SECTION, "alias_template"): "`irc_<name>_{channel}` (name in lower case)",
    (NETWORK_SECTION, "bot_nick"): "*(sender_localpart)*",
}

_SECTION_RE = re.compile(r"^\s*\[([^\]]+)\]")
_KEY_RE = re.compile(r"^\s*([^;=\s][^=]*?)\s*=(.*)$")


def comments(text: str) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    """(key descriptions by (section, key), section descriptions) from config.ini comments.

    Every [network:X] section is reported as [network:NAME].
    """
    keys: dict[tuple[str, str], str] = {}
    sections: dict[str, str] = {}
    section = ""
    block: list[str] = []
    current = ""  # the block the previous key used, shared by keys right after it
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            block, current = [], ""
            continue
        if line.startswith(";") or line.startswith("#"):
            block.append(line.lstrip(";#").strip())
            current = ""
            continue
        m = _SECTION_RE.match(line)
        if m:
            section = m.group(1).strip()
            if section.startswith("network:"):
                section = NETWORK_SECTION
            if block:
                sections.setdefault(section, " ".join(block))
            block, current = [], ""
            continue
        km = _KEY_RE.match(line)
        if km is None:
            continue
        key, value = km.group(1).strip(), km.group(2)
        if block:
            current = " ".join(block)
            block = []
        text_for_key = current
        _, sep, inline = value.partition(" ;")
        if sep and inline.strip():
            text_for_key = f"{text_for_key} {inline.strip()}".strip()
        keys.setdefault((section, key), text_for_key)
    return keys, sections


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(section: str, key: str, value: object) -> str:
    special = SPECIAL_DEFAULTS.get((section, key))
    if special is not None:
        return special
    if value is config_module.REQUIRED:
        return "*(required)*"
    if value is None or value == "":
        return "*(empty)*"
    return f"`{value}`"


def _table(section: str, keys: dict[str, object],
           described: dict[tuple[str, str], str]) -> list[str]:
    rows = ["| Key | Default | Description |", "| --- | --- | --- |"]
    for key, value in keys.items():
        text = described.get((section, key)) or FALLBACK.get((section, key), "")
        rows.append(f"| `{key}` | {_cell(_default(section, key, value))} | {_cell(text)} |")
    return rows


def generate(config_ini: str) -> str:
    """The whole reference as Markdown, ending with a newline."""
    described, section_text = comments(config_ini)
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m bridge.config.reference -o docs/config-reference.md`; "
        "do not edit. -->",
        "",
        "Keys and defaults come from `bridge/config/ini.py`, descriptions from the comments of "
        "the shipped `config.ini`. Only `;` starts a comment (channel names start with `#`) "
        "and only `=` separates a key from its value. Relative paths are relative to the "
        "folder of config.ini.",
        "",
        f"Environment: `{config_module.ENV_CONFIG}` names the config file where no `-c` is "
        f"given (and for WSGI hosting); `{config_module.ENV_DATABASE_URL}` overrides "
        "`[database] url`.",
        "",
    ]
    sections: list[tuple[str, dict[str, object]]] = list(config_module.SECTION_KEYS.items())
    sections.append((NETWORK_SECTION, dict(config_module.NETWORK_KEYS)))
    for section, keys in sections:
        out.append(f"## [{section}]")
        out.append("")
        intro = section_text.get(section) or SECTION_FALLBACK.get(section, "")
        if intro:
            out.extend([intro, ""])
        out.extend(_table(section, keys, described))
        out.append("")
    out.extend([
        "## [permissions]",
        "",
        section_text.get("permissions") or described.get(("permissions", "*"))
        or "Who may use the bridge.",
        "",
        "Each line is `WHO = ROLE`: WHO is a Matrix id (`@alice:example.org`), a server name "
        f"(`example.org`) or `*`; ROLE is one of {', '.join(config_module.ROLES)}. The most "
        "specific match wins (id, then server, then `*`). Without the section, everyone is "
        "a user.",
        "",
    ])
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.config.reference",
                                     description="Print the config reference as Markdown.")
    parser.add_argument("--config-ini", type=Path, default=SHIPPED_CONFIG,
                        help="the commented config.ini to take descriptions from "
                             "(default: the shipped one)")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        text = generate(args.config_ini.read_text(encoding="utf-8"))
    except OSError as e:
        print(f"cannot read {args.config_ini}: {e}", file=sys.stderr)
        return 1
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
