"""`ircbridge demo`: the founding document's story, played for real on loopback.

Starts an IRC daemon (ngircd when installed, else miniircd), a Synapse homeserver (from the
`demo` extra) and the bridge in a temporary folder with SQLite, then plays the five steps with
a scripted Matrix user (alice) and a scripted IRC user (Bob), printing what each side sees.
Exits 0 only when every step was observed; every process it started is stopped.

Thread: the main thread of the CLI; the daemons it starts are child processes.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..devstack.clients import RawIrcClient
    from ..devstack.stack import Stack

log = logging.getLogger(__name__)

CHANNEL = "#matrix"


class Step:
    def __init__(self, out: Callable[[str], None]):
        self.out = out
        self.failed: list[str] = []

    def run(self, title: str, fn: Callable[[], str]) -> bool:
        self.out(f"\n== {title}")
        started = time.monotonic()
        try:
            seen = fn()
        except Exception as e:  # noqa: BLE001 - the demo reports and goes on to clean up
            self.failed.append(title)
            self.out(f"   FAILED: {type(e).__name__}: {e}")
            return False
        self.out(f"   {seen}")
        self.out(f"   ok ({time.monotonic() - started:.2f} s)")
        return True


def run_demo(*, keep: bool = False, verbose: bool = False,
             out: Callable[[str], None] = print) -> int:
    try:
        import synapse  # noqa: F401
    except ImportError:
        out("ircbridge demo needs Synapse: pip install -e '.[demo]'")
        return 2
    from ..devstack.stack import Stack

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="ircbridge-demo-"))
    stack = Stack(workdir, channels=CHANNEL, user_template="irc.freenode.net/{nick}",
                  alias_template="irc.freenode.net/{channel}")
    steps = Step(out)
    state: dict[str, Any] = {}
    out(f"ircbridge demo in {workdir}")
    try:
        def step1() -> str:
            def bob_first(s: Stack) -> None:
                state["bob"] = s.irc_user("Bob")
                state["bob"].join(CHANNEL)
                state["bob"].send(f"TOPIC {CHANNEL} :The founding story")

            stack.start(before_bridge=bob_first)
            health = stack.bridge.health()
            return (f"IRC daemon ({stack.ircd.kind}) on port {stack.ircd.port}, Synapse on "
                    f"{stack.synapse.url}, bridge on port {stack.bridge_port}; registration "
                    f"loaded, homeserver check: {health['homeserver']}")

        if not steps.run("1. Registration: the homeserver loads the bridge's registration file",
                         step1):
            return _finish(stack, steps, workdir, keep, out, state.get("bob"))

        def step2() -> str:
            bob = state["bob"]
            from ..devstack.ports import wait_until

            wait_until(lambda: "ircbot" in bob.names(CHANNEL), 20, what="the bridge bot")
            state["hello_ms"] = int(time.time() * 1000)
            bob.privmsg(CHANNEL, "hello?")
            from ..store.models import Store

            store = Store(stack.database_url)
            try:
                rows = wait_until(lambda: store.scrollback("local", CHANNEL), 10,
                                  what="the scrollback")
            finally:
                store.close()
            return (f"IRC   <Bob> hello?   (kept as scrollback: {len(rows)} line, "
                    f"no Matrix room exists yet)")

        steps.run('2. IRC user Bob says "hello?" in #matrix while nobody on Matrix listens',
                  step2)

        def step3() -> str:
            alice = state["alice"] = stack.matrix_user("alice")
            alias = stack.alias(CHANNEL)
            started = time.monotonic()
            room = state["room"] = alice.join(alias)
            joined = time.monotonic() - started
            name = alice.state(room, "m.room.name")["name"]
            hello = alice.wait_for_message(
                room, lambda e: e.get("content", {}).get("body") == "hello?", timeout=20)
            profile = alice.profile(hello["sender"])
            return (f"Matrix alice joined {alias} -> {room} ({joined:.2f} s), room name "
                    f"{name!r}\n   Matrix sees <{profile['displayname']}> "
                    f"({hello['sender']}) hello?  at ts {hello['origin_server_ts']} "
                    f"(Bob spoke at {state['hello_ms']})")

        steps.run("3. Matrix user @alice joins the channel's alias: the room is made, "
                  "with the scrollback", step3)

        def step4() -> str:
            bob = state["bob"]
            bob.mark()
            state["alice"].send_text(state["room"], "hi!")
            msg = bob.wait_for_privmsg("hi!", target=CHANNEL, timeout=20)
            return f"IRC   Bob sees <{msg.nick}> {msg.text}"

        steps.run('4. @alice says "hi!": it reaches IRC from her own connection', step4)

        def step5() -> str:
            said = int(time.time() * 1000)
            state["bob"].privmsg(CHANNEL, "what's up?")
            event = state["alice"].wait_for_message(
                state["room"], lambda e: e.get("content", {}).get("body") == "what's up?",
                timeout=20)
            return (f"Matrix alice sees <{event['sender']}> what's up?  at ts "
                    f"{event['origin_server_ts']} (Bob spoke at {said})")

        steps.run('5. Bob says "what\'s up?": it appears in the room as Bob', step5)
        return _finish(stack, steps, workdir, keep, out, state.get("bob"))
    except KeyboardInterrupt:
        out("interrupted")
        _finish(stack, steps, workdir, keep, out, state.get("bob"))
        return 130


def _finish(stack: Stack, steps: Step, workdir: Path, keep: bool,
            out: Callable[[str], None], bob: RawIrcClient | None) -> int:
    if steps.failed:
        out("\nthe bridge's log ends with:\n" + stack.bridge.log(40))
    if bob is not None:
        bob.close()
    stack.stop()
    if keep:
        out(f"\nkept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if steps.failed:
        out(f"\nFAILED: {', '.join(steps.failed)}")
        return 1
    out("\nall five steps of the founding story were observed")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
