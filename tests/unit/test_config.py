"""config.ini: validation that names every problem, and the registration round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bridge.cli.main import main
from bridge.config import ini as config_module
from bridge.rules.permissions import role_of
from tests.conftest import write_config

SHIPPED = Path(__file__).resolve().parents[2] / "config.ini"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=60)


def test_shipped_config_is_valid_once_tokens_are_generated(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text(SHIPPED.read_text())
    assert main(["-c", str(path), "generate-registration"]) == 0
    config = config_module.load(path)
    assert config.homeserver.url == "http://127.0.0.1:8008"
    assert config.networks[0].channels == ("#matrix",)
    assert config.database.url == f"sqlite:///{tmp_path / 'ircbridge.db'}"


def test_every_problem_is_reported_at_once_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.ini"
    path.write_text(
        "[homeserver]\nurl = ftp://nowhere\n"
        "[appservice]\nurl = http://127.0.0.1:9999\nthreads = lots\nbind = nohost\n"
        "[database]\nurl = mysql://x\n"
        "[network:x]\nport = 99999\nchannels = matrix, #ok\nuser_template = irc_{nik}\n"
        "[permissions]\n@a:b = superuser\n"
    )
    result = run_cli("-c", str(path), "check-config")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for expected in (
        "[homeserver] url = 'ftp://nowhere'",
        "[homeserver] domain: missing",
        "[appservice] threads = 'lots': expected a whole number",
        "[appservice] bind = 'nohost'",
        "[database] url = 'mysql://x'",
        "[network:x] host: missing",
        "[network:x] port = '99999'",
        "[network:x] channels = 'matrix, #ok'",
        "[network:x] user_template = 'irc_{nik}'",
        "[permissions] @a:b = 'superuser'",
    ):
        assert expected in result.stderr, expected


def test_unknown_keys_are_warned_not_fatal(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[logging]", "[logging]\ncolour = blue"))
    config = config_module.load(path)
    assert "[logging] colour: unknown key, ignored" in config.warnings
    result = run_cli("-c", str(path), "check-config")
    assert result.returncode == 0 and "colour" in result.stderr


def test_missing_and_unreadable_files_are_clear(tmp_path: Path) -> None:
    result = run_cli("-c", str(tmp_path / "nope.ini"), "check-config")
    assert result.returncode == 2 and "no such file" in result.stderr
    (tmp_path / "bin.ini").write_bytes(b"\xff\xfe\x00garbage")
    result = run_cli("-c", str(tmp_path / "bin.ini"), "check-config")
    assert result.returncode == 2 and "cannot be read" in result.stderr


def test_empty_tokens_block_serving_with_a_hint(tmp_path: Path) -> None:
    path = write_config(tmp_path, tokens=False)
    result = run_cli("-c", str(path), "check-config")
    assert result.returncode == 2
    assert "generate-registration" in result.stderr


def test_generate_registration_fills_tokens_keeps_comments_and_is_stable(tmp_path: Path) -> None:
    path = tmp_path / "config.ini"
    path.write_text(SHIPPED.read_text())
    before = path.read_text().splitlines()
    assert main(["-c", str(path), "generate-registration"]) == 0
    after = path.read_text().splitlines()
    assert len(after) == len(before)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert [a for a, _ in changed] == ["as_token =", "hs_token ="]
    registration = yaml.safe_load((tmp_path / "registration.yaml").read_text())
    config = config_module.load(path)
    assert registration["as_token"] == config.appservice.as_token
    assert registration["hs_token"] == config.appservice.hs_token
    assert registration["as_token"] != registration["hs_token"]
    assert len(registration["as_token"]) >= 32
    assert registration["rate_limited"] is False
    assert registration["protocols"] == ["irc"]
    assert registration["sender_localpart"] == "ircbot"
    users = registration["namespaces"]["users"]
    assert users[0]["exclusive"] is True
    import re

    assert re.match(users[0]["regex"], "@irc_local__bob:localhost")
    assert not re.match(users[0]["regex"], "@alice:localhost")
    aliases = registration["namespaces"]["aliases"]
    assert re.match(aliases[0]["regex"], "#irc_local_#matrix:localhost")
    assert registration["namespaces"]["rooms"] == []
    # Twice: the tokens stay.
    assert main(["-c", str(path), "generate-registration"]) == 0
    again = yaml.safe_load((tmp_path / "registration.yaml").read_text())
    assert again["as_token"] == registration["as_token"]
    assert path.read_text().splitlines() == after


def test_founding_document_templates_are_accepted(tmp_path: Path) -> None:
    path = write_config(tmp_path, user_template="irc.freenode.net/{nick}",
                        alias_template="irc.freenode.net/{channel}")
    config = config_module.load(path)
    import re

    from bridge.config.registration import build

    reg = build(config)
    assert re.match(reg["namespaces"]["users"][0]["regex"], "@irc.freenode.net/bob:localhost")
    assert re.match(reg["namespaces"]["aliases"][0]["regex"],
                    "#irc.freenode.net/#matrix:localhost")


@pytest.mark.parametrize(
    ("who", "role"),
    [("@admin:example.org", "admin"), ("@bob:example.org", "user"), ("@eve:evil.net", None)],
)
def test_permissions_pick_the_most_specific_entry(
    tmp_path: Path, who: str, role: str | None
) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace(
        "[permissions]\n* = user", "[permissions]\n@admin:example.org = admin\nexample.org = user"))
    assert role_of(config_module.load(path), who) == role


def test_database_url_can_come_from_the_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    config = config_module.load(path, environ={
        config_module.ENV_DATABASE_URL: "postgresql://postgres@127.0.0.1:5432/test"})
    assert config.database.url == "postgresql://postgres@127.0.0.1:5432/test"


def test_the_bots_sasl_certificate_and_autocmds_are_network_keys(tmp_path: Path) -> None:
    (tmp_path / "bot.pem").write_text("certificate and key")
    path = write_config(tmp_path, extra_network=(
        "sasl_username = bridgebot\n"
        "sasl_password = hunter22\n"
        "autocmds =\n"
        "    PRIVMSG NickServ :IDENTIFY bridgebot hunter22\n"
        "    MODE ircbot +B\n"
    ))
    config = config_module.load(path)
    net = config.networks[0]
    assert (net.sasl_username, net.sasl_password) == ("bridgebot", "hunter22")
    assert net.client_cert is None
    assert net.autocmds == ("PRIVMSG NickServ :IDENTIFY bridgebot hunter22", "MODE ircbot +B")
    assert not [w for w in config.warnings if "unknown key" in w]
    # EXTERNAL: the certificate file is relative to config.ini, and needs TLS.
    plain = write_config(tmp_path, extra_network="client_cert = bot.pem\n")
    with pytest.raises(config_module.ConfigError, match="client_cert.*needs TLS"):
        config_module.load(plain)


def test_connects_per_second_is_a_network_key(tmp_path: Path) -> None:
    default = config_module.load(write_config(tmp_path)).networks[0]
    assert (default.connects_per_second, default.connect_burst) == (5.0, 5)
    path = write_config(tmp_path, extra_network="connects_per_second = 0.5\nconnect_burst = 2\n")
    config = config_module.load(path)
    net = config.networks[0]
    assert (net.connects_per_second, net.connect_burst) == (0.5, 2)
    assert not [w for w in config.warnings if "unknown key" in w]
    off = config_module.load(write_config(tmp_path, extra_network="connects_per_second = 0\n"))
    assert off.networks[0].connects_per_second == 0.0
    with pytest.raises(config_module.ConfigError, match="connects_per_second"):
        config_module.load(write_config(tmp_path, extra_network="connects_per_second = -1\n"))
