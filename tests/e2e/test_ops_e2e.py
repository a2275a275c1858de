"""Operations an admin expects, against one real stack (Synapse + ngircd + the bridge under
gunicorn, at DEBUG): /health, /metrics and the status page over HTTP, check-config --online,
gunicorn hosting and what the log must never contain. The tests that stop the stack's bridge
(to host it with contrib/gunicorn.conf.py, or to let check-config answer the ping itself) come
last and start it again. The same endpoints on the Flask test client are tests/http/test_ops.py.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge.config.ini import load
from bridge.devstack.ports import free_port, tail, terminate, track, wait_until
from bridge.devstack.stack import Stack
from tests.http.test_ops import SECRET, STATUS_AUTH, _room_count, exposed_names, value

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- the stack
class OpsStack(Stack):
    """The devstack with this module's status-page secret."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.status_secret = self.bridge.status_secret = SECRET


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    s = OpsStack(tmp_path_factory.mktemp("ops-stack"), log_level="DEBUG")
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def conversation(stack: OpsStack) -> Iterator[dict[str, Any]]:
    """Alice (Matrix) and bob (IRC) talk once; returns the room and every body said."""
    alice = stack.matrix_user("alice")
    room = alice.join(stack.alias("#matrix"))
    bob = stack.irc_user("bob")
    bob.join("#matrix")
    word = secrets.token_hex(6)
    said = {
        "m2i_text": f"matrix-says-{word}",
        "m2i_emote": f"matrix-waves-{word}",
        "i2m_text": f"irc-says-{word}",
        "i2m_notice": f"irc-notes-{word}",
    }
    alice.send_text(room, said["m2i_text"])
    bob.wait_for_privmsg(said["m2i_text"], timeout=30)
    alice.send_text(room, said["m2i_emote"], msgtype="m.emote")
    bob.wait_for(lambda m: m.action == said["m2i_emote"], timeout=30)
    bob.privmsg("#matrix", said["i2m_text"])
    alice.wait_for_text(room, said["i2m_text"], timeout=30)
    bob.notice("#matrix", said["i2m_notice"])
    alice.wait_for_text(room, said["i2m_notice"], timeout=30)
    yield {"room": room, "said": said, "alice": alice, "bob": bob}
    bob.close()


def get_metrics(stack: Stack) -> str:
    r = requests.get(f"{stack.bridge.url}/metrics", timeout=10)
    assert r.status_code == 200
    return r.text


def test_health_is_200_when_every_part_works(stack: OpsStack) -> None:
    assert requests.get(f"{stack.bridge.url}/health", timeout=10).json() == \
        {"ok": True, "failing": []}
    r = requests.get(f"{stack.bridge.url}/health", headers=STATUS_AUTH, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["failing"] == {}
    assert (body["homeserver"], body["ping"], body["database"]) == ("ok", "ok", "ok")
    assert body["networks"]["local"]["bot"] == "connected"


def test_metrics_count_what_was_relayed(stack: OpsStack, conversation: dict[str, Any]) -> None:
    def settled() -> str | None:
        text = get_metrics(stack)
        done = (value(text, "ircbridge_messages_relayed_total", direction="irc_to_matrix",
                      msgtype="m.notice") >= 1
                and value(text, "ircbridge_queue_depth", queue="outbox") == 0
                and value(text, "ircbridge_queue_depth", queue="inbox") == 0)
        return text if done else None

    text = wait_until(settled, 30, interval=0.2, what="the queues to drain")
    relayed = {d: {m: value(text, "ircbridge_messages_relayed_total", direction=d, msgtype=m)
                   for m in ("m.text", "m.emote", "m.notice")}
               for d in ("matrix_to_irc", "irc_to_matrix")}
    assert relayed["matrix_to_irc"]["m.text"] >= 1
    assert relayed["matrix_to_irc"]["m.emote"] >= 1
    assert relayed["irc_to_matrix"]["m.text"] >= 1
    assert relayed["irc_to_matrix"]["m.notice"] >= 1
    assert value(text, "ircbridge_transactions_received_total") >= 1
    assert value(text, "ircbridge_events_received_total") >= 2
    assert value(text, "ircbridge_inbox_events_handled_total", result="done") >= 2
    assert value(text, "ircbridge_irc_connections", network="local", kind="bot",
                 state="connected") == 1
    assert value(text, "ircbridge_irc_connections", network="local", kind="puppet",
                 state="connected") >= 1
    assert value(text, "ircbridge_rooms_bridged", network="local") == 1
    assert value(text, "ircbridge_homeserver_up") == 1
    assert value(text, "ircbridge_as_ping_ok") == 1
    assert value(text, "ircbridge_queue_oldest_age_seconds", queue="outbox") == 0
    assert value(text, "ircbridge_process_resident_memory_bytes") > 0


def test_grafana_dashboard_names_only_metrics_that_exist(stack: OpsStack) -> None:
    dashboard = json.loads((ROOT / "contrib" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    used = {n for e in exprs for n in re.findall(r"ircbridge_[a-z_]+", e)}
    assert used
    missing = used - exposed_names(get_metrics(stack))
    assert not missing, f"the dashboard names metrics /metrics does not expose: {missing}"


def test_status_page_over_http(stack: OpsStack, conversation: dict[str, Any]) -> None:
    assert requests.get(f"{stack.bridge.url}/", timeout=10).status_code == 401
    r = requests.get(f"{stack.bridge.url}/", auth=("admin", SECRET), timeout=10)
    assert r.status_code == 200
    assert _room_count(r.text) == 1
    assert conversation["room"] in r.text
    assert re.search(r'class="badge good">connected</span>\s*<code>ircbot</code>', r.text)
    assert 'id="overall">ready<' in r.text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed "
                    "(apt-get install chromium)")
def test_status_page_renders_in_a_real_browser(stack: OpsStack, conversation: dict[str, Any],
                                               tmp_path: Path) -> None:
    shot = tmp_path / "status.png"
    profile = tmp_path / "profile"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--window-size=1280,900", f"--screenshot={shot}",
           f"http://admin:{SECRET}@{stack.bridge.url.removeprefix('http://')}/"]
    proc = subprocess.run(cmd, capture_output=True, timeout=120, cwd=tmp_path)
    assert shot.exists(), proc.stderr.decode(errors="replace")[-2000:]
    assert shot.stat().st_size > 10_000
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # text, badges, tables: not blank


def test_log_has_no_tokens_and_no_bodies_at_info(stack: OpsStack,
                                                 conversation: dict[str, Any]) -> None:
    config = load(stack.config_path)
    log_text = stack.bridge.log_path.read_text(encoding="utf-8", errors="replace")
    assert " DEBUG " in log_text, "the stack should log at DEBUG"
    for token in (config.appservice.as_token, config.appservice.hs_token, SECRET):
        assert token not in log_text
    assert "[redacted]" not in log_text, "something tried to log a secret"
    level = "INFO"
    info_lines = []
    for line in log_text.splitlines():
        m = re.match(r"^\d{4}-\d\d-\d\d [\d:,]+ ([A-Z]+) ", line) or \
            re.match(r"^\[[^\]]+\] \[\d+\] \[([A-Z]+)\] ", line)
        if m:
            level = m.group(1)
        if level != "DEBUG":  # continuation lines (tracebacks) keep their record's level
            info_lines.append(line)
    assert info_lines
    for body in conversation["said"].values():
        leaks = [line for line in info_lines if body in line]
        assert not leaks, f"message body {body!r} logged at INFO or above: {leaks}"


def _irc_restart_recovers(stack: OpsStack) -> None:
    before = value(get_metrics(stack), "ircbridge_irc_reconnects_total", network="local")
    stack.ircd.stop()

    def failing() -> dict[str, Any] | None:
        r = requests.get(f"{stack.bridge.url}/health", timeout=10)
        return r.json() if r.status_code == 503 else None

    body = wait_until(failing, 30, interval=0.1, what="/health to notice IRC is down")
    assert "irc:local" in body["failing"]
    stack.ircd.start()
    wait_until(lambda: requests.get(f"{stack.bridge.url}/health", timeout=10).status_code == 200,
               60, interval=0.2, what="the bot to reconnect")
    assert value(get_metrics(stack), "ircbridge_irc_reconnects_total", network="local") > before


def test_health_follows_irc_and_reconnects_are_counted(stack: OpsStack,
                                                        conversation: dict[str, Any]) -> None:
    _irc_restart_recovers(stack)


# ---------------------------------------------------------------- check-config --online
def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def variant(stack: OpsStack, folder: Path, **changes: str) -> Path:
    """A copy of the stack's config.ini with some `key = value` lines changed."""
    text = stack.config_path.read_text(encoding="utf-8")
    for key, new in changes.items():
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {new}", text, count=1)
        assert n == 1, key
    text = text.replace("registration = registration.yaml",
                        f"registration = {stack.registration}")
    path = folder / "config.ini"
    path.write_text(text, encoding="utf-8")
    return path


def test_check_config_online_passes_against_the_running_bridge(stack: OpsStack) -> None:
    r = run_cli("-c", str(stack.config_path), "check-config", "--online")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()[1:]
    assert [line.split(":")[0] for line in lines] == [
        "ok   homeserver", "ok   as_token", "ok   ping", "ok   database", "ok   irc"]
    assert "schema current" in r.stdout and "reachable (TCP)" in r.stdout


def test_check_config_online_names_each_failure(stack: OpsStack, tmp_path: Path) -> None:
    closed = free_port()
    path = variant(stack, tmp_path, as_token="as-" + secrets.token_hex(16), port=str(closed))
    r = run_cli("-c", str(path), "check-config", "--online")
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "ok   homeserver" in out, out
    assert "FAIL as_token: the homeserver refused the as_token" in out
    assert "FAIL ping: not checked" in out
    assert f"FAIL irc:local: cannot connect to 127.0.0.1:{closed}" in out
    config = load(path)
    assert config.appservice.as_token not in out + r.stderr


def test_check_config_online_unreachable_homeserver(stack: OpsStack, tmp_path: Path) -> None:
    path = variant(stack, tmp_path, url=f"http://127.0.0.1:{free_port()}")
    r = run_cli("-c", str(path), "check-config", "--online")
    assert r.returncode == 1
    assert re.search(r"FAIL homeserver: homeserver http://127.0.0.1:\d+ unreachable", r.stdout)


# ---------------------------------------------------------------- with the bridge stopped
def test_check_config_online_answers_the_ping_itself(stack: OpsStack, tmp_path: Path) -> None:
    """With the bridge stopped, the check listens on [appservice] bind for the ping, and a
    wrong hs_token there is caught."""
    stack.bridge.stop()
    try:
        r = run_cli("-c", str(stack.config_path), "check-config", "--online")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ok   ping: the homeserver reached" in r.stdout
        wrong = variant(stack, tmp_path, hs_token="hs-" + secrets.token_hex(16))
        r = run_cli("-c", str(wrong), "check-config", "--online")
        assert r.returncode == 1
        assert "FAIL ping: the homeserver reached the bridge but got HTTP 403" in r.stdout
        assert "check hs_token" in r.stdout
    finally:
        stack.bridge.start()


def test_gunicorn_conf_hosts_the_bridge(stack: OpsStack) -> None:
    """`IRCBRIDGE_CONFIG=config.ini gunicorn -c contrib/gunicorn.conf.py 'bridge:create_app()'`
    serves the bridge with one gthread worker, and a SIGTERM stops it cleanly."""
    gunicorn = shutil.which("gunicorn")
    if gunicorn is None:
        pytest.skip("gunicorn is not on PATH")
    watcher = stack.irc_user("watcher")
    watcher.join("#matrix")
    stack.bridge.stop()
    log_path = stack.config_path.parent / "gunicorn.log"
    env = {**os.environ, "IRCBRIDGE_CONFIG": stack.config_path.name, "PYTHONPATH": str(ROOT)}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [gunicorn, "-c", str(ROOT / "contrib" / "gunicorn.conf.py"), "bridge:create_app()"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=stack.config_path.parent,
            start_new_session=True)
    track(proc)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, tail(log_path, 60)
            try:
                return requests.get(f"{stack.bridge.url}/health", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, 60, interval=0.1, what="gunicorn's /health")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1, "exactly one worker"
        worker = children[0]
        threads = len(os.listdir(f"/proc/{worker}/task"))
        assert threads >= 8  # gthread's pool, the IRC thread, the senders, ...
        assert "Using worker: gthread" in log_path.read_text()
        text = requests.get(f"{stack.bridge.url}/metrics", timeout=10).text
        assert value(text, "ircbridge_irc_bot_connected", network="local") == 1
        watcher.mark()  # the QUIT of the devstack's own bridge is not the one we want
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, tail(log_path, 60)
        # worker_exit ran bridge.stop(): the bot said goodbye on IRC.
        quit_line = watcher.wait_for(lambda m: m.command == "QUIT" and m.nick == "ircbot",
                                     timeout=10)
        assert "shutting down" in quit_line.text.lower()
    finally:
        if proc.poll() is None:
            terminate(proc)
        watcher.close()
        stack.bridge.start()
