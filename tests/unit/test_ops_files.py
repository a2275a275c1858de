"""The admin-facing files and settings: contrib/, the config reference, [logging]/[metrics]/
[provisioning] keys and the log handler (levels, JSON lines, redaction, rotation).

Where the real tool is installed (systemd-analyze, nginx, logrotate) it checks the file; where
it is not, a small parser checks the keys that matter and the skip says why.
"""

from __future__ import annotations

import configparser
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.config import reference as configref
from bridge.config.ini import ConfigError, LoggingConfig, load
from bridge.devstack.ports import free_port
from bridge.ops import logs
from bridge.ops.checks import check_network
from tests.conftest import write_config

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"


# ---------------------------------------------------------------- config keys
def with_sections(folder: Path, extra: str, logging_lines: str = "") -> Path:
    path = write_config(folder)
    text = path.read_text()
    text = text.replace("[logging]\nlevel = DEBUG", f"[logging]\nlevel = DEBUG\n{logging_lines}")
    path.write_text(text.replace("[permissions]", extra + "\n[permissions]"))
    return path


def test_new_keys_are_optional(tmp_path: Path) -> None:
    config = load(write_config(tmp_path))
    assert config.metrics.bind == ""
    assert config.provisioning.secret == ""
    assert config.logging.levels == ()


def test_levels_bind_and_secret_are_read(tmp_path: Path) -> None:
    path = with_sections(tmp_path, "[metrics]\nbind = 127.0.0.1:9100\n\n[provisioning]\n"
                                   "secret = s3cret-value\n\n[status]\nsecret = other-value\n",
                         "levels = bridge.irc=debug, peewee=WARNING")
    config = load(path)
    assert config.logging.levels == (("bridge.irc", "DEBUG"), ("peewee", "WARNING"))
    assert config.metrics.bind == "127.0.0.1:9100"
    assert config.provisioning.secret == "s3cret-value"
    assert config.status.secret == "other-value"
    assert not config.warnings


def test_bad_levels_and_bind_are_named(tmp_path: Path) -> None:
    path = with_sections(tmp_path, "[metrics]\nbind = nowhere\n", "levels = bridge.irc:DEBUG")
    with pytest.raises(ConfigError) as e:
        load(path)
    text = str(e.value)
    assert "[logging] levels = 'bridge.irc:DEBUG': expected a comma-separated list" in text
    assert "[metrics] bind = 'nowhere': expected HOST:PORT" in text


# ---------------------------------------------------------------- logging
@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger and the loggers the tests touch back as they were."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    names = ("bridge.irc", "bridge.core.bridge", "peewee", "irc.client", "urllib3", "x.quiet")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for handler in list(root.handlers):
        if handler not in saved[0]:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_per_module_levels(tmp_path: Path, root_logging: None) -> None:
    out = tmp_path / "bridge.log"
    logs.setup(LoggingConfig("INFO", "text", str(out),
                             (("bridge.irc", "DEBUG"), ("x.quiet", "ERROR"))))
    logging.getLogger("bridge.irc.connection").debug("irc detail")
    logging.getLogger("bridge.core.bridge").debug("core detail")
    logging.getLogger("x.quiet").warning("hushed")
    logging.getLogger("bridge.core.bridge").info("core news")
    text = out.read_text()
    assert "DEBUG bridge.irc.connection: irc detail" in text
    assert "core detail" not in text and "hushed" not in text
    assert "INFO bridge.core.bridge: core news" in text


def test_json_lines(tmp_path: Path, root_logging: None) -> None:
    out = tmp_path / "bridge.log"
    logs.setup(LoggingConfig("INFO", "json", str(out)))
    log = logging.getLogger("bridge.core.bridge")
    log.info("hello %s", "wörld")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records[0]["msg"] == "hello wörld" and records[0]["level"] == "INFO"
    assert records[0]["logger"] == "bridge.core.bridge" and records[0]["ts"].endswith("Z")
    assert records[1]["level"] == "ERROR" and "ValueError: boom" in records[1]["exc"]


def test_secrets_are_redacted_everywhere(tmp_path: Path, root_logging: None) -> None:
    out = tmp_path / "bridge.log"
    logs.setup(LoggingConfig("DEBUG", "text", str(out)))
    token = "as-token-never-logged-0123456789"
    logs.protect([token, "short"])
    log = logging.getLogger("bridge.core.bridge")
    log.debug("url was http://x/?access_token=%s", token)
    try:
        raise RuntimeError(f"bad token {token}")
    except RuntimeError:
        log.exception("request failed")
    log.info("a short word stays")
    text = out.read_text()
    assert token not in text
    assert text.count("[redacted]") == 2  # the message, and the exception in the traceback
    assert "a short word stays" in text


def test_log_file_survives_logrotate(tmp_path: Path, root_logging: None) -> None:
    """The shipped logrotate file (pointed at a temp folder) rotates a live log, and the
    next line lands in the new file: no copytruncate or signal needed."""
    logrotate = shutil.which("logrotate") or ("/usr/sbin/logrotate"
                                              if Path("/usr/sbin/logrotate").exists() else None)
    if logrotate is None:
        pytest.skip("logrotate is not installed")
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    out = log_dir / "ircbridge.log"
    logs.setup(LoggingConfig("INFO", "text", str(out)))
    logging.getLogger("bridge.core.bridge").info("before rotation")
    conf = (CONTRIB / "ircbridge.logrotate").read_text()
    conf = conf.replace("/var/log/ircbridge", str(log_dir))
    conf = re.sub(r"(?m)^\s*(create|su) .*$", "", conf)  # the ircbridge user does not exist
    (tmp_path / "logrotate.conf").write_text(conf)
    r = subprocess.run([logrotate, "-f", "-s", str(tmp_path / "state"),
                        str(tmp_path / "logrotate.conf")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    logging.getLogger("bridge.core.bridge").info("after rotation")
    assert "before rotation" in (log_dir / "ircbridge.log.1").read_text()
    assert "after rotation" in out.read_text() and "before" not in out.read_text()


# ---------------------------------------------------------------- config reference
def test_config_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "config-reference.md").read_text(encoding="utf-8")
    generated = configref.generate((ROOT / "config.ini").read_text(encoding="utf-8"))
    assert committed == generated, (
        "docs/config-reference.md is stale: run "
        "`python -m bridge.config.reference -o docs/config-reference.md`")


def test_config_reference_covers_every_key() -> None:
    from bridge.config.ini import NETWORK_KEYS, SECTION_KEYS

    text = configref.generate((ROOT / "config.ini").read_text(encoding="utf-8"))
    for section, keys in [*SECTION_KEYS.items(), ("network:NAME", NETWORK_KEYS)]:
        block = text.split(f"## [{section}]\n", 1)[1].split("\n## ", 1)[0]
        for key in keys:
            assert f"| `{key}` |" in block, (section, key)
    assert "| `url` | *(required)* | How the bridge reaches the homeserver's" in text
    assert "| `hs_token` | *(empty)* | Secrets shared with the homeserver." in text


def test_configref_module_runs() -> None:
    r = subprocess.run([sys.executable, "-m", "bridge.config.reference"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (ROOT / "docs" / "config-reference.md").read_text(encoding="utf-8")


def test_comment_parsing_shares_a_block_and_keeps_inline_comments() -> None:
    keys, sections = configref.comments(
        "; preamble\n\n; about a\n[a]\n; two keys\nx = 1\ny = 2\n\nz = 3 ; inline\n"
        "[network:foo]\nhost = h\n")
    assert sections == {"a": "about a"}
    assert keys[("a", "x")] == keys[("a", "y")] == "two keys"
    assert keys[("a", "z")] == "inline"
    assert keys[("network:NAME", "host")] == ""


# ---------------------------------------------------------------- contrib/
def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((CONTRIB / "ircbridge.service").read_text())
    return parser


def test_systemd_unit_has_what_the_bridge_needs() -> None:
    unit = _unit()
    service = unit["Service"]
    assert service["ExecStart"].split()[-1] == "run"
    assert "-c /etc/ircbridge/config.ini" in service["ExecStart"]
    assert service["ExecStartPre"].split()[-1] == "check-config"
    assert service["Type"] == "notify"  # gunicorn's master reports READY=1
    assert service["User"] and service["Restart"] == "on-failure"
    assert int(service["TimeoutStopSec"]) > 10  # more than gunicorn's graceful_timeout
    assert "ExecReload" not in service  # a reload would reconnect every IRC user
    assert int(service["LimitNOFILE"]) >= 4096
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed; the unit's keys were checked by "
                    "test_systemd_unit_has_what_the_bridge_needs")
    # verify wants ExecStart's program to exist: point it at the installed command.
    command = shutil.which("ircbridge") or str(Path(sys.executable))
    text = (CONTRIB / "ircbridge.service").read_text().replace("/opt/ircbridge/bin/ircbridge",
                                                               command)
    unit = tmp_path / "ircbridge.service"
    unit.write_text(text)
    r = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True,
                       text=True, timeout=120)
    problems = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not problems, problems


def test_nginx_example_is_valid(tmp_path: Path) -> None:
    text = (CONTRIB / "nginx.conf").read_text()
    assert text.count("{") == text.count("}")
    assert "server 127.0.0.1:9999;" in text and "client_max_body_size" in text
    assert re.search(r"location = /metrics \{[^}]*deny all;", text)
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if nginx is None:
        pytest.skip("nginx is not installed; only the braces and key lines were checked")
    port = free_port()
    site = text.replace("listen 9998;", f"listen 127.0.0.1:{port};")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/logs/error.log;\n"
        "events {}\n"
        f"http {{\n access_log off;\n client_body_temp_path {tmp_path}/body;\n"
        f" include {tmp_path}/site.conf;\n}}\n")
    r = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_logrotate_example_parses(tmp_path: Path) -> None:
    text = (CONTRIB / "ircbridge.logrotate").read_text()
    assert "/var/log/ircbridge/*.log {" in text
    assert not re.search(r"(?m)^\s*copytruncate", text)  # the handler reopens a moved file
    logrotate = shutil.which("logrotate") or ("/usr/sbin/logrotate"
                                              if Path("/usr/sbin/logrotate").exists() else None)
    if logrotate is None:
        pytest.skip("logrotate is not installed")
    conf = re.sub(r"(?m)^\s*(create|su) .*$", "", text)
    conf = conf.replace("/var/log/ircbridge", str(tmp_path))
    (tmp_path / "a.log").write_text("x\n")
    (tmp_path / "lr.conf").write_text(conf)
    r = subprocess.run([logrotate, "-d", "-s", str(tmp_path / "state"), str(tmp_path / "lr.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "error" not in r.stderr.lower(), r.stderr


def test_gunicorn_conf_matches_what_ircbridge_run_uses(tmp_path: Path) -> None:
    """The file admins use and `ircbridge run` apply the same process model."""
    from bridge.cli.main import gunicorn_settings

    path = write_config(tmp_path)
    code = (CONTRIB / "gunicorn.conf.py").read_text()
    namespace: dict[str, object] = {"__file__": str(CONTRIB / "gunicorn.conf.py")}
    old = os.environ.get("IRCBRIDGE_CONFIG")
    os.environ["IRCBRIDGE_CONFIG"] = str(path)
    try:
        exec(compile(code, "gunicorn.conf.py", "exec"), namespace)  # noqa: S102
    finally:
        if old is None:
            os.environ.pop("IRCBRIDGE_CONFIG", None)
        else:
            os.environ["IRCBRIDGE_CONFIG"] = old
    expected = gunicorn_settings(load(path))
    for key, value in expected.items():
        if key == "worker_exit":
            assert callable(namespace["worker_exit"])
            continue
        assert namespace[key] == value, key
    assert namespace["workers"] == 1 and namespace["preload_app"] is False
    assert namespace["max_requests"] == 0 and namespace["worker_class"] == "gthread"


def test_gunicorn_conf_explains_a_missing_config(tmp_path: Path) -> None:
    gunicorn = shutil.which("gunicorn")
    if gunicorn is None:
        pytest.skip("gunicorn is not on PATH")
    r = subprocess.run([gunicorn, "-c", str(CONTRIB / "gunicorn.conf.py"), "--check-config"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60,
                       env={**os.environ, "IRCBRIDGE_CONFIG": str(tmp_path / "nope.ini"),
                            "PYTHONPATH": str(ROOT)})
    assert r.returncode != 0
    assert "nope.ini: no such file" in r.stderr
    assert "IRCBRIDGE_CONFIG" in r.stderr


# ---------------------------------------------------------------- checks without a stack
def test_network_check_names_a_closed_port(tmp_path: Path) -> None:
    port = free_port()
    net = load(write_config(tmp_path, irc_port=port)).networks[0]
    result = check_network(net)
    assert not result.ok
    assert result.line().startswith(f"FAIL irc:local: cannot connect to 127.0.0.1:{port}")
